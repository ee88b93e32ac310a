//! Prices and cost in integer micro-dollars.
//!
//! Config writes prices in USD per million tokens ([`PriceEntry`]); they are converted once, at
//! load time, to micro-dollars per million tokens ([`Price`], `u64`), so computing a cost on the
//! request path is integer arithmetic only: `sum(tokens × µUSD/Mtok)` in `u128`, divided by
//! one million and rounded up to a whole micro-dollar.
//!
//! An entry's `model` is an exact name or a prefix ending in `*` (`"*"` alone matches every
//! model); its `provider` is a provider kind name such as `openai`, or `*` for any. The most
//! specific entry wins: an exact model beats any prefix, a longer prefix beats a shorter one,
//! and at equal model specificity a named provider beats `*`. A model nothing matches has no
//! price (`None`): configure a `*`/`*` entry for a fallback price, or let the caller decide.

use serde::Deserialize;
use thiserror::Error;

use super::{Usage, MAX_MODEL_CHARS};
use crate::providers::ProviderKind;

/// Largest accepted price, in USD per million tokens; anything above is surely a typo.
pub const MAX_USD_PER_MTOK: f64 = 1_000_000.0;
/// The config field the entries are read from, for error paths.
const FIELD: &str = "pricing";

/// One price-table entry as written in config. Money is USD per million tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub provider: String,
    pub model: String,
    pub input_per_mtok_usd: f64,
    /// Cache reads; the input price when absent.
    #[serde(default)]
    pub cached_input_per_mtok_usd: Option<f64>,
    pub output_per_mtok_usd: f64,
    /// Cache writes (Anthropic); the input price when absent.
    #[serde(default)]
    pub cache_write_per_mtok_usd: Option<f64>,
}

/// Rates in micro-dollars per million tokens (which is picodollars per token).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    pub cache_write: u64,
}

impl Price {
    /// The cost of `usage` in micro-dollars, rounded up. Uncached input is `input_tokens`
    /// minus its cached and cache-creation subsets; reasoning is part of output.
    pub fn cost_micro_usd(&self, usage: &Usage) -> u64 {
        let uncached = usage
            .input_tokens
            .saturating_sub(usage.cached_input_tokens)
            .saturating_sub(usage.cache_creation_input_tokens);
        let term = |tokens: u64, rate: u64| u128::from(tokens) * u128::from(rate);
        // Each term fits u128; only their sum can overflow, and only for absurd prices.
        let pico = term(uncached, self.input)
            .saturating_add(term(usage.cached_input_tokens, self.cached_input))
            .saturating_add(term(usage.cache_creation_input_tokens, self.cache_write))
            .saturating_add(term(usage.output_tokens, self.output));
        u64::try_from(pico.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// A price-table problem, with the field path of the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct PricingError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let (stem, prefix) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        if text.is_empty() {
            Err("empty pattern".into())
        } else if stem.contains('*') {
            Err(format!("{text:?}: '*' may only end a pattern"))
        } else if stem.chars().count() > MAX_MODEL_CHARS {
            Err(format!("longer than {MAX_MODEL_CHARS} characters"))
        } else if prefix {
            Ok(Pattern::Prefix(stem.to_owned()))
        } else {
            Ok(Pattern::Exact(stem.to_owned()))
        }
    }

    /// How specifically this pattern matches `model`: exact beats every prefix, and a longer
    /// prefix beats a shorter one.
    fn specificity(&self, model: &str) -> Option<usize> {
        match self {
            Pattern::Exact(name) => (name == model).then_some(usize::MAX),
            Pattern::Prefix(stem) => model.starts_with(stem.as_str()).then_some(stem.len()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    provider: String,
    pattern: Pattern,
    price: Price,
}

impl Rule {
    fn specificity(&self, provider: &str, model: &str) -> Option<(usize, bool)> {
        let named = self.provider == provider;
        if !named && self.provider != "*" {
            return None;
        }
        Some((self.pattern.specificity(model)?, named))
    }
}

/// The compiled price table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    rules: Vec<Rule>,
}

impl PriceTable {
    /// The shipped list prices (see the caveat in `pricing_defaults.rs`: override them).
    pub fn defaults() -> Self {
        let rules = super::pricing_defaults::DEFAULTS
            .iter()
            .map(|&(provider, model, input, cached, output, write)| Rule {
                provider: provider.to_owned(),
                pattern: Pattern::parse(model).unwrap_or(Pattern::Exact(model.to_owned())),
                price: Price {
                    input,
                    cached_input: cached.unwrap_or(input),
                    output,
                    cache_write: write.unwrap_or(input),
                },
            })
            .collect();
        PriceTable { rules }
    }

    /// A table of exactly `entries`, validated; errors name `pricing[i].field`.
    pub fn from_entries(entries: &[PriceEntry]) -> Result<Self, PricingError> {
        PriceTable::default().with_overrides(entries)
    }

    /// This table with `entries` added, each replacing any rule with the same provider and
    /// model pattern. Errors name `pricing[i].field`.
    pub fn with_overrides(mut self, entries: &[PriceEntry]) -> Result<Self, PricingError> {
        let mut seen: Vec<(usize, &str, &str)> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let rule = compile(i, entry)?;
            let key = (entry.provider.as_str(), entry.model.as_str());
            if let Some((first, _, _)) = seen.iter().find(|(_, p, m)| (*p, *m) == key) {
                return Err(error(i, "model", format!("duplicates {FIELD}[{first}]")));
            }
            seen.push((i, key.0, key.1));
            let same = |r: &Rule| r.provider == rule.provider && r.pattern == rule.pattern;
            match self.rules.iter_mut().find(|r| same(r)) {
                Some(existing) => *existing = rule,
                None => self.rules.push(rule),
            }
        }
        Ok(self)
    }

    /// The most specific price for `model` at `provider`, if any rule matches.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        self.rules
            .iter()
            .filter_map(|r| Some((r.specificity(provider, model)?, r.price)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, price)| price)
    }

