//! Turns criterion's results for `cargo bench --bench decision` or `--bench limits`
//! (target/criterion/GROUP/BENCH/SIZE/new/estimates.json) into a markdown table: median ns per
//! operation by registry size.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use keygate_bench::stats::{against, provenance, table, write_result};

#[derive(Debug, Parser)]
#[command(about = "Markdown table of the decision-core criterion results")]
struct Args {
    /// criterion's output directory for the `decision` group.
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
    #[arg(long, default_value = "bench/results/decision.md")]
    out: PathBuf,
}

const ORDER: [(&str, &str); 8] = [
    ("parse", "key parse + checksum"),
    ("hash", "SHA-256 of the key"),
    ("lookup", "parse + hash + registry lookup"),
    ("core", "decision core: parse + hash + lookup + scope check"),
    (
        "gate_decide",
        "Gate::decide (all of the above + path, headers, rewrite)",
    ),
    (
        "admit_with_metrics",
        "Pipeline::admit: the request phase with limits and the Prometheus recorder",
    ),
    (
        "admit_request",
        "header phase: declared size + request buckets (4 windows)",
    ),
    (
        "admit_body+settle",
        "body phase + settlement: token buckets, budget reservation, reconciliation",
    ),
];

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = args.criterion_dir.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| keygate_bench::procs::repo_root().join("target"));
        target.join("criterion/decision")
    });
    // bench -> size -> median ns
    let mut results: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for bench in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let bench = bench?;
        let name = bench.file_name().to_string_lossy().to_string();
        for size in std::fs::read_dir(bench.path())? {
            let size = size?;
            let Ok(n) = size.file_name().to_string_lossy().parse::<u64>() else {
                continue;
            };
            let file = size.path().join("new/estimates.json");
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", file.display()))?;
            if let Some(median) = json["median"]["point_estimate"].as_f64() {
                results.entry(name.clone()).or_default().insert(n, median);
            }
        }
    }
    if results.is_empty() {
        bail!("no criterion results under {}", dir.display());
    }
    let sizes: Vec<u64> = {
        let mut s: Vec<u64> = results.values().flat_map(|m| m.keys().copied()).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    let mut headers = vec!["operation".to_string()];
    headers.extend(sizes.iter().map(|n| format!("{n} consumers")));
    headers.push("largest ÷ smallest".into());
    let mut rows = Vec::new();
    for (key, label) in ORDER {
        let Some(by_size) = results.get(key) else {
            continue;
        };
        let mut row = vec![format!("{label} (`{key}`)")];
        for n in &sizes {
            row.push(match by_size.get(n) {
                Some(ns) if key == "core" && *n >= 1_000_000 => {
                    against(*ns, 1000.0, format!("{ns:.0} ns"))
                }
                Some(ns) => format!("{ns:.0} ns"),
                None => "—".into(),
            });
        }
        let first = by_size.values().next().copied().unwrap_or(f64::NAN);
        let last = by_size.values().last().copied().unwrap_or(f64::NAN);
        row.push(format!("{:.2}×", last / first));
        rows.push(row);
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let (title, about) = if dir.ends_with("limits") {
        (
            "Limit checks",
            "`cargo bench --bench limits`: local buckets, every consumer holding limiter state; \
             the cost should not grow with the number of consumers.",
        )
    } else {
        (
            "Decision core",
            "`cargo bench --bench decision`; target: decision core ≤ 1 µs at 1 M consumers, and \
             no growth with the registry.",
        )
    };
    let report = format!(
        "## {title} (criterion, median time per operation)\n\n{}\n\n{about}\n\n{}",
        provenance(),
        table(&headers, &rows)
    );
    println!("{report}");
    write_result(&args.out, &report)?;
    eprintln!("criterion-table: wrote {}", args.out.display());
    Ok(())
}
