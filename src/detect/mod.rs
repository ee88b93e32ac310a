//! Abuse detectors: rate spikes, spend velocity, projected budget overrun, new source
//! addresses and canary keys, each judged against the consumer's own history.
//!
//! The request path only calls [`Detectors::observe`] (one slot counter, the open baseline
//! interval and one address entry, under a per-consumer mutex) and, for canary consumers,
//! [`Detectors::canary_used`]. A background task calls [`Detectors::evaluate_with`] every
//! second and acts on the [`Detection`]s according to their [`Action`]. Memory is bounded per
//! consumer (see `state`), and [`Detectors::evict_idle`] drops consumers unseen for
//! `idle_evict`.

pub mod action;
mod baseline;
pub mod config;
pub mod detection;
mod judge;
pub mod projection;
mod stamp;
mod state;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use metrics::counter;

pub use config::{Action, DetectConfig, DetectConfigError};
pub use detection::{BudgetStatus, Detection, DetectorKind, Evidence, Observation, Severity};
pub use projection::projected_month_end;

use crate::telemetry::DETECTIONS_TOTAL;

use state::ConsumerState;

fn count(d: &Detection) {
    counter!(DETECTIONS_TOTAL, "consumer" => d.consumer.to_string(), "detector" => d.detector.as_str(), "action" => d.action.as_str())
        .increment(1);
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
        state.touch(now);
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

    /// A key bound to workload identities was presented from another identity (or none): a
    /// critical detection, once per cooldown like a canary. The caller acts on it.
    pub fn identity_mismatch(
        &self,
        consumer: &Arc<str>,
        source: Option<IpAddr>,
        identity: Option<&str>,
    ) -> Option<Detection> {
        let evidence = Evidence {
            source,
            identity: identity.map(|id| id.chars().take(256).collect()),
            ..Evidence::default()
        };
        let action = self.config.load().identity_mismatch.action;
        self.fire_now(consumer, DetectorKind::IdentityMismatch, evidence, action)
    }

    /// One immediate detection of `kind` unless one fired within the cooldown.
    fn fire_now(
        &self,
        consumer: &Arc<str>,
        kind: DetectorKind,
        evidence: Evidence,
        action: Action,
    ) -> Option<Detection> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let config = self.config.load();
        let entry = self
            .consumers
            .entry(consumer.clone())
            .or_insert_with(|| Box::new(Mutex::new(ConsumerState::new(now, &config))));
        let mut state = lock(&entry);
        state.touch(now);
        if !state.try_fire(kind, now, config.cooldown) {
            return None;
        }
        let detection = Detection {
            consumer: consumer.clone(),
            detector: kind,
            severity: kind.severity(),
            evidence,
            action,
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
        self.consumers.retain(|_, s| lock(s).idle_for(now) < idle);
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
