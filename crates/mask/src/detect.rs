//! Content detectors: what a sensitive value looks like, found in one pass over a text.
//!
//! All patterns are compiled into one `RegexSet`, which says in a single scan which of them
//! occur at all; only those are then run to locate their matches. Every candidate is
//! validated where the format allows (Luhn for cards, mod-97 for IBANs, the SSA's rules for
//! SSNs, a real parse for IP addresses) so ordinary values — order ids, timestamps, UUIDs,
//! prices — pass unchanged. A four-part dotted number that parses as an IPv4 address (a
//! version like `1.2.3.4`) is masked as one: the shape cannot tell them apart.

use std::ops::Range;

use regex::{Regex, RegexSet};

use crate::MaskError;

/// What a detector found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Phone,
    PaymentCard,
    Iban,
    UsSsn,
    Ipv4,
    Ipv6,
    Jwt,
    PrivateKey,
    AwsAccessKey,
    AwsSecretKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    StripeKey,
    /// The password part of a URL (`scheme://user:password@host`) or of a connection
    /// string (`password=...`).
    Password,
    /// A user-defined pattern, by its name.
    Custom(String),
}

impl Kind {
    /// Every built-in kind, in the order their detectors run.
    pub const BUILTIN: [Kind; 16] = [
        Kind::Email,
        Kind::Phone,
        Kind::PaymentCard,
        Kind::Iban,
        Kind::UsSsn,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Jwt,
        Kind::PrivateKey,
        Kind::AwsAccessKey,
        Kind::AwsSecretKey,
        Kind::GithubToken,
        Kind::GitlabToken,
        Kind::SlackToken,
        Kind::StripeKey,
        Kind::Password,
    ];

    /// The built-in kind called `name` (as in configs: `email`, `us_ssn`, ...).
    pub fn builtin(name: &str) -> Option<Kind> {
        Kind::BUILTIN.into_iter().find(|k| k.name() == name)
    }

    /// The name used in configs, redaction tokens and the ledger.
    pub fn name(&self) -> &str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::PaymentCard => "payment_card",
            Kind::Iban => "iban",
            Kind::UsSsn => "us_ssn",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv6 => "ipv6",
            Kind::Jwt => "jwt",
            Kind::PrivateKey => "private_key",
            Kind::AwsAccessKey => "aws_access_key",
            Kind::AwsSecretKey => "aws_secret_key",
            Kind::GithubToken => "github_token",
            Kind::GitlabToken => "gitlab_token",
            Kind::SlackToken => "slack_token",
            Kind::StripeKey => "stripe_key",
            Kind::Password => "password",
            Kind::Custom(name) => name,
        }
    }
}

/// One sensitive span in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub range: Range<usize>,
}

/// How a candidate match is confirmed.
#[derive(Debug, Clone, Copy)]
enum Check {
    None,
    Luhn,
    Mod97,
    Ssn,
    Ipv4,
    Ipv6,
    PhoneDigits,
}

struct Pattern {
    kind: Kind,
    regex: Regex,
    check: Check,
    /// The capture group that is the secret (the rest is context), or 0 for the match.
    group: usize,
}

/// The built-in detectors plus user-defined ones, compiled once.
pub struct Detectors {
    set: RegexSet,
    patterns: Vec<Pattern>,
}

