//! Wallet addresses: published examples and test vectors, near misses, and generated
//! corpora measuring recall and hard-negative false positives.

use super::tests::{reported, Lcg, MIN_CONFIDENCE, PER_TYPE, POSITIVE_TEMPLATES};
use super::*;
use crate::inspect::Detector;

#[test]
fn bitcoin_addresses_published_and_corrupted() {
    for address in [
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
        "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        "BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ",
        "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297",
    ] {
        assert!(bitcoin_address(address.as_bytes()), "{address}");
        assert_eq!(
            reported(&format!("send it to {address} today")),
            vec![("CRYPTO".into(), address.into())]
        );
    }
    for near_miss in [
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb",
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLz",
        "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdp",
        "bc1qAR0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        "bc1par0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        "1111111111111111111111111111",
    ] {
        assert!(!bitcoin_address(near_miss.as_bytes()), "{near_miss}");
    }
}

fn base58check_encode(version: u8, payload: &[u8; 20]) -> String {
    use sha2::{Digest, Sha256};
    let mut bytes = vec![version];
    bytes.extend_from_slice(payload);
    let digest = Sha256::digest(Sha256::digest(&bytes));
    bytes.extend_from_slice(&digest[..4]);
    let mut digits: Vec<u8> = Vec::new();
    for &byte in &bytes {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    std::iter::repeat_n(b'1', zeros)
        .chain(digits.iter().rev().map(|&d| BASE58[usize::from(d)]))
        .map(char::from)
        .collect()
}

/// A v0 segwit address for 20 payload bytes: the 5-bit groups and the six checksum
/// characters that make the BIP 173 polymod come out at 1.
fn bech32_encode(payload: &[u8; 20]) -> String {
    let mut data = vec![0u8];
    let (mut acc, mut bits) = (0u32, 0);
    for &b in payload {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            data.push(((acc >> bits) & 31) as u8);
        }
    }
    let generator = [
        0x3b6a_57b2u32,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let polymod = |values: &[u8]| {
        let mut c = 1u32;
        for &v in values {
            let top = c >> 25;
            c = ((c & 0x01ff_ffff) << 5) ^ u32::from(v);
            for (i, g) in generator.iter().enumerate() {
                if (top >> i) & 1 == 1 {
                    c ^= g;
                }
            }
        }
        c
    };
    let mut values = vec![3, 3, 0, 2, 3];
    values.extend(&data);
    values.extend([0; 6]);
    let check = polymod(&values) ^ 1;
    data.extend((0..6).map(|i| ((check >> (5 * (5 - i))) & 31) as u8));
    let body: String = data
        .iter()
        .map(|&d| char::from(BECH32[usize::from(d)]))
        .collect();
    format!("bc1{body}")
}

#[test]
fn crypto_corpus_recall_and_false_positives() {
    let detector = Detector::new(&[]).unwrap();
    let is_crypto = |text: &str, value: &str| {
        detector.scan(text).iter().any(|e| {
            e.kind.as_str() == "CRYPTO"
                && e.confidence >= MIN_CONFIDENCE
                && text[e.start..e.end] == *value
        })
    };
    let mut rng = Lcg(0xb17c_0111);
    let (mut hits, mut positives, mut false_positives, mut negatives) = (0, 0, 0, 0);
    for n in 0..PER_TYPE {
        let mut payload = [0u8; 20];
        payload.iter_mut().for_each(|b| *b = rng.next(256) as u8);
        let address = match n % 3 {
            0 => base58check_encode(0x00, &payload),
            1 => base58check_encode(0x05, &payload),
            _ => bech32_encode(&payload),
        };
        let template = POSITIVE_TEMPLATES[n % POSITIVE_TEMPLATES.len()];
        let text = template.replace("{ctx}", "wallet").replace("{v}", &address);
        positives += 1;
        hits += usize::from(is_crypto(&text, &address));
        // One character changed (to another of the alphabet) breaks the checksum.
        let mut bad = address.clone().into_bytes();
        let at = 5 + rng.next(20) as usize;
        bad[at] = if bad[at] == b'q' { b'p' } else { b'q' };
        let bad = String::from_utf8(bad).unwrap();
        let text = template.replace("{ctx}", "wallet").replace("{v}", &bad);
        negatives += 1;
        false_positives += usize::from(is_crypto(&text, &bad));
    }
    let recall = hits as f64 / positives as f64;
    let fp_rate = false_positives as f64 / negatives as f64;
    eprintln!("CRYPTO          positives {positives} recall {recall:.3}  hard negatives {negatives} FP rate {fp_rate:.3}");
    assert!(
        recall >= 0.95 && fp_rate <= 0.02,
        "recall {recall}, FP {fp_rate}"
    );
}

#[test]
fn national_identifiers_are_pii_and_wallets_financial() {
    use crate::inspect::{DataClass, EntityType};
    let kind_of = |text: &str| Detector::new(&[]).unwrap().scan(text)[0].kind.clone();
    assert_eq!(kind_of("NIF 12345678Z").classification(), DataClass::Pii);
    assert_eq!(
        kind_of("to 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa").classification(),
        DataClass::Financial
    );
    assert!(matches!(
        kind_of("NIF 12345678Z"),
        EntityType::National(NationalId::EsNif)
    ));
}

#[test]
fn the_hash_is_ethereum_keccak_not_sha3() {
    // Keccak-256 of the empty string as Ethereum uses it (SHA3-256's differs: a7ffc6f8...).
    let empty: String = keccak256(b"").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        empty,
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    );
}

