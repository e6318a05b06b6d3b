//! Content detectors: what a sensitive value looks like, found in one pass over a text.
//!
//! A short text (a result value) first gets a census: one pass over its bytes counts what
//! the detectors need (digits, capitals, `@`, `.`, `:`, `-`, `_`, `=`), and a few then look
//! for a run of their characters. A price or a name cannot hold a card number or an e-mail
//! address, so most values are ruled out before any regex runs, and the rest run only the
//! detectors still possible; a value that is as a whole an e-mail address, a phone number,
//! an SSN or a card number is recognised by a plain check before its DFA. A long text
//! holds every kind of byte, so it goes to all patterns compiled into one `RegexSet`, which
//! says in a single scan which of them occur at all; only those are then run to locate
//! their matches. Every candidate is
//! validated where the format allows (Luhn for cards, mod-97 for IBANs, the SSA's rules for
//! SSNs, a real parse for IP addresses) so ordinary values — order ids, timestamps, UUIDs,
//! prices — pass unchanged. A four-part dotted number that parses as an IPv4 address (a
//! version like `1.2.3.4`) is masked as one: the shape cannot tell them apart.

use std::ops::Range;

use regex::bytes::{Regex, RegexSet};
use regex_automata::dfa::{dense, regex::Regex as DfaRegex};
use regex_automata::{Anchored, Input};
use smallvec::SmallVec;

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

/// `Kind::name` and `Kind::token` from one list of the built-in kinds' names, so that a
/// redaction token is always its kind's name in brackets.
macro_rules! kind_names {
    ($($kind:ident => $name:literal),* $(,)?) => {
        /// The name used in configs, redaction tokens and the ledger.
        #[inline]
        pub fn name(&self) -> &str {
            match self {
                $(Kind::$kind => $name,)*
                Kind::Custom(name) => name,
            }
        }

        /// A built-in kind's redaction token, `[` name `]`, written out so that redacting a
        /// value is one copy; `None` for a user-defined kind.
        #[inline]
        pub fn token(&self) -> Option<&'static str> {
            Some(match self {
                $(Kind::$kind => concat!("[", $name, "]"),)*
                Kind::Custom(_) => return None,
            })
        }
    };
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

    /// Where a built-in kind stands in [`Kind::BUILTIN`]; `None` for a user-defined one.
    #[inline]
    pub fn index(&self) -> Option<usize> {
        Some(match self {
            Kind::Email => 0,
            Kind::Phone => 1,
            Kind::PaymentCard => 2,
            Kind::Iban => 3,
            Kind::UsSsn => 4,
            Kind::Ipv4 => 5,
            Kind::Ipv6 => 6,
            Kind::Jwt => 7,
            Kind::PrivateKey => 8,
            Kind::AwsAccessKey => 9,
            Kind::AwsSecretKey => 10,
            Kind::GithubToken => 11,
            Kind::GitlabToken => 12,
            Kind::SlackToken => 13,
            Kind::StripeKey => 14,
            Kind::Password => 15,
            Kind::Custom(_) => return None,
        })
    }

    /// The built-in kind called `name` (as in configs: `email`, `us_ssn`, ...).
    pub fn builtin(name: &str) -> Option<Kind> {
        Kind::BUILTIN.into_iter().find(|k| k.name() == name)
    }

    kind_names! {
        Email => "email",
        Phone => "phone",
        PaymentCard => "payment_card",
        Iban => "iban",
        UsSsn => "us_ssn",
        Ipv4 => "ipv4",
        Ipv6 => "ipv6",
        Jwt => "jwt",
        PrivateKey => "private_key",
        AwsAccessKey => "aws_access_key",
        AwsSecretKey => "aws_secret_key",
        GithubToken => "github_token",
        GitlabToken => "gitlab_token",
        SlackToken => "slack_token",
        StripeKey => "stripe_key",
        Password => "password",
    }
}

/// The findings in one text: almost always none or one, so two are kept without
/// allocating.
pub type Findings<'d> = SmallVec<[Finding<'d>; 2]>;

/// Candidates before overlaps are settled, with whether each was located by context.
type Candidates<'d> = SmallVec<[(bool, Finding<'d>); 4]>;

/// One sensitive span in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding<'d> {
    pub kind: &'d Kind,
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

/// What a text must hold for a detector to find anything in it: a necessary condition,
/// checked on [`Census`] before the detector's regex runs. Each is derived from its
/// pattern and check (see [`possible`]); a property test holds them to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Email,
    Card,
    Iban,
    Ssn,
    Phone,
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
    UrlPassword,
    KeyValuePassword,
    /// User-defined patterns: nothing is known about them, so they always run.
    Anything,
}

impl Need {
    fn bit(self) -> u32 {
        1 << self as u32
    }
}

