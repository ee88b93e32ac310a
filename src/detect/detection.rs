//! What the detectors observe and what they report: observations, detector kinds, severities,
//! evidence and detections. Plain data, shared with notifications and the audit log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::action::Action;

/// Something a consumer did: one allowed request and/or the usage charged for a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub at: Instant,
    /// The client address, when known (feeds the new-sources detector).
    pub source: Option<IpAddr>,
    /// Requests this observation counts: 1 for an allowed request, 0 for a charge whose
    /// request was already observed. Observe charges with `requests: 1` if requests are not
    /// observed separately.
    pub requests: u32,
    pub tokens: u64,
    pub micro_usd: u64,
}

impl Observation {
    /// An allowed request (tokens and spend come later, with its charge).
    pub fn request(at: Instant, source: Option<IpAddr>) -> Self {
        Observation {
            at,
            source,
            requests: 1,
            tokens: 0,
            micro_usd: 0,
        }
    }

    /// The usage of a response whose request was observed with [`Observation::request`].
    pub fn charge(at: Instant, source: Option<IpAddr>, tokens: u64, micro_usd: u64) -> Self {
        Observation {
            at,
            source,
            requests: 0,
            tokens,
            micro_usd,
        }
    }
}

/// Which detector fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    RateSpike = 0,
    SpendVelocity = 1,
    BudgetOverrun = 2,
    NewSources = 3,
    Canary = 4,
    IdentityMismatch = 5,
}

impl DetectorKind {
    pub const COUNT: usize = 6;

    /// Stable snake_case name (metric labels, audit lines, payloads).
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::RateSpike => "rate_spike",
            DetectorKind::SpendVelocity => "spend_velocity",
            DetectorKind::BudgetOverrun => "budget_overrun",
            DetectorKind::NewSources => "new_sources",
            DetectorKind::Canary => "canary",
            DetectorKind::IdentityMismatch => "identity_mismatch",
        }
    }

    /// Fixed per detector: a rate spike and a canary hit look like a leak in progress.
    pub fn severity(self) -> Severity {
        match self {
            DetectorKind::RateSpike | DetectorKind::Canary | DetectorKind::IdentityMismatch => {
                Severity::Critical
            }
            _ => Severity::Warning,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Why a detector fired. Rates are per second over `window_secs`; baselines are the
/// consumer's EWMA. Never holds a key or anything derived from one.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_request_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_token_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend_rate_micro_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_spend_rate_micro_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub month_to_date_micro_usd: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_micro_usd: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projected_micro_usd: Option<u64>,
    /// How many unlearned addresses were seen; `new_addresses` lists at most 16.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_address_count: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub new_addresses: Vec<IpAddr>,
    /// The address a canary key (or a key bound to other identities) was used from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// The workload identity a bound key was presented from (`identity_mismatch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// One detector firing for one consumer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    #[serde(with = "crate::serde_util::arc_str")]
    pub consumer: Arc<str>,
    pub detector: DetectorKind,
    pub severity: Severity,
    pub evidence: Evidence,
    pub action: Action,
    #[serde(with = "crate::serde_util::rfc3339")]
    pub at: SystemTime,
}

/// A consumer's month-to-date spend and monthly budget, for the overrun projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetStatus {
    pub month_to_date_micro_usd: u64,
    pub budget_micro_usd: u64,
}