#[test]
fn ethereum_addresses_need_their_eip55_checksum() {
    // The test vectors of EIP-55.
    for address in [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ] {
        assert!(ethereum_address(address.as_bytes()), "{address}");
        assert_eq!(
            reported(&format!("pay {address} now")),
            vec![("CRYPTO".into(), address.into())]
        );
    }
    for near_miss in [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
    ] {
        assert!(!ethereum_address(near_miss.as_bytes()), "{near_miss}");
    }
}

/// EIP-55 form of 20 bytes: the hex digits, a letter upper case where the Keccak-256 of the
/// lowercase hex has a nibble of 8 or more.
fn eip55(bytes: &[u8; 20]) -> String {
    let lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = keccak256(lower.as_bytes());
    let body: String = lower
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let nibble = (hash[i / 2] >> (4 * (1 - i % 2))) & 0xf;
            if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    format!("0x{body}")
}

#[test]
fn ethereum_corpus_recall_and_false_positives() {
    let detector = Detector::new(&[]).unwrap();
    let is_crypto = |text: &str, value: &str| {
        detector.scan(text).iter().any(|e| {
            e.kind.as_str() == "CRYPTO"
                && e.confidence >= MIN_CONFIDENCE
                && text[e.start..e.end] == *value
        })
    };
    let mut rng = Lcg(0xe7e7);
    let (mut hits, mut positives, mut false_positives, mut negatives) = (0, 0, 0, 0);
    while positives < PER_TYPE {
        let mut bytes = [0u8; 20];
        bytes.iter_mut().for_each(|b| *b = rng.next(256) as u8);
        let address = eip55(&bytes);
        let letters: Vec<usize> = (2..42)
            .filter(|&i| address.as_bytes()[i].is_ascii_alphabetic())
            .collect();
        // Without both cases an address carries no checksum; the detector leaves it alone.
        if !(address.bytes().any(|b| b.is_ascii_uppercase())
            && address[2..].bytes().any(|b| b.is_ascii_lowercase()))
        {
            continue;
        }
        let template = POSITIVE_TEMPLATES[positives % POSITIVE_TEMPLATES.len()];
        let text = template.replace("{ctx}", "wallet").replace("{v}", &address);
        positives += 1;
        hits += usize::from(is_crypto(&text, &address));
        // One letter in the wrong case breaks the checksum.
        let mut bad = address.clone().into_bytes();
        let at = letters[rng.next(letters.len() as u64) as usize];
        bad[at] ^= 0x20;
        let bad = String::from_utf8(bad).unwrap();
        let text = template.replace("{ctx}", "wallet").replace("{v}", &bad);
        negatives += 1;
        false_positives += usize::from(is_crypto(&text, &bad));
    }
    let recall = hits as f64 / positives as f64;
    let fp_rate = false_positives as f64 / negatives as f64;
    eprintln!("CRYPTO (ETH)    positives {positives} recall {recall:.3}  hard negatives {negatives} FP rate {fp_rate:.3}");
    assert!(
        recall >= 0.95 && fp_rate <= 0.02,
        "recall {recall}, FP {fp_rate}"
    );
}
