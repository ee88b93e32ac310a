//! `admin.operators` (and `admin.operators_file`): the people and machines allowed to call the
//! admin API, each with its own credential and a role. A credential is a bearer token stored
//! only as its SHA-256 (`token_sha256`, printed by `keygate admin token create`), a client
//! certificate matched by its subject or a subject alternative name, or both.

use serde::Deserialize;

use crate::auth::hash::KeyHash;

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Listings only: consumers, detections, who am I.
    ReadOnly,
    /// Everything: suspend, resume, revoke, unthrottle, refresh, leak reports, listings.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read_only",
            Role::Operator => "operator",
        }
    }

    /// Whether this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Operator || needed == Role::ReadOnly
    }
}

/// One operator.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Who the audit log names (1-64 letters, digits, `-`, `_`, `.`, `@`).
    pub name: String,
    pub role: Role,
    /// `sha256:<64 hex>` of the operator's bearer token.
    #[serde(default)]
    pub token_sha256: Option<KeyHash>,
    /// A client certificate (admin.tls.client_ca_file must be set) that identifies them.
    #[serde(default)]
    pub client_cert: Option<CertMatch>,
}

/// Which certificate field identifies an operator: exactly one of these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertMatch {
    /// The subject's common name (CN).
    #[serde(default)]
    pub subject_cn: Option<String>,
    /// A DNS name in the subject alternative names.
    #[serde(default)]
    pub san_dns: Option<String>,
    /// A URI in the subject alternative names (e.g. a SPIFFE id).
    #[serde(default)]
    pub san_uri: Option<String>,
    /// An email address (rfc822Name) in the subject alternative names.
    #[serde(default)]
    pub san_email: Option<String>,
}

impl CertMatch {
    /// How many fields are set (valid: exactly one).
    pub fn fields_set(&self) -> usize {
        [
            &self.subject_cn,
            &self.san_dns,
            &self.san_uri,
            &self.san_email,
        ]
        .iter()
        .filter(|f| f.as_deref().is_some_and(|v| !v.is_empty()))
        .count()
    }
}

/// The content of `admin.operators_file`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorsFile {
    #[serde(default)]
    pub operators: Vec<OperatorConfig>,
}

/// The name the legacy shared token (`admin.token_file` / `KEYGATE_ADMIN_TOKEN`) is audited as.
pub const SHARED_TOKEN_OPERATOR: &str = "shared-token";

/// Operator names: like consumer names, plus `@` so an email address can be one.
pub fn valid_operator_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Checks a list of operators; the error is `(index, field, message)`.
pub fn check_operators(operators: &[OperatorConfig]) -> Result<(), (usize, &'static str, String)> {
    let mut names = std::collections::HashSet::new();
    for (i, op) in operators.iter().enumerate() {
        if !valid_operator_name(&op.name) {
            return Err((
                i,
                "name",
                "must be 1-64 characters of letters, digits, '-', '_', '.' or '@'".into(),
            ));
        }
        if op.name == SHARED_TOKEN_OPERATOR {
            return Err((
                i,
                "name",
                format!("{SHARED_TOKEN_OPERATOR:?} is the legacy shared token's name"),
            ));
        }
        if !names.insert(op.name.as_str()) {
            return Err((i, "name", format!("{:?} is listed twice", op.name)));
        }
        if op.token_sha256.is_none() && op.client_cert.is_none() {
            return Err((
                i,
                "token_sha256",
                "give the operator a token_sha256, a client_cert, or both".into(),
            ));
        }
        if let Some(cert) = &op.client_cert {
            if cert.fields_set() != 1 {
                return Err((
                    i,
                    "client_cert",
                    "set exactly one of subject_cn, san_dns, san_uri, san_email".into(),
                ));
            }
        }
    }
    let mut tokens = std::collections::HashSet::new();
    let mut certs = std::collections::HashSet::new();
    for (i, op) in operators.iter().enumerate() {
        if let Some(t) = &op.token_sha256 {
            if !tokens.insert(t.to_string()) {
                return Err((i, "token_sha256", "the same token is given twice".into()));
            }
        }
        if let Some(c) = &op.client_cert {
            let key = format!("{c:?}");
            if !certs.insert(key) {
                return Err((
                    i,
                    "client_cert",
                    "the same certificate match is given twice".into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<OperatorConfig> {
        serde_yaml::from_str::<OperatorsFile>(yaml)
            .unwrap()
            .operators
    }

    #[test]
    fn roles_allow_what_they_say() {
        assert!(Role::Operator.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::ReadOnly));
        assert!(Role::ReadOnly.allows(Role::ReadOnly));
        assert!(!Role::ReadOnly.allows(Role::Operator));
    }

    #[test]
    fn operators_need_a_credential_a_unique_name_and_one_cert_field() {
        let hash = KeyHash::of("t");
        let ok = parse(&format!(
            "operators:\n- {{name: alice@example.com, role: operator, token_sha256: '{hash}'}}\n- {{name: bob, role: read_only, client_cert: {{subject_cn: bob}}}}\n"
        ));
        assert_eq!(check_operators(&ok), Ok(()));
        let none = parse("operators:\n- {name: carol, role: operator}\n");
        assert_eq!(check_operators(&none).unwrap_err().1, "token_sha256");
        let two = parse(
            "operators:\n- {name: d, role: operator, client_cert: {subject_cn: d, san_dns: d.example}}\n",
        );
        assert_eq!(check_operators(&two).unwrap_err().1, "client_cert");
        let twice = parse(&format!(
            "operators:\n- {{name: e, role: operator, token_sha256: '{hash}'}}\n- {{name: e, role: read_only, client_cert: {{subject_cn: e}}}}\n"
        ));
        assert_eq!(check_operators(&twice).unwrap_err().0, 1);
        let shared = parse(&format!(
            "operators:\n- {{name: shared-token, role: operator, token_sha256: '{hash}'}}\n"
        ));
        assert!(check_operators(&shared).is_err());
        assert!(serde_yaml::from_str::<OperatorsFile>(
            "operators:\n- {name: f, role: admin, token_sha256: x}\n"
        )
        .is_err());
    }
}
