//! Registry sizes for the criterion benches (`decision`, `limits`), shared by `#[path]`.

/// `$KEYGATE_BENCH_CONSUMERS`, else 1 k, 100 k and 1 M under `cargo bench` and only 1 k when
/// `cargo test --all-targets` runs this once as a test (no `--bench` argument).
pub fn sizes() -> Vec<usize> {
    let default = if std::env::args().any(|a| a == "--bench") {
        "1000,100000,1000000"
    } else {
        "1000"
    };
    let text = std::env::var("KEYGATE_BENCH_CONSUMERS").unwrap_or_else(|_| default.into());
    text.split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect()
}
