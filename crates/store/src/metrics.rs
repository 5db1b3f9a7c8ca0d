//! Counters the store keeps about itself. Tests read them to prove properties that timing cannot
//! (every acknowledged write was fsynced; a LIST was answered without reading the store).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// get/range calls answered by the backend.
    pub reads: AtomicU64,
    /// Writes (put/delete/compact) whose caller was told they succeeded.
    pub writes_acked: AtomicU64,
    /// Durable commits (each one fsync) made by the backend.
    pub fsyncs: AtomicU64,
    /// Highest revision known to be durable when the last acknowledgement was sent.
    pub durable_revision: AtomicU64,
    /// Revision of the last acknowledged write.
    pub acked_revision: AtomicU64,
}

impl StoreMetrics {
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        [
            ("r8s_store_reads_total", self.reads.load(Ordering::Relaxed)),
            ("r8s_store_writes_acked_total", self.writes_acked.load(Ordering::Relaxed)),
            ("r8s_store_fsyncs_total", self.fsyncs.load(Ordering::Relaxed)),
            ("r8s_store_durable_revision", self.durable_revision.load(Ordering::Relaxed)),
            ("r8s_store_acked_revision", self.acked_revision.load(Ordering::Relaxed)),
        ]
    }
}
