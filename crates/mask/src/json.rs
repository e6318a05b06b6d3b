//! JSON documents masked as JSON: every string (keys included) is decoded, masked as text
//! and encoded again, so the result is still a document of the same shape, whatever
//! escapes, quotes or non-ASCII characters the strings hold. Masking the document's text
//! as it is would miss an address written with `\u0040` and could cut an escape in two.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use smallvec::SmallVec;

use crate::detect::{Finding, Findings, Kind};
use crate::{Counts, Masked, Masker, into_text};

/// A token of a document that holds data: a string, or a bare number, `true`, `false` or
/// `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Literal<'a> {
    /// Where the token is in the document, quotes included.
    pub range: Range<usize>,
    /// A string's decoded value; `None` for a bare token.
    pub string: Option<Cow<'a, str>>,
}

/// The literals of `text` in order, or `None` when `text` is not one JSON value (RFC 8259:
/// no trailing commas, no comments, no lone surrogates, no control characters inside
/// strings). Containers are tracked on a stack of their own, not by recursion, so any
/// depth a server sends is read.
pub(crate) fn literals(text: &str) -> Option<Vec<Literal<'_>>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    // The open containers: `{` or `[`.
    let mut open: Vec<u8> = Vec::new();
    let mut at = skip_ws(b, 0);
    loop {
        // A value starts at `at`.
        let start = at;
        match *b.get(at)? {
            b'{' => {
                at = skip_ws(b, at + 1);
                if b.get(at) == Some(&b'}') {
                    at += 1;
                } else {
                    open.push(b'{');
                    at = member_key(text, at, &mut out)?;
                    continue;
                }
            }
            b'[' => {
                at = skip_ws(b, at + 1);
                if b.get(at) == Some(&b']') {
                    at += 1;
                } else {
                    open.push(b'[');
                    continue;
                }
            }
            b'"' => {
                let (string, end) = string(text, at)?;
                out.push(Literal {
                    range: start..end,
                    string: Some(string),
                });
                at = end;
            }
            c => {
                at = match c {
                    b'-' | b'0'..=b'9' => number(b, at)?,
                    b't' => word(b, at, b"true")?,
                    b'f' => word(b, at, b"false")?,
                    b'n' => word(b, at, b"null")?,
                    _ => return None,
                };
                out.push(Literal {
                    range: start..at,
                    string: None,
                });
            }
        }
        // After a value: close what ends here, then the next element or member.
        loop {
            at = skip_ws(b, at);
            let Some(&container) = open.last() else {
                return (at == b.len()).then_some(out);
            };
            let close = if container == b'{' { b'}' } else { b']' };
            match *b.get(at)? {
                b',' => {
                    at = skip_ws(b, at + 1);
                    if container == b'{' {
                        at = member_key(text, at, &mut out)?;
                    }
                    break;
                }
                c if c == close => {
                    open.pop();
                    at += 1;
                }
                _ => return None,
            }
        }
    }
}

fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while matches!(b.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// A member's key and its colon; returns where the value starts.
fn member_key<'a>(text: &'a str, at: usize, out: &mut Vec<Literal<'a>>) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let (key, end) = string(text, at)?;
    out.push(Literal {
        range: at..end,
        string: Some(key),
    });
    let colon = skip_ws(b, end);
    (b.get(colon) == Some(&b':')).then(|| skip_ws(b, colon + 1))
}