struct Pattern {
    kind: Kind,
    regex: Regex,
    /// The same pattern as fully built forward and reverse DFAs, for built-in patterns
    /// whose whole match is the secret: on short values a search costs a third of the
    /// lazy engine's (no cache to fetch, no strategy to choose). User patterns and those
    /// needing a capture group use `regex` alone.
    dfa: Option<DfaRegex>,
    /// For the commonest kinds, a plain check that a value is, as a whole, the pattern's
    /// first match (an e-mail column holding one address): it saves the DFA. Where it says
    /// no, the DFA decides.
    whole: Option<fn(&[u8]) -> bool>,
    check: Check,
    need: Need,
    /// The capture group that is the secret (the rest is context), or 0 for the match.
    group: usize,
}

/// The built-in detectors plus user-defined ones, compiled once.
pub struct Detectors {
    set: RegexSet,
    patterns: Vec<Pattern>,
    /// The needs of `patterns`, as [`Need::bit`]s.
    needs: u32,
    /// The patterns (by index) of each need (by its bit's position): a text's possible
    /// needs lead straight to the few patterns to run.
    by_need: Vec<SmallVec<[usize; 1]>>,
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

// Word boundaries are ASCII ones (`(?-u:\b)`) and digits ASCII digits: the validators only
// accept ASCII digits anyway, an ASCII boundary next to a non-ASCII letter still counts as
// a boundary (so `é4111…` is caught), and the lazy DFA keeps running on non-ASCII text
// instead of falling back to a slower engine as it must for Unicode boundaries. Names
// matched case-insensitively are matched as ASCII (`(?i-u:aws)`): Unicode case folding
// would let `ſ` (long s) stand for `s`, which the census's ASCII search would not expect.

/// (kind, pattern, check, need, secret group)
const BUILTIN: &[(Kind, &str, Check, Need, usize)] = &[
    (
        Kind::Email,
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}",
        Check::None,
        Need::Email,
        0,
    ),
    // Card numbers: 13 to 19 digits written together, in groups of four with one kind of
    // separator, or American Express's 4-6-5.
    (
        Kind::PaymentCard,
        r"(?-u:\b)(?:[0-9]{13,19}|[0-9]{4}(?: [0-9]{4}){2,3}(?: [0-9]{1,3})?|[0-9]{4}(?:-[0-9]{4}){2,3}(?:-[0-9]{1,3})?|[0-9]{4}[ -][0-9]{6}[ -][0-9]{5})(?-u:\b)",
        Check::Luhn,
        Need::Card,
        0,
    ),
    (
        Kind::Iban,
        r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)",
        Check::Mod97,
        Need::Iban,
        0,
    ),
    (
        Kind::UsSsn,
        r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)",
        Check::Ssn,
        Need::Ssn,
        0,
    ),
    // E.164, and the common national form (123) 456-7890 / 123-456-7890 / 123.456.7890.
    (
        Kind::Phone,
        r"(?:\+[1-9][0-9]{7,14}(?-u:\b)|(?:\([0-9]{3}\)\s?|(?-u:\b)[0-9]{3}[-.\s])[0-9]{3}[-.\s][0-9]{4}(?-u:\b))",
        Check::PhoneDigits,
        Need::Phone,
        0,
    ),
    (
        Kind::Ipv4,
        r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)",
        Check::Ipv4,
        Need::Ipv4,
        0,
    ),
    (
        Kind::Ipv6,
        r"(?i)(?-u:\b)(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{0,4}(?::[0-9a-f]{1,4})*(?-u:\b)|(?i)::(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4}(?-u:\b)",
        Check::Ipv6,
        Need::Ipv6,
        0,
    ),
    (
        Kind::Jwt,
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        Check::None,
        Need::Jwt,
        0,
    ),
    (
        Kind::PrivateKey,
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
        Check::None,
        Need::PrivateKey,
        0,
    ),
    (
        Kind::AwsAccessKey,
        r"(?-u:\b)(?:AKIA|ASIA|AROA|AIDA)[0-9A-Z]{16}(?-u:\b)",
        Check::None,
        Need::AwsAccessKey,
        0,
    ),
    // A secret access key is 40 base64 characters: too common a shape to flag alone, so
    // only next to a name that says what it is.
    (
        Kind::AwsSecretKey,
        r#"(?i-u:aws).{0,20}?(?i-u:secret|private)?.{0,10}?(?i-u:key)["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})(?-u:\b)"#,
        Check::None,
        Need::AwsSecretKey,
        1,
    ),
    (
        Kind::GithubToken,
        r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?-u:\b)",
        Check::None,
        Need::GithubToken,
        0,
    ),
    (
        Kind::GitlabToken,
        r"(?-u:\b)glpat-[A-Za-z0-9_-]{20,}(?-u:\b)",
        Check::None,
        Need::GitlabToken,
        0,
    ),
    (
        Kind::SlackToken,
        r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}(?-u:\b)",
        Check::None,
        Need::SlackToken,
        0,
    ),
    (
        Kind::StripeKey,
        r"(?-u:\b)(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}(?-u:\b)",
        Check::None,
        Need::StripeKey,
        0,
    ),
    (
        Kind::Password,
        r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@",
        Check::None,
        Need::UrlPassword,
        1,
    ),
    (
        Kind::Password,
        r#"(?i-u:\b(?:password|passwd|pwd))\s*=\s*([^;\s'"&]+)"#,
        Check::None,
        Need::KeyValuePassword,
        1,
    ),
];

