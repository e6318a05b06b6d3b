//! Serde glue for `std::time::Duration` written as humantime strings (`"1s"`, `"250ms"`, `"100us"`).
//!
//! This is our own module rather than `humantime-serde` so that a bad value says what humantime
//! disliked and shows an example, instead of serde's generic "expected a duration".

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*value))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            // Integers are refused on purpose: "60" could mean seconds or milliseconds.
            f.write_str("a duration string with a unit, like \"1s\" or \"250ms\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v).map_err(|e| {
                E::custom(format!(
                    "{v:?} is not a duration ({e}); write e.g. \"1s\", \"250ms\" or \"100us\""
                ))
            })
        }
    }

    deserializer.deserialize_str(DurationVisitor)
}