fn word(b: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    b[at..].starts_with(word).then_some(at + word.len())
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; returns where it ends.
fn number(b: &[u8], mut at: usize) -> Option<usize> {
    let digits = |at: usize| {
        let end = at + b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        (end > at).then_some(end)
    };
    if b[at] == b'-' {
        at += 1;
    }
    at = match b.get(at)? {
        b'0' => at + 1,
        b'1'..=b'9' => digits(at)?,
        _ => return None,
    };
    if b.get(at) == Some(&b'.') {
        at = digits(at + 1)?;
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        at = digits(at)?;
    }
    Some(at)
}

/// The string starting with the quote at `start`: its decoded value and where it ends.
/// Borrowed when it has no escapes (the common case).
fn string(text: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let b = text.as_bytes();
    let mut at = start + 1;
    let mut decoded: Option<String> = None;
    // The start of the run not yet copied into `decoded`.
    let mut run = at;
    loop {
        match *b.get(at)? {
            b'"' => break,
            b'\\' => {
                let d = decoded.get_or_insert_with(String::new);
                d.push_str(&text[run..at]);
                let (c, next) = escape(b, at)?;
                d.push(c);
                at = next;
                run = at;
            }
            0..=0x1f => return None,
            _ => at += 1,
        }
    }
    let value = match decoded {
        None => Cow::Borrowed(&text[start + 1..at]),
        Some(mut d) => {
            d.push_str(&text[run..at]);
            Cow::Owned(d)
        }
    };
    Some((value, at + 1))
}

/// The escape at `at` (a backslash): the character it stands for and where it ends. A
/// `\u` escape of a high surrogate must be followed by one of a low surrogate.
fn escape(b: &[u8], at: usize) -> Option<(char, usize)> {
    let c = match *b.get(at + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let unit = hex4(b, at + 2)?;
            return match unit {
                0xD800..=0xDBFF => {
                    if b.get(at + 6..at + 8) != Some(b"\\u") {
                        return None;
                    }
                    let low = hex4(b, at + 8)?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return None;
                    }
                    let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    Some((char::from_u32(c)?, at + 12))
                }
                _ => Some((char::from_u32(unit)?, at + 6)),
            };
        }
        _ => return None,
    };
    Some((c, at + 2))
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |n, d| Some(n * 16 + char::from(*d).to_digit(16)?))
}

/// The document with each string that has escapes written decoded between its quotes, and
/// where each literal is in it. Borrowed when no string has escapes: then it is the
/// document.
fn scan_text<'a>(json: &'a str, literals: &[Literal<'_>]) -> (Cow<'a, str>, Vec<Range<usize>>) {
    let escaped = |l: &Literal<'_>| matches!(l.string, Some(Cow::Owned(_)));
    if !literals.iter().any(escaped) {
        return (
            Cow::Borrowed(json),
            literals.iter().map(|l| l.range.clone()).collect(),
        );
    }
    let mut scan = String::with_capacity(json.len());
    let mut ranges = Vec::with_capacity(literals.len());
    let mut at = 0;
    for l in literals {
        scan.push_str(&json[at..l.range.start]);
        let start = scan.len();
        match &l.string {
            Some(Cow::Owned(decoded)) => {
                scan.push('"');
                scan.push_str(decoded);
                scan.push('"');
            }
            _ => scan.push_str(&json[l.range.clone()]),
        }
        ranges.push(start..scan.len());
        at = l.range.end;
    }
    scan.push_str(&json[at..]);
    (Cow::Owned(scan), ranges)
}

/// What a literal becomes.
struct Edit<'a> {
    /// The new string, or `None` for `null` (a bare token holding a finding).
    string: Option<String>,
    /// The kinds found in the literal on its own.
    kinds: SmallVec<[&'a Kind; 2]>,
}

