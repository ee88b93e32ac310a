//! A gitleaks JSON report (`gitleaks … --report-format json`): a list of findings with
//! `Secret`, `Match`, `File`, `StartLine`, `Commit`, `Link`, `RuleID`, … Every well-formed
//! keygate key in a finding's `Secret` (or, when gitleaks redacted or trimmed it, its `Match`)
//! becomes a [`Leak`] at the finding's location. Other findings are counted and skipped.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::report::{find_keys, leak_of, Leak, LeakLocation, Scanner};

/// Why a report could not be read (never quoting it: it holds secrets).
#[derive(Debug, thiserror::Error)]
#[error("not a gitleaks JSON report (expected a list of findings): {0}")]
pub struct ReportError(&'static str);

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Finding {
    #[serde(default)]
    secret: Option<SecretString>,
    #[serde(default, rename = "Match")]
    matched: Option<SecretString>,
    #[serde(default)]
    file: String,
    #[serde(default)]
    start_line: u32,
    #[serde(default)]
    commit: String,
    #[serde(default)]
    link: String,
    #[serde(default, rename = "RuleID")]
    rule_id: String,
}

/// What a report held.
#[derive(Debug, Default)]
pub struct ReportLeaks {
    pub leaks: Vec<Leak>,
    /// Findings without a well-formed keygate key (other secrets, redacted reports).
    pub skipped: usize,
    pub findings: usize,
}

/// The keygate keys in a gitleaks report; `repository` names the scanned repository (gitleaks
/// does not), else it is taken from a finding's GitHub `Link` when there is one.
pub fn read_report(json: &[u8], repository: Option<&str>) -> Result<ReportLeaks, ReportError> {
    let findings: Vec<Finding> = serde_json::from_slice(json).map_err(|e| {
        ReportError(match e.classify() {
            serde_json::error::Category::Data => "a finding has the wrong shape",
            serde_json::error::Category::Eof => "truncated JSON",
            _ => "invalid JSON",
        })
    })?;
    let mut out = ReportLeaks {
        findings: findings.len(),
        ..ReportLeaks::default()
    };
    for f in findings {
        let mut keys: Vec<String> = Vec::new();
        for text in [&f.secret, &f.matched].into_iter().flatten() {
            for k in find_keys(text.expose_secret()) {
                if !keys.iter().any(|seen| seen == k) {
                    keys.push(k.to_string());
                }
            }
        }
        if keys.is_empty() {
            out.skipped += 1;
            continue;
        }
        let from_link = super::github::location_of(&f.link, "");
        let location = LeakLocation {
            repository: repository.map(str::to_string).or(from_link.repository),
            file: Some(f.file).filter(|s| !s.is_empty()),
            line: Some(f.start_line),
            commit: Some(f.commit).filter(|s| !s.is_empty()),
            url: Some(f.link).filter(|s| !s.is_empty()),
            kind: Some(format!("gitleaks:{}", f.rule_id)).filter(|_| !f.rule_id.is_empty()),
        };
        for k in keys {
            out.leaks
                .extend(leak_of(&k, Scanner::Gitleaks, location.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::key::{generate, reveal, KeyEnv};
    use crate::auth::KeyHash;

    #[test]
    fn keygate_keys_in_a_report_become_leaks_at_their_location() {
        let a = generate(KeyEnv::Live).unwrap();
        let b = generate(KeyEnv::Test).unwrap();
        let (a, b) = (reveal(&a), reveal(&b));
        let report = serde_json::json!([
            {"RuleID": "keygate-consumer-key", "Secret": a, "Match": format!("KEY={a}"),
             "File": "deploy/.env", "StartLine": 3, "Commit": "89abcdef0123456789abcdef0123456789abcdef",
             "Link": "https://github.com/octo/app/blob/89abcdef0123456789abcdef0123456789abcdef/deploy/.env#L3",
             "Author": "someone", "Email": "someone@example.com", "Entropy": 4.5, "Tags": []},
            {"RuleID": "generic-api-key", "Secret": "REDACTED", "Match": format!("token = {b}"), "File": "app.py", "StartLine": 9},
            {"RuleID": "aws-access-token", "Secret": "AKIAIOSFODNN7EXAMPLE", "File": "x", "StartLine": 1}
        ]);
        let read = read_report(report.to_string().as_bytes(), None).unwrap();
        assert_eq!((read.findings, read.skipped, read.leaks.len()), (3, 1, 2));
        let first = &read.leaks[0];
        assert_eq!(first.hash, KeyHash::of(a));
        assert_eq!(first.location.repository.as_deref(), Some("octo/app"));
        assert_eq!(first.location.file.as_deref(), Some("deploy/.env"));
        assert_eq!(first.location.line, Some(3));
        assert_eq!(read.leaks[1].hash, KeyHash::of(b));
        let named = read_report(report.to_string().as_bytes(), Some("corp/mono")).unwrap();
        assert_eq!(
            named.leaks[1].location.repository.as_deref(),
            Some("corp/mono")
        );
    }

    #[test]
    fn a_broken_report_is_refused_without_quoting_it() {
        let secret = generate(KeyEnv::Live).unwrap();
        let k = reveal(&secret);
        let e = read_report(format!(r#"[{{"Secret": "{k}""#).as_bytes(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains(&k[8..]), "{e}");
        assert!(read_report(b"{}", None).is_err());
    }
}
