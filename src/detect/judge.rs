//! The rules: one warm consumer's state at one instant → the detections it earns.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::action::Action;
use super::config::DetectConfig;
use super::detection::{BudgetStatus, Detection, DetectorKind, Evidence};
use super::projection::projected_month_end;
use super::state::ConsumerState;

/// Everything a judgement needs besides the state.
pub(super) struct Judge<'a> {
    pub consumer: &'a Arc<str>,
    pub now: Instant,
    pub wall: SystemTime,
    pub config: &'a DetectConfig,
}

impl Judge<'_> {
    /// Appends the detections `state` earns now (each subject to the cooldown).
    pub fn run(
        &self,
        state: &mut ConsumerState,
        budget: Option<BudgetStatus>,
        out: &mut Vec<Detection>,
    ) {
        let c = self.config;
        let Some(baseline) = state.baseline() else {
            return;
        };
        let short = state.short_rates(self.now, c);
        let window_secs = Some(c.short_window.as_secs_f64());
        let (new_count, new_addresses) = state.new_sources(self.now, c.new_sources.window);
        let listed = |count: usize| (count > 0).then_some(count);

        if c.rate_spike.enabled
            && short.requests >= c.rate_spike.min_rate
            && short.requests > c.rate_spike.factor * baseline.requests
        {
            let (spike_count, spike_addresses) = state.new_sources(self.now, c.short_window);
            self.fire(
                state,
                out,
                DetectorKind::RateSpike,
                c.rate_spike.action,
                Evidence {
                    window_secs,
                    request_rate: Some(round(short.requests)),
                    baseline_request_rate: Some(round(baseline.requests)),
                    new_address_count: listed(spike_count),
                    new_addresses: spike_addresses,
                    ..Evidence::default()
                },
            );
        }

        let sv = &c.spend_velocity;
        let tokens_hot =
            short.tokens >= sv.min_tokens_per_sec && short.tokens > sv.factor * baseline.tokens;
        let spend_hot = short.micro_usd >= sv.min_micro_usd_per_sec
            && short.micro_usd > sv.factor * baseline.micro_usd;
        if sv.enabled && (tokens_hot || spend_hot) {
            self.fire(
                state,
                out,
                DetectorKind::SpendVelocity,
                sv.action,
                Evidence {
                    window_secs,
                    token_rate: Some(round(short.tokens)),
                    baseline_token_rate: Some(round(baseline.tokens)),
                    spend_rate_micro_usd: Some(round(short.micro_usd)),
                    baseline_spend_rate_micro_usd: Some(round(baseline.micro_usd)),
                    ..Evidence::default()
                },
            );
        }

        if let (true, Some(b), Some(velocity)) =
            (c.budget_overrun.enabled, budget, state.spend_velocity())
        {
            let projected = projected_month_end(b.month_to_date_micro_usd, velocity, self.wall);
            // Already spent: the budget limit refuses requests; nothing left to predict.
            if b.month_to_date_micro_usd < b.budget_micro_usd
                && projected as f64 >= c.budget_overrun.threshold * b.budget_micro_usd as f64
            {
                self.fire(
                    state,
                    out,
                    DetectorKind::BudgetOverrun,
                    c.budget_overrun.action,
                    Evidence {
                        spend_rate_micro_usd: Some(round(velocity)),
                        month_to_date_micro_usd: Some(b.month_to_date_micro_usd),
                        budget_micro_usd: Some(b.budget_micro_usd),
                        projected_micro_usd: Some(projected),
                        ..Evidence::default()
                    },
                );
            }
        }

        if c.new_sources.enabled && new_count >= c.new_sources.threshold {
            self.fire(
                state,
                out,
                DetectorKind::NewSources,
                c.new_sources.action,
                Evidence {
                    window_secs: Some(c.new_sources.window.as_secs_f64()),
                    new_address_count: Some(new_count),
                    new_addresses,
                    ..Evidence::default()
                },
            );
        }
    }

    fn fire(
        &self,
        state: &mut ConsumerState,
        out: &mut Vec<Detection>,
        detector: DetectorKind,
        action: Action,
        evidence: Evidence,
    ) {
        if state.try_fire(detector, self.now, self.config.cooldown) {
            out.push(Detection {
                consumer: self.consumer.clone(),
                detector,
                severity: detector.severity(),
                evidence,
                action,
                at: self.wall,
            });
        }
    }
}

/// Three decimals are plenty for evidence and keep payloads readable.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