impl std::fmt::Debug for Detectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detectors")
            .field(
                "kinds",
                &self
                    .patterns
                    .iter()
                    .map(|p| p.kind.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// (kind, pattern, check, secret group)
const BUILTIN: &[(Kind, &str, Check, usize)] = &[
    (
        Kind::Email,
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}",
        Check::None,
        0,
    ),
    // Card numbers: 13 to 19 digits written together, in groups of four with one kind of
    // separator, or American Express's 4-6-5.
    (
        Kind::PaymentCard,
        r"\b(?:\d{13,19}|\d{4}(?: \d{4}){2,3}(?: \d{1,3})?|\d{4}(?:-\d{4}){2,3}(?:-\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{5})\b",
        Check::Luhn,
        0,
    ),
    (
        Kind::Iban,
        r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
        Check::Mod97,
        0,
    ),
    (Kind::UsSsn, r"\b\d{3}-\d{2}-\d{4}\b", Check::Ssn, 0),
    // E.164, and the common national form (123) 456-7890 / 123-456-7890 / 123.456.7890.
    (
        Kind::Phone,
        r"(?:\+[1-9]\d{7,14}\b|(?:\(\d{3}\)\s?|\b\d{3}[-.\s])\d{3}[-.\s]\d{4}\b)",
        Check::PhoneDigits,
        0,
    ),
    (Kind::Ipv4, r"\b(?:\d{1,3}\.){3}\d{1,3}\b", Check::Ipv4, 0),
    (
        Kind::Ipv6,
        r"(?i)\b(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{0,4}(?::[0-9a-f]{1,4})*\b|(?i)::(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4}\b",
        Check::Ipv6,
        0,
    ),
    (
        Kind::Jwt,
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        Check::None,
        0,
    ),
    (
        Kind::PrivateKey,
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
        Check::None,
        0,
    ),
    (
        Kind::AwsAccessKey,
        r"\b(?:AKIA|ASIA|AROA|AIDA)[0-9A-Z]{16}\b",
        Check::None,
        0,
    ),
    // A secret access key is 40 base64 characters: too common a shape to flag alone, so
    // only next to a name that says what it is.
    (
        Kind::AwsSecretKey,
        r#"(?i)aws.{0,20}?(?:secret|private)?.{0,10}?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})\b"#,
        Check::None,
        1,
    ),
    (
        Kind::GithubToken,
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        Check::None,
        0,
    ),
    (
        Kind::GitlabToken,
        r"\bglpat-[A-Za-z0-9_-]{20,}\b",
        Check::None,
        0,
    ),
    (
        Kind::SlackToken,
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",
        Check::None,
        0,
    ),
    (
        Kind::StripeKey,
        r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b",
        Check::None,
        0,
    ),
    (
        Kind::Password,
        r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@",
        Check::None,
        1,
    ),
    (
        Kind::Password,
        r#"(?i)\b(?:password|passwd|pwd)\s*=\s*([^;\s'"&]+)"#,
        Check::None,
        1,
    ),
];

impl Detectors {
    /// The built-in detectors only.
    pub fn builtin() -> Detectors {
        Detectors::with_custom(&[]).expect("the built-in patterns compile")
    }

    /// The built-in detectors and user-defined `(name, regex)` ones.
    pub fn with_custom(custom: &[(String, String)]) -> Result<Detectors, MaskError> {
        Detectors::select(&Kind::BUILTIN, custom)
    }

    /// The built-in detectors of the kinds in `builtin`, and user-defined `(name, regex)`
    /// ones. With nothing selected, [`Detectors::find`] finds nothing.
    pub fn select(builtin: &[Kind], custom: &[(String, String)]) -> Result<Detectors, MaskError> {
        let mut patterns = Vec::new();
        for (kind, source, check, group) in BUILTIN {
            if !builtin.contains(kind) {
                continue;
            }
            patterns.push(Pattern {
                kind: kind.clone(),
                regex: Regex::new(source).map_err(|e| MaskError::Pattern {
                    name: kind.name().to_string(),
                    message: e.to_string(),
                })?,
                check: *check,
                group: *group,
            });
        }
        for (name, source) in custom {
            patterns.push(Pattern {
                kind: Kind::Custom(name.clone()),
                regex: Regex::new(source).map_err(|e| MaskError::Pattern {
                    name: name.clone(),
                    message: e.to_string(),
                })?,
                check: Check::None,
                group: 0,
            });
        }
        let set = RegexSet::new(patterns.iter().map(|p| p.regex.as_str())).map_err(|e| {
            MaskError::Pattern {
                name: "(set)".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Detectors { set, patterns })
    }

    /// Every sensitive span in `text`, in order, without overlaps (where two overlap the
    /// earlier wins, then the longer).
    pub fn find(&self, text: &str) -> Vec<Finding> {
        if self.patterns.is_empty() {
            return Vec::new();
        }
        let mut found = Vec::new();
        for index in self.set.matches(text).iter() {
            let pattern = &self.patterns[index];
            for caps in pattern.regex.captures_iter(text) {
                let Some(m) = caps.get(pattern.group) else {
                    continue;
                };
                if valid(pattern.check, m.as_str()) {
                    found.push((
                        pattern.group > 0,
                        Finding {
                            kind: pattern.kind.clone(),
                            range: m.range(),
                        },
                    ));
                }
            }
        }
        // Earlier first; at the same start a finding located by its context (the password
        // of `user:password@host`) beats a generic shape (`password@host` looks like an
        // e-mail address), then the longer one.
        found.sort_by(|(ca, a), (cb, b)| {
            a.range
                .start
                .cmp(&b.range.start)
                .then(cb.cmp(ca))
                .then(b.range.len().cmp(&a.range.len()))
        });
        let mut kept: Vec<Finding> = Vec::with_capacity(found.len());
        for (_, f) in found {
            if kept
                .last()
                .is_none_or(|last| f.range.start >= last.range.end)
            {
                kept.push(f);
            }
        }
        kept
    }
}

fn valid(check: Check, text: &str) -> bool {
    match check {
        Check::None => true,
        Check::Luhn => luhn(text),
        Check::Mod97 => iban_mod97(text),
        Check::Ssn => ssn(text),
        Check::Ipv4 => text.parse::<std::net::Ipv4Addr>().is_ok(),
        Check::Ipv6 => text.parse::<std::net::Ipv6Addr>().is_ok(),
        Check::PhoneDigits => {
            let digits = text.bytes().filter(u8::is_ascii_digit).count();
            (10..=15).contains(&digits)
        }
    }
}

/// The Luhn checksum of a card number (separators ignored), which also rules out numbers
/// made of one repeated digit (a zero-filled id passes Luhn).
pub fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|d| *d == digits[0]) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let double = d * 2;
                if double > 9 { double - 9 } else { double }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616: move the first four characters to the end, letters to numbers (A = 10),
/// and the whole must be 1 modulo 97.
pub fn iban_mod97(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        let width = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * width + value) % 97;
    }
    remainder == 1
}

/// The SSA's structural rules: no area 000, 666 or 900–999, no group 00, no serial 0000.
pub fn ssn(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [area, group, serial] = parts[..] else {
        return false;
    };
    let area: u32 = area.parse().unwrap_or(0);
    area != 0 && area != 666 && area < 900 && group != "00" && serial != "0000"
}
