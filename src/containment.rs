//! Containment: what keygate does about what the detectors see. Allowed requests and charged
//! responses feed the detectors (a counter update on the request path); a background loop
//! evaluates them every second and acts: suspend (through the override service, so it is
//! persisted, broadcast and audited like an operator's), throttle (tighter limits for a
//! while), or alert. Every detection is notified, audited and kept for `ListDetections`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::accounting::ledger::Ledger;
use crate::audit::{AuditEntry, AuditEvent, AuditLog};
use crate::auth::registry::Consumer;
use crate::detect::{Action, BudgetStatus, Detection, Detectors, Observation};
use crate::gate::Gate;
use crate::limits::Limiter;
use crate::notify::{Notification, Notifications};
use crate::overrides::{Action as OverrideAction, Actor, OverrideService};

/// Detections kept for `ListDetections`.
const RECENT: usize = 256;

pub struct Containment {
    detectors: Arc<Detectors>,
    overrides: Arc<OverrideService>,
    limiter: Arc<Limiter>,
    ledger: Arc<Ledger>,
    gate: Arc<Gate>,
    audit: Arc<AuditLog>,
    notifications: Arc<Notifications>,
    recent: Mutex<VecDeque<Detection>>,
}

impl std::fmt::Debug for Containment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containment").finish_non_exhaustive()
    }
}

impl Containment {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        detectors: Arc<Detectors>,
        overrides: Arc<OverrideService>,
        limiter: Arc<Limiter>,
        ledger: Arc<Ledger>,
        gate: Arc<Gate>,
        audit: Arc<AuditLog>,
        notifications: Arc<Notifications>,
    ) -> Self {
        Containment {
            detectors,
            overrides,
            limiter,
            ledger,
            gate,
            audit,
            notifications,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn detectors(&self) -> &Arc<Detectors> {
        &self.detectors
    }

    pub fn overrides(&self) -> &Arc<OverrideService> {
        &self.overrides
    }

    /// After an admission (request path): one observation; a canary key is contained at once
    /// and the request refused (`false`).
    pub async fn on_allowed(&self, consumer: &Consumer, source: Option<IpAddr>) -> bool {
        if consumer.canary {
            if let Some(detection) = self.detectors.canary_used(&consumer.name, source) {
                self.handle(detection).await;
            }
            return false;
        }
        self.detectors
            .observe(&consumer.name, Observation::request(Instant::now(), source));
        true
    }

    /// A key bound to workload identities was presented from another identity: the request
    /// is refused already; the detection is audited, notified and acted on.
    pub async fn on_identity_mismatch(
        &self,
        consumer: &Consumer,
        source: Option<IpAddr>,
        identity: Option<&str>,
    ) {
        let detected = self
            .detectors
            .identity_mismatch(&consumer.name, source, identity);
        if let Some(detection) = detected {
            self.handle(detection).await;
        }
    }

    /// After a charged response.
    pub fn on_charged(
        &self,
        consumer: &Consumer,
        source: Option<IpAddr>,
        tokens: u64,
        micro_usd: u64,
    ) {
        self.detectors.observe(
            &consumer.name,
            Observation::charge(Instant::now(), source, tokens, micro_usd),
        );
    }

    /// Evaluates every second until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let registry = self.gate.registry();
            let budgets = |name: &str| {
                let c = registry.consumer(name)?;
                Some(BudgetStatus {
                    month_to_date_micro_usd: self.ledger.month_to_date(name, SystemTime::now()),
                    budget_micro_usd: c.limits.budget_micro_usd?,
                })
            };
            let detections =
                self.detectors
                    .evaluate_with(Instant::now(), SystemTime::now(), budgets);
            for detection in detections {
                self.handle(detection).await;
            }
            n += 1;
            if n.is_multiple_of(60) {
                self.detectors.evict_idle(Instant::now());
            }
        }
    }

    async fn handle(&self, d: Detection) {
        tracing::warn!(consumer = %d.consumer, detector = d.detector.as_str(), action = d.action.as_str(), "abuse detected");
        match d.action {
            Action::Alert => {}
            Action::Suspend => {
                let action = OverrideAction::Suspend {
                    consumer: d.consumer.to_string(),
                };
                let actor = Actor::Detector(d.detector);
                if let Err(e) = self.overrides.apply(action, &actor, "").await {
                    tracing::error!(error = %e, "could not suspend after a detection");
                }
            }
            Action::Throttle { factor, period } => {
                self.limiter.throttle(&d.consumer, factor, period);
                self.audit.record(
                    AuditEntry::new(AuditEvent::ConsumerThrottled, "detector")
                        .consumer(&d.consumer)
                        .detector(d.detector)
                        .action(d.action),
                );
            }
        }
        self.audit.record(AuditEntry::from_detection(&d));
        self.notifications.send(Notification::from_detection(&d));
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(d);
    }

    /// The newest detections first.
    pub fn recent(&self, limit: usize) -> Vec<Detection> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().take(limit).cloned().collect()
    }
}
