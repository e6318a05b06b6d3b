//! The one clock: wall time since the Unix epoch, in the units Gatehouse writes (ledger
//! entries in microseconds, reviews in milliseconds, keys and tokens in seconds). A clock
//! before 1970 reads as 0 rather than failing: a timestamp is evidence, not a control.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the epoch of `at`.
pub fn micros_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Now, in microseconds since the epoch.
pub fn unix_us() -> u64 {
    micros_of(SystemTime::now())
}

/// Now, in milliseconds since the epoch.
pub fn unix_ms() -> u64 {
    unix_us() / 1_000
}

/// Now, in whole seconds since the epoch (signed, as JWT and the key store count).
pub fn unix_secs() -> i64 {
    i64::try_from(unix_us() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_agree() {
        let (secs, ms, us) = (unix_secs(), unix_ms(), unix_us());
        assert!(secs > 1_700_000_000, "a clock after 2023");
        assert!(ms / 1_000 >= secs as u64 && ms / 1_000 <= secs as u64 + 1);
        assert!(us / 1_000 >= ms);
        assert_eq!(micros_of(UNIX_EPOCH), 0);
        assert_eq!(micros_of(UNIX_EPOCH - std::time::Duration::from_secs(1)), 0);
    }
}
