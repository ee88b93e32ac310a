//! What a detection asks keygate to do, as written in the config (`alert`, `suspend`, or
//! `{throttle: {factor: 0.25, period: 15m}}`) and in payloads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::serde_util::duration;

/// What keygate does when a detector fires. The lead's enforcement applies it; detectors only
/// say which one the config asks for. Written `alert`, `suspend`, or
/// `{throttle: {factor: 0.25, period: 15m}}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Notify and audit only.
    Alert,
    /// Scale the consumer's request and token limits by `factor` (0 < factor ≤ 1) for `period`.
    Throttle {
        factor: f64,
        #[serde(with = "duration")]
        period: Duration,
    },
    /// Set the consumer to `suspended` (403) until an admin resumes it.
    Suspend,
}

impl Action {
    /// `alert`, `throttle` or `suspend` (metric labels, one-line summaries).
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Throttle { .. } => "throttle",
            Action::Suspend => "suspend",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleSpec {
    factor: f64,
    #[serde(with = "duration")]
    period: Duration,
}

const ACTIONS: &[&str] = &["alert", "throttle", "suspend"];

/// Accepts a bare name or a one-key map (serde_yaml would otherwise demand `!throttle` tags).
impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Action;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("alert, suspend, or {throttle: {factor, period}}")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Action, E> {
                match v {
                    "alert" => Ok(Action::Alert),
                    "suspend" => Ok(Action::Suspend),
                    "throttle" => Err(E::custom(
                        "throttle needs a factor and a period: {throttle: {factor: 0.25, period: 15m}}",
                    )),
                    other => Err(E::unknown_variant(other, ACTIONS)),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Action, A::Error> {
                use serde::de::Error;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom("an empty map is not an action"));
                };
                let action = match key.as_str() {
                    "throttle" => {
                        let spec: ThrottleSpec = map.next_value()?;
                        Action::Throttle {
                            factor: spec.factor,
                            period: spec.period,
                        }
                    }
                    "alert" | "suspend" => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        self.visit_str(&key)?
                    }
                    other => return Err(A::Error::unknown_variant(other, ACTIONS)),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom("an action is a map with exactly one key"));
                }
                Ok(action)
            }
        }
        d.deserialize_any(Visitor)
    }
}
