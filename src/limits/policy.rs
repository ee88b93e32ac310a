//! A consumer's limits, resolved once when the registry is built (consumer settings over its
//! provider's defaults), so the request path reads plain numbers.

use std::sync::Arc;
use std::time::Duration;

use super::bucket::Rate;
use crate::config::{LimitSettings, TeamConfig};
use crate::usage::request::RequestEstimate;
use crate::usage::Usage;

/// Default `max_request_bytes`: 64 KiB, from the write-up keygate replaces.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// Output tokens reserved when a request does not say `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

/// Which limit a bucket enforces; named in 429 messages and the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
}

impl Window {
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Window::Second => 1,
            Window::Minute => 60,
            Window::Hour => 3_600,
            Window::Day => 86_400,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// Resolved limits for one consumer. Consumers with the same limits share one (the registry
/// interns them), so it is compared and hashed by value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    pub requests: Vec<(Window, Rate)>,
    pub tokens: Vec<(Window, Rate)>,
    pub max_request_bytes: u64,
    pub budget_micro_usd: Option<u64>,
    /// The team and its budget, when the team has one.
    pub team_budget: Option<(Arc<str>, u64)>,
    pub default_max_tokens: u64,
}

impl Policy {
    pub fn resolve(
        consumer: &LimitSettings,
        provider: &LimitSettings,
        team: Option<(&str, &TeamConfig)>,
    ) -> Policy {
        let s = consumer.over(provider);
        let rates = |pairs: [(Window, Option<u64>); 4]| {
            pairs
                .into_iter()
                .filter_map(|(w, n)| n.map(|n| (w, Rate::per(n, w.duration()))))
                .collect::<Vec<_>>()
        };
        Policy {
            requests: rates([
                (Window::Second, s.requests_per_second),
                (Window::Minute, s.requests_per_minute),
                (Window::Hour, s.requests_per_hour),
                (Window::Day, s.requests_per_day),
            ]),
            tokens: rates([
                (Window::Minute, s.tokens_per_minute),
                (Window::Day, s.tokens_per_day),
                (Window::Second, None),
                (Window::Hour, None),
            ]),
            max_request_bytes: s.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
            budget_micro_usd: s.monthly_budget_usd.map(usd_to_micro),
            team_budget: team.and_then(|(name, t)| {
                t.monthly_budget_usd
                    .map(|b| (Arc::from(name), usd_to_micro(b)))
            }),
            default_max_tokens: s.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        }
    }

    /// The output a request may produce: its `max_tokens` (or the like), or
    /// `default_max_tokens`, which keygate then writes into the request (see
    /// [`Policy::bounds_output`]).
    pub fn output_cap(&self, estimate: &RequestEstimate) -> u64 {
        estimate
            .max_output_tokens
            .unwrap_or(self.default_max_tokens)
    }

    /// Tokens reserved against the token limits: the prompt estimate plus the output cap,
    /// reconciled to the provider's count when the response ends.
    pub fn token_reservation(&self, estimate: &RequestEstimate) -> u64 {
        estimate
            .prompt_tokens_estimate
            .saturating_add(self.output_cap(estimate))
    }

    /// The most a request can cost, reserved against budgets: every byte of its body as an
    /// input token, all of them priced as cache writes (never cheaper than plain input), and
    /// its output cap. What a response actually costs cannot exceed it, so reservations that
    /// count as spent keep concurrent requests within the budget.
    pub fn cost_bound(&self, estimate: &RequestEstimate) -> Usage {
        let input = estimate.body_bytes.max(estimate.prompt_tokens_estimate);
        Usage {
            input_tokens: input,
            cache_creation_input_tokens: input,
            output_tokens: self.output_cap(estimate),
            model: estimate.model.clone(),
            ..Usage::default()
        }
    }

    /// Whether keygate writes the output cap into requests that name none: when a budget or a
    /// token limit depends on it.
    pub fn bounds_output(&self) -> bool {
        !self.tokens.is_empty() || self.budget_micro_usd.is_some() || self.team_budget.is_some()
    }

    /// Whether a budget (the consumer's or its team's) applies.
    pub fn budgeted(&self) -> bool {
        self.budget_micro_usd.is_some() || self.team_budget.is_some()
    }

    /// True when nothing beyond the size check applies.
    pub fn is_unlimited(&self) -> bool {
        self.requests.is_empty()
            && self.tokens.is_empty()
            && self.budget_micro_usd.is_none()
            && self.team_budget.is_none()
    }
}

pub fn usd_to_micro(usd: f64) -> u64 {
    (usd * 1_000_000.0).round().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_settings_override_provider_defaults_field_by_field() {
        let provider = LimitSettings {
            requests_per_minute: Some(60),
            requests_per_hour: Some(1_000),
            tokens_per_minute: Some(10_000),
            ..Default::default()
        };
        let consumer = LimitSettings {
            requests_per_minute: Some(120),
            monthly_budget_usd: Some(12.5),
            ..Default::default()
        };
        let team = TeamConfig {
            monthly_budget_usd: Some(100.0),
        };
        let p = Policy::resolve(&consumer, &provider, Some(("ml", &team)));
        assert_eq!(
            p.requests,
            vec![
                (Window::Minute, Rate::per(120, Window::Minute.duration())),
                (Window::Hour, Rate::per(1_000, Window::Hour.duration()))
            ]
        );
        assert_eq!(
            p.tokens,
            vec![(Window::Minute, Rate::per(10_000, Window::Minute.duration()))]
        );
        assert_eq!(p.budget_micro_usd, Some(12_500_000));
        assert_eq!(p.team_budget, Some(("ml".into(), 100_000_000)));
        assert_eq!(p.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    }
}
