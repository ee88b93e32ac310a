//! Containment: the glue between what keygate observes and what it does about it. Allowed
//! requests and charged responses feed the detectors (a counter update on the request path);
//! a background loop evaluates them every second and acts: suspend (through the same
//! overrides as the admin API, persisted and broadcast), throttle (tighter limits for a
//! while), or alert; every detection is notified, audited and kept for `ListDetections`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::accounting::Accounting;
use crate::admin::broadcast::{now_ms, Broadcaster};
use crate::admin::pb;
use crate::admin::state::{Action as AdminAction, OverrideStore};
use crate::audit::{AuditEntry, AuditEvent, AuditLog};
use crate::auth::Consumer;
use crate::detect::{Action, BudgetStatus, Detection, Detectors, Observation};
use crate::gate::Gate;
use crate::limits::Limiter;
use crate::notify::{Notification, Notifier};

/// Detections kept for `ListDetections`.
const RECENT: usize = 256;

pub struct Containment {
    pub detectors: Detectors,
    pub notifier: Option<Notifier>,
    pub audit: Arc<AuditLog>,
    pub store: Arc<OverrideStore>,
    pub broadcaster: Option<Broadcaster>,
    pub limiter: Arc<Limiter>,
    pub accounting: Arc<Accounting>,
    pub gate: Arc<Gate>,
    recent: Mutex<VecDeque<pb::Detection>>,
}

impl std::fmt::Debug for Containment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containment").finish_non_exhaustive()
    }
}

impl Containment {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        detectors: Detectors,
        notifier: Option<Notifier>,
        audit: Arc<AuditLog>,
        store: Arc<OverrideStore>,
        broadcaster: Option<Broadcaster>,
        limiter: Arc<Limiter>,
        accounting: Arc<Accounting>,
        gate: Arc<Gate>,
    ) -> Self {
        Containment {
            detectors,
            notifier,
            audit,
            store,
            broadcaster,
            limiter,
            accounting,
            gate,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// After an allow (request path): one observation; a canary key is contained at once
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

    /// Evaluates every second, forever.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            let registry = self.gate.registry();
            let ledger = &self.accounting.ledger;
            let budgets = |name: &str| {
                let c = registry.consumer(name)?;
                Some(BudgetStatus {
                    month_to_date_micro_usd: ledger.month_to_date(name, SystemTime::now()),
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
                let action = AdminAction::Suspend {
                    consumer: d.consumer.to_string(),
                };
                match self.store.apply(&action, true) {
                    Ok(_) => {
                        if let Some(b) = &self.broadcaster {
                            b.publish(&action, now_ms()).await;
                        }
                        self.audit.record(
                            AuditEntry::new(AuditEvent::ConsumerSuspended, "detector")
                                .consumer(&d.consumer)
                                .detector(d.detector)
                                .reason(d.detector.as_str()),
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "could not suspend after a detection"),
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
        if let Some(n) = &self.notifier {
            n.send(Notification::from_detection(&d));
        }
        let record = pb::Detection {
            at_unix: d
                .at
                .duration_since(UNIX_EPOCH)
                .map(|t| t.as_secs() as i64)
                .unwrap_or(0),
            consumer: d.consumer.to_string(),
            detector: d.detector.as_str().into(),
            severity: d.severity.as_str().into(),
            action: d.action.as_str().into(),
            evidence_json: serde_json::to_string(&d.evidence).unwrap_or_default(),
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The newest detections first.
    pub fn recent(&self, limit: usize) -> Vec<pb::Detection> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().take(limit).cloned().collect()
    }
}
