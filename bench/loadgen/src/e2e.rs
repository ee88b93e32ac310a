//! What the end-to-end benchmark compares: each configuration is an Envoy config (see
//! [`EnvoyKind`]) in front of a keygate of some [`Flavor`], and the markdown report of a run.

use std::sync::PoisonError;

use crate::http_load::Pool;
use crate::procs::Child;
use crate::stack::EnvoyKind;
use crate::stats::{against, fmt_delta, fmt_ms, table, Recorder, QUANTILES};

/// How the keygate behind a configuration is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// File credentials, no limits (rows a–d).
    Plain,
    /// Never-denying request, token and budget limits in local buckets.
    LocalLimits,
    /// The same limits shared through a local redis-server.
    RedisLimits,
    /// The provider key from an OpenBao dev server instead of the secrets file.
    VaultCredentials,
    /// Not keygate: `null-processor`, which allows everything without reading it (the
    /// floor of an external-processing hop).
    Null,
}

/// One row of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct Configuration {
    pub name: &'static str,
    pub label: &'static str,
    pub envoy: EnvoyKind,
    pub flavor: Flavor,
    /// Envoy reaches keygate over its Unix socket (`listeners.grpc_uds`) instead of TCP.
    pub uds: bool,
}

/// Every configuration, baseline first; `--configs` picks a subset by name.
pub const CONFIGURATIONS: [Configuration; 14] = [
    Configuration {
        name: "baseline",
        label: "a. baseline (Envoy → mock, no keygate)",
        envoy: EnvoyKind::Baseline,
        flavor: Flavor::Plain,
        uds: false,
    },
    Configuration {
        name: "ext_authz",
        label: "b. + keygate via ext_authz",
        envoy: EnvoyKind::ExtAuthz,
        flavor: Flavor::Plain,
        uds: false,
    },
    Configuration {
        name: "ext_proc",
        label: "c. + keygate via ext_proc, request headers only",
        envoy: EnvoyKind::ExtProcHeaders,
        flavor: Flavor::Plain,
        uds: false,
    },
    Configuration {
        name: "ext_proc+usage",
        label: "d. + keygate via ext_proc with usage accounting (responses observed)",
        envoy: EnvoyKind::ExtProcUsage,
        flavor: Flavor::Plain,
        uds: false,
    },
    Configuration {
        name: "usage+limits",
        label: "e. d + local limits (request and token buckets, monthly budget)",
        envoy: EnvoyKind::ExtProcUsage,
        flavor: Flavor::LocalLimits,
        uds: false,
    },
    Configuration {
        name: "usage+redis",
        label: "f. d + the same limits shared through Redis",
        envoy: EnvoyKind::ExtProcUsage,
        flavor: Flavor::RedisLimits,
        uds: false,
    },
    Configuration {
        name: "ext_proc+vault",
        label: "g. c with the provider key from Vault (OpenBao) instead of a file",
        envoy: EnvoyKind::ExtProcHeaders,
        flavor: Flavor::VaultCredentials,
        uds: false,
    },
    Configuration {
        name: "ext_authz+uds",
        label: "h. b over a Unix socket (listeners.grpc_uds)",
        envoy: EnvoyKind::ExtAuthz,
        flavor: Flavor::Plain,
        uds: true,
    },
    Configuration {
        name: "ext_proc+uds",
        label: "i. c over a Unix socket (listeners.grpc_uds)",
        envoy: EnvoyKind::ExtProcHeaders,
        flavor: Flavor::Plain,
        uds: true,
    },
    Configuration {
        name: "null_authz",
        label: "j. b's Envoy config, a do-nothing ext_authz server instead of keygate (floor)",
        envoy: EnvoyKind::ExtAuthz,
        flavor: Flavor::Null,
        uds: false,
    },
    Configuration {
        name: "null_proc",
        label: "k. c's Envoy config, a do-nothing ext_proc server instead of keygate (floor)",
        envoy: EnvoyKind::ExtProcHeaders,
        flavor: Flavor::Null,
        uds: false,
    },
    Configuration {
        name: "usage+held",
        label: "l. d with held responses (as before issue 16; one Envoy, several keygates)",
        envoy: EnvoyKind::ExtProcHeld,
        flavor: Flavor::Plain,
        uds: false,
    },
    Configuration {
        name: "null_proc+body",
        label: "m. k with the request body sent BUFFERED: the floor of d's two held messages",
        envoy: EnvoyKind::ExtProcBody,
        flavor: Flavor::Null,
        uds: false,
    },
    Configuration {
        name: "null_proc+observed",
        label: "n. d's Envoy config, a do-nothing processor with d's messages (floor of d)",
        envoy: EnvoyKind::ExtProcUsage,
        flavor: Flavor::Null,
        uds: false,
    },
];

