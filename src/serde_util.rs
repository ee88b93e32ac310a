//! Small serde adapters shared by the config, the detectors, notifications and the audit log:
//! humantime durations (`10s`, `15m`), RFC 3339 timestamps and `Arc<str>` names (serde's `rc`
//! feature is not enabled in this crate).

/// A `Duration` written as humantime text (`500ms`, `10s`, `1h`), both ways.
pub mod duration {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); use e.g. 2s, 500ms, 1m"
            ))
        })
    }
}

/// An optional `Duration` written as humantime text, both ways.
pub mod duration_opt {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); use e.g. 30d, 24h, 90m"
            ))
        })
    }
}

/// A `SystemTime` written as RFC 3339 UTC with milliseconds (serialize only).
pub mod rfc3339 {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }
}

/// An optional `SystemTime` as RFC 3339 text (read any RFC 3339; written UTC, whole seconds).
pub mod rfc3339_opt {
    use serde::Deserialize;
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_rfc3339_weak(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid timestamp {text:?} ({e}); use RFC 3339 like 2027-01-31T00:00:00Z"
            ))
        })
    }
}

/// An `Arc<str>` written as a plain string (serialize only).
pub mod arc_str {
    use std::sync::Arc;

    pub fn serialize<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }
}
