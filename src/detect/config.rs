//! Detector settings (`detect:` in the config file). Every field has a default, so an empty
//! section turns every detector on with the thresholds documented here; unknown fields are
//! errors. Durations are humantime text (`10s`, `1h`), so tests can shrink every window to
//! seconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::action::Action;
use crate::serde_util::duration;

/// Settings shared by every detector, then one section per detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Off: `observe` and `evaluate` do nothing (canaries still fire).
    pub enabled: bool,
    /// The "now" window rates are measured over (default 10 s: short enough to suspend a
    /// leaked key within seconds, long enough to smooth single-request jitter).
    #[serde(with = "duration")]
    pub short_window: Duration,
    /// The baseline is an EWMA of the rate in intervals of this length (default 1 min).
    #[serde(with = "duration")]
    pub baseline_interval: Duration,
    /// Half-life of the baseline EWMA (default 1 h: an organic ramp over minutes moves the
    /// baseline along, an abrupt jump does not).
    #[serde(with = "duration")]
    pub baseline_half_life: Duration,
    /// Active baseline time a consumer needs before rate, spend, budget and new-source
    /// detectors judge it (default 10 min). Addresses seen in this time are learned.
    #[serde(with = "duration")]
    pub warmup: Duration,
    /// One detection per consumer and detector within this time (default 5 min).
    #[serde(with = "duration")]
    pub cooldown: Duration,
    /// State of consumers unseen this long is dropped by `evict_idle` (default 7 days).
    #[serde(with = "duration")]
    pub idle_evict: Duration,
    pub rate_spike: RateSpikeConfig,
    pub spend_velocity: SpendVelocityConfig,
    pub budget_overrun: BudgetOverrunConfig,
    pub new_sources: NewSourcesConfig,
    pub canary: CanaryConfig,
    pub identity_mismatch: IdentityMismatchConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            short_window: Duration::from_secs(10),
            baseline_interval: Duration::from_secs(60),
            baseline_half_life: Duration::from_secs(3600),
            warmup: Duration::from_secs(600),
            cooldown: Duration::from_secs(300),
            idle_evict: Duration::from_secs(7 * 24 * 3600),
            rate_spike: RateSpikeConfig::default(),
            spend_velocity: SpendVelocityConfig::default(),
            budget_overrun: BudgetOverrunConfig::default(),
            new_sources: NewSourcesConfig::default(),
            canary: CanaryConfig::default(),
            identity_mismatch: IdentityMismatchConfig::default(),
        }
    }
}

/// Request rate over `short_window` versus the consumer's own baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateSpikeConfig {
    pub enabled: bool,
    /// Fire when the short-window rate exceeds `factor` × baseline (default 5: a 20× leak
    /// crosses it within about 3 s of a 10 s window; an organic 2× ramp never comes close).
    pub factor: f64,
    /// And the short-window rate is at least this many requests per second (default 1), so a
    /// consumer going from 1 request a minute to 10 is not a "spike".
    pub min_rate: f64,
    /// Default `suspend`: a 5× jump in requests is the signature of a leaked key being used.
    pub action: Action,
}

impl Default for RateSpikeConfig {
    fn default() -> Self {
        RateSpikeConfig {
            enabled: true,
            factor: 5.0,
            min_rate: 1.0,
            action: Action::Suspend,
        }
    }
}

/// Tokens or spend over `short_window` versus the consumer's baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpendVelocityConfig {
    pub enabled: bool,
    /// Default 10: usage is charged per response, so one long completion is lumpy; a
    /// higher factor than the request spike keeps single large responses from firing.
    pub factor: f64,
    /// Floors: at least this many tokens per second (default 2000) …
    pub min_tokens_per_sec: f64,
    /// … or micro-dollars per second (default 5000, i.e. $18/h) before it can fire.
    pub min_micro_usd_per_sec: f64,
    /// Default `throttle` to 25 % for 15 min: slows a runaway job without cutting it off.
    pub action: Action,
}

