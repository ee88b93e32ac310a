//! Who may call the admin API: the operators of `admin.operators` and `admin.operators_file`
//! (each with a token stored as its SHA-256, or a client certificate, and a role), plus the
//! legacy shared token (`admin.token_file` / `KEYGATE_ADMIN_TOKEN`), which stays working as an
//! operator named `shared-token` with the operator role. Re-read on every reload, so removing
//! an operator takes effect without a restart.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::auth::KeyHash;
use crate::config::operators::{
    check_operators, CertMatch, OperatorConfig, OperatorsFile, SHARED_TOKEN_OPERATOR,
};
use crate::config::{AdminConfig, Config, Role};

/// The legacy shared admin token, from `admin.token_file` or the environment variable
/// `admin.token_env`: the operator `shared-token`. None when unset or empty.
pub fn shared_token(config: &Config) -> Option<SecretString> {
    let text = match &config.admin.token_file {
        Some(path) => std::fs::read_to_string(path).ok()?,
        None => std::env::var(&config.admin.token_env).ok()?,
    };
    let text = text.trim();
    (!text.is_empty()).then(|| SecretString::from(text.to_string()))
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Token,
    Certificate,
    SharedToken,
}

impl Proof {
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Token => "token",
            Proof::Certificate => "certificate",
            Proof::SharedToken => "shared_token",
        }
    }
}

/// An authenticated caller: the name the audit log records, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    pub proof: Proof,
}

/// The names a client certificate carries (from [`super::identity`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    pub common_names: Vec<String>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
}

impl CertNames {
    fn matches(&self, m: &CertMatch) -> bool {
        let has = |list: &[String], want: &Option<String>| {
            want.as_deref()
                .is_some_and(|w| !w.is_empty() && list.iter().any(|v| v == w))
        };
        has(&self.common_names, &m.subject_cn)
            || has(&self.dns, &m.san_dns)
            || has(&self.uris, &m.san_uri)
            || has(&self.emails, &m.san_email)
    }
}

/// Why the operators could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum OperatorsError {
    #[error("admin.operators_file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("admin.operators_file {path}: operators[{index}].{field}: {message}")]
    Invalid {
        path: String,
        index: usize,
        field: &'static str,
        message: String,
    },
    #[error("admin.operators_file {path}: {name:?} is also in admin.operators")]
    Duplicate { path: String, name: String },
}

/// The operators in force.
#[derive(Default)]
pub struct Operators {
    named: Vec<OperatorConfig>,
    shared: Option<SecretString>,
}

impl std::fmt::Debug for Operators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.named.iter().map(|o| o.name.as_str()).collect();
        f.debug_struct("Operators")
            .field("named", &names)
            .field("shared_token", &self.shared.is_some())
            .finish()
    }
}

impl Operators {
    /// The operators of `admin` (inline and from `operators_file`) and the shared token.
    pub fn load(admin: &AdminConfig, shared: Option<SecretString>) -> Result<Self, OperatorsError> {
        let mut named = admin.operators.clone();
        if let Some(path) = &admin.operators_file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| OperatorsError::File {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            let file: OperatorsFile =
                serde_yaml::from_str(&text).map_err(|e| OperatorsError::File {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
            check_operators(&file.operators).map_err(|(index, field, message)| {
                OperatorsError::Invalid {
                    path: shown.clone(),
                    index,
                    field,
                    message,
                }
            })?;
            for op in file.operators {
                if named.iter().any(|o| o.name == op.name) {
                    return Err(OperatorsError::Duplicate {
                        path: shown,
                        name: op.name,
                    });
                }
                named.push(op);
            }
        }
        Ok(Operators { named, shared })
    }

    /// No way in: the admin API stays off (at startup) or refuses everyone (after a reload).
    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && self.shared.is_none()
    }

    pub fn len(&self) -> usize {
        self.named.len() + usize::from(self.shared.is_some())
    }

    /// Whose token this is. Every stored hash and the shared token are compared in constant
    /// time, all of them whatever matches, so the time taken names no one.
    pub fn by_token(&self, presented: &str) -> Option<Identity> {
        if presented.is_empty() {
            return None;
        }
        let hash = KeyHash::of(presented);
        let mut found = None;
        for op in &self.named {
            if op.token_sha256.is_some_and(|stored| stored == hash) && found.is_none() {
                found = Some(Identity {
                    name: op.name.clone(),
                    role: op.role,
                    proof: Proof::Token,
                });
            }
        }
        if let Some(shared) = &self.shared {
            let same: bool = presented
                .as_bytes()
                .ct_eq(shared.expose_secret().as_bytes())
                .into();
            if same && found.is_none() {
                found = Some(Identity {
                    name: SHARED_TOKEN_OPERATOR.into(),
                    role: Role::Operator,
                    proof: Proof::SharedToken,
                });
            }
        }
        found
    }

    /// Whose certificate this is (the first operator whose match it carries).
    pub fn by_cert(&self, names: &CertNames) -> Option<Identity> {
        self.named
            .iter()
            .find(|op| op.client_cert.as_ref().is_some_and(|m| names.matches(m)))
            .map(|op| Identity {
                name: op.name.clone(),
                role: op.role,
                proof: Proof::Certificate,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(yaml: &str) -> AdminConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn tokens_and_certificates_name_their_operator_and_role() {
        let alice = KeyHash::of("alice-token");
        let config = admin(&format!(
            "operators:\n- {{name: alice, role: operator, token_sha256: '{alice}'}}\n- {{name: bob, role: read_only, client_cert: {{san_uri: 'spiffe://corp/bob'}}}}\n"
        ));
        let ops = Operators::load(&config, Some(SecretString::from("legacy"))).unwrap();
        assert_eq!(ops.len(), 3);
        let a = ops.by_token("alice-token").unwrap();
        assert_eq!(
            (a.name.as_str(), a.role, a.proof),
            ("alice", Role::Operator, Proof::Token)
        );
        let s = ops.by_token("legacy").unwrap();
        assert_eq!(
            (s.name.as_str(), s.role),
            (SHARED_TOKEN_OPERATOR, Role::Operator)
        );
        assert_eq!(ops.by_token("alice-token "), None);
        assert_eq!(ops.by_token(""), None);
        let certs = CertNames {
            uris: vec!["spiffe://corp/bob".into()],
            ..CertNames::default()
        };
        let b = ops.by_cert(&certs).unwrap();
        assert_eq!((b.name.as_str(), b.role), ("bob", Role::ReadOnly));
        let stranger = CertNames {
            common_names: vec!["bob".into()],
            ..CertNames::default()
        };
        assert_eq!(ops.by_cert(&stranger), None);
        assert!(Operators::load(&admin("{}"), None).unwrap().is_empty());
    }

    #[test]
    fn an_operators_file_adds_operators_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operators.yaml");
        let carol = KeyHash::of("carol-token");
        std::fs::write(
            &path,
            format!("operators:\n- {{name: carol, role: read_only, token_sha256: '{carol}'}}\n"),
        )
        .unwrap();
        let mut config = admin("{}");
        config.operators_file = Some(path.clone());
        let ops = Operators::load(&config, None).unwrap();
        assert_eq!(ops.by_token("carol-token").unwrap().role, Role::ReadOnly);
        std::fs::write(&path, "operators:\n- {name: dave, role: operator}\n").unwrap();
        let e = Operators::load(&config, None).unwrap_err().to_string();
        assert!(e.contains("operators[0].token_sha256"), "{e}");
    }
}
