//! Accounting: turns the usage of a finished response into tokens, spend and per-consumer
//! metrics, and keeps the month-to-date ledger that budgets build on. Runs after the response,
//! never on the decision path.

pub mod ledger;
pub mod sources;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use metrics::{counter, gauge, Label};

use crate::auth::registry::Consumer;
use crate::providers::ProviderKind;
use crate::telemetry;
use crate::usage::{PriceTable, Usage};

pub use ledger::{team_key, Ledger};
pub use sources::SourceTracker;

/// At most this many distinct `model` label values; the rest are reported as `other`.
const MAX_MODEL_LABELS: usize = 256;

/// (consumer, provider, model).
type SpendKey = (Arc<str>, Arc<str>, Arc<str>);

pub struct Accounting {
    prices: ArcSwap<PriceTable>,
    pub ledger: Arc<Ledger>,
    pub sources: SourceTracker,
    /// (consumer, provider, model) → micro-dollars since start, rendered as a float counter.
    spend: Mutex<HashMap<SpendKey, u64>>,
    models: Mutex<HashSet<Arc<str>>>,
    /// Consumers whose per-consumer gauges were last published non-zero, so a consumer that
    /// drops out (no recent address, no spend this month) is set back to 0, not left stale.
    published: Mutex<Published>,
}

#[derive(Debug, Default)]
struct Published {
    sources: HashSet<Arc<str>>,
    month_to_date: HashSet<Arc<str>>,
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
        Accounting {
            prices: ArcSwap::from_pointee(prices),
            ledger,
            sources: SourceTracker::default(),
            spend: Mutex::new(HashMap::new()),
            models: Mutex::new(HashSet::new()),
            published: Mutex::new(Published::default()),
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
        // Shared names, not copies: five token counters per charge allocate no strings.
        let labels = |kind: &'static str| {
            vec![
                Label::new("consumer", consumer.name.clone()),
                Label::new("provider", provider.clone()),
                Label::new("model", model.clone()),
                Label::new("kind", kind),
            ]
        };
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached", usage.cached_input_tokens),
            ("reasoning", usage.reasoning_tokens),
            ("cache_creation", usage.cache_creation_input_tokens),
        ] {
            counter!(telemetry::TOKENS_TOTAL, labels(kind)).increment(n);
        }
        if estimated {
            counter!(telemetry::USAGE_ESTIMATED_TOTAL, "consumer" => consumer.name.clone(), "provider" => provider.clone())
                .increment(1);
        }
        let (micro_usd, priced) = self.price_or_ceiling(consumer.provider.kind, usage);
        if !priced {
            counter!(telemetry::USAGE_UNPRICED_TOTAL, "consumer" => consumer.name.clone(), "provider" => provider.clone())
                .increment(1);
        }
        {
            let mut spend = self.spend.lock().unwrap_or_else(|p| p.into_inner());
            *spend
                .entry((consumer.name.clone(), provider, model))
                .or_insert(0) += micro_usd;
        }
        let month_to_date = self.ledger.add(&consumer.name, micro_usd, now);
        if let Some((team, _)) = &consumer.limits.team_budget {
            self.ledger.add(&team_key(team), micro_usd, now);
        }
        gauge!(telemetry::SPEND_MONTH_TO_DATE, "consumer" => consumer.name.clone())
            .set(micro_to_usd(month_to_date));
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

    /// `keygate_spend_usd_total` in Prometheus text format (the metrics crate has no float
    /// counters; spend is kept exactly in micro-dollars and rendered here).
    pub fn render_spend(&self) -> String {
        let spend = self.spend.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        if spend.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "# HELP {} Spend priced from provider-reported usage, in USD.",
            telemetry::SPEND_USD_TOTAL
        );
        let _ = writeln!(out, "# TYPE {} counter", telemetry::SPEND_USD_TOTAL);
        let mut rows: Vec<_> = spend.iter().collect();
        rows.sort();
        for ((consumer, provider, model), micro) in rows {
            let _ = writeln!(
                out,
                "{}{{consumer=\"{consumer}\",provider=\"{provider}\",model=\"{}\"}} {}",
                telemetry::SPEND_USD_TOTAL,
                escape_label(model),
                micro_to_usd(*micro)
            );
        }
        out
    }

    /// Publishes `keygate_source_addresses` (call periodically, off the request path).
    pub fn publish_sources(&self, window: std::time::Duration) {
        let now = self.sources.distinct(window, std::time::Instant::now());
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        republish(
            &mut published.sources,
            telemetry::SOURCE_ADDRESSES,
            now.into_iter().map(|(c, n)| (c, n as f64)),
        );
    }

    /// Publishes `keygate_spend_month_to_date_usd` for the month of `now` from the ledger, so
    /// the gauge exists after a restart and starts over when a month begins (call at startup
    /// and periodically; charges also set it as they happen).
    pub fn publish_month_to_date(&self, now: SystemTime) {
        let month = self.ledger.month(now);
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        republish(
            &mut published.month_to_date,
            telemetry::SPEND_MONTH_TO_DATE,
            month
                .into_iter()
                .filter(|(key, _)| !key.contains(':'))
                .map(|(consumer, micro)| (Arc::from(consumer), micro_to_usd(micro))),
        );
    }
}

/// Sets `gauge{consumer}` for every consumer in `values`, and to 0 for consumers published
/// last time but absent now.
fn republish(
    last: &mut HashSet<Arc<str>>,
    name: &'static str,
    values: impl Iterator<Item = (Arc<str>, f64)>,
) {
    let mut now = HashSet::new();
    for (consumer, value) in values {
        gauge!(name, "consumer" => consumer.to_string()).set(value);
        now.insert(consumer);
    }
    for gone in last.difference(&now) {
        gauge!(name, "consumer" => gone.to_string()).set(0.0);
    }
    *last = now;
}

fn micro_to_usd(micro: u64) -> f64 {
    micro as f64 / 1_000_000.0
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}
