//! The decision core, driven directly: every denial reason and the allow mutation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

mod common;

use keygate::denial::DenyReason;
use keygate::gate::Decision;
use keygate::request::{Header, RequestView};

fn decide(
    gate: &keygate::gate::Gate,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Decision {
    let view = RequestView {
        method,
        path,
        headers: headers
            .iter()
            .map(|(n, v)| Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect(),
        peer: None,
        header_count: 0,
        body_len: None,
        peer_identity: None,
        body: None,
    };
    gate.decide(&view)
}

fn denied(d: Decision) -> (u16, DenyReason, serde_json::Value) {
    match d {
        Decision::Deny(d) => (
            d.status(),
            d.reason.clone(),
            serde_json::from_slice(&d.body()).unwrap(),
        ),
        Decision::Allow(a) => panic!("expected a denial, got allow for {}", a.consumer.name),
    }
}

#[test]
fn valid_openai_key_is_swapped_for_the_provider_key() {
    let f = common::fixture();
    let bearer = format!("Bearer {}", f.keys.openai);
    let d = decide(
        &f.gate,
        "POST",
        "/v1/chat/completions?x=1",
        &[
            ("authorization", &bearer),
            ("x-keygate-consumer", "spoof"),
            ("x-keygate-debug", "1"),
            ("x-api-key", &f.keys.openai),
        ],
    );
    let Decision::Allow(allow) = d else {
        panic!("denied")
    };
    assert_eq!(&*allow.consumer.name, "team-a");
    let set: Vec<(String, Vec<u8>)> = allow
        .mutation
        .set
        .iter()
        .map(|(k, v)| (k.clone(), v.to_wire()))
        .collect();
    assert!(set.contains(&(
        "authorization".into(),
        format!("Bearer {}", common::OPENAI_SECRET).into_bytes()
    )));
    assert!(set.contains(&("x-keygate-consumer".into(), b"team-a".to_vec())));
    assert!(set.contains(&("x-keygate-provider".into(), b"openai".to_vec())));
    for h in ["x-api-key", "api-key", "x-keygate-debug"] {
        assert!(
            allow.mutation.remove.iter().any(|r| r == h),
            "{h} not removed"
        );
    }
    // The injected header is replaced, never removed after being set.
    assert!(!allow.mutation.remove.iter().any(|r| r == "authorization"));
    assert!(
        !format!("{allow:?}").contains(common::OPENAI_SECRET),
        "secret leaked through Debug"
    );
}

#[test]
fn both_rotation_keys_work() {
    let f = common::fixture();
    for k in [&f.keys.openai, &f.keys.second_openai] {
        let bearer = format!("Bearer {k}");
        assert!(matches!(
            decide(&f.gate, "GET", "/v1/models", &[("authorization", &bearer)]),
            Decision::Allow(_)
        ));
    }
}

#[test]
fn anthropic_key_goes_into_x_api_key() {
    let f = common::fixture();
    let d = decide(
        &f.gate,
        "POST",
        "/v1/messages",
        &[
            ("x-api-key", &f.keys.anthropic),
            ("anthropic-version", "2023-06-01"),
        ],
    );
    let Decision::Allow(allow) = d else {
        panic!("denied")
    };
    let (name, value) = &allow.mutation.set[0];
    assert_eq!(name, "x-api-key");
    assert_eq!(value.to_wire(), common::ANTHROPIC_SECRET.as_bytes());
    assert!(allow.mutation.remove.iter().any(|r| r == "authorization"));
    assert!(!allow.mutation.remove.iter().any(|r| r == "x-api-key"));
}

#[test]
fn authentication_failures_are_401_with_reasons() {
    let f = common::fixture();
    let mut typo = f.keys.openai.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == 'a' { 'b' } else { 'a' });
    let unknown = keygate::auth::key::reveal(
        &keygate::auth::key::generate(keygate::auth::KeyEnv::Live).unwrap(),
    )
    .to_string();
    let cases: Vec<(Vec<(&str, String)>, DenyReason)> = vec![
        (vec![], DenyReason::MissingKey),
        (
            vec![("authorization", "Bearer sk-not-ours".into())],
            DenyReason::MalformedKey(keygate::auth::KeyFormatError::Shape),
        ),
        (
            vec![("authorization", format!("Bearer {typo}"))],
            DenyReason::MalformedKey(keygate::auth::KeyFormatError::Checksum),
        ),
        (
            vec![("authorization", format!("Bearer {unknown}"))],
            DenyReason::UnknownKey,
        ),
        (
            vec![("authorization", format!("Bearer {}", f.keys.expired))],
            DenyReason::ExpiredKey,
        ),
        (
            vec![("authorization", format!("Basic {}", f.keys.openai))],
            DenyReason::UnreadableCredential,
        ),
        (
            vec![
                ("authorization", format!("Bearer {}", f.keys.openai)),
                ("api-key", f.keys.anthropic.clone()),
            ],
            DenyReason::ConflictingKeys,
        ),
    ];
    for (headers, want) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, reason, body) = denied(decide(&f.gate, "GET", "/v1/models", &h));
        assert_eq!((status, &reason), (401, &want));
        let message = body["error"]["message"].as_str().unwrap();
        for secret in [
            &f.keys.openai,
            &f.keys.expired,
            &f.keys.anthropic,
            &typo,
            &unknown,
        ] {
            assert!(!message.contains(secret.as_str()), "key echoed: {message}");
        }
    }
}

