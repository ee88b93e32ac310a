//! Delivery against a tiny local HTTP server that fails on demand.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

use super::*;
use crate::audit::AuditEvent;
use crate::auth::KeyId;
use crate::auth::{key, KeyEnv, KeyHash};
use crate::detect::{Action, Detection, DetectorKind, Evidence, Severity};

/// Per path: attempts so far and the bodies it accepted.
#[derive(Default)]
struct Server {
    attempts: Mutex<HashMap<String, u32>>,
    accepted: Mutex<HashMap<String, Vec<Value>>>,
}

/// `/flaky-*` fails its first attempt with 500, `/down` always answers 503, `/bad` 400.
async fn hook(State(s): State<Arc<Server>>, Path(path): Path<String>, body: Bytes) -> StatusCode {
    let attempt = {
        let mut attempts = s.attempts.lock().unwrap();
        let n = attempts.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let status = match path.as_str() {
        "down" => StatusCode::SERVICE_UNAVAILABLE,
        "bad" => StatusCode::BAD_REQUEST,
        p if p.starts_with("flaky") && attempt == 1 => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    };
    if status == StatusCode::OK {
        let value = serde_json::from_slice(&body).unwrap();
        s.accepted
            .lock()
            .unwrap()
            .entry(path)
            .or_default()
            .push(value);
    }
    status
}

async fn serve() -> (String, Arc<Server>) {
    let state = Arc::new(Server::default());
    let app = axum::Router::new()
        .route("/{path}", post(hook))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, state)
}

fn config(base: &str, hooks: &[(&str, &str)]) -> NotifyConfig {
    let webhooks: Vec<String> = hooks
        .iter()
        .map(|(path, format)| format!("{{url: \"{base}/{path}\", format: {format}, timeout: 2s}}"))
        .collect();
    serde_yaml::from_str(&format!(
        "webhooks: [{}]\nbackoff: 20ms\nmax_backoff: 50ms\n",
        webhooks.join(", ")
    ))
    .unwrap()
}

