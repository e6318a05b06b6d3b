//! Gatehouse's masking engine: finds sensitive values by what they look like
//! ([`detect`]) and replaces them by a chosen strategy ([`Strategy`]). Pure and
//! deterministic: no I/O, the same input and key always give the same output, so the
//! protocol drivers can mask results on the data path and what is recorded is exactly
//! what the client saw. JSON documents are masked string by string ([`Masker::mask_json`]),
//! so they stay JSON.

pub mod columns;
pub mod detect;
mod json;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::{Deref, Range};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use smallvec::SmallVec;

pub use columns::{ColumnRule, ColumnRules, check_pattern};
pub use detect::{Detectors, Finding, Findings, Kind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("pattern {name}: {message}")]
    Pattern { name: String, message: String },
    #[error("column pattern {pattern:?} {message}")]
    Column { pattern: String, message: String },
    #[error("the hashing key must not be empty")]
    EmptyKey,
}

/// How a sensitive value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A fixed token naming the type: `[email]`.
    Redact,
    /// Every letter and digit but the last `keep_last` become `*`; separators stay, so the
    /// shape (and the last digits people check against) survives.
    Partial { keep_last: usize },
    /// A keyed HMAC-SHA-256, deterministic per key, so joins and GROUP BY still work on
    /// masked values without revealing them: `h:` and 16 hex digits.
    Hash,
    /// No value at all (SQL NULL) for a whole column; inside text it redacts.
    Null,
}

impl std::str::FromStr for Strategy {
    type Err = String;

    /// `redact`, `hash`, `null`, `partial` (keeps the last 4) or `partial:N`.
    fn from_str(text: &str) -> Result<Strategy, String> {
        match text {
            "redact" => Ok(Strategy::Redact),
            "hash" => Ok(Strategy::Hash),
            "null" => Ok(Strategy::Null),
            "partial" => Ok(Strategy::Partial { keep_last: 4 }),
            other => match other.strip_prefix("partial:").map(str::parse::<usize>) {
                Some(Ok(keep_last)) if keep_last <= 64 => Ok(Strategy::Partial { keep_last }),
                _ => Err(format!(
                    "{other:?} is not a masking strategy (redact, hash, null, partial or partial:N with N up to 64)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Redact => f.write_str("redact"),
            Strategy::Hash => f.write_str("hash"),
            Strategy::Null => f.write_str("null"),
            Strategy::Partial { keep_last } => write!(f, "partial:{keep_last}"),
        }
    }
}

/// The result of masking one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked<'a> {
    pub text: Cow<'a, str>,
    /// How many values of each kind were masked (what the ledger records; never the values).
    pub counts: Counts<'a>,
}

/// How many values of each kind (by name) were masked in one text, in the order first met.
/// A short list, not a map: a text holds a few kinds at most, and nothing is allocated for
/// the common text that holds none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts<'a>(SmallVec<[(&'a str, u64); 2]>);

impl<'a> Counts<'a> {
    fn add(&mut self, kind: &'a str) {
        match self.0.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.0.push((kind, 1)),
        }
    }

    /// The count of one kind, if any was masked.
    pub fn get(&self, kind: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| *k == kind).map(|(_, n)| *n)
    }

    /// Values masked, of every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

impl<'a> Deref for Counts<'a> {
    type Target = [(&'a str, u64)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Detectors plus the strategy for each kind.
#[derive(Debug)]
pub struct Masker {
    detectors: Detectors,
    strategies: BTreeMap<String, Strategy>,
    default: Strategy,
    key: Vec<u8>,
}

impl Masker {
    /// A masker redacting everything the detectors find; `key` keys the `Hash` strategy.
    pub fn new(detectors: Detectors, key: &[u8]) -> Result<Masker, MaskError> {
        if key.is_empty() {
            return Err(MaskError::EmptyKey);
        }
        Ok(Masker {
            detectors,
            strategies: BTreeMap::new(),
            default: Strategy::Redact,
            key: key.to_vec(),
        })
    }

    /// Uses `strategy` for values of kind `kind` (by its name, e.g. `"payment_card"`).
    pub fn with_strategy(mut self, kind: &str, strategy: Strategy) -> Masker {
        self.strategies.insert(kind.to_string(), strategy);
        self
    }

    /// Whether user-defined patterns are among the detectors: nothing is known of what
    /// they match, so no type of value can be assumed free of them.
    pub fn has_custom_patterns(&self) -> bool {
        self.detectors.has_custom()
    }

    /// Masks every sensitive value inside `text`. Text without findings is returned
    /// borrowed, untouched.
    pub fn mask_text<'a>(&'a self, text: &'a str) -> Masked<'a> {
        let findings = self.find(text);
        if findings.is_empty() {
            return Masked {
                text: Cow::Borrowed(text),
                counts: Counts::default(),
            };
        }
        let mut out = Vec::with_capacity(text.len());
        let counts = self.write_masked(text.as_bytes(), &findings, &mut out);
        Masked {
            text: Cow::Owned(into_text(out)),
            counts,
        }
    }

    /// The sensitive spans in `text` (the first half of [`Masker::mask_text`], for callers
    /// that write the masked text into a buffer of their own).
    pub fn find<'a>(&'a self, text: &str) -> Findings<'a> {
        self.detectors.find(text)
    }

    /// [`Masker::find`] on a value as it came off the wire; `None` when it is not UTF-8.
    #[inline]
    pub fn find_bytes<'a>(&'a self, value: &[u8]) -> Option<Findings<'a>> {
        self.detectors.find_bytes(value)
    }

