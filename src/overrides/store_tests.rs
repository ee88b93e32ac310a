//! The state file shared by replicas: no action lost to a concurrent writer, revocations kept
//! through an emptied or deleted file.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::store::OverrideStore;
use super::Action;
use crate::auth::{KeyHash, Overrides};
use crate::config::ConsumerStatus;

fn replica(path: &std::path::Path) -> (OverrideStore, Arc<ArcSwap<Overrides>>) {
    let compiled = Arc::new(ArcSwap::from_pointee(Overrides::default()));
    let store = OverrideStore::open(path.to_path_buf(), compiled.clone()).unwrap();
    (store, compiled)
}

fn suspend(name: &str) -> Action {
    Action::Suspend {
        consumer: name.into(),
    }
}

#[test]
fn a_second_replica_writing_after_a_revoke_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.yaml");
    let (a, a_view) = replica(&path);
    let (b, b_view) = replica(&path);
    let key = KeyHash::of("kg_live_leaked").key_id();
    a.apply(&Action::RevokeKey { key_id: key }, true).unwrap();
    b.apply(&suspend("team-b"), true).unwrap();
    a.reload().unwrap();
    b.reload().unwrap();
    for view in [&a_view, &b_view] {
        let o = view.load();
        assert!(
            o.key_revoked(&key),
            "the revocation survived the other write"
        );
        assert_eq!(o.status("team-b"), Some(ConsumerStatus::Suspended));
    }
}

#[test]
fn an_emptied_or_deleted_state_file_keeps_revocations_and_suspensions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.yaml");
    let (store, view) = replica(&path);
    let key = KeyHash::of("kg_live_leaked").key_id();
    store
        .apply(&Action::RevokeKey { key_id: key }, true)
        .unwrap();
    store.apply(&suspend("team-a"), true).unwrap();
    for lose in [
        |p: &std::path::Path| std::fs::write(p, "").unwrap(),
        |p: &std::path::Path| std::fs::remove_file(p).unwrap(),
    ] {
        lose(&path);
        store.reload().unwrap();
        assert!(view.load().key_revoked(&key));
        assert_eq!(
            view.load().status("team-a"),
            Some(ConsumerStatus::Suspended)
        );
        let (fresh, fresh_view) = replica(&path);
        drop(fresh);
        assert!(
            fresh_view.load().key_revoked(&key),
            "the file was written again"
        );
    }
}

#[test]
fn a_revoked_consumer_is_never_resumed_or_unrevoked_by_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.yaml");
    let (a, view) = replica(&path);
    a.apply(
        &Action::RevokeConsumer {
            consumer: "gone".into(),
        },
        true,
    )
    .unwrap();
    std::fs::write(&path, "status: {gone: active}\n").unwrap();
    a.reload().unwrap();
    assert_eq!(view.load().status("gone"), Some(ConsumerStatus::Revoked));
    let changed = a
        .apply(
            &Action::Resume {
                consumer: "gone".into(),
            },
            false,
        )
        .unwrap();
    assert!(!changed);
    assert_eq!(view.load().status("gone"), Some(ConsumerStatus::Revoked));
}

#[test]
fn a_corrupt_state_file_leaves_the_current_state_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.yaml");
    let (store, view) = replica(&path);
    store.apply(&suspend("team-a"), true).unwrap();
    std::fs::write(&path, "status: [not, a, map\n").unwrap();
    assert!(store.reload().is_err());
    assert_eq!(
        view.load().status("team-a"),
        Some(ConsumerStatus::Suspended)
    );
}