#[test]
fn status_and_scope_failures_are_403() {
    let f = common::fixture();
    let b = |k: &str| format!("Bearer {k}");
    assert_eq!(
        denied(decide(
            &f.gate,
            "GET",
            "/v1/models",
            &[("authorization", &b(&f.keys.suspended))]
        ))
        .1,
        DenyReason::Suspended
    );
    assert_eq!(
        denied(decide(
            &f.gate,
            "GET",
            "/v1/models",
            &[("authorization", &b(&f.keys.revoked))]
        ))
        .1,
        DenyReason::Revoked
    );
    let (status, reason, _) = denied(decide(
        &f.gate,
        "POST",
        "/v1/embeddings",
        &[("authorization", &b(&f.keys.openai))],
    ));
    assert_eq!(status, 403);
    assert!(matches!(
        reason,
        DenyReason::OutOfScope {
            sensitive: false,
            ..
        }
    ));
    let (_, reason, body) = denied(decide(
        &f.gate,
        "GET",
        "/v1/files",
        &[("authorization", &b(&f.keys.wide))],
    ));
    assert!(matches!(
        reason,
        DenyReason::OutOfScope {
            sensitive: true,
            ..
        }
    ));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("named explicitly"));
}

#[test]
fn traversal_never_reaches_a_sensitive_endpoint() {
    let f = common::fixture();
    let b = format!("Bearer {}", f.keys.openai);
    for path in [
        "/v1/chat/completions/../files",
        "/v1/chat/completions%2F..%2Ffiles",
        "/v1/chat/completions/%2e%2e/files",
    ] {
        let (status, reason, _) = denied(decide(&f.gate, "POST", path, &[("authorization", &b)]));
        assert_eq!(status, 400, "{path}");
        assert!(matches!(reason, DenyReason::BadPath(_)));
    }
}

#[test]
fn error_shape_follows_the_provider() {
    let f = common::fixture();
    let (_, _, body) = denied(decide(
        &f.gate,
        "POST",
        "/v1/messages",
        &[("x-api-key", "nope"), ("anthropic-version", "2023-06-01")],
    ));
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let (_, _, body) = denied(decide(
        &f.gate,
        "GET",
        "/v1/models",
        &[("authorization", &format!("Bearer {}", f.keys.anthropic))],
    ));
    assert_eq!(body["error"]["type"], "permission_error");
}

#[test]
fn missing_credential_is_503() {
    let f = common::fixture();
    let registry = keygate::auth::Registry::from_config(&keygate::config::load(&f.config).unwrap());
    let empty = std::sync::Arc::new(keygate::secrets::CredentialCache::new());
    let gate = keygate::gate::Gate::new(registry, empty);
    let (status, reason, _) = denied(decide(
        &gate,
        "GET",
        "/v1/models",
        &[("authorization", &format!("Bearer {}", f.keys.openai))],
    ));
    assert_eq!((status, reason), (503, DenyReason::CredentialUnavailable));
}

