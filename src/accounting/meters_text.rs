//! The per-consumer metrics ([`super::meters`]) in Prometheus text format: each family once,
//! with its `# HELP` and `# TYPE`, rows sorted by consumer, labels in the order dashboards
//! and the alert rules know (`consumer`, `provider`, then the family's own).

use std::fmt::Write as _;
use std::sync::Arc;

use super::record::{Snapshot, STATUS_CLASSES, TOKEN_KINDS};
use crate::telemetry;

type Rows = [(Arc<str>, Snapshot)];

/// Reads one counter of a record.
type Count = fn(&Snapshot) -> u64;

/// The rows with their label heads, for the counter families.
#[derive(Clone, Copy)]
struct Counted<'a> {
    rows: &'a Rows,
    heads: &'a [Option<String>],
}

/// Renders every family that has at least one row.
pub fn render(rows: &Rows) -> String {
    let mut out = String::new();
    // `name{consumer="…",provider="…"` without the name, built once per record rather than
    // once per family. Records without a provider label have counted nothing yet.
    let heads: Vec<Option<String>> = rows
        .iter()
        .map(|(consumer, s)| {
            s.provider.as_ref().map(|provider| {
                format!(
                    "{{consumer=\"{}\",provider=\"{}\"",
                    escape(consumer),
                    escape(provider)
                )
            })
        })
        .collect();
    let counted = Counted {
        rows,
        heads: &heads,
    };
    family(
        &mut out,
        telemetry::REQUESTS_TOTAL,
        "counter",
        "Requests decided by keygate, by consumer, provider and outcome.",
        counted,
        |out, head, s| {
            if s.allowed > 0 {
                line(out, head, &[("outcome", "allowed")], s.allowed);
            }
            for (outcome, n) in &s.rare.denied {
                line(out, head, &[("outcome", outcome)], *n);
            }
        },
    );
    family(
        &mut out,
        telemetry::RESPONSES_TOTAL,
        "counter",
        "Upstream responses by consumer, provider and status class.",
        counted,
        |out, head, s| {
            for (class, n) in STATUS_CLASSES.iter().zip(s.responses) {
                if n > 0 {
                    line(out, head, &[("status_class", class)], n);
                }
            }
        },
    );
    let bytes: [(&str, &str, Count); 2] = [
        (
            telemetry::REQUEST_BYTES_TOTAL,
            "Request body bytes sent upstream.",
            |s| s.request_bytes,
        ),
        (
            telemetry::RESPONSE_BYTES_TOTAL,
            "Response body bytes received from upstream.",
            |s| s.response_bytes,
        ),
    ];
    for (name, help, count) in bytes {
        family(&mut out, name, "counter", help, counted, |out, head, s| {
            if count(s) > 0 {
                line(out, head, &[], count(s));
            }
        });
    }
    family(
        &mut out,
        telemetry::TOKENS_TOTAL,
        "counter",
        "LLM tokens from provider-reported usage, by kind.",
        counted,
        |out, head, s| {
            for row in &s.rare.models {
                let model = escape(&row.model);
                for (kind, n) in TOKEN_KINDS.iter().zip(row.tokens) {
                    line(out, head, &[("model", &model), ("kind", kind)], n);
                }
            }
        },
    );
    family(
        &mut out,
        telemetry::SPEND_USD_TOTAL,
        "counter",
        "Spend priced from provider-reported usage, in USD.",
        counted,
        |out, head, s| {
            for row in &s.rare.models {
                let _ = writeln!(
                    out,
                    "{head},model=\"{}\"}} {}",
                    escape(&row.model),
                    usd(row.micro_usd)
                );
            }
        },
    );
    gauge(
        &mut out,
        telemetry::SPEND_MONTH_TO_DATE,
        "Spend in the current UTC calendar month, in USD.",
        rows,
        |s| s.month_to_date.map(usd),
    );
    gauge(
        &mut out,
        telemetry::SOURCE_ADDRESSES,
        "Distinct source addresses per consumer in the sliding window.",
        rows,
        |s| s.sources.map(f64::from),
    );
    out
}

