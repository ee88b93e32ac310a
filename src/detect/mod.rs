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
pub(crate) mod state;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use metrics::counter;

pub use config::{Action, DetectConfig, DetectConfigError};
pub use detection::{BudgetStatus, Detection, DetectorKind, Evidence, Observation, Severity};
pub use projection::projected_month_end;

use crate::consumer_state::ConsumerSlots;
use crate::telemetry::DETECTIONS_TOTAL;

use state::ConsumerState;

fn count(d: &Detection) {
    counter!(DETECTIONS_TOTAL, "consumer" => d.consumer.to_string(), "detector" => d.detector.as_str(), "action" => d.action.as_str())
        .increment(1);
}

/// Every consumer's detector state (the detector part of each consumer's slot), and the
/// config it is judged by.
pub struct Detectors {
    config: ArcSwap<DetectConfig>,
    slots: Arc<ConsumerSlots>,
    /// When every consumer was last judged, busy or not.
    last_sweep: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Detectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detectors")
            .field("consumers", &self.len())
            .finish_non_exhaustive()
    }
}

type Cell = Mutex<Option<ConsumerState>>;

fn lock(m: &Cell) -> MutexGuard<'_, Option<ConsumerState>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Detectors {
    /// Detectors judging by `config` (validate it first with [`DetectConfig::validate`]).
    pub fn new(config: DetectConfig) -> Self {
        Detectors::with_slots(config, Arc::default())
    }

    /// [`Detectors::new`], keeping each consumer's state in its slot in `slots` (shared with
    /// the meters and the limiter).
    pub fn with_slots(config: DetectConfig, slots: Arc<ConsumerSlots>) -> Self {
        Detectors {
            config: ArcSwap::from_pointee(config),
            slots,
            last_sweep: Mutex::new(None),
        }
    }

    /// Calls `f` with `consumer`'s state, made at `at` if it has none.
    fn with_state<T>(
        &self,
        consumer: &Arc<str>,
        at: Instant,
        config: &DetectConfig,
        f: impl FnOnce(&mut ConsumerState) -> T,
    ) -> T {
        let slot = self.slots.get_or_make(consumer);
        let mut cell = lock(&slot.detector);
        f(cell.get_or_insert_with(|| ConsumerState::new(at, config)))
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
        self.with_state(consumer, event.at, &config, |state| {
            state.observe(&event, &config)
        });
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
        let fired = self.with_state(consumer, now, &config, |state| {
            state.touch(now);
            state.try_fire(DetectorKind::Canary, now, config.cooldown)
        });
        if !fired {
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
        let fired = self.with_state(consumer, now, &config, |state| {
            state.touch(now);
            state.try_fire(kind, now, config.cooldown)
        });
        if !fired {
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
        self.slots.for_each(|name, slot| {
            let mut cell = lock(&slot.detector);
            let Some(state) = cell.as_mut() else { return };
            if !std::mem::take(&mut state.dirty) && !sweep {
                return;
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
                judged.run(state, status, &mut out);
            }
        });
        out.iter().for_each(count);
        out
    }

    /// Drops consumers unseen for `idle_evict`; returns how many.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let idle = self.config.load().idle_evict;
        let mut evicted = 0;
        self.slots.for_each(|_, slot| {
            let mut cell = lock(&slot.detector);
            if cell.as_ref().is_some_and(|s| s.idle_for(now) >= idle) {
                *cell = None;
                evicted += 1;
            }
        });
        self.slots.remove_empty();
        evicted
    }

    /// Forgets a consumer (removed from the registry, or resumed after an incident so its
    /// baseline and learned addresses start over).
    pub fn forget(&self, consumer: &str) {
        if let Some(slot) = self.slots.get(consumer) {
            *lock(&slot.detector) = None;
        }
    }

    /// `f` of `consumer`'s state, if it has one (tests look inside).
    #[cfg(test)]
    fn state_of<T>(&self, consumer: &str, f: impl FnOnce(&ConsumerState) -> T) -> Option<T> {
        let slot = self.slots.get(consumer)?;
        let cell = lock(&slot.detector);
        cell.as_ref().map(f)
    }

    /// Consumers with state.
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.slots
            .for_each(|_, slot| n += usize::from(lock(&slot.detector).is_some()));
        n
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