impl Masker {
    /// Masks a JSON document: each string, key or value, is decoded (every escape,
    /// surrogate pairs included), masked like text and, when that changed it, written again
    /// as a JSON string; a number (or `true`, `false`, `null`) holding a finding becomes
    /// `null`. Everything else stays byte for byte, so the result is a document of the same
    /// shape. A finding the detectors make of the document's text across tokens (a key
    /// named `aws_secret_key` before its value, a private key split over array elements)
    /// masks each token it touches whole. `None` when `json` is not a JSON document: it
    /// cannot be masked as one, so the caller must not pass it.
    pub fn mask_json<'a>(&'a self, json: &'a str) -> Option<Masked<'a>> {
        let literals = literals(json)?;
        let mut counts = Counts::default();
        let mut edits: BTreeMap<usize, Edit<'a>> = BTreeMap::new();
        for (index, literal) in literals.iter().enumerate() {
            let text = literal
                .string
                .as_deref()
                .unwrap_or(&json[literal.range.clone()]);
            let findings = self.find(text);
            if findings.is_empty() {
                continue;
            }
            let mut more = Findings::new();
            let string = literal.string.is_some().then(|| {
                let mut out = Vec::with_capacity(text.len());
                more = self.write_findings(text.as_bytes(), &findings, &mut out);
                into_text(out)
            });
            for f in findings.iter().chain(&more) {
                counts.add(f.kind.name());
            }
            let kinds = findings.iter().chain(&more).map(|f| f.kind).collect();
            edits.insert(index, Edit { string, kinds });
        }
        // The document as the detectors should read it across tokens: each string as it
        // reads decoded (the escapes of `\u0062` are not the text `u0062`), the syntax
        // between them as it is.
        let (scan, ranges) = scan_text(json, &literals);
        for f in self.find(&scan) {
            let first = ranges.partition_point(|r| r.end <= f.range.start);
            let end = ranges.partition_point(|r| r.start < f.range.end);
            // Only JSON syntax: no data to mask.
            if first >= end {
                continue;
            }
            // Found inside one literal, as the literal alone was found: done above.
            let one = &ranges[first];
            let inside = one.start < f.range.start && f.range.end < one.end;
            let seen = edits.get(&first).is_some_and(|e| e.kinds.contains(&f.kind));
            if end - first == 1 && (inside || literals[first].string.is_none()) && seen {
                continue;
            }
            counts.add(f.kind.name());
            for (index, literal) in literals.iter().enumerate().take(end).skip(first) {
                let string = literal.string.as_deref().map(|s| {
                    let whole = Finding {
                        kind: f.kind,
                        range: 0..s.len(),
                    };
                    let mut out = Vec::new();
                    self.write_findings(s.as_bytes(), &[whole], &mut out);
                    into_text(out)
                });
                let kinds = SmallVec::from_elem(f.kind, 1);
                edits.insert(index, Edit { string, kinds });
            }
        }
        if edits.is_empty() {
            return Some(Masked {
                text: Cow::Borrowed(json),
                counts,
            });
        }
        let mut out = String::with_capacity(json.len() + 16);
        let mut at = 0;
        for (index, edit) in &edits {
            let range = &literals[*index].range;
            out.push_str(&json[at..range.start]);
            match &edit.string {
                Some(s) => {
                    out.push_str(&serde_json::to_string(s).expect("a string always serialises"))
                }
                None => out.push_str("null"),
            }
            at = range.end;
        }
        out.push_str(&json[at..]);
        Some(Masked {
            text: Cow::Owned(out),
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(text: &str) -> Option<Vec<(String, Option<String>)>> {
        Some(
            literals(text)?
                .into_iter()
                .map(|l| (text[l.range].to_string(), l.string.map(Cow::into_owned)))
                .collect(),
        )
    }

    #[test]
    fn literals_are_decoded() {
        let text = r#" {"a\"b": [1, -2.5e+3, true, null, "x\u00e9\ud83d\ude00\/\\\n"], "": {}} "#;
        let found = strings(text).unwrap();
        let decoded: Vec<Option<&str>> = found.iter().map(|(_, s)| s.as_deref()).collect();
        assert_eq!(
            decoded,
            [
                Some("a\"b"),
                None,
                None,
                None,
                None,
                Some("xé😀/\\\n"),
                Some("")
            ]
        );
        assert_eq!(found[2].0, "-2.5e+3");
        assert_eq!(found[5].0, r#""x\u00e9\ud83d\ude00\/\\\n""#);
    }

    #[test]
    fn only_json_is_read() {
        for good in [
            "0",
            "-0",
            "1.5",
            "1e9",
            "\"\"",
            "[]",
            "{}",
            "[[[]]]",
            " null ",
            "[1,[2,{}]]",
        ] {
            assert!(literals(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "{1:2}",
            "[1 2]",
            "\"open",
            "\"tab\there\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\u12\"",
            "tru",
            "nulls",
            "[",
            "]",
            "{} {}",
            "NaN",
        ] {
            assert!(literals(bad).is_none(), "{bad:?}");
        }
        // Depth costs a stack entry, not a frame.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(literals(&deep).is_some());
    }
}