#[test]
fn an_override_resumes_a_suspension_but_never_a_revocation() {
    use keygate::auth::{OverrideState, Overrides};
    use keygate::config::ConsumerStatus;
    let f = common::fixture();
    let status_of = |key: &str| match decide(
        &f.gate,
        "GET",
        "/v1/models",
        &[("authorization", &format!("Bearer {key}"))],
    ) {
        Decision::Allow(_) => None,
        Decision::Deny(d) => Some(d.reason.clone()),
    };
    let names: Vec<String> = f
        .gate
        .registry()
        .consumers()
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    let all_active = OverrideState {
        status: names
            .iter()
            .map(|n| (n.clone(), ConsumerStatus::Active))
            .collect(),
        ..Default::default()
    };
    f.gate.set_overrides(Overrides::compile(&all_active));
    assert_eq!(status_of(&f.keys.suspended), None);
    assert_eq!(status_of(&f.keys.revoked), Some(DenyReason::Revoked));
}

#[test]
fn consumers_are_found_by_name_and_share_what_they_have_in_common() {
    let f = common::fixture();
    let registry = f.gate.registry();
    for c in registry.consumers() {
        let found = registry
            .consumer(&c.name)
            .expect("every consumer by its name");
        assert!(std::sync::Arc::ptr_eq(found, c));
    }
    assert!(registry.consumer("no-such-consumer").is_none());
    let production: Vec<_> = registry
        .consumers()
        .iter()
        .filter(|c| &*c.environment == "production")
        .collect();
    assert!(production.len() >= 2);
    assert!(production
        .windows(2)
        .all(|w| std::sync::Arc::ptr_eq(&w[0].environment, &w[1].environment)));
}

#[test]
fn every_consumer_lists_the_ids_of_its_own_keys() {
    let f = common::fixture();
    let config = keygate::config::load(&f.config).unwrap();
    let keygate::config::ConsumersConfig::Inline(consumers) = &config.consumers else {
        panic!("the fixture's consumers are inline");
    };
    let registry = f.gate.registry();
    let mut with_two = 0;
    for c in consumers {
        let found = registry
            .consumer(&c.name)
            .expect("every consumer by its name");
        let want: Vec<_> = c.keys.iter().map(|k| k.hash.key_id()).collect();
        assert_eq!(registry.key_ids(found), &want[..], "{}", c.name);
        with_two += usize::from(want.len() >= 2);
    }
    assert!(with_two >= 1, "the fixture has a consumer with two keys");
}

#[test]
fn a_reload_swaps_the_whole_registry_and_a_decision_in_flight_keeps_its_snapshot() {
    use keygate::auth::{key, Lookup, Registry};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::SystemTime;
    let f = common::fixture();
    let bearer = format!("Bearer {}", f.keys.openai);
    let parsed = key::parse(&f.keys.openai).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Decisions keep running while the registry is swapped under them: each one sees a
        // whole snapshot, the full one (allowed) or the empty one (unknown key), never a mix.
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut decided = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        match decide(&f.gate, "GET", "/v1/models", &[("authorization", &bearer)]) {
                            Decision::Allow(_) => {}
                            Decision::Deny(d) => assert_eq!(d.reason, DenyReason::UnknownKey),
                        }
                        decided += 1;
                    }
                    decided
                })
            })
            .collect();
        for _ in 0..20 {
            let in_flight = f.gate.registry();
            f.gate.swap_registry(Registry::default());
            assert!(
                matches!(
                    in_flight.lookup(&parsed, SystemTime::now()),
                    Lookup::Found(..)
                ),
                "a decision in flight keeps the snapshot it started with"
            );
            assert!(matches!(
                f.gate.registry().lookup(&parsed, SystemTime::now()),
                Lookup::Unknown
            ));
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let full = rt
                .block_on(keygate::reload::prepare(
                    &f.config,
                    f.gate.credentials(),
                    false,
                ))
                .unwrap()
                .registry;
            f.gate.swap_registry(full);
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    });
    assert!(matches!(
        decide(&f.gate, "GET", "/v1/models", &[("authorization", &bearer)]),
        Decision::Allow(_)
    ));
}