    /// Appends UTF-8 `text` to `out` with each of `findings` (from [`Masker::find`] or
    /// [`Masker::find_bytes`] on the same text) masked by its kind's strategy; returns how
    /// many of each kind were masked.
    pub fn write_masked<'a>(
        &'a self,
        text: &[u8],
        findings: &[Finding<'a>],
        out: &mut Vec<u8>,
    ) -> Counts<'a> {
        let more = self.write_findings(text, findings, out);
        let mut counts = Counts::default();
        for f in findings.iter().chain(&more) {
            counts.add(f.kind.name());
        }
        counts
    }

    /// [`Masker::write_masked`] without the counts, for a caller that counts the findings'
    /// kinds itself. Returns the findings a replacement brought to light, masked too, for
    /// the caller to count as well (almost always none).
    ///
    /// A replacement can make a finding of what surrounds it: in
    /// `ada@example.com4222222222222` the digits follow a letter, but in
    /// `[email]4222222222222` they stand alone, a card number. So the masked text is looked
    /// at again, outside the replacements (a password token in a URL reads as a password
    /// again, and is already masked), until nothing new is found.
    pub fn write_findings<'a>(
        &'a self,
        text: &[u8],
        findings: &[Finding<'a>],
        out: &mut Vec<u8>,
    ) -> Findings<'a> {
        let start = out.len();
        let mut more = Findings::new();
        // Outside the replacements the text is as it was, so a new finding must start or
        // end right at one, read differently next to it; with whitespace (or nothing) on
        // both sides of every finding, nothing reads differently. So it is for most
        // values: a value that is one finding, findings between spaces, tabs or lines.
        let spaced = |at: Option<&u8>| at.is_none_or(u8::is_ascii_whitespace);
        if findings.iter().all(|f| {
            spaced(f.range.start.checked_sub(1).and_then(|i| text.get(i)))
                && spaced(text.get(f.range.end))
        }) {
            self.replace(text, findings, start, out, |_, _| {});
            return more;
        }
        // Where each replacement is in the masked text (relative to `start`).
        let mut masked: SmallVec<[Range<usize>; 2]> = SmallVec::new();
        self.replace(text, findings, start, out, |_, new| masked.push(new));
        for _ in 0..MAX_ROUNDS {
            let Ok(now) = std::str::from_utf8(&out[start..]) else {
                break;
            };
            let new: Findings<'a> = self
                .find(now)
                .into_iter()
                .filter(|f| {
                    !masked
                        .iter()
                        .any(|m| m.start < f.range.end && f.range.start < m.end)
                })
                .collect();
            if new.is_empty() {
                break;
            }
            let previous = out.split_off(start);
            // The earlier replacements move by what the new ones before them add or take.
            let mut moved: SmallVec<[(Range<usize>, Range<usize>); 2]> = SmallVec::new();
            self.replace(&previous, &new, start, out, |old, new| {
                moved.push((old, new))
            });
            for m in masked.iter_mut() {
                let shift: isize = moved
                    .iter()
                    .take_while(|(old, _)| old.end <= m.start)
                    .map(|(old, new)| new.len() as isize - old.len() as isize)
                    .sum();
                *m = m.start.saturating_add_signed(shift)..m.end.saturating_add_signed(shift);
            }
            masked.extend(moved.into_iter().map(|(_, new)| new));
            more.extend(new);
        }
        more
    }

    /// Writes `text` with `findings` replaced; `replaced` hears of each replacement's range
    /// in `text` and in what was written (relative to `start`, where writing began).
    fn replace(
        &self,
        text: &[u8],
        findings: &[Finding<'_>],
        start: usize,
        out: &mut Vec<u8>,
        mut replaced: impl FnMut(Range<usize>, Range<usize>),
    ) {
        let mut at = 0;
        for f in findings {
            out.extend_from_slice(&text[at..f.range.start]);
            at = f.range.end;
            let from = out.len() - start;
            self.write_finding(text, f, out);
            replaced(f.range.clone(), from..out.len() - start);
        }
        out.extend_from_slice(&text[at..]);
    }

    #[inline]
    fn write_finding(&self, text: &[u8], f: &Finding<'_>, out: &mut Vec<u8>) {
        let name = f.kind.name();
        // Usually no kind has a strategy of its own, and a built-in kind's value is
        // redacted by its token.
        let strategy = if self.strategies.is_empty() {
            self.default
        } else {
            self.strategies.get(name).copied().unwrap_or(self.default)
        };
        if let (Strategy::Redact | Strategy::Null, Some(token)) = (strategy, f.kind.token()) {
            out.extend_from_slice(token.as_bytes());
            return;
        }
        // Findings start and end on character boundaries; a span that is not text is
        // redacted, and so is one whose strategy is Null: inside text, Null cannot
        // remove a value from a string.
        let value = match strategy {
            Strategy::Redact | Strategy::Null => None,
            _ => std::str::from_utf8(&text[f.range.clone()]).ok(),
        };
        match value {
            Some(value) if self.write_value(strategy, name, value.as_bytes(), out) => {}
            _ => write_redacted(name, out),
        }
    }

    /// A whole value masked by `strategy` (column rules); `None` for [`Strategy::Null`].
    pub fn mask_value(&self, strategy: Strategy, kind: &str, value: &str) -> Option<String> {
        let mut out = Vec::new();
        self.write_value(strategy, kind, value.as_bytes(), &mut out)
            .then(|| into_text(out))
    }

    /// Appends `value` masked by `strategy` to `out`; false (and nothing written) for
    /// [`Strategy::Null`]. What [`Masker::mask_value`] returns, without a `String` of its
    /// own: column rules write straight into the row. The value is taken as it came off
    /// the wire: a redaction never reads it, so it is not checked for UTF-8 first; `hash`
    /// keys the bytes (the same as the text's bytes when it is UTF-8); `partial` reads
    /// characters, a sequence that is not UTF-8 as U+FFFD.
    pub fn write_value(
        &self,
        strategy: Strategy,
        kind: &str,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        match strategy {
            Strategy::Redact => write_redacted(kind, out),
            Strategy::Partial { keep_last } => write_partial(value, keep_last, out),
            Strategy::Hash => self.write_hash(value, out),
            Strategy::Null => return false,
        }
        true
    }

    /// `h:` and the first 8 bytes of the value's keyed HMAC-SHA-256, in hex.
    fn write_hash(&self, value: &[u8], out: &mut Vec<u8>) {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut hex = [0u8; 16];
        hex::encode_to_slice(&digest[..8], &mut hex).expect("16 hex digits for 8 bytes");
        out.extend_from_slice(b"h:");
        out.extend_from_slice(&hex);
    }
}

