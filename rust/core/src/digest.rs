//! HMAC-SHA256 of a key under the server secret: the only form a key is stored in.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

pub type Digest = [u8; 32];
pub const MIN_SECRET_LEN: usize = 32;

/// Keeps an HMAC already keyed with the secret (inner and outer pads absorbed)
/// and clones it per digest, so each digest costs two SHA-256 blocks, not four.
#[derive(Clone)]
pub struct Digester {
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
        Ok(Self { keyed })
    }

    pub fn digest(&self, raw: &str) -> Digest {
        let mut mac = self.keyed.clone();
        mac.update(raw.as_bytes());
        mac.finalize().into_bytes().into()
    }
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

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Digester::new(&[0; 31]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Digester::new(&[0; 32]).is_ok());
    }
}