/// Texts up to this long take the census and run their few possible detectors one by one;
/// longer ones ask the `RegexSet`, whose one scan beats many when the census would rule out
/// little (a long text holds every kind of byte). At most 255, so that every count of the
/// census fits its lane.
const SHORT: usize = 255;

/// Counts of the bytes detectors care about, from one pass over a short text: eight
/// counts of eight bits in one `u64` (see [`LANE`]), read where they are asked for.
#[derive(Debug, Clone, Copy)]
struct Census {
    len: usize,
    lanes: u64,
    /// Whether every byte is ASCII, so the text is UTF-8 without a check of its own.
    ascii: bool,
}

/// Each byte's class as one unit in its lane of a `u64`: eight lanes of eight bits, in
/// the order of [`Census`]'s counts. Summing lanes keeps every count in a register (a table
/// of counters would make each byte wait for the previous byte's store).
const LANE: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'0'..=b'9' => 1,
            b'A'..=b'Z' => 1 << 8,
            b'.' => 1 << 16,
            b':' => 1 << 24,
            b'-' => 1 << 32,
            b'_' => 1 << 40,
            b'@' => 1 << 48,
            b'=' => 1 << 56,
            _ => 0,
        };
        b += 1;
    }
    t
};

impl Census {
    /// The census of a text of at most [`SHORT`] bytes.
    fn of(bytes: &[u8]) -> Census {
        debug_assert!(bytes.len() <= SHORT);
        let (mut lanes, mut high) = (0u64, 0u8);
        for &b in bytes {
            lanes += LANE[b as usize];
            high |= b;
        }
        Census {
            len: bytes.len(),
            lanes,
            ascii: high < 0x80,
        }
    }

    fn lane(&self, n: u32) -> usize {
        ((self.lanes >> (8 * n)) & 0xff) as usize
    }

    fn digits(&self) -> usize {
        self.lane(0)
    }

    fn upper(&self) -> usize {
        self.lane(1)
    }

    fn dots(&self) -> usize {
        self.lane(2)
    }

    fn colons(&self) -> usize {
        self.lane(3)
    }

    fn dashes(&self) -> usize {
        self.lane(4)
    }

    fn underscores(&self) -> usize {
        self.lane(5)
    }

    fn at(&self) -> usize {
        self.lane(6)
    }

    fn equals(&self) -> usize {
        self.lane(7)
    }
}

