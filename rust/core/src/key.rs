//! The `sk-ar-` key format: prefix, 32 base62 characters from the OS CSPRNG, and
//! 6 base62 characters encoding the CRC32 of those 32. The checksum lets every
//! typo or truncated paste be refused without touching the key table.

use crate::error::{Error, Result};

pub const KEY_PREFIX: &str = "sk-ar-";
pub const KEY_LENGTH: usize = KEY_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
const RANDOM_LEN: usize = 32;
/// 62^6 ≈ 5.7e10 > 2^32, so six characters hold any CRC32.
const CHECKSUM_LEN: usize = 6;
const DISPLAY_LEN: usize = 12;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// The value of each base62 digit; `NOT_BASE62` (high bit set) for other bytes.
const DIGIT: [u8; 256] = {
    let mut table = [NOT_BASE62; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_BASE62: u8 = 0xff;
/// Random bytes at or above this are rejected: 248 = 4·62, so `b % 62` is uniform
/// on the bytes kept (no modulo bias).
const REJECT_FROM: u8 = 248;

/// A new key from the OS CSPRNG.
pub fn generate_key() -> Result<String> {
    let mut random = [0u8; RANDOM_LEN];
    let mut filled = 0;
    let mut pool = [0u8; 64];
    while filled < RANDOM_LEN {
        getrandom::fill(&mut pool)
            .map_err(|e| Error::InvalidArgument(format!("OS random source failed: {e}")))?;
        for &b in pool.iter().filter(|&&b| b < REJECT_FROM) {
            if filled == RANDOM_LEN {
                break;
            }
            random[filled] = ALPHABET[usize::from(b % 62)];
            filled += 1;
        }
    }
    let mut key = String::with_capacity(KEY_LENGTH);
    key.push_str(KEY_PREFIX);
    key.extend(random.iter().map(|&b| char::from(b)));
    key.extend(checksum(&random).iter().map(|&b| char::from(b)));
    Ok(key)
}

/// Prefix, length, alphabet and checksum; no lookup.
pub fn is_well_formed(raw: &str) -> bool {
    let Some(body) = raw.as_bytes().strip_prefix(KEY_PREFIX.as_bytes()) else {
        return false;
    };
    if body.len() != RANDOM_LEN + CHECKSUM_LEN {
        return false;
    }
    // Every byte a base62 digit, checked without a branch per byte.
    if body.iter().fold(0, |any, &b| any | DIGIT[usize::from(b)]) & 0x80 != 0 {
        return false;
    }
    let (random, check) = body.split_at(RANDOM_LEN);
    // Fixed-width base62 is a bijection between 6-digit strings and [0, 62^6), so
    // decoding the stored digits and comparing numbers is the same test as
    // comparing them with `checksum(random)`, without six divisions.
    let stored = check
        .iter()
        .fold(0u64, |n, &c| n * 62 + u64::from(DIGIT[usize::from(c)]));
    stored == u64::from(crc32fast::hash(random))
}

/// The first 12 characters and an ellipsis (what the console and logs show).
pub fn display_prefix(raw: &str) -> String {
    let mut shown: String = raw.chars().take(DISPLAY_LEN).collect();
    shown.push('…');
    shown
}

/// CRC32 of the random part, big-endian base62, fixed width.
fn checksum(random: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = u64::from(crc32fast::hash(random));
    let mut out = [ALPHABET[0]; CHECKSUM_LEN];
    for c in out.iter_mut().rev() {
        *c = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        generate_key().unwrap()
    }

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let keys: Vec<String> = (0..200).map(|_| key()).collect();
        for k in &keys {
            assert_eq!(k.len(), KEY_LENGTH);
            assert_eq!(KEY_LENGTH, 44);
            assert!(k.starts_with("sk-ar-"));
            assert!(is_well_formed(k), "{k}");
        }
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
    }

    #[test]
    fn every_single_character_mutation_is_rejected() {
        let k = key();
        let alphabet: Vec<char> = ALPHABET
            .iter()
            .map(|&b| char::from(b))
            .chain("-_ é".chars())
            .collect();
        for (i, original) in k.char_indices() {
            for &c in alphabet.iter().filter(|&&c| c != original) {
                let mut m = k.clone();
                m.replace_range(i..i + 1, c.encode_utf8(&mut [0; 4]));
                assert!(
                    !is_well_formed(&m),
                    "mutation at {i} to {c:?} accepted: {m}"
                );
            }
        }
    }

    #[test]
    fn bad_prefix_length_and_alphabet_are_rejected() {
        let k = key();
        assert!(!is_well_formed(&k.replacen("sk-ar-", "sk-or-", 1)));
        assert!(!is_well_formed(&k.replacen("sk-ar-", "", 1)));
        assert!(!is_well_formed(&k[..KEY_LENGTH - 1]));
        assert!(!is_well_formed(&format!("{k}0")));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed("sk-ar-"));
        let mut bad = k.clone();
        bad.replace_range(10..11, "+");
        assert!(!is_well_formed(&bad));
    }

    #[test]
    fn checksum_known_answer() {
        // Pin crc32fast (and the encoding) against a bitwise CRC-32/IEEE written here.
        let random = [b'0'; RANDOM_LEN];
        let mut crc: u32 = !0;
        for &b in &random {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        let mut n = u64::from(!crc);
        let mut expect = [0u8; CHECKSUM_LEN];
        for c in expect.iter_mut().rev() {
            *c = ALPHABET[(n % 62) as usize];
            n /= 62;
        }
        assert_eq!(checksum(&random), expect);
        let k = format!(
            "sk-ar-{}{}",
            "0".repeat(32),
            std::str::from_utf8(&expect).unwrap()
        );
        assert!(is_well_formed(&k));
    }

    #[test]
    fn display_prefix_is_twelve_chars_and_ellipsis() {
        let k = key();
        let shown = display_prefix(&k);
        assert_eq!(shown.chars().count(), 13);
        assert!(shown.ends_with('\u{2026}'));
        assert_eq!(&shown[..12], &k[..12]);
    }
}
