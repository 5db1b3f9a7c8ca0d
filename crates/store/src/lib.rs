//! The cluster state store: a key-value store with etcd v3 semantics.
//!
//! Everything the API server persists goes through [`Store`]. The trait is shaped after etcd's
//! KV/Watch API (a global revision, per-key create/mod revisions and versions, compare-and-swap
//! writes, prefix ranges with a limit at a chosen revision, watch from a revision, compaction) so
//! an etcd backend implements it one-to-one. [`embedded::EmbeddedStore`] is the default backend.

pub mod conformance;
pub mod embedded;
mod encoding;
pub mod metrics;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

/// One key at one revision, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// Number of writes to the key since its creation (1 after create).
    pub version: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// A change, as etcd's `mvccpb.Event` with `prev_kv` requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    /// For Put: the new key-value. For Delete: the key with an empty value and `mod_revision`
    /// set to the revision of the deletion.
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// The condition a write is conditional on (etcd's `Compare` on `mod_revision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist with this mod revision (optimistic concurrency).
    ModRevision(i64),
    /// The key must exist, whatever its revision.
    Exists,
}

/// Result of a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write happened. `kv` is the new state (for a delete, the deletion tombstone) and
    /// `prev` what was there before.
    Done { kv: KeyValue, prev: Option<KeyValue> },
    /// The precondition failed; `current` is what is stored now.
    Failed { current: Option<KeyValue> },
}

#[derive(Clone, Debug, Default)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result short.
    pub more: bool,
    /// The revision the range was read at.
    pub revision: i64,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("mvcc: required revision has been compacted (compacted revision {compacted})")]
    Compacted { compacted: i64 },
    #[error("mvcc: required revision is a future revision (current revision {current})")]
    FutureRevision { current: i64 },
    #[error("store closed")]
    Closed,
    /// The store cannot be reached (a remote backend's connection is down); retryable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time; retryable.
    #[error("store request timed out")]
    Timeout,
    #[error("storage error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the same request may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A batch of changes, in revision order, plus the revision the store had reached when the batch
/// was sent. A batch may have no events: it then only reports progress, so a watcher (the watch
/// cache) knows it is current even when no key under its prefix changed.
#[derive(Clone, Debug, Default)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    pub revision: i64,
}

/// A stream of change batches.
pub type WatchReceiver = mpsc::Receiver<Result<WatchBatch>>;

/// The etcd-shaped storage interface. Keys are strings (`/registry/<resource>/<ns>/<name>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the current revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Reads keys in `[start, end)` (end = `prefix_end(prefix)` for a prefix), at most `limit`
    /// (0 = no limit), at `revision` (None or 0 = current).
    async fn range(&self, start: &str, end: &str, limit: usize, revision: Option<i64>) -> Result<RangeResult>;

    /// Writes `value` under `key` if `cond` holds.
    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> Result<WriteOutcome>;

    /// Deletes `key` if `cond` holds. Deleting a missing key fails with `current: None`.
    async fn delete(&self, key: &str, cond: Precondition) -> Result<WriteOutcome>;

    /// Watches keys under `prefix`, delivering every event with revision >= `from_revision`
    /// (0 = only future events). Fails with `Compacted` if that history is gone.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchReceiver>;

    /// Drops history before `revision`. Reads and watches below it answer `Compacted`.
    async fn compact(&self, revision: i64) -> Result<()>;

    /// The latest committed revision (a remote store asks its server: etcd answers it in every
    /// response header).
    async fn current_revision(&self) -> Result<i64>;

    /// The oldest revision still readable (0 when nothing was compacted).
    async fn compacted_revision(&self) -> Result<i64>;

    /// Asks every open watch to report progress: each receives a batch (possibly empty) whose
    /// `revision` is at least the store's revision at the time of the call (etcd's
    /// `RequestProgress`). A watch cache uses it to prove it is current before serving a
    /// consistent read when no key under its prefix changed.
    async fn request_progress(&self) -> Result<()>;

    /// Counters for tests and benchmarks (reads, commits, fsyncs).
    fn metrics(&self) -> Arc<metrics::StoreMetrics>;
}

/// The smallest key greater than every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            // Keys are ASCII paths in practice; fall back to a lossy string otherwise.
            return String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        }
    }
    // An all-0xff prefix: no upper bound. Use a key above any ASCII key.
    "\u{10FFFF}".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), "/registry/pods0");
        assert_eq!(prefix_end("a"), "b");
    }
}
