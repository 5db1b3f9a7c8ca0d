//! The contract of [`Store`], as checks any backend must pass: the embedded backend runs them
//! in its tests, and the etcd backend will run the same ones against a real etcd. Each check
//! uses keys under its own prefix (`prefix` + a name) so the suite can share a store with
//! other data; `compaction` compacts the whole store and runs last.

use std::time::Duration;

use bytes::Bytes;

use crate::{EventType, Precondition, Store, StoreError, WatchReceiver, WriteOutcome, prefix_end};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn done(o: WriteOutcome) -> crate::KeyValue {
    match o {
        WriteOutcome::Done { kv, .. } => kv,
        WriteOutcome::Failed { current } => panic!("write failed, current: {current:?}"),
    }
}

async fn next(rx: &mut WatchReceiver) -> crate::WatchBatch {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("watch batch within 10s").expect("watch open").expect("watch batch")
}

/// Runs every check, compaction last.
pub async fn run_all(store: &dyn Store, prefix: &str) {
    create_update_delete(store, &format!("{prefix}cud/")).await;
    ranges_at_revisions(store, &format!("{prefix}range/")).await;
    watch_replays_then_follows(store, &format!("{prefix}watch/")).await;
    progress_reaches_idle_watches(store, &format!("{prefix}progress/")).await;
    compaction(store, &format!("{prefix}compact/")).await;
}

/// Compare-and-swap writes: create only when absent, update only at the revision read,
/// delete of a missing key fails; revisions and versions as etcd keeps them.
pub async fn create_update_delete(store: &dyn Store, p: &str) {
    let key = format!("{p}a");
    let before = store.current_revision().await.unwrap();
    let kv = done(store.put(&key, b("1"), Precondition::Absent).await.unwrap());
    assert!(kv.mod_revision > before, "a write moves the revision");
    assert_eq!((kv.create_revision, kv.version), (kv.mod_revision, 1));
    assert_eq!(store.current_revision().await.unwrap(), kv.mod_revision.max(store.current_revision().await.unwrap()));
    match store.put(&key, b("2"), Precondition::Absent).await.unwrap() {
        WriteOutcome::Failed { current: Some(cur) } => assert_eq!(cur.value, b("1")),
        other => panic!("create of an existing key must fail with it: {other:?}"),
    }
    assert!(matches!(store.put(&key, b("2"), Precondition::ModRevision(kv.mod_revision - 1)).await.unwrap(), WriteOutcome::Failed { .. }));
    let kv2 = done(store.put(&key, b("2"), Precondition::ModRevision(kv.mod_revision)).await.unwrap());
    assert_eq!((kv2.create_revision, kv2.version), (kv.create_revision, 2));
    assert!(kv2.mod_revision > kv.mod_revision);
    assert_eq!(store.get(&key).await.unwrap().unwrap(), kv2);
    assert!(matches!(store.put(&format!("{p}missing"), b("x"), Precondition::Exists).await.unwrap(), WriteOutcome::Failed { current: None }));
    assert!(matches!(store.delete(&key, Precondition::ModRevision(kv.mod_revision)).await.unwrap(), WriteOutcome::Failed { .. }));
    match store.delete(&key, Precondition::ModRevision(kv2.mod_revision)).await.unwrap() {
        WriteOutcome::Done { prev, .. } => assert_eq!(prev.unwrap().value, b("2")),
        other => panic!("delete failed: {other:?}"),
    }
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert!(matches!(store.delete(&key, Precondition::None).await.unwrap(), WriteOutcome::Failed { current: None }));
    // Re-created: a new life with version 1.
    let kv3 = done(store.put(&key, b("3"), Precondition::Absent).await.unwrap());
    assert_eq!((kv3.version, kv3.create_revision), (1, kv3.mod_revision));
}