/// How many times a masked text is looked at again for findings its replacements made
/// (one is almost always enough).
const MAX_ROUNDS: usize = 4;

/// Masked text back as a `String`: only whole characters were replaced, by ASCII, so it is
/// UTF-8 whenever the input was.
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn write_redacted(kind: &str, out: &mut Vec<u8>) {
    // One capacity check, not three: this runs for most masked values.
    out.reserve(kind.len() + 2);
    out.push(b'[');
    out.extend_from_slice(kind.as_bytes());
    out.push(b']');
}

/// Every letter and digit but the last `keep_last` as `*`.
fn write_partial(value: &[u8], keep_last: usize, out: &mut Vec<u8>) {
    // For ASCII, a character is a byte and alphanumeric means ASCII alphanumeric: the
    // value is copied once and read back to front, keeping the last `keep_last` letters
    // and digits and hiding the rest, in one pass.
    if value.is_ascii() {
        let start = out.len();
        out.extend_from_slice(value);
        let mut kept = 0;
        for b in out[start..].iter_mut().rev() {
            if b.is_ascii_alphanumeric() {
                if kept < keep_last {
                    kept += 1;
                } else {
                    *b = b'*';
                }
            }
        }
        return;
    }
    let value = String::from_utf8_lossy(value);
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    let hide = total.saturating_sub(keep_last);
    let mut seen = 0;
    let mut buf = [0u8; 4];
    for c in value.chars() {
        let c = if c.is_alphanumeric() {
            seen += 1;
            if seen <= hide { '*' } else { c }
        } else {
            c
        };
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

#[cfg(test)]
mod tests;