/// The needs ([`Need::bit`]) a text with this census may meet: never missing one whose
/// detector would find something in the text. The counts rule out most texts; a few
/// detectors then look for a run of the characters their matches are made of (a timestamp
/// has 20 digits, but no 13 of them in one run of digits, spaces and dashes as a card
/// number has). Written out rather than looped over, so each check is inlined.
fn possible(c: &Census, bytes: &[u8]) -> u32 {
    let mut bits = Need::Anything.bit();
    // Every check below wants at least one of: a colon, dash, underscore, `@` or `=` (the
    // top five lanes), ten digits, two capitals or two dots. Most values that get this far
    // (names, words, short numbers) have none of them.
    if c.lanes >> 24 == 0 && c.digits() < 10 && c.upper() < 2 && c.dots() < 2 {
        return bits;
    }
    let mut may = |need: Need, holds: bool| {
        if holds {
            bits |= need.bit();
        }
    };
    // local@domain.tld: a dot after an `@`.
    may(
        Need::Email,
        c.at() >= 1
            && c.dots() >= 1
            && bytes
                .iter()
                .position(|&b| b == b'@')
                .is_some_and(|at| bytes[at..].contains(&b'.')),
    );
    // Cards, SSNs and phone numbers: by the shape of their digit groups.
    // Only a card (13 digits), a phone number (10) or an SSN (9, with two dashes) asks.
    let shapes = if c.digits() >= 10 || (c.digits() == 9 && c.dashes() >= 2) {
        DigitShapes::of(bytes)
    } else {
        DigitShapes::default()
    };
    may(Need::Card, c.digits() >= 13 && shapes.card);
    // Two capitals, two digits, and 15 to 34 capitals and digits (mod-97 check),
    // optionally spaced.
    may(
        Need::Iban,
        c.upper() >= 2
            && c.digits() >= 2
            && c.upper() + c.digits() >= 15
            && longest_run(bytes, Run::IBAN) >= 15,
    );
    may(Need::Ssn, c.dashes() >= 2 && shapes.ssn);
    // The check wants 10 to 15 digits.
    may(Need::Phone, c.digits() >= 10 && shapes.phone);
    may(
        Need::Ipv4,
        c.dots() >= 3 && c.digits() >= 4 && longest_run(bytes, Run::IPV4) >= 3,
    );
    may(
        Need::Ipv6,
        c.colons() >= 2 && longest_run(bytes, Run::IPV6) >= 2,
    );
    may(
        Need::Jwt,
        c.dots() >= 2 && c.len >= 18 && contains(bytes, b"eyJ"),
    );
    may(
        Need::PrivateKey,
        c.dashes() >= 20 && contains(bytes, b"PRIVATE KEY"),
    );
    // Four capitals of the prefix, then 16 capitals or digits.
    may(
        Need::AwsAccessKey,
        c.upper() >= 4 && c.upper() + c.digits() >= 20,
    );
    // `aws`, `key`, `=` or `:`, 40 characters.
    may(
        Need::AwsSecretKey,
        c.len >= 47 && c.equals() + c.colons() >= 1 && contains_ignore_case(bytes, b"aws"),
    );
    // `ghp_` and 36 more, or `github_pat_` and 22 more.
    may(Need::GithubToken, c.underscores() >= 1 && c.len >= 33);
    may(
        Need::GitlabToken,
        c.dashes() >= 1 && c.len >= 26 && contains(bytes, b"glpat-"),
    );
    may(
        Need::SlackToken,
        c.dashes() >= 1 && c.len >= 15 && contains(bytes, b"xox"),
    );
    // `sk_live_` and 16 more.
    may(Need::StripeKey, c.underscores() >= 2 && c.len >= 24);
    // scheme://user:password@
    may(
        Need::UrlPassword,
        c.colons() >= 2 && c.at() >= 1 && contains(bytes, b"://"),
    );
    may(
        Need::KeyValuePassword,
        c.equals() >= 1
            && (contains_ignore_case(bytes, b"pwd") || contains_ignore_case(bytes, b"passw")),
    );
    bits
}

/// Whether a text's groups of digits (maximal runs of ASCII digits) are shaped as a card
/// number, an SSN or a phone number may be. Each pattern bounds its digits by a word
/// boundary or a non-digit on both sides, so the groups its matches are made of are whole
/// groups: an SSN is groups of exactly 3, 2 and 4 digits joined by single dashes, which no
/// date, timestamp or UUID has.
#[derive(Debug, Default, Clone, Copy)]
struct DigitShapes {
    /// 13 to 19 digits in one group; three groups of 4 one byte apart (`4111 1111 1111 1111`,
    /// with dashes, or with a short fourth or fifth group); or 4, 6 and 5 one byte apart
    /// (American Express).
    card: bool,
    /// Groups of 3, 2 and 4 joined by single dashes.
    ssn: bool,
    /// `+` and a group of 10 to 15 (E.164 as the check takes it); or groups of 3, 3 and 4, with up to four bytes
    /// between the first two (`) ` where the space may be a three-byte Unicode one) and up
    /// to three between the last two.
    phone: bool,
}

impl DigitShapes {
    fn of(bytes: &[u8]) -> DigitShapes {
        let mut shapes = DigitShapes::default();
        // The last two groups before this one, as byte ranges.
        let mut last: [Option<(usize, usize)>; 2] = [None, None];
        let mut i = 0;
        while i < bytes.len() {
            if !bytes[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let len = i - start;
            shapes.card |= (13..=19).contains(&len);
            shapes.phone |= (10..=15).contains(&len) && start > 0 && bytes[start - 1] == b'+';
            if let [Some(a), Some(b)] = last {
                let lens = (a.1 - a.0, b.1 - b.0, len);
                let gaps = (b.0 - a.1, start - b.1);
                shapes.card |= gaps == (1, 1) && (lens == (4, 4, 4) || lens == (4, 6, 5));
                shapes.ssn |=
                    lens == (3, 2, 4) && gaps == (1, 1) && bytes[a.1] == b'-' && bytes[b.1] == b'-';
                shapes.phone |=
                    lens == (3, 3, 4) && (1..=4).contains(&gaps.0) && (1..=3).contains(&gaps.1);
            }
            last = [last[1], Some((start, i))];
        }
        shapes
    }
}

/// The runs [`possible`] looks for: which bytes a detector's match is made of, and which
/// of them it counts. One bit per run in [`MEMBER`] and [`COUNTED`].
struct Run;

impl Run {
    /// Digits and dots; dots counted.
    const IPV4: u8 = 8;
    /// Hex digits and colons; colons counted.
    const IPV6: u8 = 16;
    /// Capitals, digits and spaces; capitals and digits counted.
    const IBAN: u8 = 32;
}

/// Which runs each byte may be part of.
const MEMBER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_digit() {
            t[b] |= Run::IPV4 | Run::IPV6 | Run::IBAN;
        }
        if c.is_ascii_hexdigit() {
            t[b] |= Run::IPV6;
        }
        if c.is_ascii_uppercase() {
            t[b] |= Run::IBAN;
        }
        match c {
            b' ' => t[b] |= Run::IBAN,
            b'.' => t[b] |= Run::IPV4,
            b':' => t[b] |= Run::IPV6,
            _ => {}
        }
        b += 1;
    }
    t
};

