//! The key store's seeding, enforcement and admin operations.

use super::*;

fn seeded(enforce: bool) -> KeyStore {
    let store = KeyStore::default();
    store.seed(Seed {
        enforce: Some(enforce),
        keys: vec![Key {
            id: "key_seed".into(),
            value: "sk-seeded-0123456789".into(),
            provider: Provider::Openai,
            name: String::new(),
            status: Status::Active,
            project: Some("proj_a".into()),
            owner: None,
            minted: false,
            created_at: 0.0,
            revoked_at: None,
        }],
        ..Seed::default()
    });
    store
}

#[test]
fn without_enforcement_every_key_passes() {
    let store = seeded(false);
    assert_eq!(store.judge(None), Verdict::Pass { delay_ms: 0 });
    assert_eq!(
        store.judge(Some("sk-unknown")),
        Verdict::Pass { delay_ms: 0 }
    );
}

#[test]
fn with_enforcement_only_active_keys_pass() {
    let store = seeded(true);
    assert_eq!(
        store.judge(Some("sk-seeded-0123456789")),
        Verdict::Pass { delay_ms: 0 }
    );
    assert_eq!(store.judge(Some("sk-unknown")), Verdict::Refused);
    assert_eq!(store.judge(None), Verdict::Refused);
    store.set_status(Provider::Openai, "key_seed", Status::Deleted);
    assert_eq!(store.judge(Some("sk-seeded-0123456789")), Verdict::Refused);
}

#[test]
fn azure_regeneration_retires_the_old_value() {
    let store = KeyStore::default();
    let first = store.azure_regenerate("acct", "key1");
    assert_eq!(store.azure_slot("acct", "key1").as_deref(), Some(&*first));
    let second = store.azure_regenerate("acct", "key1");
    assert_ne!(first, second);
    store.seed(Seed {
        enforce: Some(true),
        ..Seed::default()
    });
    assert_eq!(store.judge(Some(&first)), Verdict::Refused);
    assert!(matches!(store.judge(Some(&second)), Verdict::Pass { .. }));
}

#[test]
fn redaction_keeps_a_hint_only() {
    assert_eq!(redacted("sk-svcacct-abcdefghijklmnop"), "sk-svca...mnop");
}
