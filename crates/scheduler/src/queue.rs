//! The scheduling queue: pending pods by priority (then arrival), and the pods that did not
//! fit, which go back after a backoff when the cluster changes (or on a periodic flush).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub type Key = (String, String);

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    priority: i32,
    seq: Reverse<u64>,
    key: Key,
}

#[derive(Default)]
struct Inner {
    heap: BinaryHeap<Entry>,
    queued: HashSet<Key>,
    unschedulable: HashMap<Key, i32>,
    attempts: HashMap<Key, u32>,
    seq: u64,
}

#[derive(Clone, Default)]
pub struct SchedulingQueue {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl SchedulingQueue {
    pub fn add(&self, key: Key, priority: i32) {
        let mut g = self.inner.lock().unwrap();
        g.unschedulable.remove(&key);
        if g.queued.insert(key.clone()) {
            g.seq += 1;
            let seq = Reverse(g.seq);
            g.heap.push(Entry { priority, seq, key });
            drop(g);
            self.notify.notify_one();
        }
    }

    pub async fn pop(&self) -> Key {
        loop {
            let notified = self.notify.notified();
            {
                let mut g = self.inner.lock().unwrap();
                if let Some(e) = g.heap.pop() {
                    g.queued.remove(&e.key);
                    if !g.heap.is_empty() {
                        self.notify.notify_one();
                    }
                    return e.key;
                }
            }
            notified.await;
        }
    }

    /// The pod did not fit: park it until something changes.
    pub fn unschedulable(&self, key: Key, priority: i32) {
        let mut g = self.inner.lock().unwrap();
        *g.attempts.entry(key.clone()).or_insert(0) += 1;
        g.unschedulable.insert(key, priority);
    }

    /// Binding failed or another transient error: retry after the pod's backoff.
    pub fn retry(&self, key: Key, priority: i32) {
        let n = {
            let mut g = self.inner.lock().unwrap();
            let n = g.attempts.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.add_after(key, priority, backoff(n));
    }

    fn add_after(&self, key: Key, priority: i32, d: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            q.add(key, priority);
        });
    }

    /// Something changed that may make parked pods fit: each goes back after its backoff.
    pub fn move_all(&self) {
        let parked: Vec<(Key, i32, u32)> = {
            let mut g = self.inner.lock().unwrap();
            let parked: Vec<(Key, i32)> = g.unschedulable.drain().collect();
            parked
                .into_iter()
                .map(|(k, p)| {
                    let n = g.attempts.get(&k).copied().unwrap_or(1);
                    (k, p, n)
                })
                .collect()
        };
        for (k, p, n) in parked {
            self.add_after(k, p, backoff(n));
        }
    }

    /// The pod is bound or gone.
    pub fn done(&self, key: &Key) {
        let mut g = self.inner.lock().unwrap();
        g.unschedulable.remove(key);
        g.attempts.remove(key);
    }
}

fn backoff(attempts: u32) -> Duration {
    INITIAL_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(8)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn higher_priority_first_then_fifo() {
        let q = SchedulingQueue::default();
        let k = |n: &str| ("ns".to_string(), n.to_string());
        q.add(k("a"), 0);
        q.add(k("b"), 10);
        q.add(k("c"), 0);
        q.add(k("a"), 0);
        assert_eq!(q.pop().await, k("b"));
        assert_eq!(q.pop().await, k("a"));
        assert_eq!(q.pop().await, k("c"));
    }
}
