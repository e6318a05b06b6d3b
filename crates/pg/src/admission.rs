//! What a client may cost before it has signed in: how many connections a listener and a
//! source address may hold in startup, how many a listener holds at all, and how many
//! ledger entries failed sign-ins write (the first per source and reason in each interval,
//! then one entry counting the rest). With the startup frame caps in the session and the
//! sign-in throttle, a flood of unauthenticated clients costs bounded memory, disk and
//! ledger entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_identity::throttle::{Throttle, ThrottleSettings};
use serde_json::{Value, json};

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once, signed in or not.
    pub max_connections: usize,
    /// Connections still in startup (TLS, startup packet, sign-in) at once.
    pub max_startups: usize,
    /// Connections in startup from one source address at once.
    pub max_startups_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_startups: 1024,
            max_startups_per_source: 128,
        }
    }
}

/// How long failures of one source and reason are gathered into one entry.
pub const FAILURE_INTERVAL: Duration = Duration::from_secs(10);
/// Claimed user names are recorded this long at most.
const MAX_RECORDED_NAME: usize = 64;
/// Distinct names an aggregated entry lists.
const NAMES_PER_ENTRY: usize = 5;
/// Entries written at once (the first failure of a source and reason) per interval, over
/// all sources; past this, failures are only counted, in one bucket per reason. So a flood
/// from any number of addresses writes at most this many entries, plus one count per
/// bucket, per interval.
const MAX_IMMEDIATE: usize = 50;

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    startups: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// A listener's admission state, shared by its sessions.
#[derive(Debug, Default)]
pub struct Admission {
    pub limits: Limits,
    counts: Arc<Mutex<Counts>>,
    /// Failed sign-ins per source address and per claimed name.
    pub throttle: Throttle,
    failures: Mutex<FailureLog>,
}

/// Why a connection was turned away before startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    ListenerFull,
    StartupsFull,
    SourceStartupsFull,
}

impl Turned {
    pub fn reason(self) -> &'static str {
        match self {
            Turned::ListenerFull => "too_many_connections",
            Turned::StartupsFull => "too_many_startups",
            Turned::SourceStartupsFull => "too_many_startups_from_source",
        }
    }
}

/// A connection's place; freed when dropped. Its startup slot is freed earlier, by
/// [`Ticket::signed_in`].
#[derive(Debug)]
pub struct Ticket {
    counts: Arc<Mutex<Counts>>,
    source: IpAddr,
    in_startup: bool,
}

impl Ticket {
    pub fn signed_in(&mut self) {
        if self.in_startup {
            self.in_startup = false;
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            release_startup(&mut c, self.source);
        }
    }
}

fn release_startup(c: &mut Counts, source: IpAddr) {
    c.startups = c.startups.saturating_sub(1);
    if let Some(n) = c.per_source.get_mut(&source) {
        *n -= 1;
        if *n == 0 {
            c.per_source.remove(&source);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.open = c.open.saturating_sub(1);
        if self.in_startup {
            release_startup(&mut c, self.source);
        }
    }
}

impl Admission {
    pub fn new(limits: Limits, throttle: ThrottleSettings) -> Self {
        Admission {
            limits,
            counts: Arc::default(),
            throttle: Throttle::new(throttle),
            failures: Mutex::default(),
        }
    }

    /// The admission of a `[[resources]]` entry's `[resources.limits]`.
    pub fn from_config(config: &gatehouse_config::LimitsConfig) -> Self {
        Admission::new(
            Limits {
                max_connections: config.max_connections as usize,
                max_startups: config.max_startups as usize,
                max_startups_per_source: config.max_startups_per_source as usize,
            },
            ThrottleSettings {
                free: config.free_failed_sign_ins,
                ..ThrottleSettings::default()
            },
        )
    }

    /// A place for a new connection from `source`, or why there is none.
    pub fn admit(&self, source: IpAddr) -> Result<Ticket, Turned> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.open >= self.limits.max_connections {
            return Err(Turned::ListenerFull);
        }
        if c.startups >= self.limits.max_startups {
            return Err(Turned::StartupsFull);
        }
        let from_source = c.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.max_startups_per_source {
            return Err(Turned::SourceStartupsFull);
        }
        c.open += 1;
        c.startups += 1;
        c.per_source.insert(source, from_source + 1);
        Ok(Ticket {
            counts: self.counts.clone(),
            source,
            in_startup: true,
        })
    }

    /// Connections open and in startup now.
    pub fn open(&self) -> (usize, usize) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        (c.open, c.startups)
    }

    /// Counts a failed sign-in; returns the data of an `auth.failure` entry to write now
    /// (the first of its source and reason in this interval), or `None` when it is only
    /// counted, to be written by [`Admission::flush_failures`].
    pub fn auth_failure(
        &self,
        source: IpAddr,
        reason: &str,
        user: &str,
        now: Instant,
    ) -> Option<Value> {
        let mut log = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        log.record(source, reason, user, now)
    }

    /// Aggregated entries for intervals that have ended (all of them with `all`).
    pub fn flush_failures(&self, now: Instant, all: bool) -> Vec<Value> {
        let mut log = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        log.flush(now, all)
    }
}

/// A claimed name as recorded: at most [`MAX_RECORDED_NAME`] bytes.
pub fn recorded_name(user: &str) -> String {
    if user.len() <= MAX_RECORDED_NAME {
        return user.to_string();
    }
    format!("{}…", &user[..user.floor_char_boundary(MAX_RECORDED_NAME)])
}

#[derive(Debug)]
struct Bucket {
    started: Instant,
    /// Failures after the first, not yet written.
    suppressed: u64,
    names: Vec<String>,
}

