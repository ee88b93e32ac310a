//! Where consumer keys are hashed. Only SHA-256 digests are ever stored or compared.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::key_id::KeyId;

const HASH_PREFIX: &str = "sha256:";

/// The SHA-256 digest of a consumer key, as stored in config and the registry.
#[derive(Clone, Copy, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Hashes the full key text.
    pub fn of(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// The digest's first 16 bytes: what the registry's key table indexes by.
    pub fn prefix(&self) -> [u8; 16] {
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&self.0[..16]);
        prefix
    }

    /// A short, non-secret identifier for logs, audit lines and `revoke key`.
    pub fn key_id(&self) -> KeyId {
        let mut id = [0u8; 6];
        id.copy_from_slice(&self.0[..6]);
        KeyId::from_digest_prefix(id)
    }
}

/// Constant-time, so a lookup that ends in a comparison leaks nothing about the stored digest.
impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HASH_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.key_id())
    }
}

/// Why a stored hash string is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashFormatError {
    #[error("expected \"sha256:\" followed by 64 hex digits")]
    Format,
}

impl FromStr for KeyHash {
    type Err = HashFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s.strip_prefix(HASH_PREFIX).ok_or(HashFormatError::Format)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| HashFormatError::Format)?;
        Ok(KeyHash(out))
    }
}

impl<'de> serde::Deserialize<'de> for KeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for KeyHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_through_text() {
        let h = KeyHash::of("kg_test_abc");
        let text = h.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
        assert_eq!(text.parse::<KeyHash>().unwrap(), h);
    }

    #[test]
    fn hash_matches_known_sha256_vector() {
        assert_eq!(
            KeyHash::of("abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_hashes_are_rejected() {
        for bad in [
            "",
            "sha256:",
            "md5:00",
            "sha256:zz",
            &format!("sha256:{}", "a".repeat(63)),
        ] {
            assert!(bad.parse::<KeyHash>().is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_and_key_id_do_not_reveal_the_full_digest() {
        let h = KeyHash::of("kg_live_x");
        assert_eq!(h.key_id().to_string().len(), 4 + 12);
        assert!(!format!("{h:?}").contains(&hex::encode(h.0)));
    }

    #[test]
    fn equality_sees_a_difference_in_any_bit_of_the_digest() {
        let h = KeyHash::of("kg_live_x");
        assert_eq!(h, KeyHash(h.0));
        for byte in 0..32 {
            for bit in 0..8 {
                let mut other = h.0;
                other[byte] ^= 1 << bit;
                assert_ne!(h, KeyHash(other), "byte {byte}, bit {bit}");
            }
        }
    }
}
