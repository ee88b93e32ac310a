//! Who is calling the admin API, from what the caller proved: the bearer token in
//! `authorization`, and the client certificate rustls verified against
//! `admin.tls.client_ca_file`. Nothing the client merely states (such as an actor header) is
//! taken into account.
//!
//! A token, when given, must belong to an operator; a certificate, when it maps to one, must
//! agree with the token's operator. A caller with neither, or whose proofs disagree, is
//! refused: the admin API fails closed.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::operators::{CertNames, Identity, Operators};

/// Why a caller was refused, and who they are as far as that is known (for the audit line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    /// The operator a valid proof named, when another proof failed.
    pub known_as: Option<String>,
}

/// The names in a client certificate's subject CN and subject alternative names. An
/// unparsable certificate yields none (rustls has already verified the chain).
pub fn cert_names(der: &CertificateDer<'_>) -> CertNames {
    let mut names = CertNames::default();
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return names;
    };
    for cn in cert.subject().iter_common_name() {
        if let Ok(text) = cn.as_str() {
            names.common_names.push(text.to_string());
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.dns.push((*d).to_string()),
                GeneralName::URI(u) => names.uris.push((*u).to_string()),
                GeneralName::RFC822Name(e) => names.emails.push((*e).to_string()),
                _ => {}
            }
        }
    }
    names
}

/// The caller's identity from its bearer token (`None`: no `authorization` header) and its
/// verified client certificate, if any.
pub fn identify(
    operators: &Operators,
    bearer: Option<&str>,
    peer_cert: Option<&CertificateDer<'_>>,
) -> Result<Identity, Refused> {
    let by_cert = peer_cert.and_then(|c| operators.by_cert(&cert_names(c)));
    let cert_name = by_cert.as_ref().map(|i| i.name.clone());
    match (bearer, by_cert) {
        (Some(token), cert) => {
            let Some(by_token) = operators.by_token(token) else {
                return Err(Refused {
                    reason: "unauthenticated",
                    known_as: cert_name,
                });
            };
            match cert {
                Some(c) if c.name != by_token.name => Err(Refused {
                    reason: "token and certificate name different operators",
                    known_as: Some(c.name),
                }),
                _ => Ok(by_token),
            }
        }
        (None, Some(cert)) => Ok(cert),
        (None, None) => Err(Refused {
            reason: "unauthenticated",
            known_as: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::KeyHash;
    use crate::config::{AdminConfig, Role};

    fn operators() -> Operators {
        let alice = KeyHash::of("alice-token");
        let config: AdminConfig = serde_yaml::from_str(&format!(
            "operators:\n- {{name: alice, role: operator, token_sha256: '{alice}'}}\n- {{name: bob, role: read_only, client_cert: {{subject_cn: bob}}}}\n"
        ))
        .unwrap();
        Operators::load(&config, None).unwrap()
    }

    #[test]
    fn a_token_names_its_operator_and_a_wrong_one_is_refused() {
        let ops = operators();
        assert_eq!(
            identify(&ops, Some("alice-token"), None).unwrap().name,
            "alice"
        );
        let refused = identify(&ops, Some("guess"), None).unwrap_err();
        assert_eq!(refused.reason, "unauthenticated");
        assert_eq!(refused.known_as, None);
        assert_eq!(
            identify(&ops, None, None).unwrap_err().reason,
            "unauthenticated"
        );
        assert_eq!(ops.by_token("alice-token").unwrap().role, Role::Operator);
    }

    #[test]
    fn an_unparsable_certificate_carries_no_names() {
        let der = CertificateDer::from(vec![0u8, 1, 2]);
        assert_eq!(cert_names(&der), CertNames::default());
        assert!(identify(&operators(), None, Some(&der)).is_err());
    }
}