/// A configuration while it runs.
pub struct Setup {
    pub config: Configuration,
    pub pool: std::sync::Arc<Pool>,
    pub envoy: Child,
    /// Index of its keygate in the run's keygates.
    pub keygate: usize,
}

/// Everything measured for one configuration at one rate.
#[derive(Default)]
pub struct Cell {
    pub total: Recorder,
    pub rounds: Vec<Recorder>,
    /// CPU seconds used by envoy, keygate, mock, generator; and requests sent.
    pub cpu: [f64; 4],
    pub sent: f64,
}

/// The run's parameters, as the report describes them.
pub struct RunShape {
    pub rates: Vec<f64>,
    pub rounds: usize,
    pub duration: f64,
    pub warmup: f64,
    pub consumers: usize,
    pub max_conns: usize,
    pub probe_duration: f64,
    pub probe_rounds: usize,
    pub probe_conns: usize,
}

/// The markdown report: latency table, targets, per-round deltas, CPU, probe, and `notes`
/// (facts read from the processes after the run, such as Redis fallbacks).
pub fn report(
    shape: &RunShape,
    provenance: &str,
    setups: &[Setup],
    cells: &[Vec<Cell>],
    probes: &[Recorder],
    notes: &[String],
) -> String {
    let mut out = String::from("## End-to-end latency through Envoy (open loop)\n\n");
    out += &format!("{provenance}\n\n");
    out += &format!(
        "{} round(s) × {} s per configuration and rate, each segment preceded by {} s of \
         discarded warm-up; configurations interleaved within every round, order rotated per \
         round. {} consumers loaded. `POST /v1/chat/completions` over HTTP/1.1 keep-alive \
         (pool of ≤ {} connections per Envoy); latency runs from the *scheduled* send time to \
         the last response byte. Envoy `--concurrency 1`; generator, Envoy, keygate and mock \
         share the machine. Times in ms; *added* = configuration − baseline at the same \
         percentile.\n\nConfigurations, all rendered from envoy/*.yaml the way \
         tests/harness/envoy_config.py does: a = ext_proc.yaml with the ext_proc filter removed \
         (the client sends the `x-keygate-provider: openai` header keygate would add); b = \
         ext_authz.yaml; c = ext_proc.yaml with `processing_mode` set to request headers only \
         and mode overrides off, without the response observer; d = ext_proc.yaml as shipped \
         (usage accounting: request headers, the request body when keygate asks for it, and \
         the response sent to the observe-only second filter, which Envoy does not wait \
         for). e and f add provider \
         limits on every window (requests per second/minute/hour/day, tokens per minute/day) \
         and a monthly budget, all far above the load so nothing is denied: the rows measure \
         the checks (e: local buckets; f: the same decided from leases and allowances of the \
         shared limits that a background sync keeps topped up from a redis-server on the \
         same machine, so a decision waits for Redis only when a lease runs short). g is c with `credentials.source: vault` (OpenBao dev server); each \
         configuration with its own keygate process. h and i are b and c with Envoy reaching \
         the same keygate as b and c over its Unix socket (`listeners.grpc_uds`) instead of \
         TCP. j and k are b and c with `null-processor` in keygate's place: a tonic server \
         that allows every request without reading it, so they measure the floor of the hop \
         itself (the client sends the `x-keygate-provider` header, as for a). l is d with \
         held responses (docs/envoy.md; how keygate read responses before issue 16), in front \
         of the same keygate as b and c. m is k with the request body sent BUFFERED: the \
         floor of the two messages Envoy waits for in d. n is d's Envoy config with the \
         do-nothing processor, which asks for the request body as keygate does and reads the \
         observer's messages without a word: the floor of d's whole message pattern.\n\n",
        shape.rounds, shape.duration, shape.warmup, shape.consumers, shape.max_conns
    );
    let mut headers = vec!["rate", "configuration", "achieved req/s"];
    headers.extend(QUANTILES.iter().map(|(_, n)| *n));
    headers.push("errors");
    let added: Vec<String> = QUANTILES
        .iter()
        .map(|(_, n)| format!("added {n}"))
        .collect();
    headers.extend(added.iter().map(String::as_str));
    let mut rows = Vec::new();
    for (rate, row) in shape.rates.iter().zip(cells) {
        let base = &row[0].total;
        for (s, cell) in setups.iter().zip(row) {
            let r = &cell.total;
            let mut line = vec![
                format!("{rate}"),
                s.config.label.into(),
                format!("{:.0}", r.rate()),
            ];
            line.extend(QUANTILES.iter().map(|(q, _)| fmt_ms(r.ms(*q))));
            line.push(r.errors.to_string());
            line.extend(QUANTILES.iter().map(|(q, _)| match s.config.envoy {
                EnvoyKind::Baseline => "—".into(),
                _ => fmt_delta(r.ms(*q) - base.ms(*q)),
            }));
            rows.push(line);
        }
    }
    out += &table(&headers, &rows);
    out += &targets(shape, setups, cells);
    out += &per_round(shape, setups, cells);
    out += &cpu_table(shape, setups, cells);
    if shape.probe_duration > 0.0 {
        out += &probe_table(shape, setups, probes);
    }
    for note in notes {
        out += &format!("\n{note}\n");
    }
    for s in setups {
        let last = s
            .pool
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = last.as_ref() {
            out += &format!("\nLast error seen by {}: `{e}`\n", s.config.name);
        }
    }
    out
}