/// Which runs count each byte.
const COUNTED: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_digit() {
            t[b] |= Run::IBAN;
        }
        if c.is_ascii_uppercase() {
            t[b] |= Run::IBAN;
        }
        match c {
            b'.' => t[b] |= Run::IPV4,
            b':' => t[b] |= Run::IPV6,
            _ => {}
        }
        b += 1;
    }
    t
};

/// The most counted bytes in one run of member bytes of `run`.
fn longest_run(bytes: &[u8], run: u8) -> usize {
    let (mut best, mut current) = (0, 0);
    for &b in bytes {
        if MEMBER[b as usize] & run == 0 {
            current = 0;
        } else if COUNTED[b as usize] & run != 0 {
            current += 1;
            best = best.max(current);
        }
    }
    best
}

fn contains(bytes: &[u8], needle: &[u8]) -> bool {
    // The first byte alone rules out almost every place, without a call to compare slices.
    bytes
        .windows(needle.len())
        .any(|w| w[0] == needle[0] && w == needle)
}

fn contains_ignore_case(bytes: &[u8], needle: &[u8]) -> bool {
    bytes
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

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
        for (kind, source, check, need, group) in BUILTIN {
            if !builtin.contains(kind) {
                continue;
            }
            patterns.push(Pattern {
                kind: kind.clone(),
                regex: Regex::new(source).map_err(|e| MaskError::Pattern {
                    name: kind.name().to_string(),
                    message: e.to_string(),
                })?,
                dfa: (*group == 0).then(|| dfa(source)).flatten(),
                whole: whole_check(*need),
                check: *check,
                need: *need,
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
                dfa: None,
                whole: None,
                check: Check::None,
                need: Need::Anything,
                group: 0,
            });
        }
        let set = RegexSet::new(patterns.iter().map(|p| p.regex.as_str())).map_err(|e| {
            MaskError::Pattern {
                name: "(set)".into(),
                message: e.to_string(),
            }
        })?;
        let needs = patterns.iter().fold(0, |bits, p| bits | p.need.bit());
        let mut by_need = vec![SmallVec::new(); Need::Anything as usize + 1];
        for (index, p) in patterns.iter().enumerate() {
            by_need[p.need as usize].push(index);
        }
        Ok(Detectors {
            set,
            patterns,
            needs,
            by_need,
        })
    }

    /// Whether user-defined patterns are among the detectors (nothing is known of what
    /// they match, so no type of value can be assumed free of them).
    pub fn has_custom(&self) -> bool {
        self.patterns
            .iter()
            .any(|p| matches!(p.kind, Kind::Custom(_)))
    }

    /// Every sensitive span in `text`, in order, without overlaps (where two overlap the
    /// earlier wins, then the longer).
    pub fn find(&self, text: &str) -> Findings<'_> {
        self.find_bytes(text.as_bytes()).unwrap_or_default()
    }

    /// [`Detectors::find`] on a value as it came off the wire; `None` when it is not UTF-8.
    /// Most values are ASCII, which the census notices on its way, so they are not checked
    /// twice.
    pub fn find_bytes(&self, bytes: &[u8]) -> Option<Findings<'_>> {
        if bytes.len() > SHORT {
            std::str::from_utf8(bytes).ok()?;
            return Some(self.find_with_set(bytes, true));
        }
        let census = Census::of(bytes);
        if !census.ascii {
            std::str::from_utf8(bytes).ok()?;
        }
        if let Some(finding) = self.whole_value(&census, bytes) {
            let mut one = Findings::new();
            one.push(finding);
            return Some(one);
        }
        // Most values stop here.
        let mut possible = possible(&census, bytes) & self.needs;
        if possible == 0 {
            return Some(Findings::new());
        }
        let mut found = Candidates::new();
        // Only the detectors still possible are visited, in the order of their needs
        // (which is the patterns' order).
        while possible != 0 {
            let bit = possible.trailing_zeros() as usize;
            possible &= possible - 1;
            for &index in &self.by_need[bit] {
                self.locate(&self.patterns[index], bytes, true, &mut found);
            }
        }
        Some(settle(found))
    }

    /// The one finding of a value that is, as a whole, a confirmed match of a detector with
    /// a whole-value check (an e-mail column), found without the other detectors: every
    /// other match would lie inside it and lose to it, since it starts first (or at the same
    /// place and is longer) and no built-in secret located by its context starts at 0. User
    /// patterns are not known to keep to that (one may match the empty text at the value's
    /// end), so with them this is not tried.
    fn whole_value(&self, c: &Census, bytes: &[u8]) -> Option<Finding<'_>> {
        if self.needs & Need::Anything.bit() != 0 {
            return None;
        }
        // The census points at the one kind the value could wholly be.
        let need = if c.at() == 1 && c.dots() >= 1 {
            Need::Email
        } else if c.digits() == c.len {
            Need::Card
        } else if c.len == 11 && c.dashes() == 2 {
            Need::Ssn
        } else if c.digits() >= 10 {
            Need::Phone
        } else {
            return None;
        };
        let &[index] = self.by_need[need as usize].as_slice() else {
            return None;
        };
        let pattern = &self.patterns[index];
        // What the census counted is not counted again.
        let shaped = match need {
            // Nothing but digits: a card number's shape is then its length alone.
            Need::Card => (13..=19).contains(&c.len),
            _ => pattern.whole.is_some_and(|whole| whole(bytes)),
        };
        let confirmed = shaped
            && match pattern.check {
                Check::PhoneDigits => (10..=15).contains(&c.digits()),
                Check::Luhn if need == Need::Card => luhn_plain(bytes),
                check => valid(check, bytes),
            };
        confirmed.then_some(Finding {
            kind: &pattern.kind,
            range: 0..bytes.len(),
        })
    }

    /// Every pattern the set reports present is run, without the census. Long texts are
    /// found this way.
    fn find_with_set(&self, text: &[u8], fast: bool) -> Findings<'_> {
        if self.patterns.is_empty() {
            return Findings::new();
        }
        let mut found = Candidates::new();
        for index in self.set.matches(text).iter() {
            self.locate(&self.patterns[index], text, fast, &mut found);
        }
        settle(found)
    }

    /// Without the census and with the lazy engine only: what the census and the DFAs are
    /// tested against.
    #[cfg(test)]
    pub(crate) fn find_unfiltered(&self, text: &str) -> Findings<'_> {
        self.find_with_set(text.as_bytes(), false)
    }

    /// Every validated match of one pattern, with whether it was located by context.
    /// With `fast`, a pattern's DFA is used where it has one.
    fn locate<'d>(
        &'d self,
        pattern: &'d Pattern,
        text: &[u8],
        fast: bool,
        found: &mut Candidates<'d>,
    ) {
        let mut push = |range: Range<usize>| {
            // Matches of these patterns start and end on character boundaries; were one
            // not to, the whole text is the finding rather than none.
            let range = if char_boundary(text, range.start) && char_boundary(text, range.end) {
                range
            } else {
                0..text.len()
            };
            if valid(pattern.check, &text[range.clone()]) {
                found.push((
                    pattern.group > 0,
                    Finding {
                        kind: &pattern.kind,
                        range,
                    },
                ));
            }
        };
        if let Some(whole) = pattern.whole.filter(|_| fast)
            && whole(text)
        {
            // The match reaches the end: there is nothing after it to search.
            push(0..text.len());
        } else if let Some(dfa) = pattern.dfa.as_ref().filter(|_| fast) {
            // A result value is often the match itself (an e-mail column): a search anchored
            // at its start finds that in one forward pass, where an unanchored one needs a
            // second, reverse pass for where the match starts. A match at 0 is the leftmost.
            let mut from = 0;
            if let Ok(Some(m)) = dfa.try_search(&Input::new(text).anchored(Anchored::Yes)) {
                push(m.range());
                from = m.end();
            }
            // A match to the end (the value is the secret) leaves nothing to search.
            if from < text.len() || from == 0 {
                for m in dfa.find_iter(Input::new(text).range(from..)) {
                    push(m.range());
                }
            }
        } else if pattern.group == 0 {
            for m in pattern.regex.find_iter(text) {
                push(m.range());
            }
        } else {
            for caps in pattern.regex.captures_iter(text) {
                if let Some(m) = caps.get(pattern.group) {
                    push(m.range());
                }
            }
        }
    }
}

