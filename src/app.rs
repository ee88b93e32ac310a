//! The running keygate: every component built once for `serve`, a config put into service
//! with every section a running process can apply (at startup and on each reload), the
//! background loops it owns, and its shutdown.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};

use crate::accounting::{Accounting, Ledger};
use crate::admin::operators::Operators;
use crate::audit::AuditLog;
use crate::auth::registry::Registry;
use crate::config::{self, Config, LimitsBackend, RotationConfig};
use crate::consumer_state::ConsumerSlots;
use crate::containment::Containment;
use crate::detect::Detectors;
use crate::gate::Gate;
use crate::leaks::intake::LeakIntake;
use crate::limits::Limiter;
use crate::notify::{Notifications, Notifier};
use crate::overrides::{Broadcaster, OverrideService, OverrideStore, StateError};
use crate::pipeline::{Pipeline, Settings};
use crate::runtime::{self, Background, Prepared};
use crate::secrets::{CredentialCache, CredentialSource};
use crate::tasks::{stopped, Tasks};
use crate::telemetry;
use crate::usage::PriceTable;

/// Why keygate could not be assembled from its config.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("usage.ledger: {0}")]
    Ledger(String),
    #[error("admin.audit_log: {0}")]
    Audit(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("notify: {0}")]
    Notify(String),
    #[error("{0} (admin broadcast)")]
    Broadcast(String),
}