/// Prefix ranges in key order, with a limit, and at an older revision.
pub async fn ranges_at_revisions(store: &dyn Store, p: &str) {
    let mut revs = Vec::new();
    for k in ["c", "a", "b"] {
        revs.push(done(store.put(&format!("{p}{k}"), b("v1"), Precondition::None).await.unwrap()).mod_revision);
    }
    let at = *revs.iter().max().unwrap();
    done(store.put(&format!("{p}a"), b("v2"), Precondition::None).await.unwrap());
    store.delete(&format!("{p}b"), Precondition::None).await.unwrap();
    let end = prefix_end(p);
    let now = store.range(p, &end, 0, None).await.unwrap();
    let keys: Vec<&str> = now.kvs.iter().map(|kv| &kv.key[p.len()..]).collect();
    assert_eq!(keys, ["a", "c"]);
    assert_eq!(now.kvs[0].value, b("v2"));
    assert!(now.revision >= at);
    let limited = store.range(p, &end, 1, None).await.unwrap();
    assert_eq!((limited.kvs.len(), limited.more), (1, true));
    let old = store.range(p, &end, 0, Some(at)).await.unwrap();
    let keys: Vec<(&str, Bytes)> = old.kvs.iter().map(|kv| (&kv.key[p.len()..], kv.value.clone())).collect();
    assert_eq!(keys, [("a", b("v1")), ("b", b("v1")), ("c", b("v1"))]);
    assert_eq!(old.revision, at);
    let current = store.current_revision().await.unwrap();
    assert!(matches!(store.range(p, &end, 0, Some(current + 1000)).await, Err(StoreError::FutureRevision { .. })));
}

/// A watch from an old revision replays every later event under its prefix in order (with the
/// previous values), then follows live writes; other prefixes are not seen.
pub async fn watch_replays_then_follows(store: &dyn Store, p: &str) {
    let first = done(store.put(&format!("{p}x"), b("1"), Precondition::None).await.unwrap()).mod_revision;
    done(store.put(&format!("{p}x"), b("2"), Precondition::None).await.unwrap());
    done(store.put(&format!("{p}-other/y"), b("1"), Precondition::None).await.unwrap());
    store.delete(&format!("{p}x"), Precondition::None).await.unwrap();
    let mut rx = store.watch(&format!("{p}x"), first).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 3 {
        events.extend(next(&mut rx).await.events);
    }
    let kinds: Vec<(EventType, Bytes)> = events.iter().map(|e| (e.kind, e.kv.value.clone())).collect();
    assert_eq!(kinds, [(EventType::Put, b("1")), (EventType::Put, b("2")), (EventType::Delete, b(""))]);
    assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b("1"));
    assert_eq!(events[2].prev_kv.as_ref().unwrap().value, b("2"));
    assert!(events.windows(2).all(|w| w[0].revision() < w[1].revision()));
    let live = done(store.put(&format!("{p}x"), b("3"), Precondition::None).await.unwrap()).mod_revision;
    loop {
        let batch = next(&mut rx).await;
        if let Some(e) = batch.events.first() {
            assert_eq!((e.kind, e.kv.value.clone(), e.revision()), (EventType::Put, b("3"), live));
            break;
        }
    }
}

/// After `request_progress`, an idle watch learns a revision at least the store's current one.
pub async fn progress_reaches_idle_watches(store: &dyn Store, p: &str) {
    let mut rx = store.watch(&format!("{p}idle/"), 0).await.unwrap();
    // Writes elsewhere move the revision without events for this watch.
    done(store.put(&format!("{p}busy"), b("1"), Precondition::None).await.unwrap());
    let target = store.current_revision().await.unwrap();
    store.request_progress().await.unwrap();
    loop {
        let batch = next(&mut rx).await;
        assert!(batch.events.is_empty(), "nothing changed under the watched prefix");
        if batch.revision >= target {
            break;
        }
    }
}

/// Compaction: reads and watches below the compacted revision answer `Compacted`; the latest
/// values stay readable.
pub async fn compaction(store: &dyn Store, p: &str) {
    let old = done(store.put(&format!("{p}k"), b("1"), Precondition::None).await.unwrap()).mod_revision;
    let newer = done(store.put(&format!("{p}k"), b("2"), Precondition::None).await.unwrap()).mod_revision;
    store.compact(newer).await.unwrap();
    assert!(store.compacted_revision().await.unwrap() >= newer);
    let end = prefix_end(p);
    assert!(matches!(store.range(p, &end, 0, Some(old)).await, Err(StoreError::Compacted { .. })));
    assert!(matches!(store.watch(p, old).await, Err(StoreError::Compacted { .. })));
    assert_eq!(store.get(&format!("{p}k")).await.unwrap().unwrap().value, b("2"));
}