    /// The cost of `usage` (priced by its `model`) in micro-dollars; `None` when the model is
    /// absent or unpriced.
    pub fn cost_micro_usd(&self, provider: &str, usage: &Usage) -> Option<u64> {
        let price = self.lookup(provider, usage.model.as_deref()?)?;
        Some(price.cost_micro_usd(usage))
    }

    /// The cost of `usage` on a provider of `kind`; Azure OpenAI falls back to OpenAI's list
    /// prices.
    pub fn cost_for(&self, kind: ProviderKind, usage: &Usage) -> Option<u64> {
        self.cost_micro_usd(kind.as_str(), usage).or_else(|| {
            (kind == ProviderKind::AzureOpenai)
                .then(|| self.cost_micro_usd("openai", usage))
                .flatten()
        })
    }

    /// The highest price of each kind (input, cached input, output, cache write) among the
    /// rules for `provider` (Azure OpenAI: OpenAI's), or among all rules when none is named
    /// for it: what a model without a price is charged, so that no model is free.
    pub fn ceiling(&self, kind: ProviderKind) -> Price {
        let named = match kind {
            ProviderKind::AzureOpenai => "openai",
            other => other.as_str(),
        };
        let max = |rules: &mut dyn Iterator<Item = &Rule>| {
            rules.fold(Price::default(), |acc, r| Price {
                input: acc.input.max(r.price.input),
                cached_input: acc.cached_input.max(r.price.cached_input),
                output: acc.output.max(r.price.output),
                cache_write: acc.cache_write.max(r.price.cache_write),
            })
        };
        if self.rules.iter().any(|r| r.provider == named) {
            max(&mut self.rules.iter().filter(|r| r.provider == named))
        } else {
            max(&mut self.rules.iter())
        }
    }

    /// The cost of `usage` on a provider of `kind`, and whether its model has a price; an
    /// unpriced (or absent) model is charged at [`PriceTable::ceiling`].
    pub fn cost_or_ceiling(&self, kind: ProviderKind, usage: &Usage) -> (u64, bool) {
        match self.cost_for(kind, usage) {
            Some(cost) => (cost, true),
            None => (self.ceiling(kind).cost_micro_usd(usage), false),
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn error(index: usize, field: &str, message: String) -> PricingError {
    PricingError {
        path: format!("{FIELD}[{index}].{field}"),
        message,
    }
}

fn compile(index: usize, entry: &PriceEntry) -> Result<Rule, PricingError> {
    if entry.provider.trim().is_empty() {
        return Err(error(index, "provider", "empty provider".into()));
    }
    let pattern = Pattern::parse(&entry.model).map_err(|m| error(index, "model", m))?;
    let rate = |field: &str, usd: f64| {
        usd_to_micro(usd).ok_or_else(|| {
            error(
                index,
                field,
                format!("{usd} must be a finite number from 0 to {MAX_USD_PER_MTOK}"),
            )
        })
    };
    let input = rate("input_per_mtok_usd", entry.input_per_mtok_usd)?;
    let optional = |field: &str, usd: Option<f64>| usd.map_or(Ok(input), |usd| rate(field, usd));
    Ok(Rule {
        provider: entry.provider.clone(),
        pattern,
        price: Price {
            input,
            cached_input: optional("cached_input_per_mtok_usd", entry.cached_input_per_mtok_usd)?,
            output: rate("output_per_mtok_usd", entry.output_per_mtok_usd)?,
            cache_write: optional("cache_write_per_mtok_usd", entry.cache_write_per_mtok_usd)?,
        },
    })
}

/// USD per Mtok to µUSD per Mtok, rounded to the nearest: the one place floats are used, at
/// load time.
fn usd_to_micro(usd: f64) -> Option<u64> {
    let ok = usd.is_finite() && (0.0..=MAX_USD_PER_MTOK).contains(&usd);
    ok.then(|| (usd * 1_000_000.0).round() as u64)
}

#[cfg(test)]
#[path = "pricing_tests.rs"]
mod tests;
