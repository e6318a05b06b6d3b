//! `ByteSize`: a byte count written in the config as an integer or as `"64MiB"`.
//!
//! Only binary units (KiB, MiB, GiB, TiB) are accepted. `"64MB"` is rejected rather than guessed,
//! because readers disagree on whether MB means 10^6 or 2^20 and a segment size that is off by 5%
//! is a silent surprise.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(u64);

/// Units from largest to smallest, so `Display` picks the largest one that divides exactly.
const UNITS: [(&str, u64); 5] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    pub const KIB: ByteSize = ByteSize(1 << 10);
    pub const MIB: ByteSize = ByteSize(1 << 20);
    pub const GIB: ByteSize = ByteSize(1 << 30);

    pub const fn new(bytes: u64) -> Self {
        ByteSize(bytes)
    }

    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        ByteSize(bytes)
    }
}

/// Why a size string was rejected; the text is meant to follow `"<input>" is not a size: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseByteSizeError(String);

impl fmt::Display for ParseByteSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseByteSizeError {}

impl FromStr for ByteSize {
    type Err = ParseByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |why: &str| {
            ParseByteSizeError(format!(
                "{s:?} is not a size: {why}; write bytes as an integer or e.g. \"64MiB\" (units: B, KiB, MiB, GiB, TiB)"
            ))
        };
        let text = s.trim();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit() && c != '_')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        let number = number.replace('_', "");
        if number.is_empty() {
            return Err(fail("it does not start with a number"));
        }
        let number: u64 = number
            .parse()
            .map_err(|_| fail("the number is too large"))?;
        let unit = unit.trim_start();
        let multiplier = match unit {
            "" => 1,
            _ => match UNITS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            {
                Some((_, m)) => *m,
                None => {
                    let decimal = ["k", "kb", "m", "mb", "g", "gb", "t", "tb"];
                    if decimal.iter().any(|d| d.eq_ignore_ascii_case(unit)) {
                        return Err(fail(&format!(
                            "{unit:?} is ambiguous (decimal or binary?), use KiB, MiB, GiB or TiB"
                        )));
                    }
                    return Err(fail(&format!("unknown unit {unit:?}")));
                }
            },
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| fail("it is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `0` would match every unit; print it plainly.
        if self.0 == 0 {
            return f.write_str("0B");
        }
        let (name, size) = UNITS
            .iter()
            .find(|(_, size)| self.0.is_multiple_of(*size))
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{}{name}", self.0 / size)
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteSize({self})")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes as an integer or a string like \"64MiB\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{v} is not a size: it is negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_and_binary_units() {
        assert_eq!("4096".parse(), Ok(ByteSize::new(4096)));
        assert_eq!("64MiB".parse(), Ok(ByteSize::mib(64)));
        assert_eq!("64 mib".parse(), Ok(ByteSize::mib(64)));
        assert_eq!("1KiB".parse(), Ok(ByteSize::KIB));
        assert_eq!("4GiB".parse(), Ok(ByteSize::gib(4)));
        assert_eq!("1_024B".parse(), Ok(ByteSize::KIB));
    }

    #[test]
    fn rejects_decimal_units_and_garbage() {
        let err = "64MB".parse::<ByteSize>().unwrap_err().to_string();
        assert!(err.contains("ambiguous"), "{err}");
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("-1".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(ByteSize::mib(64).to_string(), "64MiB");
        assert_eq!(ByteSize::new(1536).to_string(), "1536B");
        assert_eq!(ByteSize::new(0).to_string(), "0B");
        assert_eq!(format!("{:?}", ByteSize::gib(4)), "ByteSize(4GiB)");
    }
}