fn probe_table(shape: &RunShape, setups: &[Setup], probes: &[Recorder]) -> String {
    let rows: Vec<Vec<String>> = setups
        .iter()
        .zip(probes)
        .map(|(s, r)| {
            let mut line = vec![s.config.label.to_string(), format!("{:.0}", r.rate())];
            line.extend([0.5, 0.99].map(|q| fmt_ms(r.ms(q))));
            line.push(r.errors.to_string());
            line
        })
        .collect();
    format!(
        "\n### Closed-loop max throughput\n\n{} connection(s) each sending the next request \
         as soon as the previous one finished, {} round(s) × {} s per configuration.\n\n{}",
        shape.probe_conns,
        shape.probe_rounds,
        shape.probe_duration,
        table(&["configuration", "req/s", "p50", "p99", "errors"], &rows)
    )
}

/// The targets at 1,000 req/s: added p50 ≤ 0.15 ms, added p99 ≤ 0.5 ms, no errors.
fn targets(shape: &RunShape, setups: &[Setup], cells: &[Vec<Cell>]) -> String {
    let Some(at) = shape.rates.iter().position(|r| (*r - 1000.0).abs() < 0.5) else {
        return String::new();
    };
    let row = &cells[at];
    let base = &row[0].total;
    let mut rows = Vec::new();
    for (s, cell) in setups.iter().zip(row) {
        let targeted = matches!(
            s.config.envoy,
            EnvoyKind::ExtAuthz | EnvoyKind::ExtProcHeaders
        );
        if !targeted || s.config.flavor != Flavor::Plain {
            continue;
        }
        let r = &cell.total;
        let (p50, p99) = (r.ms(0.5) - base.ms(0.5), r.ms(0.99) - base.ms(0.99));
        rows.push(vec![
            s.config.label.to_string(),
            against(p50, 0.15, fmt_delta(p50)),
            against(p99, 0.5, fmt_delta(p99)),
            against(r.errors as f64, 0.0, r.errors.to_string()),
        ]);
    }
    let headers = [
        "configuration",
        "added p50 ≤ 0.15 ms",
        "added p99 ≤ 0.5 ms",
        "no errors",
    ];
    format!("\n### Targets at 1,000 req/s\n\n{}", table(&headers, &rows))
}

fn per_round(shape: &RunShape, setups: &[Setup], cells: &[Vec<Cell>]) -> String {
    let mut headers = vec!["rate".to_string(), "configuration".to_string()];
    headers.extend((1..=shape.rounds).map(|r| format!("round {r}")));
    let mut rows = Vec::new();
    for (rate, row) in shape.rates.iter().zip(cells) {
        for (s, cell) in setups.iter().zip(row).skip(1) {
            let mut line = vec![format!("{rate}"), s.config.name.to_string()];
            for (r, b) in cell.rounds.iter().zip(&row[0].rounds) {
                let d = |q| fmt_delta(r.ms(q) - b.ms(q));
                line.push(format!("{} / {}", d(0.5), d(0.99)));
            }
            rows.push(line);
        }
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    format!(
        "\n### Added latency per round (p50 / p99, ms; round n of a configuration vs round n \
         of the baseline)\n\n{}",
        table(&headers, &rows)
    )
}

fn cpu_table(shape: &RunShape, setups: &[Setup], cells: &[Vec<Cell>]) -> String {
    let mut rows = Vec::new();
    for (rate, row) in shape.rates.iter().zip(cells) {
        for (s, cell) in setups.iter().zip(row) {
            let mut line = vec![format!("{rate}"), s.config.name.to_string()];
            line.extend(
                cell.cpu
                    .iter()
                    .map(|c| format!("{:.1}", c * 1e6 / cell.sent.max(1.0))),
            );
            rows.push(line);
        }
    }
    let headers = [
        "rate",
        "configuration",
        "envoy",
        "keygate",
        "mock",
        "generator",
    ];
    format!(
        "\n### CPU time per request (µs, from /proc/PID/stat over all rounds)\n\n{}",
        table(&headers, &rows)
    )
}
