//! Cancel keys: clients get keys minted by the gateway, mapped to the target backend's own,
//! so a CancelRequest reaches the right backend without exposing target details.

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
    /// Mints a fresh random key for `target` and returns it.
    pub fn register(&self, target: CancelTarget) -> (i32, i32) {
        let mut map = self.inner.lock().expect("cancel map lock");
        loop {
            let mut raw = [0u8; 8];
            // Cancel keys only need to be unguessable by other clients; fall back to the
            // map size if the OS has no randomness (sessions still work, cancel is weaker).
            if getrandom::fill(&mut raw).is_err() {
                raw[..8].copy_from_slice(&(map.len() as u64 + 1).to_be_bytes());
            }
            let key = (
                i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) & 0x7fff_ffff,
                i32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]),
            );
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
