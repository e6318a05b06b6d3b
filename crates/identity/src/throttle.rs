//! Failed sign-ins slow down whoever keeps failing: per source address and per claimed
//! user, a few failures are free, then each further one buys a doubling wait during which
//! sign-ins are refused without looking at the credential. Protocol-neutral and pure (the
//! caller passes the time); memory is bounded whatever the attacker sends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How failures are counted and punished.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    /// Failures allowed within `window` before waits begin.
    pub free: u32,
    pub window: Duration,
    /// The first wait; each failure after it doubles the wait up to `max_wait`.
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// Keys remembered at most (source addresses plus claimed names): beyond this, keys
    /// that are not waiting are forgotten first.
    pub max_keys: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            free: 5,
            window: Duration::from_secs(60),
            first_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(300),
            max_keys: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures since `since`.
    failures: u32,
    since: Instant,
    /// Refused until then.
    until: Option<Instant>,
}

/// The failure counts of one listener (or one gateway).
#[derive(Debug, Default)]
pub struct Throttle {
    settings: ThrottleSettings,
    keys: Mutex<HashMap<String, Entry>>,
}

/// Claimed user names are kept only this long: a flood of long names must not cost memory.
const MAX_NAME: usize = 128;

/// The throttle's keys for a sign-in: the source address, and the name claimed.
pub fn keys(source: std::net::IpAddr, claimed: &str) -> [String; 2] {
    let name = &claimed[..claimed.floor_char_boundary(MAX_NAME)];
    [format!("addr:{source}"), format!("user:{name}")]
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Self {
        Throttle {
            settings,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` while any of `keys` must wait before trying again.
    pub fn check(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| map.get(k).and_then(|e| e.until))
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a failed sign-in against every key.
    pub fn failed(&self, keys: &[String], now: Instant) {
        let s = self.settings;
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() + keys.len() > s.max_keys {
            // Forget what no longer matters first, then whatever is not waiting.
            map.retain(|_, e| {
                now.duration_since(e.since) < s.window || e.until.is_some_and(|u| u > now)
            });
            if map.len() + keys.len() > s.max_keys {
                map.retain(|_, e| e.until.is_some_and(|u| u > now));
            }
            if map.len() + keys.len() > s.max_keys {
                // Every key is waiting: the newest keys are not remembered.
                return;
            }
        }
        for key in keys {
            let entry = map.entry(key.clone()).or_insert(Entry {
                failures: 0,
                since: now,
                until: None,
            });
            let waiting = entry.until.is_some_and(|u| u > now);
            if !waiting && now.duration_since(entry.since) >= s.window {
                *entry = Entry {
                    failures: 0,
                    since: now,
                    until: None,
                };
            }
            entry.failures = entry.failures.saturating_add(1);
            if entry.failures > s.free {
                let doublings = (entry.failures - s.free - 1).min(20);
                let wait = s.first_wait.saturating_mul(1 << doublings).min(s.max_wait);
                entry.until = Some(now + wait);
                // The window restarts with each punished failure, so a steady attacker
                // keeps waiting.
                entry.since = now;
            }
        }
    }

    /// A successful sign-in clears the claimed name's count (not the address's: one
    /// success must not launder a guessing run from a shared address).
    pub fn succeeded(&self, user_key: &str) {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(user_key);
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ThrottleSettings {
        ThrottleSettings {
            free: 3,
            window: Duration::from_secs(60),
            first_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(8),
            max_keys: 10,
        }
    }

    #[test]
    fn a_few_failures_are_free_then_waits_double_up_to_the_cap() {
        let t = Throttle::new(settings());
        let alice = keys("10.0.0.1".parse().unwrap(), "alice");
        let start = Instant::now();
        for _ in 0..3 {
            t.failed(&alice, start);
            assert!(t.check(&alice, start).is_ok());
        }
        let mut now = start;
        for expected in [1, 2, 4, 8, 8] {
            t.failed(&alice, now);
            assert_eq!(t.check(&alice, now), Err(Duration::from_secs(expected)));
            now += Duration::from_secs(expected);
            assert!(t.check(&alice, now).is_ok(), "free again after the wait");
        }
        // The other address and the other user are not held up by alice's run...
        let other = keys("10.0.0.2".parse().unwrap(), "bob");
        assert!(t.check(&other, now).is_ok());
        // ...but the same user from another address is.
        t.failed(&alice, now);
        let same_user = keys("10.0.0.3".parse().unwrap(), "alice");
        assert!(t.check(&same_user, now).is_err());
        t.succeeded(&same_user[1]);
        assert!(t.check(&[same_user[1].clone()], now).is_ok());
    }

    #[test]
    fn quiet_keys_start_over_and_memory_stays_bounded() {
        let t = Throttle::new(settings());
        let start = Instant::now();
        let alice = keys("10.0.0.1".parse().unwrap(), "alice");
        for _ in 0..3 {
            t.failed(&alice, start);
        }
        let later = start + Duration::from_secs(61);
        t.failed(&alice, later);
        assert!(t.check(&alice, later).is_ok(), "an old run is forgotten");
        for i in 0..1000 {
            let name = format!("user-{i}-{}", "x".repeat(1000));
            t.failed(&keys_for(i, &name), later);
        }
        assert!(t.len() <= 10, "{}", t.len());
    }

    fn keys_for(i: u32, name: &str) -> [String; 2] {
        keys(std::net::IpAddr::from(i.to_be_bytes()), name)
    }

    #[test]
    fn claimed_names_are_truncated() {
        let [_, user] = keys("::1".parse().unwrap(), &"é".repeat(200));
        assert!(user.len() <= MAX_NAME + "user:".len());
    }
}