fn spike() -> Detection {
    Detection {
        consumer: "team-a".into(),
        detector: DetectorKind::RateSpike,
        severity: Severity::Critical,
        evidence: Evidence {
            window_secs: Some(10.0),
            request_rate: Some(40.0),
            baseline_request_rate: Some(2.0),
            new_address_count: Some(2),
            new_addresses: vec!["10.0.0.100".parse().unwrap(), "10.0.0.101".parse().unwrap()],
            ..Evidence::default()
        },
        action: Action::Suspend,
        at: SystemTime::now(),
    }
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn retries_after_a_failure_and_posts_both_formats() {
    let (base, server) = serve().await;
    let notifier = Notifier::new(config(
        &base,
        &[("flaky-slack", "slack"), ("flaky-generic", "generic")],
    ))
    .unwrap();
    let runner = notifier.clone();
    let task = tokio::spawn(async move { runner.run().await });
    assert_eq!(notifier.send(Notification::from_detection(&spike())), 2);
    wait_for(|| notifier.stats().sent.load(Ordering::Relaxed) == 2).await;

    assert_eq!(server.attempts.lock().unwrap()["flaky-slack"], 2);
    assert_eq!(server.attempts.lock().unwrap()["flaky-generic"], 2);
    assert_eq!(notifier.stats().retried.load(Ordering::Relaxed), 2);
    {
        let accepted = server.accepted.lock().unwrap();

        let g = &accepted["flaky-generic"][0];
        assert_eq!(g["source"], "keygate");
        assert_eq!(g["event"], "detection");
        assert_eq!(g["consumer"], "team-a");
        assert_eq!(g["detector"], "rate_spike");
        assert_eq!(g["severity"], "critical");
        assert_eq!(g["action"], "suspend");
        assert_eq!(g["evidence"]["request_rate"], 40.0);
        assert_eq!(g["evidence"]["new_addresses"][1], "10.0.0.101");
        humantime::parse_rfc3339(g["at"].as_str().unwrap()).unwrap();
        assert!(g["summary"]
            .as_str()
            .unwrap()
            .contains("40 req/s vs baseline 2 req/s"));

        let s = &accepted["flaky-slack"][0];
        let text = s["text"].as_str().unwrap();
        assert!(
            text.starts_with("keygate: critical rate_spike for consumer team-a, action suspend"),
            "{text}"
        );
        let blocks = s["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert!(blocks.iter().all(|b| b["type"].is_string()));
        assert!(blocks[1]["fields"].as_array().unwrap().len() >= 3);
    }

    notifier.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn gives_up_after_the_attempts_and_at_once_on_a_client_error() {
    let (base, server) = serve().await;
    let notifier =
        Notifier::new(config(&base, &[("down", "generic"), ("bad", "generic")])).unwrap();
    let runner = notifier.clone();
    tokio::spawn(async move { runner.run().await });
    notifier.send(Notification::from_detection(&spike()));
    wait_for(|| notifier.stats().failed.load(Ordering::Relaxed) == 2).await;
    assert_eq!(server.attempts.lock().unwrap()["down"], 3);
    assert_eq!(server.attempts.lock().unwrap()["bad"], 1);
    assert_eq!(notifier.stats().retried.load(Ordering::Relaxed), 2);
    assert_eq!(notifier.stats().sent.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_full_queue_drops_without_blocking() {
    let mut c = config("http://127.0.0.1:9", &[("x", "generic")]);
    c.queue = 2;
    let notifier = Notifier::new(c).unwrap();
    let start = Instant::now();
    let queued: Vec<usize> = (0..5)
        .map(|_| notifier.send(Notification::from_detection(&spike())))
        .collect();
    assert!(start.elapsed() < Duration::from_millis(100));
    assert_eq!(queued, vec![1, 1, 0, 0, 0]);
    assert_eq!(notifier.stats().dropped.load(Ordering::Relaxed), 3);
}

#[test]
fn admin_notifications_carry_key_ids_never_keys() {
    let secret = key::generate(KeyEnv::Live).unwrap();
    let text = key::reveal(&secret);
    let kid: KeyId = KeyHash::of(text).key_id();
    let n = Notification::admin(
        AuditEvent::KeyRevoked,
        Some("team-a".into()),
        Some(kid),
        "admin",
        Some(&format!("leaked in a gist: {text}")),
    );
    for body in [payload::generic(&n), payload::slack(&n)] {
        let body = body.to_string();
        assert!(!body.contains(&text[8..38]), "{body}");
        assert!(body.contains(&kid.to_string()));
    }
    let g = payload::generic(&n);
    assert_eq!(g["action"], "revoke_key");
    assert_eq!(g["detector"], Value::Null);
    assert_eq!(g["reason"], "leaked in a gist: [redacted]");

    let mut throttled = spike();
    throttled.action = Action::Throttle {
        factor: 0.25,
        period: Duration::from_secs(900),
    };
    let g = payload::generic(&Notification::from_detection(&throttled));
    assert_eq!(g["action"], "throttle");
    assert_eq!(g["throttle"]["period"], "15m");
    assert!(g["summary"].as_str().unwrap().contains("to 25% for 15m"));
}

#[test]
fn config_is_validated_and_urls_stay_out_of_debug_output() {
    let c: NotifyConfig = serde_yaml::from_str(
        "webhooks:\n  - {name: ops, url: \"https://hooks.slack.com/services/T0/B0/SECRETTOKEN\", format: slack}\n",
    )
    .unwrap();
    assert_eq!(c.attempts, 3);
    assert_eq!(c.webhooks[0].timeout, Duration::from_secs(5));
    let shown = format!("{c:?}");
    assert!(!shown.contains("SECRETTOKEN"), "{shown}");
    assert!(
        serde_yaml::from_str::<NotifyConfig>("webhooks: [{url: \"http://x\", colour: red}]")
            .is_err()
    );
    let ftp: NotifyConfig = serde_yaml::from_str("webhooks: [{url: \"ftp://x/y\"}]").unwrap();
    assert!(matches!(Notifier::new(ftp), Err(NotifyError::Scheme(0))));
    let twice: NotifyConfig = serde_yaml::from_str(
        "webhooks: [{url: \"http://x/\"}, {url: \"http://y/\", name: generic-0}]",
    )
    .unwrap();
    assert!(matches!(
        Notifier::new(twice),
        Err(NotifyError::DuplicateName(1, _))
    ));
}
