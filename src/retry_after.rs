//! How long until a limit lets the next request through, in the two forms clients read: the
//! `retry-after` header's whole seconds and OpenAI's `x-ratelimit-reset-*` text. Denial
//! headers and messages both use them.

use std::time::Duration;

/// Whole seconds, rounded up, at least 1 (the `retry-after` header).
pub fn retry_seconds(d: Duration) -> String {
    d.as_millis().div_ceil(1000).max(1).to_string()
}

/// OpenAI's reset format: `20ms`, `1s`, `6m0s`, `1h2m3s`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_round_up_and_openai_reset_text() {
        assert_eq!(retry_seconds(Duration::from_millis(1500)), "2");
        assert_eq!(retry_seconds(Duration::ZERO), "1");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
        assert_eq!(reset_text(Duration::from_secs(3723)), "1h2m3s");
    }
}
