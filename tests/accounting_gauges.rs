//! Per-consumer gauges follow the state they describe: a consumer whose addresses age out
//! drops back to 0, and month-to-date spend is published from the ledger (after a restart,
//! and starting over in a new month) rather than only when a charge happens.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::time::{Duration, Instant, SystemTime};

use keygate::accounting::{Accounting, Ledger};
use keygate::usage::PriceTable;

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

fn gauge(text: &str, name: &str, consumer: &str) -> Option<f64> {
    let prefix = format!("{name}{{consumer=\"{consumer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

#[test]
fn source_addresses_fall_to_zero_when_the_window_empties() {
    let accounting = Accounting::new(
        PriceTable::defaults(),
        std::sync::Arc::new(Ledger::in_memory()),
    );
    let record = accounting.meters.record(&"team-a".into(), &"openai".into());
    let window = Duration::from_millis(200);
    for ip in ["10.0.0.1", "10.0.0.2"] {
        accounting
            .meters
            .saw(&record, ip.parse().unwrap(), Instant::now());
    }
    accounting.publish_sources(window);
    let name = "keygate_source_addresses";
    assert_eq!(
        gauge(&accounting.render_meters(), name, "team-a"),
        Some(2.0)
    );
    std::thread::sleep(window * 2);
    accounting.publish_sources(window);
    assert_eq!(
        gauge(&accounting.render_meters(), name, "team-a"),
        Some(0.0)
    );
}

#[test]
fn month_to_date_is_published_from_the_ledger_and_starts_over_each_month() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let nov = at("2026-11-20T08:00:00Z");
    {
        let ledger = Ledger::open(&path).unwrap();
        ledger.add("team-a", 2_500_000, nov);
        ledger.add("team:ml", 2_500_000, nov);
        ledger.flush().unwrap();
    }
    let accounting = Accounting::new(
        PriceTable::defaults(),
        std::sync::Arc::new(Ledger::open(&path).unwrap()),
    );
    let name = "keygate_spend_month_to_date_usd";
    accounting.publish_month_to_date(nov);
    let text = accounting.render_meters();
    assert_eq!(gauge(&text, name, "team-a"), Some(2.5), "{text}");
    assert!(
        !text.contains("team:ml"),
        "team budgets are not consumers: {text}"
    );
    accounting.publish_month_to_date(at("2026-12-01T00:00:05Z"));
    assert_eq!(
        gauge(&accounting.render_meters(), name, "team-a"),
        Some(0.0)
    );
}
