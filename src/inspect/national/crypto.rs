//! Crypto wallet addresses, validated by their checksums: Bitcoin base58check (double
//! SHA-256) and bech32/bech32m, Ethereum EIP-55 (Keccak-256).

pub(super) const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
pub(super) const BECH32: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// A Bitcoin address: base58check P2PKH (`1...`) or P2SH (`3...`) whose last four decoded
/// bytes are the double SHA-256 of the first 21, or a segwit address `bc1...` whose bech32
/// (v0) or bech32m (v1+) checksum holds (BIP 173, BIP 350).
pub fn bitcoin_address(token: &[u8]) -> bool {
    match token {
        [b'1' | b'3', ..] if (26..=35).contains(&token.len()) => base58check(token),
        [b'b' | b'B', b'c' | b'C', b'1', ..] if (42..=62).contains(&token.len()) => segwit(token),
        _ => false,
    }
}

fn base58check(token: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let mut bytes = [0u8; 25];
    for &c in token {
        let Some(value) = BASE58.iter().position(|&a| a == c) else {
            return false;
        };
        let mut carry = value as u32;
        for byte in bytes.iter_mut().rev() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        if carry != 0 {
            return false;
        }
    }
    let leading_ones = token.iter().take_while(|&&c| c == b'1').count();
    let leading_zeros = bytes.iter().take_while(|&&b| b == 0).count();
    let version_ok = match token[0] {
        b'1' => bytes[0] == 0x00,
        _ => bytes[0] == 0x05,
    };
    let digest = Sha256::digest(Sha256::digest(&bytes[..21]));
    version_ok && leading_ones == leading_zeros.min(21) && digest[..4] == bytes[21..]
}

fn segwit(token: &[u8]) -> bool {
    const GENERATOR: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let lower = token.iter().all(|b| !b.is_ascii_uppercase());
    let upper = token.iter().all(|b| !b.is_ascii_lowercase());
    if !lower && !upper {
        return false;
    }
    let mut checksum = 1u32;
    let mut step = |value: u32| {
        let top = checksum >> 25;
        checksum = ((checksum & 0x01ff_ffff) << 5) ^ value;
        for (i, g) in GENERATOR.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                checksum ^= g;
            }
        }
    };
    // The human-readable part `bc`, expanded: high bits, a zero, low bits.
    for v in [3, 3, 0, 2, 3] {
        step(v);
    }
    let mut version = None;
    for &c in &token[3..] {
        let Some(value) = BECH32.iter().position(|&a| a == c.to_ascii_lowercase()) else {
            return false;
        };
        version.get_or_insert(value);
        step(value as u32);
    }
    match version {
        Some(0) => checksum == 1,
        Some(1..=16) => checksum == 0x2bc8_30a3,
        _ => false,
    }
}

/// An Ethereum address in its EIP-55 form: `0x` and 40 hex digits whose letters are upper
/// case exactly where the Keccak-256 of the lowercase address has a nibble of 8 or more.
/// All-lowercase or all-uppercase addresses carry no checksum and are not reported.
pub fn ethereum_address(token: &[u8]) -> bool {
    if token.len() != 42 || &token[..2] != b"0x" || !token[2..].iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let hex = &token[2..];
    let has_upper = hex.iter().any(u8::is_ascii_uppercase);
    let has_lower = hex.iter().any(u8::is_ascii_lowercase);
    if !has_upper || !has_lower {
        return false;
    }
    let mut lower = [0u8; 40];
    for (l, &h) in lower.iter_mut().zip(hex) {
        *l = h.to_ascii_lowercase();
    }
    let hash = keccak256(&lower);
    hex.iter().enumerate().all(|(i, &h)| {
        let nibble = if i % 2 == 0 {
            hash[i / 2] >> 4
        } else {
            hash[i / 2] & 0xf
        };
        !h.is_ascii_alphabetic() || h.is_ascii_uppercase() == (nibble >= 8)
    })
}

/// Keccak-256 with its original padding (what Ethereum uses, not SHA3-256).
pub(super) fn keccak256(message: &[u8]) -> [u8; 32] {
    use sha3::Digest;
    sha3::Keccak256::digest(message).into()
}