/// `keygate_budget_usd` for every consumer with a monthly budget (micro-dollars), rendered
/// from the registry at scrape time: it costs no memory per consumer, and follows every
/// reload (a removed consumer's series goes with it).
pub fn render_budgets<'a>(budgets: impl Iterator<Item = (&'a str, u64)>) -> String {
    let mut body = String::new();
    for (consumer, micro_usd) in budgets {
        let _ = writeln!(
            body,
            "{}{{consumer=\"{}\"}} {}",
            telemetry::BUDGET_USD,
            escape(consumer),
            usd(micro_usd)
        );
    }
    if body.is_empty() {
        return body;
    }
    let name = telemetry::BUDGET_USD;
    format!(
        "# HELP {name} Monthly budget, in USD, where one is configured.\n# TYPE {name} gauge\n{body}\n"
    )
}

/// One counter family: `write` writes a record's lines after `name{consumer="…",provider="…"`
/// (no closing brace: [`line`] adds the family's own labels).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    counted: Counted<'_>,
    write: impl Fn(&mut String, &str, &Snapshot),
) {
    let mut body = String::new();
    let mut head = String::new();
    for ((_, s), label) in counted.rows.iter().zip(counted.heads) {
        let Some(label) = label else {
            continue;
        };
        head.clear();
        head.push_str(name);
        head.push_str(label);
        write(&mut body, &head, s);
    }
    if !body.is_empty() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        out.push_str(&body);
        out.push('\n');
    }
}

fn gauge(
    out: &mut String,
    name: &str,
    help: &str,
    rows: &Rows,
    value: impl Fn(&Snapshot) -> Option<f64>,
) {
    let mut body = String::new();
    for (consumer, s) in rows {
        if let Some(v) = value(s) {
            let _ = writeln!(body, "{name}{{consumer=\"{}\"}} {v}", escape(consumer));
        }
    }
    if !body.is_empty() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        out.push_str(&body);
        out.push('\n');
    }
}

fn line(out: &mut String, head: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(head);
    for (k, v) in labels {
        let _ = write!(out, ",{k}=\"{v}\"");
    }
    let _ = writeln!(out, "}} {value}");
}

fn usd(micro: u64) -> f64 {
    micro as f64 / 1_000_000.0
}

