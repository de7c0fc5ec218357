//! Checksums and structural rules that turn a pattern hit into a finding. Every detector that
//! has a real-world validity rule goes through here, so a look-alike (a 16-digit order number,
//! an IBAN with a wrong check digit) is rejected rather than reported.

/// Luhn (mod 10) over ASCII digits; anything else in `digits` fails.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return false;
        }
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// The card network whose issuer identification range and length fit `digits`.
pub fn card_network(digits: &[u8]) -> Option<&'static str> {
    let len = digits.len();
    let prefix = |n: usize| -> u32 {
        digits
            .iter()
            .take(n)
            .fold(0, |acc, &d| acc * 10 + u32::from(d.wrapping_sub(b'0')))
    };
    let network = match (prefix(1), prefix(2), prefix(4), prefix(6)) {
        (4, _, _, _) if matches!(len, 13 | 16 | 19) => "visa",
        (_, 51..=55, _, _) if len == 16 => "mastercard",
        (_, _, 2221..=2720, _) if len == 16 => "mastercard",
        (_, 34 | 37, _, _) if len == 15 => "amex",
        (_, _, 6011, _) if matches!(len, 16..=19) => "discover",
        (_, 65, _, _) if matches!(len, 16..=19) => "discover",
        (_, _, _, 622_126..=622_925) if matches!(len, 16..=19) => "discover",
        (_, _, 3528..=3589, _) if matches!(len, 16..=19) => "jcb",
        (_, 36 | 38 | 39, _, _) if matches!(len, 14..=19) => "diners",
        (_, _, 3000..=3059, _) if matches!(len, 14..=19) => "diners",
        (_, 62, _, _) if matches!(len, 16..=19) => "unionpay",
        _ => return None,
    };
    Some(network)
}

/// The IBAN length of a country (ISO 13616 registry), `None` for a country without IBANs.
pub fn iban_length(country: &[u8]) -> Option<usize> {
    let len = match country {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"CR" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" => 22,
        b"AE" | b"GI" | b"IL" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        _ => return None,
    };
    Some(len)
}

/// ISO 7064 mod 97-10 over the compact IBAN (uppercase letters and digits, no spaces).
pub fn iban_checksum(compact: &[u8]) -> bool {
    if compact.len() < 5 {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder = 0u32;
    for &c in tail.iter().chain(head) {
        let value = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// Social Security Administration rules: area 001-899 except 666, group 01-99, serial
/// 0001-9999. The advertising number 078-05-1120 and the 987-65-432x range are never issued.
pub fn ssn(area: u32, group: u32, serial: u32) -> bool {
    let issued = (1..=899).contains(&area)
        && area != 666
        && (1..=99).contains(&group)
        && (1..=9999).contains(&serial);
    issued && !(area == 78 && group == 5 && serial == 1120)
}

/// A North American Numbering Plan number: area code and exchange both start with 2-9.
pub fn nanp(digits: &[u8]) -> bool {
    digits.len() == 10 && digits[0] >= b'2' && digits[3] >= b'2'
}

/// Bits of Shannon entropy per byte of `value`.
pub fn shannon_entropy(value: &[u8]) -> f64 {
    if value.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in value {
        counts[usize::from(b)] += 1;
    }
    let len = value.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// How many of lowercase, uppercase, digit and symbol classes `value` draws from.
pub fn character_classes(value: &[u8]) -> u32 {
    let mut classes = [false; 4];
    for &b in value {
        let class = match b {
            b'a'..=b'z' => 0,
            b'A'..=b'Z' => 1,
            b'0'..=b'9' => 2,
            _ => 3,
        };
        classes[class] = true;
    }
    classes.iter().map(|&c| u32::from(c)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_rejects_a_changed_digit() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"378282246310005"));
        assert!(luhn(b"5555555555554444"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"1234567890123456"));
        assert!(!luhn(b""));
    }

    #[test]
    fn card_networks_need_matching_prefix_and_length() {
        assert_eq!(card_network(b"4111111111111111"), Some("visa"));
        assert_eq!(card_network(b"2221000000000009"), Some("mastercard"));
        assert_eq!(card_network(b"378282246310005"), Some("amex"));
        assert_eq!(card_network(b"3782822463100051"), None, "amex is 15 digits");
        assert_eq!(card_network(b"1111111111111117"), None);
    }

    #[test]
    fn iban_checksum_and_length() {
        assert!(iban_checksum(b"DE89370400440532013000"));
        assert!(iban_checksum(b"GB82WEST12345698765432"));
        assert!(!iban_checksum(b"DE89370400440532013001"));
        assert_eq!(iban_length(b"DE"), Some(22));
        assert_eq!(iban_length(b"US"), None);
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn(123, 45, 6789));
        assert!(!ssn(666, 45, 6789));
        assert!(!ssn(0, 45, 6789));
        assert!(!ssn(900, 45, 6789));
        assert!(!ssn(123, 0, 6789));
        assert!(!ssn(123, 45, 0));
        assert!(!ssn(78, 5, 1120));
    }

    #[test]
    fn entropy_separates_keys_from_words() {
        assert!(shannon_entropy(b"Xk9#mQ2$vL7!pR4z") > 3.5);
        assert!(shannon_entropy(b"aaaaaaaaaaaa") < 0.1);
        assert_eq!(character_classes(b"aB3!"), 4);
    }
}
