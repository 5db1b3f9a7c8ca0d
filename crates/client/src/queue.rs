//! A work queue of keys with upstream's guarantees: a key is queued at most once, a key being
//! processed is never handed to a second worker (re-adds wait until `done`), failures back off
//! exponentially per key, and keys can be added after a delay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

struct Inner<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
}

pub struct WorkQueue<T> {
    inner: Arc<Mutex<Inner<T>>>,
    notify: Arc<Notify>,
    base_delay: Duration,
    max_delay: Duration,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue { inner: self.inner.clone(), notify: self.notify.clone(), base_delay: self.base_delay, max_delay: self.max_delay }
    }
}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> Default for WorkQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> WorkQueue<T> {
    /// Backoff from 5 ms doubling to 1000 s, as upstream's default controller rate limiter.
    pub fn new() -> Self {
        Self::with_backoff(Duration::from_millis(5), Duration::from_secs(1000))
    }

    pub fn with_backoff(base_delay: Duration, max_delay: Duration) -> Self {
        WorkQueue {
            inner: Arc::new(Mutex::new(Inner { queue: VecDeque::new(), dirty: HashSet::new(), processing: HashSet::new(), failures: HashMap::new() })),
            notify: Arc::new(Notify::new()),
            base_delay,
            max_delay,
        }
    }

    pub fn add(&self, key: T) {
        let mut g = self.inner.lock().unwrap();
        if !g.dirty.insert(key.clone()) {
            return;
        }
        if !g.processing.contains(&key) {
            g.queue.push_back(key);
            drop(g);
            self.notify.notify_one();
        }
    }

    pub fn add_after(&self, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Re-adds a key that failed, after its per-key backoff.
    pub fn add_rate_limited(&self, key: T) {
        let n = {
            let mut g = self.inner.lock().unwrap();
            let n = g.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = self.base_delay.saturating_mul(1u32 << (n - 1).min(30)).min(self.max_delay);
        self.add_after(key, delay);
    }

    /// Clears a key's failure count (it succeeded).
    pub fn forget(&self, key: &T) {
        self.inner.lock().unwrap().failures.remove(key);
    }

    pub fn failures(&self, key: &T) -> u32 {
        self.inner.lock().unwrap().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for the next key and marks it as being processed.
    pub async fn get(&self) -> T {
        loop {
            let notified = self.notify.notified();
            {
                let mut g = self.inner.lock().unwrap();
                if let Some(k) = g.queue.pop_front() {
                    g.dirty.remove(&k);
                    g.processing.insert(k.clone());
                    let more = !g.queue.is_empty();
                    drop(g);
                    if more {
                        self.notify.notify_one();
                    }
                    return k;
                }
            }
            notified.await;
        }
    }

    /// Ends processing of a key; if it was added meanwhile it goes back in the queue.
    pub fn done(&self, key: &T) {
        let mut g = self.inner.lock().unwrap();
        g.processing.remove(key);
        if g.dirty.contains(key) {
            g.queue.push_back(key.clone());
            drop(g);
            self.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_and_holds_keys_in_processing() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.get().await;
        assert_eq!(k, "a");
        // Re-added while processing: not handed out until done.
        q.add("a");
        assert_eq!(q.get().await, "b");
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await, "a");
    }

    #[tokio::test]
    async fn failures_back_off_and_forget_resets() {
        let q = WorkQueue::with_backoff(Duration::from_millis(1), Duration::from_millis(50));
        q.add_rate_limited("x");
        q.add_rate_limited("x");
        assert_eq!(q.failures(&"x"), 2);
        let k = tokio::time::timeout(Duration::from_secs(5), q.get()).await.unwrap();
        assert_eq!(k, "x");
        q.forget(&"x");
        assert_eq!(q.failures(&"x"), 0);
    }
}
