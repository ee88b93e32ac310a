//! GitHub's signature on a secret-scanning alert: ECDSA over NIST P-256 with SHA-256, ASN.1
//! DER, base64 in `Github-Public-Key-Signature`, made with the key that
//! `Github-Public-Key-Identifier` names, over the raw request body. Only keys configured in
//! `leaks.github.public_keys` are trusted; they are parsed once, at startup, so a bad key
//! stops keygate with its field named instead of refusing every alert later.

use aws_lc_rs::signature::{ParsedPublicKey, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;

/// Why a configured key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("leaks.github.public_keys[{index}]: {reason}")]
pub struct KeyError {
    index: usize,
    reason: String,
}

/// Why a request's signature is refused. The messages name no part of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the request is not signed (Github-Public-Key-Identifier and Github-Public-Key-Signature)"
    )]
    Missing,
    #[error("the request is signed with a key that is not configured")]
    UnknownKey,
    #[error("the signature is not base64")]
    Encoding,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// The trusted signing keys, by identifier.
#[derive(Debug, Default)]
pub struct SigningKeys {
    keys: Vec<(String, ParsedPublicKey)>,
}

impl SigningKeys {
    /// Parses `(key_identifier, PEM)` pairs; each PEM must hold a P-256 public key
    /// (`-----BEGIN PUBLIC KEY-----`, as GitHub publishes them).
    pub fn from_pem(keys: &[(String, String)]) -> Result<Self, KeyError> {
        let mut parsed = Vec::with_capacity(keys.len());
        for (index, (id, pem)) in keys.iter().enumerate() {
            let fail = |reason: String| KeyError { index, reason };
            let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| fail(format!("not a PEM public key ({e})")))?;
            let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der.as_ref())
                .parse()
                .map_err(|e| fail(format!("not an ECDSA P-256 public key ({e})")))?;
            parsed.push((id.trim().to_string(), key));
        }
        Ok(SigningKeys { keys: parsed })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `signature` (base64 DER) over `body` with the key named `key_id`.
    pub fn verify(
        &self,
        key_id: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Err(SignatureError::Missing);
        };
        let key = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id.trim())
            .map(|(_, key)| key)
            .ok_or(SignatureError::UnknownKey)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| SignatureError::Encoding)?;
        key.verify_sig(body, &raw)
            .map_err(|_| SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    fn pem_of(pair: &EcdsaKeyPair) -> String {
        let der = pair.public_key().as_der().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }

    fn pair() -> EcdsaKeyPair {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap()
    }

    fn sign(pair: &EcdsaKeyPair, body: &[u8]) -> String {
        let sig = pair.sign(&SystemRandom::new(), body).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }

    #[test]
    fn only_a_signature_by_a_configured_key_over_the_exact_body_passes() {
        let (github, other) = (pair(), pair());
        let keys = SigningKeys::from_pem(&[("gh-1".into(), pem_of(&github))]).unwrap();
        let body = br#"[{"token":"x","type":"t","url":"","source":"content"}]"#;
        let good = sign(&github, body);
        assert_eq!(keys.verify(Some("gh-1"), Some(&good), body), Ok(()));
        let mut changed = body.to_vec();
        changed.push(b' ');
        assert_eq!(
            keys.verify(Some("gh-1"), Some(&good), &changed),
            Err(SignatureError::Mismatch)
        );
        let forged = sign(&other, body);
        assert_eq!(
            keys.verify(Some("gh-1"), Some(&forged), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            keys.verify(Some("gh-2"), Some(&good), body),
            Err(SignatureError::UnknownKey)
        );
        assert_eq!(
            keys.verify(Some("gh-1"), None, body),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            keys.verify(None, Some(&good), body),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            keys.verify(Some("gh-1"), Some("***"), body),
            Err(SignatureError::Encoding)
        );
    }

    #[test]
    fn a_key_that_is_not_a_p256_public_key_is_refused_with_its_index() {
        let e = SigningKeys::from_pem(&[("a".into(), "nope".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("public_keys[0]"), "{e}");
    }
}