/// Failed sign-ins gathered per (source, reason, claimed name) and interval.
#[derive(Debug, Default)]
struct FailureLog {
    /// By source (`None`: the shared bucket), reason and claimed name.
    buckets: HashMap<(Option<IpAddr>, String, String), Bucket>,
    /// When the current interval of immediate entries began, and how many it wrote.
    interval: Option<Instant>,
    immediate: usize,
}

impl FailureLog {
    fn record(&mut self, source: IpAddr, reason: &str, user: &str, now: Instant) -> Option<Value> {
        if self
            .interval
            .is_none_or(|start| now.duration_since(start) >= FAILURE_INTERVAL)
        {
            self.interval = Some(now);
            self.immediate = 0;
        }
        let name = recorded_name(user);
        let key = (Some(source), reason.to_string(), name.clone());
        if let Some(bucket) = self.buckets.get_mut(&key)
            && now.duration_since(bucket.started) < FAILURE_INTERVAL
        {
            bucket.count(name);
            return None;
        }
        if self.immediate >= MAX_IMMEDIATE {
            // Too many sources at once: they share one bucket per reason.
            self.buckets
                .entry((None, reason.to_string(), String::new()))
                .or_insert_with(|| Bucket {
                    started: now,
                    suppressed: 0,
                    names: Vec::new(),
                })
                .count(name);
            return None;
        }
        self.immediate += 1;
        // A new interval for this source: what the last one gathered goes with this entry.
        let previous = self.buckets.insert(
            key.clone(),
            Bucket {
                started: now,
                suppressed: 0,
                names: Vec::new(),
            },
        );
        let mut out = json!({"user": name, "client": source.to_string(), "reason": reason});
        if let Some(previous) = previous
            && previous.suppressed > 0
        {
            out["earlier"] = summary(&key, &previous);
        }
        Some(out)
    }

    fn flush(&mut self, now: Instant, all: bool) -> Vec<Value> {
        let mut out = Vec::new();
        self.buckets.retain(|key, bucket| {
            let ended = all || now.duration_since(bucket.started) >= FAILURE_INTERVAL;
            if ended && bucket.suppressed > 0 {
                out.push(summary(key, bucket));
            }
            !ended
        });
        out
    }
}

impl Bucket {
    fn count(&mut self, name: String) {
        self.suppressed += 1;
        if self.names.len() < NAMES_PER_ENTRY && !self.names.contains(&name) {
            self.names.push(name);
        }
    }
}

/// The data of an aggregated `auth.failure` entry.
fn summary(key: &(Option<IpAddr>, String, String), bucket: &Bucket) -> Value {
    json!({
        "client": key.0.map_or_else(|| "many".to_string(), |a| a.to_string()),
        "reason": key.1,
        "aggregated": true,
        "count": bucket.suppressed,
        "interval_s": FAILURE_INTERVAL.as_secs(),
        "users": bucket.names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startups_are_capped_per_listener_and_source_and_freed() {
        let limits = Limits {
            max_connections: 3,
            max_startups: 2,
            max_startups_per_source: 1,
        };
        let admission = Admission::new(limits, ThrottleSettings::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let mut first = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Turned::SourceStartupsFull);
        let second = admission.admit(b).unwrap();
        assert_eq!(admission.admit(c).unwrap_err(), Turned::StartupsFull);
        first.signed_in();
        let third = admission.admit(a).unwrap();
        assert_eq!(admission.admit(c).unwrap_err(), Turned::ListenerFull);
        assert_eq!(admission.open(), (3, 2));
        drop((first, second, third));
        assert_eq!(admission.open(), (0, 0));
    }

    #[test]
    fn failures_write_one_entry_per_source_reason_and_interval() {
        let admission = Admission::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let first = admission.auth_failure(a, "wrong_key", "alice", t0).unwrap();
        assert_eq!(first["user"], "alice");
        for _ in 0..1000 {
            assert!(
                admission
                    .auth_failure(a, "wrong_key", "alice", t0)
                    .is_none()
            );
        }
        // Another reason is its own bucket.
        assert!(
            admission
                .auth_failure(a, "unknown_key", "alice", t0)
                .is_some()
        );
        assert!(
            admission.flush_failures(t0, false).is_empty(),
            "interval not over"
        );
        let flushed = admission.flush_failures(t0 + FAILURE_INTERVAL, false);
        assert_eq!(flushed.len(), 1, "{flushed:?}");
        assert_eq!(flushed[0]["count"], 1000);
        assert_eq!(flushed[0]["users"], json!(["alice"]));
        // The next interval starts with an entry again.
        assert!(
            admission
                .auth_failure(a, "wrong_key", "alice", t0 + FAILURE_INTERVAL)
                .is_some()
        );
    }

    #[test]
    fn a_flood_of_sources_shares_one_bucket() {
        let admission = Admission::default();
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..(MAX_IMMEDIATE as u32 + 5000) {
            let source = IpAddr::from(i.to_be_bytes());
            let name = format!("{i}{}", "x".repeat(500));
            if let Some(entry) = admission.auth_failure(source, "wrong_key", &name, t0) {
                assert!(entry["user"].as_str().unwrap().len() <= MAX_RECORDED_NAME + 3);
                written += 1;
            }
        }
        assert_eq!(written, MAX_IMMEDIATE);
        let flushed = admission.flush_failures(t0, true);
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0]["client"], "many");
        assert_eq!(flushed[0]["count"], 5000);
        let users = flushed[0]["users"].as_array().unwrap();
        assert_eq!(users.len(), NAMES_PER_ENTRY);
        assert!(
            users
                .iter()
                .all(|u| u.as_str().unwrap().len() <= MAX_RECORDED_NAME + 3)
        );
    }
}
