//! Fuzz target: masking a JSON document never panics, and whatever it returns for a
//! document is JSON again (masking never breaks a value of type json).
#![no_main]

use std::sync::OnceLock;

use gatehouse_mask::{Detectors, Kind, Masker};
use libfuzzer_sys::fuzz_target;

fn masker() -> &'static Masker {
    static MASKER: OnceLock<Masker> = OnceLock::new();
    MASKER.get_or_init(|| {
        Masker::new(Detectors::select(&Kind::BUILTIN, &[]).unwrap(), b"fuzz").unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parses = serde_json::from_str::<serde_json::Value>(text).is_ok();
    // serde_json stands in for the server's reader; it refuses some JSON PostgreSQL takes
    // (nesting deeper than 128, numbers beyond f64), so only what it reads is checked.
    match masker().mask_json(text) {
        Some(masked) if parses => {
            let again = serde_json::from_str::<serde_json::Value>(&masked.text);
            assert!(again.is_ok(), "{text:?} masked to {:?}", masked.text);
        }
        Some(_) => {}
        // Only what is not JSON may be refused.
        None => assert!(!parses, "{text:?} is JSON but was not masked"),
    }
});