/// Why a prepared config could not be switched on.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("usage.{0}")]
    Pricing(#[from] crate::usage::PricingError),
    #[error(transparent)]
    Redis(#[from] crate::limits::redis::RedisSetupError),
    #[error("notify: {0}")]
    Notify(String),
    #[error(transparent)]
    Operators(#[from] crate::admin::operators::OperatorsError),
}

pub struct App {
    pub gate: Arc<Gate>,
    pub accounting: Arc<Accounting>,
    pub limiter: Arc<Limiter>,
    pub detectors: Arc<Detectors>,
    pub notifications: Arc<Notifications>,
    pub audit: Arc<AuditLog>,
    pub overrides: Arc<OverrideService>,
    pub containment: Arc<Containment>,
    pub pipeline: Pipeline,
    /// Wakes the reloader (the admin API's credential refresh).
    pub refresh: Arc<Notify>,
    /// Who may call the admin API (admin.operators, operators_file, the shared token),
    /// replaced on every reload.
    pub operators: arc_swap::ArcSwap<Operators>,
    /// Acts on leaked keys reported by secret scanners.
    pub leaks: Arc<LeakIntake>,
    /// The running config's credential source and rotation policies (the credential
    /// inventory and a refresh of named credentials use them).
    pub credentials: RwLock<Option<ServedCredentials>>,
    broadcaster: Option<Broadcaster>,
}

/// Where the running config's credentials come from, and their rotation policies.
#[derive(Clone)]
pub struct ServedCredentials {
    pub source: Arc<dyn CredentialSource>,
    pub rotation: Arc<RotationConfig>,
}

impl App {
    /// Builds every component for `config` (needs a Tokio runtime: notification delivery
    /// starts here).
    pub fn build(config: &Config, credentials: Arc<CredentialCache>) -> Result<App, AppError> {
        let ledger = Arc::new(if config.usage.ledger.as_os_str().is_empty() {
            Ledger::in_memory()
        } else {
            Ledger::open(&config.usage.ledger).map_err(|e| AppError::Ledger(e.to_string()))?
        });
        let slots = Arc::new(ConsumerSlots::default());
        let accounting = Arc::new(Accounting::with_slots(
            PriceTable::defaults(),
            ledger.clone(),
            slots.clone(),
        ));
        let limiter = Arc::new(Limiter::with_slots(ledger.clone(), slots.clone()));
        let gate = Arc::new(Gate::new(Registry::default(), credentials));
        let audit_path = (!config.admin.audit_log.as_os_str().is_empty())
            .then_some(config.admin.audit_log.as_path());
        let audit = AuditLog::open(audit_path)
            .map_err(|e| AppError::Audit(e.to_string()))?
            .shared();
        let store = Arc::new(OverrideStore::open(
            config.admin.state_file.clone(),
            gate.overrides_cell(),
        )?);
        let notifications = Arc::new(Notifications::start(
            notifier(&config.notify).map_err(AppError::Notify)?,
        ));
        let broadcaster = match &config.limits.redis {
            Some(redis) => {
                let origin = format!("{}-{}", std::process::id(), config.listeners.grpc);
                Some(
                    Broadcaster::new(redis, origin)
                        .map_err(|e| AppError::Broadcast(e.to_string()))?,
                )
            }
            None => None,
        };
        let detectors = Arc::new(Detectors::with_slots(config.detect.clone(), slots));
        let overrides = Arc::new(OverrideService::new(
            store,
            broadcaster.clone(),
            gate.clone(),
            detectors.clone(),
            audit.clone(),
            notifications.clone(),
        ));
        let containment = Arc::new(Containment::new(
            detectors.clone(),
            overrides.clone(),
            limiter.clone(),
            ledger,
            gate.clone(),
            audit.clone(),
            notifications.clone(),
        ));
        let leaks = Arc::new(LeakIntake::new(
            gate.clone(),
            overrides.clone(),
            audit.clone(),
            notifications.clone(),
        ));
        let pipeline = Pipeline::new(
            gate.clone(),
            limiter.clone(),
            accounting.clone(),
            Some(containment.clone()),
        );
        Ok(App {
            gate,
            accounting,
            limiter,
            detectors,
            notifications,
            audit,
            overrides,
            containment,
            pipeline,
            refresh: Arc::new(Notify::new()),
            operators: arc_swap::ArcSwap::from_pointee(Operators::default()),
            leaks,
            credentials: RwLock::new(None),
            broadcaster,
        })
    }

    /// Starts the loops that live as long as the process: detector evaluation, the admin
    /// broadcast subscriber, and the periodic upkeep.
    pub fn start(self: &Arc<Self>, tasks: &mut Tasks, source_window: Duration) {
        let containment = self.containment.clone();
        tasks.spawn("containment", move |stop| containment.run(stop));
        if let Some(broadcaster) = self.broadcaster.clone() {
            let store = self.overrides.store().clone();
            tasks.spawn("admin broadcast", move |stop| broadcaster.run(store, stop));
        }
        let app = self.clone();
        tasks.spawn("upkeep", move |stop| app.upkeep(source_window, stop));
        let limiter = self.limiter.clone();
        tasks.spawn("limits sync", move |stop| limiter.sync(stop));
    }

    /// Puts a prepared config into service: pricing, limits, pipeline settings, detectors,
    /// notifications and the registry, all or (on an error) none of them. Returns its
    /// background work (credential refresh, consumer polling).
    pub fn activate(
        &self,
        prepared: Prepared,
        running: Option<&Config>,
    ) -> Result<(Config, Background), ActivateError> {
        let config = &prepared.config;
        let prices = PriceTable::defaults().with_overrides(&config.usage.pricing)?;
        let limits = &config.limits;
        let redis = match (limits.backend, &limits.redis) {
            (LimitsBackend::Redis, Some(redis)) => Some(self.limiter.connect_redis(redis)?),
            _ => None,
        };
        let notify_changed = running.is_some_and(|r| r.notify != config.notify);
        let next_notifier = if notify_changed {
            Some(notifier(&config.notify).map_err(ActivateError::Notify)?)
        } else {
            None
        };
        let operators =
            Operators::load(&config.admin, crate::admin::operators::shared_token(config))?;

        self.accounting.set_prices(prices);
        self.limiter.configure(limits, redis);
        self.pipeline.configure(Settings {
            xff_trusted_hops: config.network.trusted_hops(),
            max_assembled_bytes: usize::try_from(config.usage.max_assembled_bytes)
                .unwrap_or(usize::MAX),
            max_request_headers: config.network.max_request_headers,
            include_usage: config.usage.include_usage,
            trust_forwarded_client_cert: config.network.trust_forwarded_client_cert,
        });
        self.detectors.set_config(config.detect.clone());
        self.operators.store(Arc::new(operators));
        if let Some(next) = next_notifier {
            self.notifications.replace(next);
            tracing::info!("notification webhooks replaced");
        }
        if let Some(running) = running {
            for setting in config::restart_only_changes(running, config) {
                tracing::warn!(
                    setting,
                    "changed in the config file; takes effect after a restart"
                );
            }
        }
        let background = runtime::spawn_background(&prepared, &self.gate);
        if let Ok(mut served) = self.credentials.write() {
            *served = Some(ServedCredentials {
                source: prepared.source.clone(),
                rotation: Arc::new(config.rotation.clone()),
            });
        }
        telemetry::record_registry_size(prepared.registry.consumers().len());
        self.gate.swap_registry(prepared.registry);
        runtime::publish_inventory(
            &self.gate,
            &prepared.config.rotation,
            &*prepared.source,
            &self.gate.registry().referenced_credentials(),
        );
        Ok((prepared.config, background))
    }

    /// Periodic work off the request path: flush the ledger every second, pick up the state
    /// file, publish source counts and month-to-date spend, forget idle limiter state, and
    /// hourly the ledger's months before the previous one (they stay in its file).
    async fn upkeep(self: Arc<Self>, source_window: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped(&mut stop) => return,
            }
            self.pipeline.handover().expire(crate::pipeline::MAX_PARK);
            self.flush_ledger();
            if let Err(e) = self.overrides.store().reload() {
                tracing::warn!(error = %e, "state file unreadable; keeping the current overrides");
            }
            if n.is_multiple_of(5) {
                self.accounting.publish_sources(source_window);
            }
            if n.is_multiple_of(30) {
                self.accounting.publish_month_to_date(SystemTime::now());
            }
            if n.is_multiple_of(60) {
                self.limiter.evict_idle();
            }
            if n.is_multiple_of(3600) {
                // Keeps at least the previous month: budgets settle around a month's end.
                let keep_from = SystemTime::now() - Duration::from_secs(32 * 86_400);
                let keep_from = crate::accounting::ledger::month_of(keep_from);
                self.accounting.ledger.forget_before(&keep_from);
            }
            n += 1;
        }
    }

    /// Writes the spend ledger's changes to disk.
    pub fn flush_ledger(&self) {
        match self.accounting.ledger.flush() {
            Ok(0) => {}
            Ok(_) => {
                metrics::counter!(telemetry::LEDGER_FLUSH_TOTAL, "result" => "ok").increment(1)
            }
            Err(e) => {
                metrics::counter!(telemetry::LEDGER_FLUSH_TOTAL, "result" => "error").increment(1);
                tracing::error!(error = %e, "spend ledger flush failed");
            }
        }
    }

    /// After the background loops stopped: deliver what notifications can be, flush the
    /// ledger.
    pub async fn shutdown(&self) {
        self.notifications.shutdown().await;
        // Responses still unobserved are charged their worst case before the ledger's last write.
        self.pipeline.handover().settle_all();
        self.flush_ledger();
    }
}

/// The notifier for `notify:`, or none without webhooks.
fn notifier(config: &crate::notify::NotifyConfig) -> Result<Option<Notifier>, String> {
    if config.webhooks.is_empty() {
        return Ok(None);
    }
    Notifier::new(config.clone())
        .map(Some)
        .map_err(|e| e.to_string())
}
