//! Key ids: the short, non-secret name of a consumer key, `kid_` followed by 12 lowercase hex
//! digits (the first 6 bytes of the key's SHA-256). Logs, audit lines, notifications, the
//! state file and `keygate revoke key` all name keys this way, and this is the one parser.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const PREFIX: &str = "kid_";

/// A consumer key's id. Carries no secret: 48 bits of a SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 6]);

/// Why a string is not a key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key id is kid_ followed by 12 lowercase hex digits")]
pub struct KeyIdError;

impl KeyId {
    /// The id of the digest whose first bytes are `prefix`.
    pub fn from_digest_prefix(prefix: [u8; 6]) -> Self {
        KeyId(prefix)
    }
}

impl FromStr for KeyId {
    type Err = KeyIdError;

    fn from_str(s: &str) -> Result<Self, KeyIdError> {
        let digits = s.strip_prefix(PREFIX).ok_or(KeyIdError)?;
        let lower_hex = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
        if digits.len() != 12 || !digits.bytes().all(lower_hex) {
            return Err(KeyIdError);
        }
        let mut id = [0u8; 6];
        hex::decode_to_slice(digits, &mut id).map_err(|_| KeyIdError)?;
        Ok(KeyId(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e: KeyIdError| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_lowercase_twelve_digit_ids_and_round_trips() {
        let id: KeyId = "kid_0123456789ab".parse().unwrap();
        assert_eq!(id.to_string(), "kid_0123456789ab");
        for bad in [
            "kid_0123456789AB",
            "kid_0123456789a",
            "kid_zz",
            "0123456789ab",
            "",
        ] {
            assert_eq!(bad.parse::<KeyId>(), Err(KeyIdError), "{bad:?}");
        }
        let yaml = serde_yaml::to_string(&id).unwrap();
        assert_eq!(serde_yaml::from_str::<KeyId>(&yaml).unwrap(), id);
        assert!(serde_yaml::from_str::<KeyId>("kid_XYZ").is_err());
    }
}
