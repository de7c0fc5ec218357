//! Redacted forms of findings: what the audit trail stores and what a `redact` obligation
//! forwards. Each form keeps just enough to recognise the value for an investigator (last four
//! card digits, the mail domain, a token's public prefix) and never enough to use it.

use super::detect::{Entity, EntityType};

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
        EntityType::AwsAccessKey
        | EntityType::GithubToken
        | EntityType::GitlabToken
        | EntityType::SlackToken
        | EntityType::StripeKey
        | EntityType::OpenaiKey
        | EntityType::AnthropicKey => format!("{}{MASK}", public_prefix(value)),
        EntityType::Jwt => format!("eyJ{MASK}"),
        EntityType::PrivateKey => {
            let header = value.lines().next().unwrap_or_default();
            format!("{header}{MASK}")
        }
        EntityType::Custom(custom) => format!("[{}]", custom.name),
        EntityType::GenericSecret
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

/// `text` with every finding's span replaced by its redacted form. `entities` must be the
/// ordered, non-overlapping output of the detector for this very text.
pub fn redact_text(text: &str, entities: &[Entity]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for entity in entities {
        let (Some(before), Some(value)) = (
            text.get(cursor..entity.start),
            text.get(entity.start..entity.end),
        ) else {
            continue;
        };
        out.push_str(before);
        out.push_str(&redacted_value(&entity.kind, value));
        cursor = entity.end;
    }
    out.push_str(text.get(cursor..).unwrap_or_default());
    out
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
    fn text_redaction_replaces_spans_in_order() {
        let text = "card 4111111111111111 and mail a@b.io";
        let entities = vec![
            Entity {
                kind: EntityType::CreditCard,
                start: 5,
                end: 21,
                confidence: 0.9,
            },
            Entity {
                kind: EntityType::Email,
                start: 31,
                end: 37,
                confidence: 0.9,
            },
        ];
        assert_eq!(
            redact_text(text, &entities),
            "card ****1111 and mail a***@b.io"
        );
    }
}
