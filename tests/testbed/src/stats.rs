//! Request counters and the timestamped write log served at `GET /testbed/stats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Requests counted by what they did and who sent them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestCount {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub user_agent: String,
    pub count: u64,
}

/// One write (create/update/patch/apply/delete), successful or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRecord {
    /// Monotonic sequence number, starting at 1.
    pub seq: u64,
    /// Unix time in microseconds when the write finished.
    pub time_us: u64,
    pub user_agent: String,
    /// create, update, patch, apply or delete.
    pub verb: String,
    /// json, merge, strategic or apply for patches.
    pub patch_type: Option<String>,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
    pub resource_version: Option<String>,
}

/// Snapshot of the testbed's counters and write log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: Vec<RequestCount>,
    pub writes: Vec<WriteRecord>,
}

impl Stats {
    /// Total requests with this verb on this resource (any group, subresource, agent).
    pub fn requests_for(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .map(|r| r.count)
            .sum()
    }
    /// Total requests sent by a user agent.
    pub fn requests_by(&self, user_agent: &str) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.user_agent == user_agent)
            .map(|r| r.count)
            .sum()
    }
    /// Writes done by a user agent, in order.
    pub fn writes_by<'a>(
        &'a self,
        user_agent: &'a str,
    ) -> impl Iterator<Item = &'a WriteRecord> + 'a {
        self.writes
            .iter()
            .filter(move |w| w.user_agent == user_agent)
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    user_agent: String,
}

/// The write log keeps at most this many records (oldest dropped first).
const MAX_WRITES: usize = 1_000_000;

#[derive(Default)]
pub struct Collector {
    requests: Mutex<HashMap<Key, u64>>,
    writes: Mutex<Vec<WriteRecord>>,
    seq: AtomicU64,
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Collector {
    pub fn count(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        user_agent: &str,
    ) {
        let key = Key {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            user_agent: user_agent.into(),
        };
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(key).or_insert(0) += 1;
    }

    /// Appends a write; `seq` and `time_us` are filled in here.
    pub fn write(&self, mut rec: WriteRecord) {
        let mut w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        rec.seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        rec.time_us = now_us();
        if w.len() >= MAX_WRITES {
            w.drain(..MAX_WRITES / 10);
        }
        w.push(rec);
    }

    pub fn snapshot(&self, since_seq: u64) -> Stats {
        let mut requests: Vec<RequestCount> = {
            let m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            m.iter()
                .map(|(k, c)| RequestCount {
                    verb: k.verb.clone(),
                    group: k.group.clone(),
                    resource: k.resource.clone(),
                    subresource: k.subresource.clone(),
                    user_agent: k.user_agent.clone(),
                    count: *c,
                })
                .collect()
        };
        requests.sort();
        let writes = {
            let w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
            let start = w.partition_point(|r| r.seq <= since_seq);
            w[start..].to_vec()
        };
        Stats { requests, writes }
    }

    pub fn reset(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
