//! Accounting: turns the usage of a finished response into tokens, spend and per-consumer
//! metrics, and keeps the month-to-date ledger that budgets build on. Runs after the response,
//! never on the decision path.

pub mod ledger;
pub mod meters;
mod meters_text;
pub mod record;
mod sources;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use metrics::counter;

use crate::auth::registry::Consumer;
use crate::consumer_state::ConsumerSlots;
use crate::providers::ProviderKind;
use crate::telemetry;
use crate::usage::{PriceTable, Usage};

pub use ledger::{team_key, Ledger};
pub use meters::Meters;

/// At most this many distinct `model` label values; the rest are reported as `other`.
const MAX_MODEL_LABELS: usize = 256;

pub struct Accounting {
    prices: ArcSwap<PriceTable>,
    pub ledger: Arc<Ledger>,
    /// Per-consumer counters and gauges (requests, responses, bytes, tokens, spend).
    pub meters: Meters,
    models: Mutex<HashSet<Arc<str>>>,
}

impl std::fmt::Debug for Accounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounting")
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

/// What one response cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub micro_usd: u64,
    pub month_to_date_micro_usd: u64,
    pub priced: bool,
}

impl Accounting {
    pub fn new(prices: PriceTable, ledger: Arc<Ledger>) -> Self {
        Accounting::with_slots(prices, ledger, Arc::default())
    }

    /// Accounting whose metrics records live in the consumers' `slots` (shared with the
    /// limiter and the detectors).
    pub fn with_slots(prices: PriceTable, ledger: Arc<Ledger>, slots: Arc<ConsumerSlots>) -> Self {
        Accounting {
            prices: ArcSwap::from_pointee(prices),
            ledger,
            meters: Meters::new(slots),
            models: Mutex::new(HashSet::new()),
        }
    }

    pub fn set_prices(&self, prices: PriceTable) {
        self.prices.store(Arc::new(prices));
    }

    /// The cost of `usage` in micro-dollars, if the model has a price. Azure OpenAI falls back
    /// to OpenAI's list prices.
    pub fn price(&self, kind: ProviderKind, usage: &Usage) -> Option<u64> {
        self.prices.load().cost_for(kind, usage)
    }

    /// Whether `model` has a price on a provider of `kind`.
    pub fn has_price(&self, kind: ProviderKind, model: &str) -> bool {
        let probe = Usage {
            model: Some(model.to_string()),
            ..Usage::default()
        };
        self.prices.load().cost_for(kind, &probe).is_some()
    }

    /// The cost of `usage`, never zero for a model without a price: that is charged at the
    /// provider's highest listed prices ([`PriceTable::ceiling`]). Also says whether the
    /// model had a price.
    pub fn price_or_ceiling(&self, kind: ProviderKind, usage: &Usage) -> (u64, bool) {
        self.prices.load().cost_or_ceiling(kind, usage)
    }

    /// Records a finished, successful response: tokens, spend, ledger, gauges. A report past
    /// [`crate::usage::MAX_REPORTED_TOKENS`] is clamped to it and counted; a model without a
    /// price is charged at the provider's highest listed prices and counted.
    pub fn charge(
        &self,
        consumer: &Consumer,
        usage: &Usage,
        estimated: bool,
        now: SystemTime,
    ) -> Charge {
        let provider = consumer.provider.name.clone();
        let (clamped, was_clamped) = crate::usage::clamp(usage);
        let usage = &clamped;
        if was_clamped {
            counter!(telemetry::USAGE_CLAMPED_TOTAL, "consumer" => consumer.name.clone(), "provider" => provider.clone())
                .increment(1);
            tracing::warn!(consumer = %consumer.name, "provider reported implausible usage; charged at the ceiling");
        }
        let model = self.model_label(usage.model.as_deref());
        if estimated {
            counter!(telemetry::USAGE_ESTIMATED_TOTAL, "consumer" => consumer.name.clone(), "provider" => provider.clone())
                .increment(1);
        }
        let (micro_usd, priced) = self.price_or_ceiling(consumer.provider.kind, usage);
        if !priced {
            counter!(telemetry::USAGE_UNPRICED_TOTAL, "consumer" => consumer.name.clone(), "provider" => provider.clone())
                .increment(1);
        }
        let tokens = [
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_input_tokens,
            usage.reasoning_tokens,
            usage.cache_creation_input_tokens,
        ];
        let record = self.meters.record(&consumer.name, &provider);
        record.charge(&model, tokens, micro_usd);
        let month_to_date = self.ledger.add(&consumer.name, micro_usd, now);
        if let Some((team, _)) = &consumer.limits.team_budget {
            self.ledger.add(&team_key(team), micro_usd, now);
        }
        record.set_month_to_date(month_to_date);
        Charge {
            micro_usd,
            month_to_date_micro_usd: month_to_date,
            priced,
        }
    }

    fn model_label(&self, model: Option<&str>) -> Arc<str> {
        let Some(model) = model.filter(|m| m.bytes().all(|b| b.is_ascii_graphic())) else {
            return "unknown".into();
        };
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = models.get(model) {
            return known.clone();
        }
        if models.len() >= MAX_MODEL_LABELS {
            return "other".into();
        }
        let label: Arc<str> = model.into();
        models.insert(label.clone());
        label
    }

    /// The per-consumer metrics ([`Meters`]) in Prometheus text format, to append to the
    /// exporter's output.
    pub fn render_meters(&self) -> String {
        meters_text::render(&self.meters.snapshot())
    }

    /// `keygate_budget_usd` of every consumer in `consumers` that has a monthly budget, in
    /// Prometheus text format (rendered per scrape, from the serving registry).
    pub fn render_budgets(&self, consumers: &[Arc<Consumer>]) -> String {
        meters_text::render_budgets(
            consumers
                .iter()
                .filter_map(|c| Some((&*c.name, c.limits.budget_micro_usd?))),
        )
    }

    /// Publishes `keygate_source_addresses` (call periodically, off the request path).
    pub fn publish_sources(&self, window: std::time::Duration) {
        self.meters
            .publish_sources(window, std::time::Instant::now());
    }

    /// Publishes `keygate_spend_month_to_date_usd` for the month of `now` from the ledger, so
    /// the gauge exists after a restart and starts over when a month begins (call at startup
    /// and periodically; charges also set it as they happen).
    pub fn publish_month_to_date(&self, now: SystemTime) {
        let values = self
            .ledger
            .month(now)
            .into_iter()
            .filter(|(key, _)| !key.contains(':'))
            .map(|(consumer, micro)| (Arc::from(consumer), micro))
            .collect();
        self.meters.publish_month_to_date(values);
    }
}
