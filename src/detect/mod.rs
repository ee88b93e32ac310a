//! Abuse detectors: rate spikes, spend velocity, projected budget overrun, new source
//! addresses and canary keys, each judged against the consumer's own history.
//!
//! The request path only calls [`Detectors::observe`] (one slot counter, the open baseline
//! interval and one address entry, under a per-consumer mutex) and, for canary consumers,
//! [`Detectors::canary_used`]. A background task calls [`Detectors::evaluate_with`] every
//! second and acts on the [`Detection`]s according to their [`Action`]. Memory is bounded per
//! consumer (see `state`), and [`Detectors::evict_idle`] drops consumers unseen for
//! `idle_evict`.

mod action;
pub mod config;
mod judge;
pub mod projection;
pub(crate) mod serde_helpers;
mod state;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use metrics::counter;
use serde::Serialize;

pub use config::{Action, DetectConfig, DetectConfigError};
pub use projection::projected_month_end;

use state::ConsumerState;

/// `keygate_detections_total{consumer,detector,action}`: detections returned by `evaluate` and
/// `canary_used` (after the cooldown).
pub const DETECTIONS_TOTAL: &str = "keygate_detections_total";

fn count(d: &Detection) {
    counter!(DETECTIONS_TOTAL, "consumer" => d.consumer.to_string(), "detector" => d.detector.as_str(), "action" => d.action.as_str())
        .increment(1);
}

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
}

impl DetectorKind {
    pub(crate) const COUNT: usize = 5;

    /// Stable snake_case name (metric labels, audit lines, payloads).
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::RateSpike => "rate_spike",
            DetectorKind::SpendVelocity => "spend_velocity",
            DetectorKind::BudgetOverrun => "budget_overrun",
            DetectorKind::NewSources => "new_sources",
            DetectorKind::Canary => "canary",
        }
    }

    /// Fixed per detector: a rate spike and a canary hit look like a leak in progress.
    pub fn severity(self) -> Severity {
        match self {
            DetectorKind::RateSpike | DetectorKind::Canary => Severity::Critical,
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
    /// The address a canary key was used from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
}

/// One detector firing for one consumer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    #[serde(with = "serde_helpers::arc_str")]
    pub consumer: Arc<str>,
    pub detector: DetectorKind,
    pub severity: Severity,
    pub evidence: Evidence,
    pub action: Action,
    #[serde(with = "serde_helpers::rfc3339")]
    pub at: SystemTime,
}

/// A consumer's month-to-date spend and monthly budget, for the overrun projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetStatus {
    pub month_to_date_micro_usd: u64,
    pub budget_micro_usd: u64,
}

