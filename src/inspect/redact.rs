//! Redacted forms of findings: what the audit trail stores and what a `redact` obligation
//! forwards. Each form keeps just enough to recognise the value for an investigator (last four
//! card digits, the mail domain, a token's public prefix) and never enough to use it.

use super::detect::EntityType;

const MASK: &str = "****";

/// The stored form of one finding's `value`.
pub fn redacted_value(kind: &EntityType, value: &str) -> String {
    let digits = || value.bytes().filter(u8::is_ascii_digit);
    let last_digits = |n: usize| -> String {
        let all: Vec<u8> = digits().collect();
        String::from_utf8_lossy(&all[all.len().saturating_sub(n)..]).into_owned()
    };
    match kind {
        EntityType::CreditCard => format!("{MASK}{}", last_digits(4)),
        EntityType::UsSsn => format!("***-**-{}", last_digits(4)),
        EntityType::Phone => format!("{MASK}{}", last_digits(2)),
        EntityType::Iban => {
            let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            let country = compact.get(..2).unwrap_or_default();
            let tail = compact
                .get(compact.len().saturating_sub(4)..)
                .unwrap_or_default();
            format!("{country}{MASK}{tail}")
        }
        EntityType::Email => match value.split_once('@') {
            Some((local, domain)) => {
                let first = local.chars().next().map(String::from).unwrap_or_default();
                format!("{first}***@{domain}")
            }
            None => MASK.to_owned(),
        },
        EntityType::IpAddress => {
            if let Some((a, rest)) = value.split_once('.') {
                let b = rest.split('.').next().unwrap_or_default();
                format!("{a}.{b}.*.*")
            } else {
                let first = value.split(':').next().unwrap_or_default();
                format!("{first}:{MASK}")
            }
        }
        EntityType::Jwt => format!("eyJ{MASK}"),
        EntityType::PrivateKey => {
            let header = value.lines().next().unwrap_or_default();
            format!("{header}{MASK}")
        }
        EntityType::Custom(custom) => format!("[{}]", custom.name),
        EntityType::GenericSecret
        | EntityType::National(_)
        | EntityType::UsPassport
        | EntityType::DriverLicense
        | EntityType::DateOfBirth => MASK.to_owned(),
        EntityType::Person => {
            let initials: String = value
                .split_whitespace()
                .filter_map(|w| w.chars().next())
                .map(|c| format!("{c}."))
                .collect();
            initials
        }
        // Vendor tokens: the prefix says which vendor, nothing more.
        _ => format!("{}{MASK}", public_prefix(value)),
    }
}

/// The vendor prefix of a token (`ghp_`, `sk-ant-`, `AKIA`), which identifies its kind but not
/// its owner.
fn public_prefix(value: &str) -> &str {
    let cut = value
        .char_indices()
        .filter(|&(_, c)| c == '_' || c == '-')
        .map(|(i, _)| i + 1)
        .take_while(|&i| i <= 14)
        .last()
        .unwrap_or_else(|| value.len().min(4));
    value.get(..cut).unwrap_or_default()
}

/// A mask of exactly `value`'s length (so a body keeps its `Content-Length`): letters and
/// digits become `*`, except what the stored form also shows (last four digits of a card or
/// account, the mail domain, a token's vendor prefix). Separators and punctuation stay.
pub fn mask_same_length(kind: &EntityType, value: &str) -> String {
    let keep_from = match kind {
        EntityType::CreditCard | EntityType::Iban | EntityType::UsSsn => {
            let mut alnum_seen = 0;
            value
                .char_indices()
                .rev()
                .find(|(_, c)| {
                    if c.is_ascii_alphanumeric() {
                        alnum_seen += 1;
                    }
                    alnum_seen == 4
                })
                .map_or(value.len(), |(i, _)| i)
        }
        EntityType::Email => value.find('@').unwrap_or(value.len()),
        _ => value.len(),
    };
    let keep_until = match kind {
        kind if kind.is_vendor_token() => public_prefix(value).len(),
        EntityType::Email => 1.min(value.len()),
        _ => 0,
    };
    value
        .char_indices()
        .map(|(i, c)| {
            if i < keep_until || i >= keep_from || !c.is_alphanumeric() {
                c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_forms_keep_no_usable_value() {
        assert_eq!(
            redacted_value(&EntityType::CreditCard, "4111 1111 1111 1111"),
            "****1111"
        );
        assert_eq!(
            redacted_value(&EntityType::Email, "jane@example.com"),
            "j***@example.com"
        );
        assert_eq!(
            redacted_value(&EntityType::UsSsn, "123-45-6789"),
            "***-**-6789"
        );
        assert_eq!(
            redacted_value(&EntityType::Iban, "DE89 3704 0044 0532 0130 00"),
            "DE****3000"
        );
        assert_eq!(
            redacted_value(&EntityType::IpAddress, "192.168.1.20"),
            "192.168.*.*"
        );
        assert_eq!(
            redacted_value(&EntityType::AnthropicKey, "sk-ant-api03-abcdefghijkl"),
            "sk-ant-api03-****"
        );
        assert_eq!(
            redacted_value(&EntityType::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE"),
            "AKIA****"
        );
        assert_eq!(
            redacted_value(&EntityType::GithubToken, "ghp_abcdefgh"),
            "ghp_****"
        );
        assert_eq!(
            redacted_value(&EntityType::GenericSecret, "hunter2hunter2"),
            "****"
        );
        assert_eq!(redacted_value(&EntityType::Person, "Jane Doe"), "J.D.");
    }

    #[test]
    fn same_length_masks_keep_only_what_the_stored_form_shows() {
        assert_eq!(
            mask_same_length(&EntityType::CreditCard, "4111 1111 1111 1111"),
            "**** **** **** 1111"
        );
        assert_eq!(
            mask_same_length(&EntityType::Email, "jane@example.com"),
            "j***@example.com"
        );
        assert_eq!(
            mask_same_length(&EntityType::UsSsn, "123-45-6789"),
            "***-**-6789"
        );
        assert_eq!(
            mask_same_length(&EntityType::GithubToken, "ghp_abc123"),
            "ghp_******"
        );
        assert_eq!(
            mask_same_length(&EntityType::GenericSecret, "p@ss-W0rd!"),
            "*@**-****!"
        );
    }
}
