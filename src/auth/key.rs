//! The consumer key format: `kg_<env>_<random>_<checksum>`.
//!
//! The random part carries 178 bits from the OS RNG in base62; the checksum is the CRC32 of
//! everything before it, so typos and garbage are rejected before any lookup and secret
//! scanners can match the format with almost no false positives.

use std::fmt;

use rand::rngs::OsRng;
use rand::TryRngCore;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

const PREFIX: &str = "kg";
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Which environment a key was minted for; it is part of the key text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyEnv {
    Live,
    Test,
}

impl KeyEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyEnv::Live => "live",
            KeyEnv::Test => "test",
        }
    }
}

impl fmt::Display for KeyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a presented string is not a well-formed consumer key. Never carries the key itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key does not have the form kg_<env>_<random>_<checksum>")]
    Shape,
    #[error("the key environment is neither live nor test")]
    Env,
    #[error("the key has the wrong length")]
    Length,
    #[error("the key contains characters outside base62")]
    Alphabet,
    #[error("the key checksum does not match; the key is mistyped or truncated")]
    Checksum,
}

/// A syntactically valid consumer key, checksum verified. Borrowed from the request.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    pub env: KeyEnv,
    text: &'a str,
}

impl<'a> ParsedKey<'a> {
    /// The full key text, for hashing. Keep it out of logs.
    pub fn as_str(&self) -> &'a str {
        self.text
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// Validates shape, alphabet and checksum without allocating.
pub fn parse(text: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    let mut parts = text.split('_');
    let (Some(prefix), Some(env), Some(random), Some(checksum), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(KeyFormatError::Shape);
    };
    if prefix != PREFIX {
        return Err(KeyFormatError::Shape);
    }
    let env = match env {
        "live" => KeyEnv::Live,
        "test" => KeyEnv::Test,
        _ => return Err(KeyFormatError::Env),
    };
    if random.len() != RANDOM_LEN || checksum.len() != CHECKSUM_LEN {
        return Err(KeyFormatError::Length);
    }
    if !random
        .bytes()
        .chain(checksum.bytes())
        .all(|b| b.is_ascii_alphanumeric())
    {
        return Err(KeyFormatError::Alphabet);
    }
    let body = &text[..text.len() - CHECKSUM_LEN - 1];
    let expected = checksum_of(body);
    if !bool::from(expected.as_slice().ct_eq(checksum.as_bytes())) {
        return Err(KeyFormatError::Checksum);
    }
    Ok(ParsedKey { env, text })
}

/// Mints a new key from the OS RNG. The caller shows it once and stores only its hash.
pub fn generate(env: KeyEnv) -> Result<SecretString, rand::rand_core::OsError> {
    let mut random = String::with_capacity(RANDOM_LEN);
    let mut buf = [0u8; 64];
    while random.len() < RANDOM_LEN {
        OsRng.try_fill_bytes(&mut buf)?;
        // Rejection sampling keeps every base62 digit uniform: 248 = 4 * 62.
        for b in buf.iter().filter(|b| **b < 248) {
            if random.len() == RANDOM_LEN {
                break;
            }
            random.push(BASE62[usize::from(*b % 62)] as char);
        }
    }
    let body = format!("{PREFIX}_{env}_{random}");
    let checksum = checksum_of(&body);
    let mut key = body;
    key.push('_');
    key.extend(checksum.iter().map(|b| *b as char));
    Ok(SecretString::from(key))
}

fn checksum_of(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// True when `text` looks like it was meant to be a keygate key (for choosing the error message).
pub fn looks_like_key(text: &str) -> bool {
    text.starts_with("kg_")
}

/// Exposes a generated key for printing exactly once.
pub fn reveal(key: &SecretString) -> &str {
    key.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_and_carry_their_env() {
        for env in [KeyEnv::Live, KeyEnv::Test] {
            let key = generate(env).unwrap();
            let parsed = parse(reveal(&key)).unwrap();
            assert_eq!(parsed.env, env);
            assert!(reveal(&key).starts_with(&format!("kg_{env}_")));
            assert_eq!(reveal(&key).len(), 3 + 5 + RANDOM_LEN + 1 + CHECKSUM_LEN);
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = generate(KeyEnv::Live).unwrap();
        let b = generate(KeyEnv::Live).unwrap();
        assert_ne!(reveal(&a), reveal(&b));
    }

    #[test]
    fn rejects_malformed_keys_with_precise_reasons() {
        let key = generate(KeyEnv::Live).unwrap();
        let good = reveal(&key);
        assert_eq!(parse("").unwrap_err(), KeyFormatError::Shape);
        assert_eq!(parse("sk-abc").unwrap_err(), KeyFormatError::Shape);
        assert_eq!(
            parse(&good.replacen("kg_", "xx_", 1)).unwrap_err(),
            KeyFormatError::Shape
        );
        assert_eq!(
            parse(&good.replacen("_live_", "_prod_", 1)).unwrap_err(),
            KeyFormatError::Env
        );
        assert_eq!(
            parse(&good[..good.len() - 1]).unwrap_err(),
            KeyFormatError::Length
        );
        assert_eq!(
            parse(&format!("{good}_x")).unwrap_err(),
            KeyFormatError::Shape
        );
        let mut bad_alpha = good.to_string();
        bad_alpha.replace_range(10..11, "-");
        assert_eq!(parse(&bad_alpha).unwrap_err(), KeyFormatError::Alphabet);
    }

    proptest! {
        #[test]
        fn any_single_character_typo_is_caught(pos in 8usize..45, replacement in 0usize..62) {
            let key = generate(KeyEnv::Test).unwrap();
            let good = reveal(&key).to_string();
            let bytes = good.as_bytes();
            prop_assume!(bytes[pos] != b'_');
            let new = BASE62[replacement];
            prop_assume!(bytes[pos] != new);
            let mut typo = bytes.to_vec();
            typo[pos] = new;
            let typo = String::from_utf8(typo).unwrap();
            prop_assert_eq!(parse(&typo).unwrap_err(), KeyFormatError::Checksum);
        }

        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = parse(&s);
        }
    }

    #[test]
    fn debug_of_a_parsed_key_never_shows_the_key() {
        for env in [KeyEnv::Live, KeyEnv::Test] {
            let key = generate(env).unwrap();
            let text = reveal(&key);
            let parsed = parse(text).unwrap();
            let secret = &text[text.len() - CHECKSUM_LEN - 1 - RANDOM_LEN..];
            for shown in [format!("{parsed:?}"), format!("{parsed:#?}")] {
                assert!(shown.starts_with("ParsedKey"), "{shown}");
                assert!(shown.contains(&format!("{env:?}")), "{shown}");
                for part in secret.as_bytes().windows(6) {
                    let part = std::str::from_utf8(part).unwrap();
                    assert!(!shown.contains(part), "{shown} shows {part} of the key");
                }
            }
        }
    }
}