/// Every consumer's detector state, and the config it is judged by.
pub struct Detectors {
    config: ArcSwap<DetectConfig>,
    /// Boxed: the state is large, and the map's spare capacity then costs a pointer per slot
    /// instead of a whole state.
    consumers: DashMap<Arc<str>, Box<Mutex<ConsumerState>>>,
    /// When every consumer was last judged, busy or not.
    last_sweep: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Detectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detectors")
            .field("consumers", &self.consumers.len())
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<ConsumerState>) -> std::sync::MutexGuard<'_, ConsumerState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Detectors {
    /// Detectors judging by `config` (validate it first with [`DetectConfig::validate`]).
    pub fn new(config: DetectConfig) -> Self {
        Detectors {
            config: ArcSwap::from_pointee(config),
            consumers: DashMap::new(),
            last_sweep: Mutex::new(None),
        }
    }

    /// Applies a reloaded config. Consumers keep their learned addresses and cooldowns; their
    /// windows and baselines restart only if `short_window` or `baseline_interval` changed.
    pub fn set_config(&self, config: DetectConfig) {
        self.config.store(Arc::new(config));
    }

    pub fn config(&self) -> Arc<DetectConfig> {
        self.config.load_full()
    }

    /// Records a request or a charge. Cheap: a map lookup, one short lock and a few adds.
    pub fn observe(&self, consumer: &Arc<str>, event: Observation) {
        let config = self.config.load();
        if !config.enabled {
            return;
        }
        if let Some(state) = self.consumers.get(consumer) {
            lock(&state).observe(&event, &config);
            return;
        }
        let entry = self
            .consumers
            .entry(consumer.clone())
            .or_insert_with(|| Box::new(Mutex::new(ConsumerState::new(event.at, &config))));
        lock(&entry).observe(&event, &config);
    }

    /// A canary consumer's key was used: a critical detection right away, unless one was
    /// already returned for this consumer within the cooldown. It is not repeated by
    /// `evaluate`; the caller acts on it.
    pub fn canary_used(&self, consumer: &Arc<str>, source: Option<IpAddr>) -> Option<Detection> {
        self.canary_used_at(consumer, source, Instant::now(), SystemTime::now())
    }

    /// [`Detectors::canary_used`] with explicit clocks (tests).
    pub fn canary_used_at(
        &self,
        consumer: &Arc<str>,
        source: Option<IpAddr>,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Detection> {
        let config = self.config.load();
        let entry = self
            .consumers
            .entry(consumer.clone())
            .or_insert_with(|| Box::new(Mutex::new(ConsumerState::new(now, &config))));
        let mut state = lock(&entry);
        state.last_seen = state.last_seen.max(now);
        if !state.try_fire(DetectorKind::Canary, now, config.cooldown) {
            return None;
        }
        let detection = Detection {
            consumer: consumer.clone(),
            detector: DetectorKind::Canary,
            severity: DetectorKind::Canary.severity(),
            evidence: Evidence {
                source,
                ..Evidence::default()
            },
            action: config.canary.action,
            at: wall,
        };
        count(&detection);
        Some(detection)
    }

    /// [`Detectors::evaluate_with`] without budgets and with the system clock.
    pub fn evaluate(&self, now: Instant) -> Vec<Detection> {
        self.evaluate_with(now, SystemTime::now(), |_| None)
    }

    /// Judges the consumers observed since the last call at `now` (call about once a second,
    /// off the request path), and every consumer once per `baseline_interval`: a consumer with
    /// no new traffic cannot newly cross a threshold, so a second's work follows the traffic,
    /// not the number of consumers ever seen. `budget` gives a consumer's month-to-date spend
    /// and budget, or `None` when it has no budget (it is called with that consumer's state
    /// locked, so it must not call back into these detectors); `wall` is the calendar time the
    /// month-end projection is made from.
    pub fn evaluate_with(
        &self,
        now: Instant,
        wall: SystemTime,
        budget: impl Fn(&str) -> Option<BudgetStatus>,
    ) -> Vec<Detection> {
        let config = self.config.load();
        let mut out = Vec::new();
        if !config.enabled {
            return out;
        }
        let sweep = {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            let due =
                last.is_none_or(|t| now.saturating_duration_since(t) >= config.baseline_interval);
            if due {
                *last = Some(now);
            }
            due
        };
        for entry in self.consumers.iter() {
            let name = entry.key();
            let mut state = lock(entry.value());
            if !std::mem::take(&mut state.dirty) && !sweep {
                continue;
            }
            let status = if config.budget_overrun.enabled {
                budget(name)
            } else {
                None
            };
            state.advance(now, &config);
            if state.warm(&config) {
                let judged = judge::Judge {
                    consumer: name,
                    now,
                    wall,
                    config: &config,
                };
                judged.run(&mut state, status, &mut out);
            }
        }
        out.iter().for_each(count);
        out
    }

    /// Drops consumers unseen for `idle_evict`; returns how many.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let idle = self.config.load().idle_evict;
        let before = self.consumers.len();
        self.consumers
            .retain(|_, s| now.saturating_duration_since(lock(s).last_seen) < idle);
        before.saturating_sub(self.consumers.len())
    }

    /// Forgets a consumer (removed from the registry, or resumed after an incident so its
    /// baseline and learned addresses start over).
    pub fn forget(&self, consumer: &str) {
        self.consumers.remove(consumer);
    }

    /// Consumers with state.
    pub fn len(&self) -> usize {
        self.consumers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }
}
