//! How an allowed request is rewritten for the upstream: headers removed and set, where a set
//! value may be a secret that `Debug` never prints.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

/// A header value that may be a secret; its `Debug` never prints a secret.
#[derive(Clone)]
pub enum HeaderValue {
    Plain(String),
    /// `prefix` + the secret, e.g. `Bearer sk-…`.
    Secret {
        prefix: String,
        secret: Arc<SecretString>,
    },
}

impl HeaderValue {
    /// The bytes to put on the wire. Only the Envoy edge calls this.
    pub fn to_wire(&self) -> Vec<u8> {
        match self {
            HeaderValue::Plain(v) => v.as_bytes().to_vec(),
            HeaderValue::Secret { prefix, secret } => {
                let mut out = Vec::with_capacity(prefix.len() + secret.expose_secret().len());
                out.extend_from_slice(prefix.as_bytes());
                out.extend_from_slice(secret.expose_secret().as_bytes());
                out
            }
        }
    }
}

impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderValue::Plain(v) => write!(f, "{v:?}"),
            HeaderValue::Secret { .. } => f.write_str("[redacted]"),
        }
    }
}

/// Headers to remove, then headers to set (each replacing any existing value).
#[derive(Debug, Clone, Default)]
pub struct HeaderMutation {
    pub remove: Vec<String>,
    pub set: Vec<(String, HeaderValue)>,
}
