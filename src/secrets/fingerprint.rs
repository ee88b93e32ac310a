//! Credential fingerprints: the short, non-secret name of a provider key, `fp_` followed by 12
//! lowercase hex digits (the first 6 bytes of a domain-separated SHA-256 of the key). The
//! inventory, the rotation record, the state file, audit lines and notifications name
//! provider keys this way; the key itself never leaves the process that holds it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "fp_";
/// Keeps a fingerprint from ever equalling a consumer key id of the same text.
const DOMAIN: &[u8] = b"keygate provider credential\0";

/// A provider key's fingerprint. Carries no secret: 48 bits of a SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 6]);

/// Why a string is not a fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a credential fingerprint is fp_ followed by 12 lowercase hex digits")]
pub struct FingerprintError;

impl Fingerprint {
    /// The fingerprint of a provider key (surrounding whitespace ignored, as the sources do).
    pub fn of(key: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(DOMAIN)
            .chain_update(key.trim().as_bytes())
            .finalize();
        let mut id = [0u8; 6];
        id.copy_from_slice(&digest[..6]);
        Fingerprint(id)
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, FingerprintError> {
        let digits = s.strip_prefix(PREFIX).ok_or(FingerprintError)?;
        let lower_hex = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
        if digits.len() != 12 || !digits.bytes().all(lower_hex) {
            return Err(FingerprintError);
        }
        let mut id = [0u8; 6];
        hex::decode_to_slice(digits, &mut id).map_err(|_| FingerprintError)?;
        Ok(Fingerprint(id))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_names_a_key_without_showing_it() {
        let key = "sk-proj-abcdef0123456789";
        let fp = Fingerprint::of(key);
        let text = fp.to_string();
        assert!(text.starts_with("fp_") && text.len() == 15, "{text}");
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(Fingerprint::of(&format!(" {key}\n")), fp);
        assert_ne!(Fingerprint::of("sk-proj-abcdef0123456780"), fp);
        for window in key.as_bytes().windows(6) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(!text.contains(piece), "{text} shows {piece}");
        }
    }

    #[test]
    fn only_the_canonical_form_parses() {
        for bad in [
            "fp_ABCDEF012345",
            "fp_0123",
            "kid_0123456789ab",
            "0123456789ab",
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }
}
