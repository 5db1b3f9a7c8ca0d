//! Expectations (upstream's ControllerExpectations): after a controller creates or deletes
//! pods it waits to see those changes in its informer before it counts again, so a lagging
//! cache never makes it create or delete twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(300);

/// Creations and deletions still expected, and since when.
type Pending = (i64, i64, Instant);

#[derive(Default)]
pub struct Expectations {
    map: Mutex<HashMap<(String, String), Pending>>,
}

impl Expectations {
    pub fn expect(&self, key: &(String, String), adds: i64, dels: i64) {
        self.map.lock().unwrap().insert(key.clone(), (adds, dels, Instant::now()));
    }

    pub fn observed_add(&self, key: &(String, String)) {
        if let Some(e) = self.map.lock().unwrap().get_mut(key) {
            e.0 -= 1;
        }
    }

    pub fn observed_del(&self, key: &(String, String)) {
        if let Some(e) = self.map.lock().unwrap().get_mut(key) {
            e.1 -= 1;
        }
    }

    /// Counts what a pod change means for its owner's expectations: a new pod is an observed
    /// create; a pod that starts deleting (or vanishes without having been seen deleting) is
    /// an observed delete.
    pub fn observe<K: kube::Resource>(&self, key: &(String, String), old: Option<&K>, new: Option<&K>) {
        if old.is_none() {
            self.observed_add(key);
        }
        let was_deleting = old.is_some_and(|o| o.meta().deletion_timestamp.is_some());
        let gone_or_deleting = new.is_none_or(|n| n.meta().deletion_timestamp.is_some());
        if old.is_some() && !was_deleting && gone_or_deleting {
            self.observed_del(key);
        }
    }

    /// A create or delete that failed will never be observed.
    pub fn lower(&self, key: &(String, String), adds: i64, dels: i64) {
        if let Some(e) = self.map.lock().unwrap().get_mut(key) {
            e.0 -= adds;
            e.1 -= dels;
        }
    }

    pub fn satisfied(&self, key: &(String, String)) -> bool {
        match self.map.lock().unwrap().get(key) {
            None => true,
            Some((a, d, at)) => (*a <= 0 && *d <= 0) || at.elapsed() > TTL,
        }
    }

    pub fn forget(&self, key: &(String, String)) {
        self.map.lock().unwrap().remove(key);
    }
}