impl Default for SpendVelocityConfig {
    fn default() -> Self {
        SpendVelocityConfig {
            enabled: true,
            factor: 10.0,
            min_tokens_per_sec: 2000.0,
            min_micro_usd_per_sec: 5000.0,
            action: Action::Throttle {
                factor: 0.25,
                period: Duration::from_secs(900),
            },
        }
    }
}

/// Month-to-date spend plus the current velocity, projected to the end of the UTC month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetOverrunConfig {
    pub enabled: bool,
    /// Fire when the projection reaches this fraction of the budget (default 1.0).
    pub threshold: f64,
    /// Default `alert`: the budget itself already refuses requests once it is spent.
    pub action: Action,
}

impl Default for BudgetOverrunConfig {
    fn default() -> Self {
        BudgetOverrunConfig {
            enabled: true,
            threshold: 1.0,
            action: Action::Alert,
        }
    }
}

/// Addresses outside the consumer's learned set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewSourcesConfig {
    pub enabled: bool,
    /// Fire when at least this many unlearned addresses were used within `window` (default 3:
    /// one new pod or laptop is normal, three at once is not).
    pub threshold: usize,
    /// Default 1 min.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Learned addresses kept per consumer (default 256; least recently seen evicted).
    pub max_learned: usize,
    /// After warm-up an address is learned once it has been in use this long (default 1 h).
    #[serde(with = "duration")]
    pub learn_after: Duration,
    /// Default `alert`: new addresses alone are often a deploy, not a leak.
    pub action: Action,
}

impl Default for NewSourcesConfig {
    fn default() -> Self {
        NewSourcesConfig {
            enabled: true,
            threshold: 3,
            window: Duration::from_secs(60),
            max_learned: 256,
            learn_after: Duration::from_secs(3600),
            action: Action::Alert,
        }
    }
}

/// Canary consumers: keys planted where only an attacker would find them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryConfig {
    /// Default `suspend`: any use of a canary key is a confirmed leak.
    pub action: Action,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            action: Action::Suspend,
        }
    }
}

/// A key bound to workload identities presented from another one (`key_and_identity`): the
/// key was copied out of where it belongs. The request is refused whatever the action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityMismatchConfig {
    /// Default `alert`: the bound key is useless elsewhere, and suspending would let whoever
    /// holds the copy cut off the workload it belongs to.
    pub action: Action,
}

impl Default for IdentityMismatchConfig {
    fn default() -> Self {
        IdentityMismatchConfig {
            action: Action::Alert,
        }
    }
}

/// The most learned addresses a consumer may keep, whatever the config says.
pub const MAX_LEARNED_CAP: usize = 4096;

