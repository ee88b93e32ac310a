//! Leaked keys reported by the secret scanners that find them: GitHub's secret-scanning
//! partner alerts (signed; [`signature`]) and gitleaks reports. Each reported keygate key that
//! keygate knows is revoked fleet-wide through the override service ([`intake`]), its owner
//! notified, and the report audited with where the key was found, never the key.
//!
//! Layers: [`report`], [`github`], [`gitleaks`] and [`signature`] are rules and parsers (1);
//! [`intake`] acts through the override service (3).

pub mod github;
pub mod gitleaks;
pub mod intake;
pub mod report;
pub mod signature;
