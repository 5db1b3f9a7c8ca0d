//! The embedded backend: redb (a crash-safe, copy-on-write B-tree file) under a single writer
//! thread that group-commits.
//!
//! Layout: `kv` maps key -> latest record; `log` maps revision -> event (with the previous
//! record, so a range can be read at an older revision by undoing newer events, and a watch can
//! replay history); `meta` holds the current and compacted revisions.
//!
//! Durability: every write request waits for the commit that contains it, and every commit is
//! `Durability::Immediate` (fsync). Requests that arrive while a commit is in flight are batched
//! into the next one, so concurrent writers share fsyncs (group commit).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::encoding::{decode_event, decode_record, encode_event, encode_record, event_key};
use crate::metrics::StoreMetrics;
use crate::{Event, EventType, KeyValue, Precondition, RangeResult, Result, Store, StoreError, WatchBatch, WatchReceiver, WriteOutcome};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Largest number of requests folded into one commit.
const MAX_BATCH: usize = 4096;

fn internal<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Internal(e.to_string())
}

enum WriteOp {
    Put { key: String, value: Bytes, cond: Precondition },
    Delete { key: String, cond: Precondition },
    Compact { revision: i64 },
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome>>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<WatchBatch>,
}

/// Live watchers. The writer publishes under this lock and updates `revision` under it too, so
/// a new watcher sees a revision that matches exactly the events it will and will not receive.
struct Hub {
    watchers: Vec<Watcher>,
}

struct Shared {
    db: Database,
    revision: AtomicI64,
    compacted: AtomicI64,
    hub: Mutex<Hub>,
    metrics: Arc<StoreMetrics>,
}

pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<WriteRequest>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file `dir/state.redb`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(internal)?;
        let db = Database::create(dir.join("state.redb")).map_err(internal)?;
        let (revision, compacted) = {
            let mut txn = db.begin_write().map_err(internal)?;
            txn.set_durability(Durability::Immediate).map_err(internal)?;
            let rev;
            let comp;
            {
                txn.open_table(KV).map_err(internal)?;
                txn.open_table(LOG).map_err(internal)?;
                let meta = txn.open_table(META).map_err(internal)?;
                rev = meta.get(META_REVISION).map_err(internal)?.map(|g| g.value()).unwrap_or(1);
                comp = meta.get(META_COMPACTED).map_err(internal)?.map(|g| g.value()).unwrap_or(0);
            }
            txn.commit().map_err(internal)?;
            (rev as i64, comp as i64)
        };
        let shared = Arc::new(Shared {
            db,
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            hub: Mutex::new(Hub { watchers: Vec::new() }),
            metrics: Arc::new(StoreMetrics::default()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new().name("store-writer".into()).spawn(move || writer_loop(writer_shared, rx)).map_err(internal)?;
        Ok(EmbeddedStore { shared, writer: tx })
    }

    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(WriteRequest { op, reply }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn writer_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<WriteRequest>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let start_rev = shared.revision.load(Ordering::SeqCst);
        match apply_batch(&shared, &batch, start_rev) {
            Ok((outcomes, events, new_rev)) => {
                shared.metrics.fsyncs.fetch_add(1, Ordering::SeqCst);
                shared.metrics.durable_revision.store(new_rev as u64, Ordering::SeqCst);
                {
                    let mut hub = shared.hub.lock().unwrap();
                    shared.revision.store(new_rev, Ordering::SeqCst);
                    hub.watchers.retain(|w| {
                        let mine: Vec<Event> = events.iter().filter(|e| e.kv.key.starts_with(&w.prefix)).cloned().collect();
                        w.tx.send(WatchBatch { events: mine, revision: new_rev }).is_ok()
                    });
                }
                for (req, outcome) in batch.into_iter().zip(outcomes) {
                    if outcome.is_ok() {
                        shared.metrics.writes_acked.fetch_add(1, Ordering::SeqCst);
                        shared.metrics.acked_revision.fetch_max(new_rev as u64, Ordering::SeqCst);
                    }
                    let _ = req.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type BatchResult = (Vec<Result<WriteOutcome>>, Vec<Event>, i64);

fn apply_batch(shared: &Shared, batch: &[WriteRequest], start_rev: i64) -> Result<BatchResult> {
    let mut txn = shared.db.begin_write().map_err(internal)?;
    txn.set_durability(Durability::Immediate).map_err(internal)?;
    let mut rev = start_rev;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    {
        let mut kv = txn.open_table(KV).map_err(internal)?;
        let mut log = txn.open_table(LOG).map_err(internal)?;
        let mut meta = txn.open_table(META).map_err(internal)?;
        for req in batch {
            let outcome = match &req.op {
                WriteOp::Put { key, value, cond } => {
                    let current = kv.get(key.as_str()).map_err(internal)?.and_then(|g| decode_record(key, g.value()));
                    if !cond_holds(*cond, current.as_ref()) {
                        Ok(WriteOutcome::Failed { current })
                    } else {
                        rev += 1;
                        let new = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: current.as_ref().map(|c| c.create_revision).unwrap_or(rev),
                            mod_revision: rev,
                            version: current.as_ref().map(|c| c.version + 1).unwrap_or(1),
                        };
                        kv.insert(key.as_str(), encode_record(&new).as_slice()).map_err(internal)?;
                        let ev = Event { kind: EventType::Put, kv: new.clone(), prev_kv: current.clone() };
                        log.insert(rev as u64, encode_event(&ev).as_slice()).map_err(internal)?;
                        events.push(ev);
                        Ok(WriteOutcome::Done { kv: new, prev: current })
                    }
                }
                WriteOp::Delete { key, cond } => {
                    let current = kv.get(key.as_str()).map_err(internal)?.and_then(|g| decode_record(key, g.value()));
                    if current.is_none() || !cond_holds(*cond, current.as_ref()) {
                        Ok(WriteOutcome::Failed { current })
                    } else {
                        rev += 1;
                        kv.remove(key.as_str()).map_err(internal)?;
                        let tomb = KeyValue { key: key.clone(), value: Bytes::new(), create_revision: 0, mod_revision: rev, version: 0 };
                        let ev = Event { kind: EventType::Delete, kv: tomb.clone(), prev_kv: current.clone() };
                        log.insert(rev as u64, encode_event(&ev).as_slice()).map_err(internal)?;
                        events.push(ev);
                        Ok(WriteOutcome::Done { kv: tomb, prev: current })
                    }
                }
                WriteOp::Compact { revision } => {
                    let target = (*revision).min(rev);
                    let old = shared.compacted.load(Ordering::SeqCst);
                    if target > old {
                        log.retain_in(..target as u64, |_, _| false).map_err(internal)?;
                        meta.insert(META_COMPACTED, target as u64).map_err(internal)?;
                        shared.compacted.store(target, Ordering::SeqCst);
                    }
                    Ok(WriteOutcome::Failed { current: None })
                }
            };
            outcomes.push(outcome);
        }
        meta.insert(META_REVISION, rev as u64).map_err(internal)?;
    }
    txn.commit().map_err(internal)?;
    Ok((outcomes, events, rev))
}

fn cond_holds(cond: Precondition, current: Option<&KeyValue>) -> bool {
    match cond {
        Precondition::None => true,
        Precondition::Absent => current.is_none(),
        Precondition::Exists => current.is_some(),
        Precondition::ModRevision(r) => current.map(|c| c.mod_revision == r).unwrap_or(false),
    }
}

impl Shared {
    /// Replays logged events under `prefix` with revision in `[from, to]`.
    fn replay(&self, prefix: &str, from: i64, to: i64) -> Result<Vec<Event>> {
        let txn = self.db.begin_read().map_err(internal)?;
        let log = txn.open_table(LOG).map_err(internal)?;
        let mut out = Vec::new();
        for entry in log.range(from as u64..=to as u64).map_err(internal)? {
            let (_, v) = entry.map_err(internal)?;
            let buf = v.value();
            if event_key(buf).is_some_and(|k| k.starts_with(prefix))
                && let Some(ev) = decode_event(buf)
            {
                out.push(ev);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.shared.metrics.reads.fetch_add(1, Ordering::Relaxed);
        let txn = self.shared.db.begin_read().map_err(internal)?;
        let kv = txn.open_table(KV).map_err(internal)?;
        Ok(kv.get(key).map_err(internal)?.and_then(|g| decode_record(key, g.value())))
    }

    async fn range(&self, start: &str, end: &str, limit: usize, revision: Option<i64>) -> Result<RangeResult> {
        self.shared.metrics.reads.fetch_add(1, Ordering::Relaxed);
        let txn = self.shared.db.begin_read().map_err(internal)?;
        let meta = txn.open_table(META).map_err(internal)?;
        let current = meta.get(META_REVISION).map_err(internal)?.map(|g| g.value() as i64).unwrap_or(1);
        let compacted = meta.get(META_COMPACTED).map_err(internal)?.map(|g| g.value() as i64).unwrap_or(0);
        let at = match revision {
            None | Some(0) => current,
            Some(r) if r > current => return Err(StoreError::FutureRevision { current }),
            Some(r) if r < compacted => return Err(StoreError::Compacted { compacted }),
            Some(r) => r,
        };
        let kv = txn.open_table(KV).map_err(internal)?;
        let mut kvs = Vec::new();
        let mut more = false;
        if at == current {
            for entry in kv.range(start..end).map_err(internal)? {
                let (k, v) = entry.map_err(internal)?;
                if limit > 0 && kvs.len() == limit {
                    more = true;
                    break;
                }
                if let Some(rec) = decode_record(k.value(), v.value()) {
                    kvs.push(rec);
                }
            }
        } else {
            // Read the current state and undo every event after `at`, newest first.
            let mut state: BTreeMap<String, KeyValue> = BTreeMap::new();
            for entry in kv.range(start..end).map_err(internal)? {
                let (k, v) = entry.map_err(internal)?;
                if let Some(rec) = decode_record(k.value(), v.value()) {
                    state.insert(rec.key.clone(), rec);
                }
            }
            let log = txn.open_table(LOG).map_err(internal)?;
            for entry in log.range((at + 1) as u64..=current as u64).map_err(internal)?.rev() {
                let (_, v) = entry.map_err(internal)?;
                let buf = v.value();
                let Some(key) = event_key(buf) else { continue };
                if key < start || key >= end {
                    continue;
                }
                if let Some(ev) = decode_event(buf) {
                    match ev.prev_kv {
                        Some(prev) => state.insert(ev.kv.key.clone(), prev),
                        None => state.remove(&ev.kv.key),
                    };
                }
            }
            for (_, rec) in state {
                if limit > 0 && kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(rec);
            }
        }
        Ok(RangeResult { kvs, more, revision: at })
    }

    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> Result<WriteOutcome> {
        self.submit(WriteOp::Put { key: key.to_string(), value, cond }).await
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<WriteOutcome> {
        self.submit(WriteOp::Delete { key: key.to_string(), cond }).await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchReceiver> {
        let compacted = self.shared.compacted.load(Ordering::SeqCst);
        if from_revision > 0 && from_revision < compacted {
            return Err(StoreError::Compacted { compacted });
        }
        let (live_tx, mut live_rx) = mpsc::unbounded_channel();
        let registered_at = {
            let mut hub = self.shared.hub.lock().unwrap();
            hub.watchers.push(Watcher { prefix: prefix.to_string(), tx: live_tx });
            self.shared.revision.load(Ordering::SeqCst)
        };
        let (out_tx, out_rx) = mpsc::channel(256);
        let shared = self.shared.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            if from_revision > 0 && from_revision <= registered_at {
                let history = {
                    let shared = shared.clone();
                    let prefix = prefix.clone();
                    tokio::task::spawn_blocking(move || shared.replay(&prefix, from_revision, registered_at)).await
                };
                match history {
                    Ok(Ok(events)) => {
                        for chunk in events.chunks(1000) {
                            let revision = chunk.last().map(Event::revision).unwrap_or(registered_at);
                            if out_tx.send(Ok(WatchBatch { events: chunk.to_vec(), revision })).await.is_err() {
                                return;
                            }
                        }
                        if out_tx.send(Ok(WatchBatch { events: vec![], revision: registered_at })).await.is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        let _ = out_tx.send(Err(e)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = out_tx.send(Err(internal(e))).await;
                        return;
                    }
                }
            }
            while let Some(mut batch) = live_rx.recv().await {
                // Coalesce queued batches so a slow consumer gets fewer, larger ones.
                while let Ok(more) = live_rx.try_recv() {
                    batch.events.extend(more.events);
                    batch.revision = more.revision;
                    if batch.events.len() >= 1000 {
                        break;
                    }
                }
                batch.events.retain(|e| e.revision() >= from_revision);
                if out_tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
        });
        Ok(out_rx)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.submit(WriteOp::Compact { revision }).await.map(|_| ())
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.shared.revision.load(Ordering::SeqCst))
    }

    async fn compacted_revision(&self) -> Result<i64> {
        Ok(self.shared.compacted.load(Ordering::SeqCst))
    }

    async fn request_progress(&self) -> Result<()> {
        // Under the hub lock the revision cannot move, so every watcher gets exactly it.
        let mut hub = self.shared.hub.lock().unwrap();
        let revision = self.shared.revision.load(Ordering::SeqCst);
        hub.watchers.retain(|w| w.tx.send(WatchBatch { events: vec![], revision }).is_ok());
        Ok(())
    }

    fn metrics(&self) -> Arc<StoreMetrics> {
        self.shared.metrics.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix_end;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        crate::conformance::run_all(&s, "/conformance/").await;
    }

    #[tokio::test]
    async fn cas_revisions_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let r0 = s.current_revision().await.unwrap();
        let WriteOutcome::Done { kv, .. } = s.put("/r/a", b("1"), Precondition::Absent).await.unwrap() else { panic!() };
        assert_eq!(kv.mod_revision, r0 + 1);
        assert_eq!(kv.version, 1);
        // Create again fails and reports the current value.
        let out = s.put("/r/a", b("2"), Precondition::Absent).await.unwrap();
        assert!(matches!(out, WriteOutcome::Failed { current: Some(_) }));
        // Stale CAS fails.
        assert!(matches!(s.put("/r/a", b("2"), Precondition::ModRevision(0)).await.unwrap(), WriteOutcome::Failed { .. }));
        let WriteOutcome::Done { kv: kv2, .. } = s.put("/r/a", b("2"), Precondition::ModRevision(kv.mod_revision)).await.unwrap() else { panic!() };
        assert_eq!((kv2.version, kv2.create_revision), (2, kv.create_revision));
        s.put("/r/b", b("x"), Precondition::Absent).await.unwrap();
        s.delete("/r/a", Precondition::None).await.unwrap();
        // Now: only b. At kv2's revision: a=2 and no b.
        let now = s.range("/r/", &prefix_end("/r/"), 0, None).await.unwrap();
        assert_eq!(now.kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), vec!["/r/b"]);
        let then = s.range("/r/", &prefix_end("/r/"), 0, Some(kv2.mod_revision)).await.unwrap();
        assert_eq!(then.kvs.len(), 1);
        assert_eq!(then.kvs[0].value, b("2"));
        // Limit.
        let lim = s.range("/r/", &prefix_end("/r/"), 1, Some(kv2.mod_revision + 1)).await.unwrap();
        assert!(lim.more);
        // Watch replays history from a revision.
        let mut w = s.watch("/r/", kv2.mod_revision).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            seen.extend(w.recv().await.unwrap().unwrap().events);
        }
        assert_eq!(seen[0].kv.mod_revision, kv2.mod_revision);
        assert_eq!(seen[2].kind, EventType::Delete);
        s.put("/r/c", b("live"), Precondition::None).await.unwrap();
        let live = loop {
            let b = w.recv().await.unwrap().unwrap();
            if !b.events.is_empty() {
                break b.events;
            }
        };
        assert_eq!(live[0].kv.key, "/r/c");
        // Compaction.
        let cur = s.current_revision().await.unwrap();
        s.compact(cur).await.unwrap();
        assert!(matches!(s.watch("/r/", cur - 1).await, Err(StoreError::Compacted { .. })));
        assert!(matches!(s.range("/r/", "/r0", 0, Some(cur - 1)).await, Err(StoreError::Compacted { .. })));
    }

    #[tokio::test]
    async fn reopen_keeps_state_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let rev;
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            for i in 0..10 {
                s.put(&format!("/k/{i}"), b("v"), Precondition::None).await.unwrap();
            }
            rev = s.current_revision().await.unwrap();
            assert_eq!(s.metrics().writes_acked.load(Ordering::SeqCst), 10);
            assert!(s.metrics().fsyncs.load(Ordering::SeqCst) >= 1);
        }
        // The writer thread holds the database until its channel closes; wait for the lock.
        let s = loop {
            match EmbeddedStore::open(dir.path()) {
                Ok(s) => break s,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        assert_eq!(s.current_revision().await.unwrap(), rev);
        assert_eq!(s.range("/k/", "/k0", 0, None).await.unwrap().kvs.len(), 10);
    }
}