/// The whole-value check of a need's pattern, where it has one. Each says yes only for
/// texts the pattern's leftmost-first match covers entirely (a property test holds them to
/// the regexes): the match starts at 0 because the whole text matches, and it reaches the
/// end because every quantifier is greedy and nothing else could follow.
fn whole_check(need: Need) -> Option<fn(&[u8]) -> bool> {
    match need {
        Need::Email => Some(whole_email),
        Need::Card => Some(whole_card),
        Need::Ssn => Some(whole_ssn),
        Need::Phone => Some(whole_phone),
        _ => None,
    }
}

/// `local@label.label.tld`: local of `[A-Za-z0-9._%+-]`, labels of letters, digits and
/// inner dashes, a top-level label of two letters or more. One pass over the bytes.
fn whole_email(text: &[u8]) -> bool {
    // The local part ends at the first byte it cannot hold, which must be the `@`.
    let mut local = 0;
    while local < text.len() && EMAIL_LOCAL[text[local] as usize] {
        local += 1;
    }
    if local == 0 || text.get(local) != Some(&b'@') {
        return false;
    }
    // The current label's length and whether it is all letters; dots met so far.
    let (mut len, mut letters, mut dots) = (0, true, 0);
    let mut prev = DOT;
    for &b in &text[local + 1..] {
        let class = DOMAIN[b as usize];
        match class {
            LETTER => len += 1,
            DIGIT => {
                len += 1;
                letters = false;
            }
            DASH if len > 0 => {
                len += 1;
                letters = false;
            }
            DOT if len > 0 && prev != DASH => {
                dots += 1;
                (len, letters) = (0, true);
            }
            _ => return false,
        }
        prev = class;
    }
    // A top-level label of letters cannot end in a dash.
    dots >= 1 && len >= 2 && letters
}

