//! Latency recording (HDR histograms, nanoseconds, 3 significant digits) and markdown tables.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The percentiles every table reports.
pub const QUANTILES: [(f64, &str); 4] = [
    (0.50, "p50"),
    (0.90, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
];

/// Latencies of successful requests, plus counts of failures.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub hist: Histogram<u64>,
    pub errors: u64,
    /// Seconds of measurement this recorder covers (summed over merged segments).
    pub seconds: f64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        // 1 ns .. 100 s; the bounds are constants, so this cannot fail.
        let hist = Histogram::new_with_bounds(1, 100_000_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits is valid"));
        Recorder {
            hist,
            errors: 0,
            seconds: 0.0,
        }
    }

    pub fn ok(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(ns);
    }

    pub fn error(&mut self) {
        self.errors += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds everywhere; add() only fails on incompatible bounds.
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        self.seconds += other.seconds;
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Successful requests per second over the measured time.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.count() as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The latency at quantile `q`, in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1e6
    }
}

/// A markdown table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    out += &format!("|{}\n", " --- |".repeat(headers.len()));
    for row in rows {
        out += &format!("| {} |\n", row.join(" | "));
    }
    out
}

pub fn fmt_ms(ms: f64) -> String {
    format!("{ms:.3}")
}

/// A signed difference in milliseconds.
pub fn fmt_delta(ms: f64) -> String {
    format!("{ms:+.3}")
}

/// `value` with a check mark or a cross against `limit` (pass when `value <= limit`).
pub fn against(value: f64, limit: f64, shown: String) -> String {
    if value <= limit {
        format!("{shown} ✅")
    } else {
        format!("{shown} ❌")
    }
}

/// Writes `text` to `path`, creating its directory.
pub fn write_result(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// One line saying where and when a table was made, for the results files.
pub fn provenance() -> String {
    // Online CPUs of the machine, not this process's affinity mask (grpc-load pins itself).
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "Machine: {cpus} CPUs ({model}), Linux {}; load average {} when this table was \
         written; unix time {secs}.",
        kernel.trim(),
        load.join(" ")
    )
}
