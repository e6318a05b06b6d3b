//! Cancel keys: a client sees the target backend's own pid (so `pg_backend_pid()` and the
//! sender of its notifications match what it was told) with a secret minted by the gateway,
//! mapped to the backend's real secret, so a CancelRequest reaches the right backend and
//! only someone the gateway gave the key to can send one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where a client's cancel key leads.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub target: String,
    pub pid: i32,
    pub secret: i32,
    /// Wakes the session when it holds a statement for review, so the cancel ends it.
    pub held: Arc<tokio::sync::Notify>,
}

/// Shared table of live sessions' cancel keys.
#[derive(Debug, Clone, Default)]
pub struct CancelMap {
    inner: Arc<Mutex<HashMap<(i32, i32), CancelTarget>>>,
}

impl CancelMap {
    /// Keeps the backend's pid, mints a fresh random secret for `target`, and returns the
    /// key the client is given.
    pub fn register(&self, target: CancelTarget) -> (i32, i32) {
        let mut map = self.inner.lock().expect("cancel map lock");
        loop {
            let mut raw = [0u8; 4];
            // Cancel secrets only need to be unguessable by other clients; fall back to the
            // map size if the OS has no randomness (sessions still work, cancel is weaker).
            if getrandom::fill(&mut raw).is_err() {
                raw.copy_from_slice(&(map.len() as u32 + 1).to_be_bytes());
            }
            let key = (target.pid, i32::from_be_bytes(raw));
            if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(key) {
                slot.insert(target);
                return key;
            }
        }
    }

    pub fn lookup(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        self.inner
            .lock()
            .expect("cancel map lock")
            .get(&(pid, secret))
            .cloned()
    }

    pub fn remove(&self, key: (i32, i32)) {
        self.inner.lock().expect("cancel map lock").remove(&key);
    }
}