/// What each byte is in an e-mail address's domain; 0 where it cannot be.
const DOMAIN: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'a'..=b'z' | b'A'..=b'Z' => LETTER,
            b'0'..=b'9' => DIGIT,
            b'-' => DASH,
            b'.' => DOT,
            _ => 0,
        };
        b += 1;
    }
    t
};
const LETTER: u8 = 1;
const DIGIT: u8 = 2;
const DASH: u8 = 3;
const DOT: u8 = 4;

/// The bytes of an e-mail address's local part: `[A-Za-z0-9._%+-]`.
const EMAIL_LOCAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
        b += 1;
    }
    t
};

/// 13 to 19 digits and nothing else.
fn whole_card(text: &[u8]) -> bool {
    (13..=19).contains(&text.len()) && text.iter().all(u8::is_ascii_digit)
}

/// Digits shaped `123-45-6789`.
fn whole_ssn(text: &[u8]) -> bool {
    shaped(text, b"ddd-dd-dddd")
}

/// `(415) 555-0123`, `(415)555-0123`, `415-555-0123` (dashes, dots or spaces), or `+` and
/// 8 to 15 digits, the first not 0.
fn whole_phone(text: &[u8]) -> bool {
    match text {
        [b'+', first, rest @ ..] => {
            (b'1'..=b'9').contains(first)
                && (7..=14).contains(&rest.len())
                && rest.iter().all(u8::is_ascii_digit)
        }
        [b'(', ..] => {
            let tail = text.get(5..).unwrap_or_default();
            shaped(&text[..text.len().min(5)], b"(ddd)")
                && phone_tail(tail.strip_prefix(b" ").unwrap_or(tail))
        }
        _ => {
            text.len() == 12
                && shaped(&text[..3], b"ddd")
                && matches!(text[3], b'-' | b'.' | b' ')
                && phone_tail(&text[4..])
        }
    }
}

/// `555-0123`, with a dash, a dot or a space.
fn phone_tail(text: &[u8]) -> bool {
    text.len() == 8
        && shaped(&text[..3], b"ddd")
        && matches!(text[3], b'-' | b'.' | b' ')
        && shaped(&text[4..], b"dddd")
}

/// Whether `text` has `shape`'s length, a digit where it has `d` and its byte elsewhere.
fn shaped(text: &[u8], shape: &[u8]) -> bool {
    text.len() == shape.len()
        && text.iter().zip(shape).all(|(&b, &s)| match s {
            b'd' => b.is_ascii_digit(),
            _ => b == s,
        })
}

/// Whether `at` is where a character of UTF-8 `text` starts (or its end).
fn char_boundary(text: &[u8], at: usize) -> bool {
    // Continuation bytes are 0b10xx_xxxx.
    at == text.len() || text.get(at).is_some_and(|&b| (b as i8) >= -0x40)
}

