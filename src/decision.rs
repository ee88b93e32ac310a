//! What the gate answers: allow with header mutations, or deny with a provider-shaped error.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::auth::Consumer;
use crate::denial::Denial;

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

/// An allowed request: who it is, and how to rewrite it for the upstream.
#[derive(Debug, Clone)]
pub struct Allow {
    pub consumer: Arc<Consumer>,
    pub mutation: HeaderMutation,
}

#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Allow),
    Deny(Denial),
}

impl Decision {
    /// The `outcome` label of `keygate_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allowed",
            Decision::Deny(d) => d.reason.outcome(),
        }
    }
}