/// Why a `detect:` section is unusable. Names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectConfigError {
    #[error("detect.{0}: must be greater than zero")]
    Zero(&'static str),
    #[error("detect.{field}: must be a number above {min}")]
    TooSmall { field: &'static str, min: f64 },
    #[error("detect.{0}: throttle factor must be above 0 and at most 1, with a period above zero")]
    Throttle(&'static str),
    #[error("detect.short_window must not be longer than detect.baseline_interval")]
    WindowOrder,
    #[error("detect.new_sources.max_learned: must be between 1 and {MAX_LEARNED_CAP}")]
    MaxLearned,
}

impl DetectConfig {
    /// Checks ranges the types cannot express.
    pub fn validate(&self) -> Result<(), DetectConfigError> {
        for (field, d) in [
            ("short_window", self.short_window),
            ("baseline_interval", self.baseline_interval),
            ("baseline_half_life", self.baseline_half_life),
            ("idle_evict", self.idle_evict),
            ("new_sources.window", self.new_sources.window),
        ] {
            if d.is_zero() {
                return Err(DetectConfigError::Zero(field));
            }
        }
        if self.short_window > self.baseline_interval {
            return Err(DetectConfigError::WindowOrder);
        }
        let above = |field: &'static str, value: f64, min: f64| {
            if value.is_finite() && value > min {
                Ok(())
            } else {
                Err(DetectConfigError::TooSmall { field, min })
            }
        };
        above("rate_spike.factor", self.rate_spike.factor, 1.0)?;
        above("rate_spike.min_rate", self.rate_spike.min_rate, 0.0)?;
        above("spend_velocity.factor", self.spend_velocity.factor, 1.0)?;
        above(
            "spend_velocity.min_tokens_per_sec",
            self.spend_velocity.min_tokens_per_sec,
            0.0,
        )?;
        above(
            "spend_velocity.min_micro_usd_per_sec",
            self.spend_velocity.min_micro_usd_per_sec,
            0.0,
        )?;
        above(
            "budget_overrun.threshold",
            self.budget_overrun.threshold,
            0.0,
        )?;
        if self.new_sources.threshold == 0 {
            return Err(DetectConfigError::Zero("new_sources.threshold"));
        }
        if !(1..=MAX_LEARNED_CAP).contains(&self.new_sources.max_learned) {
            return Err(DetectConfigError::MaxLearned);
        }
        for (field, action) in [
            ("rate_spike.action", &self.rate_spike.action),
            ("spend_velocity.action", &self.spend_velocity.action),
            ("budget_overrun.action", &self.budget_overrun.action),
            ("new_sources.action", &self.new_sources.action),
            ("canary.action", &self.canary.action),
            ("identity_mismatch.action", &self.identity_mismatch.action),
        ] {
            if let Action::Throttle { factor, period } = action {
                if !(factor.is_finite() && *factor > 0.0 && *factor <= 1.0) || period.is_zero() {
                    return Err(DetectConfigError::Throttle(field));
                }
            }
        }
        Ok(())
    }

    /// Complete baseline intervals with traffic needed before a consumer is judged.
    pub(crate) fn warmup_intervals(&self) -> u64 {
        let interval = self.baseline_interval.as_nanos().max(1);
        let n = self.warmup.as_nanos().div_ceil(interval);
        u64::try_from(n).unwrap_or(u64::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_documented_defaults() {
        let c: DetectConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, DetectConfig::default());
        assert_eq!(c.rate_spike.action, Action::Suspend);
        assert_eq!(c.budget_overrun.action, Action::Alert);
        assert!(matches!(c.spend_velocity.action, Action::Throttle { .. }));
        c.validate().unwrap();
        assert_eq!(c.warmup_intervals(), 10);
    }

    #[test]
    fn parses_actions_and_durations_and_rejects_unknown_fields() {
        let c: DetectConfig = serde_yaml::from_str(
            "short_window: 2s\nbaseline_interval: 5s\nwarmup: 20s\n\
             rate_spike: {factor: 8, action: alert}\n\
             new_sources: {action: {throttle: {factor: 0.5, period: 10m}}}\n",
        )
        .unwrap();
        assert_eq!(c.short_window, Duration::from_secs(2));
        assert_eq!(c.rate_spike.factor, 8.0);
        assert_eq!(c.rate_spike.action, Action::Alert);
        assert_eq!(
            c.new_sources.action,
            Action::Throttle {
                factor: 0.5,
                period: Duration::from_secs(600)
            }
        );
        assert_eq!(c.warmup_intervals(), 4);
        assert!(serde_yaml::from_str::<DetectConfig>("rate_spike: {factr: 2}").is_err());
        assert!(serde_yaml::from_str::<DetectConfig>("cooldown: soon").is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = DetectConfig::default();
        c.rate_spike.factor = 0.5;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "detect.rate_spike.factor: must be a number above 1"
        );
        let c = DetectConfig {
            short_window: Duration::from_secs(120),
            ..DetectConfig::default()
        };
        assert_eq!(c.validate(), Err(DetectConfigError::WindowOrder));
        let mut c = DetectConfig::default();
        c.canary.action = Action::Throttle {
            factor: 2.0,
            period: Duration::from_secs(1),
        };
        assert_eq!(
            c.validate(),
            Err(DetectConfigError::Throttle("canary.action"))
        );
        let mut c = DetectConfig::default();
        c.new_sources.max_learned = 0;
        assert_eq!(c.validate(), Err(DetectConfigError::MaxLearned));
    }
}