/// A built-in pattern as dense DFAs, or `None` where they would be too large (the lazy
/// engine then serves it).
fn dfa(source: &str) -> Option<DfaRegex> {
    DfaRegex::builder()
        .dense(dense::Config::new().dfa_size_limit(Some(1 << 20)))
        .build(source)
        .ok()
}

/// Findings in order without overlaps. Earlier first; at the same start a finding located
/// by its context (the password of `user:password@host`) beats a generic shape
/// (`password@host` looks like an e-mail address), then the longer one.
fn settle(mut found: Candidates<'_>) -> Findings<'_> {
    if found.len() <= 1 {
        let mut one = Findings::new();
        if let Some((_, f)) = found.pop() {
            one.push(f);
        }
        return one;
    }
    found.sort_by(|(ca, a), (cb, b)| {
        a.range
            .start
            .cmp(&b.range.start)
            .then(cb.cmp(ca))
            .then(b.range.len().cmp(&a.range.len()))
    });
    let mut kept = Findings::new();
    for (_, f) in found {
        if kept
            .last()
            .is_none_or(|last: &Finding<'_>| f.range.start >= last.range.end)
        {
            kept.push(f);
        }
    }
    kept
}

fn valid(check: Check, text: &[u8]) -> bool {
    match check {
        Check::None => true,
        Check::Luhn => luhn_digits(text),
        Check::Mod97 => mod97(text),
        Check::Ssn => ssn_parts(text),
        // A candidate of these patterns is ASCII.
        Check::Ipv4 => {
            std::str::from_utf8(text).is_ok_and(|t| t.parse::<std::net::Ipv4Addr>().is_ok())
        }
        Check::Ipv6 => {
            std::str::from_utf8(text).is_ok_and(|t| t.parse::<std::net::Ipv6Addr>().is_ok())
        }
        Check::PhoneDigits => {
            let digits = text.iter().filter(|b| b.is_ascii_digit()).count();
            (10..=15).contains(&digits)
        }
    }
}

/// The Luhn checksum of a card number (separators ignored), which also rules out numbers
/// made of one repeated digit (a zero-filled id passes Luhn).
pub fn luhn(text: &str) -> bool {
    luhn_digits(text.as_bytes())
}

fn luhn_digits(text: &[u8]) -> bool {
    // Each digit's share of the sum, by whether it is doubled (every second from the
    // right): doubled, less 9 when that is over 9.
    const SHARE: [[u32; 10]; 2] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [0, 2, 4, 6, 8, 1, 3, 5, 7, 9],
    ];
    let (mut count, mut sum) = (0, 0);
    // The smallest and largest digit: a number of one repeated digit has them equal.
    let (mut low, mut high) = (9, 0);
    for &b in text.iter().rev() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            continue;
        }
        sum += SHARE[count & 1][usize::from(d)];
        (low, high) = (low.min(d), high.max(d));
        count += 1;
    }
    (13..=19).contains(&count) && low != high && sum.is_multiple_of(10)
}

/// [`luhn_digits`] of a text of 13 to 19 ASCII digits and nothing else (a whole card
/// number), two digits at a time from the right.
fn luhn_plain(digits: &[u8]) -> bool {
    // A digit byte doubled, less 9 when that is over 9 (0 for any other byte).
    const DOUBLED: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut d = 0;
        while d < 10 {
            t[b'0' as usize + d] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9][d];
            d += 1;
        }
        t
    };
    let plain = |b: u8| u32::from(b.wrapping_sub(b'0'));
    let mut sum = 0;
    for pair in digits.rchunks(2) {
        match *pair {
            [doubled, last] => sum += DOUBLED[doubled as usize] + plain(last),
            [first] => sum += plain(first),
            _ => {}
        }
    }
    let first = digits.first().copied();
    digits.iter().any(|&d| Some(d) != first) && sum.is_multiple_of(10)
}

/// ISO 13616: move the first four characters to the end, letters to numbers (A = 10),
/// and the whole must be 1 modulo 97.
pub fn iban_mod97(text: &str) -> bool {
    // Whitespace other than ASCII is no part of an IBAN, and fails the check below.
    mod97(text.as_bytes())
}

fn mod97(text: &[u8]) -> bool {
    let compact: SmallVec<[u8; 36]> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for &c in tail.iter().chain(head) {
        let value = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        let width = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * width + value) % 97;
    }
    remainder == 1
}

/// The SSA's structural rules: no area 000, 666 or 900–999, no group 00, no serial 0000.
pub fn ssn(text: &str) -> bool {
    ssn_parts(text.as_bytes())
}

fn ssn_parts(text: &[u8]) -> bool {
    let mut parts = text.split(|&b| b == b'-');
    let (Some(area), Some(group), Some(serial), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let area: u32 = std::str::from_utf8(area)
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    area != 0 && area != 666 && area < 900 && group != b"00" && serial != b"0000"
}