/// A label value as the text format needs it: backslash, double quote and newline escaped.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::time::{Duration, Instant};

    use super::super::meters::Meters;

    fn name(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn each_family_once_with_its_labels_and_nothing_untouched() {
        let meters = Meters::default();
        let (busy, quiet, openai) = (name("team-b"), name("team-a"), name("openai"));
        let ra = meters.record(&busy, &openai);
        ra.outcome("allowed");
        ra.outcome("allowed");
        ra.outcome("rate_limited");
        ra.response(200);
        ra.response(503);
        ra.response_bytes(10);
        ra.charge(&name("gpt-\"x\""), [1, 2, 3, 4, 5], 1_500_000);
        meters.record(&quiet, &openai).outcome("allowed");
        meters.unknown().outcome("unknown_key");
        let now = Instant::now();
        meters.saw(&ra, "10.0.0.1".parse().unwrap(), now);
        meters.saw(&ra, "10.0.0.2".parse().unwrap(), now);
        meters.publish_sources(Duration::from_secs(60), now);
        let text = super::render(&meters.snapshot());
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!((helps, types), (6, 6), "{text}");
        for expected in [
            "keygate_requests_total{consumer=\"team-a\",provider=\"openai\",outcome=\"allowed\"} 1",
            "keygate_requests_total{consumer=\"team-b\",provider=\"openai\",outcome=\"allowed\"} 2",
            "keygate_requests_total{consumer=\"team-b\",provider=\"openai\",outcome=\"rate_limited\"} 1",
            "keygate_requests_total{consumer=\"unknown\",provider=\"unknown\",outcome=\"unknown_key\"} 1",
            "keygate_responses_total{consumer=\"team-b\",provider=\"openai\",status_class=\"5xx\"} 1",
            "keygate_response_bytes_total{consumer=\"team-b\",provider=\"openai\"} 10",
            "keygate_tokens_total{consumer=\"team-b\",provider=\"openai\",model=\"gpt-\\\"x\\\"\",kind=\"cache_creation\"} 5",
            "keygate_spend_usd_total{consumer=\"team-b\",provider=\"openai\",model=\"gpt-\\\"x\\\"\"} 1.5",
            "keygate_source_addresses{consumer=\"team-b\"} 2",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected}\n{text}");
        }
        // Rows sorted by consumer, every family's rows together.
        let a_at = text.find("consumer=\"team-a\"").unwrap();
        assert!(a_at < text.find("consumer=\"team-b\"").unwrap());
        assert!(
            !text.contains("request_bytes_total"),
            "never counted: {text}"
        );
        assert!(!text.contains("3xx"), "{text}");
        assert!(!text.contains("month_to_date"), "never published: {text}");
    }

    #[test]
    fn a_new_provider_starts_a_fresh_record_and_keeps_the_gauges() {
        let meters = Meters::default();
        let c = name("team-a");
        meters.set_month_to_date(&c, 2_000_000);
        meters.record(&c, &name("openai")).outcome("allowed");
        meters.record(&c, &name("anthropic")).outcome("allowed");
        let text = super::render(&meters.snapshot());
        assert!(!text.contains("provider=\"openai\""), "{text}");
        assert!(text.contains(
            "keygate_requests_total{consumer=\"team-a\",provider=\"anthropic\",outcome=\"allowed\"} 1"
        ));
        assert!(text.contains("keygate_spend_month_to_date_usd{consumer=\"team-a\"} 2"));
        assert_eq!(meters.len(), 1);
    }

    #[test]
    fn publishing_sets_the_absent_to_zero_and_leaves_the_never_set_alone() {
        let meters = Meters::default();
        let (a, b) = (name("a"), name("b"));
        meters.record(&b, &name("openai")).outcome("allowed");
        meters.publish_month_to_date(vec![(a.clone(), 3)]);
        meters.publish_month_to_date(vec![]);
        let text = super::render(&meters.snapshot());
        assert!(
            text.contains("keygate_spend_month_to_date_usd{consumer=\"a\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("keygate_spend_month_to_date_usd{consumer=\"b\"}"),
            "{text}"
        );
    }

    #[test]
    fn last_seen_counts_from_the_newest_address_until_it_ages_out() {
        let meters = Meters::default();
        let c = name("team-a");
        assert_eq!(meters.last_seen(&c, Instant::now()), None);
        let record = meters.record(&c, &name("openai"));
        let t0 = Instant::now();
        meters.saw(&record, "10.0.0.1".parse().unwrap(), t0);
        meters.saw(
            &record,
            "10.0.0.2".parse().unwrap(),
            t0 + Duration::from_secs(5),
        );
        let now = t0 + Duration::from_secs(65);
        assert_eq!(meters.last_seen(&c, now), Some(Duration::from_secs(60)));
        meters.publish_sources(Duration::from_secs(30), now);
        assert_eq!(meters.last_seen(&c, now), None);
    }

    #[test]
    fn budgets_render_once_per_consumer_with_one_help_and_nothing_without_any() {
        assert_eq!(super::render_budgets(std::iter::empty()), "");
        let text = super::render_budgets([("team-a", 2_500_000), ("a\"b", 1)].into_iter());
        assert_eq!(
            text,
            "# HELP keygate_budget_usd Monthly budget, in USD, where one is configured.\n\
             # TYPE keygate_budget_usd gauge\n\
             keygate_budget_usd{consumer=\"team-a\"} 2.5\n\
             keygate_budget_usd{consumer=\"a\\\"b\"} 0.000001\n\n"
        );
    }
}
