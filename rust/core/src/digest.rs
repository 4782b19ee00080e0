//! HMAC-SHA256 of a key under the server secret: the only form a key is stored in.

use hmac::{Hmac, Mac};
use sha2::digest::generic_array::GenericArray;
use sha2::Sha256;

use crate::error::{Error, Result};

pub type Digest = [u8; 32];
pub const MIN_SECRET_LEN: usize = 32;

const BLOCK: usize = 64;
/// The longest message that fits one SHA-256 block with its padding (0x80 and
/// the 8-byte length): every well-formed key (44 bytes) does.
const ONE_BLOCK_MAX: usize = BLOCK - 9;
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Holds the SHA-256 states after the inner and outer HMAC pads (RFC 2104), so
/// a digest of a key costs exactly two compressions — the minimum for HMAC — and
/// no hashing state is copied or buffered. Longer messages (never a valid key)
/// go through the `hmac` crate, which the tests check this against.
#[derive(Clone)]
pub struct Digester {
    inner: [u32; 8],
    outer: [u32; 8],
    keyed: Hmac<Sha256>,
}

impl Digester {
    pub fn new(secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::invalid(format!(
                "the server secret must be at least {MIN_SECRET_LEN} bytes, got {}",
                secret.len()
            )));
        }
        let keyed = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
        // A key longer than a block is replaced by its hash (RFC 2104), then zero-padded.
        let mut key = [0u8; BLOCK];
        if secret.len() > BLOCK {
            use sha2::Digest as _;
            key[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        let pad = |byte: u8| {
            let mut state = IV;
            let block = key.map(|k| k ^ byte);
            sha2::compress256(&mut state, &[GenericArray::from(block)]);
            state
        };
        Ok(Self {
            inner: pad(0x36),
            outer: pad(0x5c),
            keyed,
        })
    }

    pub fn digest(&self, raw: &str) -> Digest {
        let msg = raw.as_bytes();
        if msg.len() > ONE_BLOCK_MAX {
            let mut mac = self.keyed.clone();
            mac.update(msg);
            return mac.finalize().into_bytes().into();
        }
        // The inner hash continues from the padded key (one block already
        // hashed), so the message's length in the padding counts that block.
        let inner = finish_one_block(self.inner, msg);
        finish_one_block(self.outer, &inner)
    }
}

/// Finishes a SHA-256 whose first block (the padded key) is already in `state`,
/// with `msg` (at most `ONE_BLOCK_MAX` bytes) as the last block.
#[inline]
fn finish_one_block(mut state: [u32; 8], msg: &[u8]) -> Digest {
    let mut block = [0u8; BLOCK];
    block[..msg.len()].copy_from_slice(msg);
    block[msg.len()] = 0x80;
    let bits = ((BLOCK + msg.len()) as u64) * 8;
    block[BLOCK - 8..].copy_from_slice(&bits.to_be_bytes());
    sha2::compress256(&mut state, &[GenericArray::from(block)]);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 4231 test case 6 (131-byte key of 0xaa, hashed first because it is longer than a block).
    #[test]
    fn rfc4231_case_6() {
        let d = Digester::new(&[0xaa; 131]).unwrap();
        assert_eq!(
            hex(&d.digest("Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// A 32-byte secret and a key-shaped message; expected value from Python's
    /// `hmac.new(bytes(range(32)), b"sk-ar-" + b"A" * 38, "sha256").hexdigest()`.
    #[test]
    fn key_shaped_known_answer() {
        let secret: Vec<u8> = (0u8..32).collect();
        let d = Digester::new(&secret).unwrap();
        let raw = format!("sk-ar-{}", "A".repeat(38));
        assert_eq!(hex(&d.digest(&raw)), KEY_SHAPED_EXPECTED);
        // Cloning the pre-keyed state must not leak state between digests.
        assert_eq!(d.digest(&raw), d.digest(&raw));
    }

    const KEY_SHAPED_EXPECTED: &str =
        "d62772497e7c7e76efb4cdee0b13a57d1fd9dfc8f4550e98124c481c7e235c16";

    /// The two-compression path agrees with the `hmac` crate for every message
    /// length around the one-block limit and for secrets shorter and longer than
    /// a block.
    #[test]
    fn one_block_path_matches_the_hmac_crate() {
        for secret_len in [32, 63, 64, 65, 131] {
            let secret: Vec<u8> = (0..secret_len).map(|i| (i * 7 + 3) as u8).collect();
            let d = Digester::new(&secret).unwrap();
            for len in 0..=BLOCK + 10 {
                let msg: String = (0..len)
                    .map(|i| char::from(b'A' + (i % 26) as u8))
                    .collect();
                let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
                mac.update(msg.as_bytes());
                let expected: Digest = mac.finalize().into_bytes().into();
                assert_eq!(
                    d.digest(&msg),
                    expected,
                    "secret {secret_len} bytes, message {len}"
                );
            }
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Digester::new(&[0; 31]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Digester::new(&[0; 32]).is_ok());
    }
}
