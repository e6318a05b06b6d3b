//! The engine's unit tests: each detector on values it must catch and ordinary values it
//! must leave alone, the validators, the strategies, and properties over random texts.

use super::*;
use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as Gen;

fn kinds(text: &str) -> Vec<String> {
    Detectors::builtin()
        .find(text)
        .into_iter()
        .map(|f| f.kind.name().to_string())
        .collect()
}

fn masker() -> Masker {
    Masker::new(Detectors::builtin(), b"test-key").unwrap()
}

#[test]
fn each_detector_catches_its_values() {
    let cases: &[(&str, &str)] = &[
        ("write to ada.lovelace+db@example.co.uk today", "email"),
        ("call +442071838750 now", "phone"),
        ("call (415) 555-2671 now", "phone"),
        ("call 415-555-2671 now", "phone"),
        ("card 4111 1111 1111 1111 exp", "payment_card"),
        ("card 5555-5555-5555-4444", "payment_card"),
        ("card 378282246310005", "payment_card"),
        ("iban GB82 WEST 1234 5698 7654 32 ok", "iban"),
        ("iban DE89370400440532013000", "iban"),
        ("ssn 123-45-6789", "us_ssn"),
        ("from 192.168.10.254 in", "ipv4"),
        ("from 2001:db8::8a2e:370:7334 in", "ipv6"),
        (
            "bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----",
            "private_key",
        ),
        ("key AKIAIOSFODNN7EXAMPLE here", "aws_access_key"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_key",
        ),
        (
            "token ghp_16C7e42F292c6912E7710c838347Ae178B4a ok",
            "github_token",
        ),
        ("token glpat-xxxxxxxxxxxxxxxxxxxx ok", "gitlab_token"),
        ("token xoxb-123456789012-abcdefghijkl ok", "slack_token"),
        ("key sk_live_4eC39HqLyjWDarjtT1zdp7dc ok", "stripe_key"),
        ("postgres://app:s3cr3t@db.internal:5432/app", "password"),
        ("Server=db;User Id=app;Password=hunter2;", "password"),
    ];
    for (text, kind) in cases {
        assert_eq!(kinds(text), vec![kind.to_string()], "{text}");
    }
}

#[test]
fn ordinary_values_pass_unchanged() {
    let ordinary = [
        "order 100234 shipped",
        "order ORD-2024-000123",
        "2026-11-23 13:01:55.123456+00",
        "2026-11-23T13:01:55Z",
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "price 1299.99 EUR, total 12,345.67",
        "version 1.2.3-beta",
        "1234567890123",    // 13 digits, fails Luhn
        "0000000000000000", // passes Luhn, but a repeated digit
        "000-12-3456 666-12-3456 912-34-5678 123-00-4567",
        "999.999.999.999",
        "GB00 WEST 1234 5698 7654 32",
        "a:b:c",
        "eyJ not a token",
        "sk_live_short",
        "https://example.com/path?x=1",
        "password reset requested",
    ];
    let m = masker();
    for text in ordinary {
        let masked = m.mask_text(text);
        assert_eq!(masked.text, text, "{text}: {:?}", masked.counts);
        assert!(matches!(masked.text, Cow::Borrowed(_)));
    }
}

#[test]
fn each_builtin_kind_knows_its_place() {
    for (i, kind) in Kind::BUILTIN.iter().enumerate() {
        assert_eq!(kind.index(), Some(i), "{kind:?}");
        assert_eq!(
            kind.token(),
            Some(&*format!("[{}]", kind.name())),
            "{kind:?}"
        );
    }
    assert_eq!(Kind::Custom("ticket".into()).index(), None);
    assert_eq!(Kind::Custom("ticket".into()).token(), None);
}

#[test]
fn validators_follow_their_standards() {
    assert!(detect::luhn("4111111111111111"));
    assert!(!detect::luhn("4111111111111112"));
    assert!(detect::luhn("4111-1111-1111-1111"));
    assert!(detect::luhn("5500005555555559"));
    // A zero-filled id passes the checksum, but is no card; nor is a too-short number.
    assert!(!detect::luhn("0000000000000000"));
    assert!(!detect::luhn("411111111111"));
    assert!(detect::iban_mod97("GB82WEST12345698765432"));
    assert!(!detect::iban_mod97("GB83WEST12345698765432"));
    assert!(detect::ssn("123-45-6789"));
    for bad in [
        "000-45-6789",
        "666-45-6789",
        "900-45-6789",
        "123-00-6789",
        "123-45-0000",
    ] {
        assert!(!detect::ssn(bad), "{bad}");
    }
}

/// The strategies write their text straight into a buffer: what they write is checked
/// here against values worked out by hand and an HMAC computed apart.
#[test]
fn strategies_write_exactly_their_text() {
    let m = masker();
    let partial = |keep_last, value| m.mask_value(Strategy::Partial { keep_last }, "x", value);
    assert_eq!(
        partial(4, "4111-1111-1111-1234").unwrap(),
        "****-****-****-1234"
    );
    // Letters and digits of any script count; separators stay.
    assert_eq!(partial(2, "Zoë Ørsted").unwrap(), "*** ****ed");
    assert_eq!(partial(40, "ab").unwrap(), "ab");
    assert_eq!(partial(0, "a-1 b").unwrap(), "*-* *");
    assert_eq!(partial(1, "--").unwrap(), "--");
    assert_eq!(
        m.mask_value(Strategy::Redact, "us_ssn", "123-45-6789")
            .unwrap(),
        "[us_ssn]"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(b"test-key").unwrap();
    mac.update("ada@example.com".as_bytes());
    let digest = mac.finalize().into_bytes();
    assert_eq!(
        m.mask_value(Strategy::Hash, "email", "ada@example.com")
            .unwrap(),
        format!("h:{}", hex::encode(&digest[..8]))
    );
    // Appending keeps what the buffer held.
    let mut out = b"row:".to_vec();
    assert!(m.write_value(Strategy::Redact, "email", b"a@b.co", &mut out));
    assert!(!m.write_value(Strategy::Null, "email", b"a@b.co", &mut out));
    assert_eq!(out, b"row:[email]");
    // Appending after what is there, partial overwrites only its own bytes.
    assert!(m.write_value(
        Strategy::Partial { keep_last: 2 },
        "x",
        b"ab-1234",
        &mut out
    ));
    assert_eq!(out, b"row:[email]**-**34");
    // Bytes that are not UTF-8 (a client_encoding of LATIN1): redacted without being
    // read, hashed as they are, and shown by partial as U+FFFD, never as raw bytes.
    let latin1 = b"Zo\xeb 42";
    let mut out = Vec::new();
    assert!(m.write_value(Strategy::Redact, "name", latin1, &mut out));
    assert_eq!(out, b"[name]");
    let mut out = Vec::new();
    assert!(m.write_value(Strategy::Partial { keep_last: 1 }, "name", latin1, &mut out));
    assert_eq!(String::from_utf8(out).unwrap(), "**\u{FFFD} *2");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"test-key").unwrap();
    mac.update(latin1);
    let digest = mac.finalize().into_bytes();
    let mut out = Vec::new();
    assert!(m.write_value(Strategy::Hash, "name", latin1, &mut out));
    assert_eq!(out, format!("h:{}", hex::encode(&digest[..8])).into_bytes());
}

#[test]
fn strategies_redact_keep_the_tail_hash_or_null() {
    let m = masker()
        .with_strategy("payment_card", Strategy::Partial { keep_last: 4 })
        .with_strategy("email", Strategy::Hash);
    let masked = m.mask_text("pay 4111 1111 1111 1111 as ada@example.com, ssn 123-45-6789");
    assert_eq!(
        masked.text,
        format!(
            "pay **** **** **** 1111 as {}, ssn [us_ssn]",
            m.mask_value(Strategy::Hash, "email", "ada@example.com")
                .unwrap()
        )
    );
    assert_eq!(masked.counts.get("payment_card"), Some(1));
    assert_eq!(masked.counts.get("us_ssn"), Some(1));
    // Hashes are deterministic per key, so equal values stay equal (joins, GROUP BY) ...
    let h1 = m
        .mask_value(Strategy::Hash, "email", "ada@example.com")
        .unwrap();
    assert_eq!(
        h1,
        m.mask_value(Strategy::Hash, "email", "ada@example.com")
            .unwrap()
    );
    assert!(h1.starts_with("h:") && h1.len() == 18);
    // ... and differ under another key.
    let other = Masker::new(Detectors::builtin(), b"other-key").unwrap();
    assert_ne!(
        h1,
        other
            .mask_value(Strategy::Hash, "email", "ada@example.com")
            .unwrap()
    );
    assert_eq!(m.mask_value(Strategy::Null, "email", "x"), None);
    // Inside text, Null cannot remove a value from a string: it redacts.
    let n = masker().with_strategy("us_ssn", Strategy::Null);
    assert_eq!(n.mask_text("ssn 123-45-6789").text, "ssn [us_ssn]");
    assert!(Masker::new(Detectors::builtin(), b"").is_err());
}

#[test]
fn only_the_secret_part_of_a_url_or_connection_string_is_masked() {
    let m = masker();
    assert_eq!(
        m.mask_text("postgres://app:s3cr3t@db.internal/app").text,
        "postgres://app:[password]@db.internal/app"
    );
    assert_eq!(
        m.mask_text("host=db user=app password=hunter2 dbname=x")
            .text,
        "host=db user=app password=[password] dbname=x"
    );
}

#[test]
fn custom_patterns_join_the_same_pass_and_bad_ones_are_named() {
    let d = Detectors::with_custom(&[("employee_id".into(), r"\bEMP-\d{6}\b".into())]).unwrap();
    let found = d.find("EMP-123456 and ada@example.com");
    let names: Vec<&str> = found.iter().map(|f| f.kind.name()).collect();
    assert_eq!(names, ["employee_id", "email"]);
    let err = Detectors::with_custom(&[("broken".into(), "(".into())]).unwrap_err();
    assert!(err.to_string().starts_with("pattern broken:"), "{err}");
}

/// Sensitive values to plant in random text.
fn secret() -> impl Gen<Value = String> {
    prop_oneof![
        Just("ada@example.com".to_string()),
        Just("4111 1111 1111 1111".to_string()),
        Just("123-45-6789".to_string()),
        Just("GB82WEST12345698765432".to_string()),
        Just("AKIAIOSFODNN7EXAMPLE".to_string()),
        Just("ghp_16C7e42F292c6912E7710c838347Ae178B4a".to_string()),
    ]
}

/// An example value of every detector, in each form it is written in.
const PLANTED: &[&str] = &[
    "ada@example.com",
    "4111 1111 1111 1111",
    "123-45-6789",
    "GB82WEST12345698765432",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "+442071838750",
    "+1415555267",
    "4222222222222",
    "(415) 555-2671",
    "415.555.2671",
    "415-555-2671",
    "(415)\u{2003}555\u{a0}2671",
    "3782 822463 10005",
    "4111-1111-1111-1111",
    "378282246310005",
    "5555-5555-5555-4444",
    "GB82 WEST 1234 5698 7654 32",
    "192.168.10.254",
    "2001:db8::8a2e:370:7334",
    "::1",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3",
    "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----",
    "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "glpat-xxxxxxxxxxxxxxxxxxxx",
    "xoxb-123456789012-abcdefghijkl",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "github_pat_11ABCDEFG0123456789_abcdefghij",
    "mysql://app:s3cr3t@db/app",
    "PWD=hunter2",
    "Password = x",
    "T-1234",
];

/// Each example alone is found, and found with the census as without: the census's
/// thresholds are met by the shortest forms.
#[test]
fn the_census_lets_every_example_through() {
    for text in PLANTED {
        let found = ALL.find(text);
        assert!(!found.is_empty(), "{text}");
        assert_eq!(found, ALL.find_unfiltered(text), "{text}");
        assert_eq!(BUILTIN.find(text), BUILTIN.find_unfiltered(text), "{text}");
    }
}

/// The census counts up to 255 of a kind in one lane: values at and past that length are
/// found as the regexes find them, whichever path they take.
#[test]
fn long_values_at_the_census_limit_are_found() {
    for len in [254, 255, 256, 300] {
        for fill in ["7", "@", "A", "-"] {
            let planted = " user@example.com 4111111111111111";
            let text = format!("{}{planted}", fill.repeat(len - planted.len()));
            assert_eq!(text.len(), len);
            let found = BUILTIN.find(&text);
            assert_eq!(found.len(), 2, "{len} {fill}: {found:?}");
            assert_eq!(found, BUILTIN.find_unfiltered(&text), "{len} {fill}");
        }
    }
}

fn any_planted() -> impl Gen<Value = String> {
    proptest::sample::select(PLANTED).prop_map(str::to_string)
}

/// Every built-in detector and a custom one, compiled once.
static ALL: std::sync::LazyLock<Detectors> = std::sync::LazyLock::new(|| {
    Detectors::with_custom(&[("ticket".into(), r"T-\d{4}".into())]).unwrap()
});

/// The built-in detectors alone: without user patterns, a value that is wholly one
/// finding skips the rest (`whole_value`), so each check runs on both sets.
static BUILTIN: std::sync::LazyLock<Detectors> = std::sync::LazyLock::new(Detectors::builtin);

/// Compiled once: building the detectors costs far more than a test case.
static SHARED: std::sync::LazyLock<Masker> = std::sync::LazyLock::new(masker);

proptest! {
    // Enough cases for random digit groups to form (and miss) every shape the census knows.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    #[test]
    fn planted_secrets_never_survive(filler in proptest::collection::vec("[ a-z,.;:()]{0,12}", 1..6), secrets in proptest::collection::vec(secret(), 1..4)) {
        let mut text = String::new();
        for (i, s) in secrets.iter().enumerate() {
            text.push_str(&filler[i % filler.len()]);
            text.push(' ');
            text.push_str(s);
            text.push(' ');
        }
        let masked = SHARED.mask_text(&text);
        for s in &secrets {
            prop_assert!(!masked.text.contains(s.as_str()), "{} survived in {}", s, masked.text);
        }
        // Random filler can form other valid shapes (`::a` is an IPv6 address), so at
        // least every planted value is counted.
        prop_assert!(masked.counts.total() as usize >= secrets.len());
    }

    /// The census only skips work: whatever the regexes alone find, `find` finds too.
    /// Texts are drawn from the bytes detectors look at, with real values planted in them.
    #[test]
    fn the_census_never_hides_a_finding(
        filler in proptest::collection::vec("[0-9A-Za-z .:@_=+/()-]{0,24}", 1..6),
        planted in proptest::collection::vec(any_planted(), 0..3),
    ) {
        let mut text = String::new();
        for (i, f) in filler.iter().enumerate() {
            text.push_str(f);
            if let Some(p) = planted.get(i) {
                text.push_str(p);
            }
        }
        for d in [&*ALL, &*BUILTIN] {
            prop_assert_eq!(d.find(&text), d.find_unfiltered(&text), "{}", text);
        }
    }

    /// The whole-value checks only skip work: a value that is nothing but an e-mail
    /// address, a phone number, an SSN or a card number (or almost one) is found as the
    /// regexes alone find it.
    #[test]
    fn whole_value_checks_agree_with_the_regexes(
        text in proptest::prop_oneof![
            "[A-Za-z0-9._%+-]{1,8}@[A-Za-z0-9-]{1,6}(\\.[A-Za-z0-9-]{1,5}){0,3}",
            "[A-Za-z0-9._%+@-]{1,10}@[A-Za-z0-9.@-]{1,14}",
            "\\+?[0-9]{6,17}",
            "\\(?[0-9]{2,4}\\)? ?[0-9]{3}[ .-]?[0-9]{3,5}",
            "[0-9]{3}[ .-][0-9]{3}[ .-][0-9]{4}[0-9a]?",
            "[0-9]{2,4}-[0-9]{1,3}-[0-9]{3,5}",
            "[0-9]{11,21}",
        ],
    ) {
        for d in [&*ALL, &*BUILTIN] {
            prop_assert_eq!(d.find(&text), d.find_unfiltered(&text), "{}", text);
        }
    }

    #[test]
    fn masking_never_panics_and_is_stable(text in "\\PC{0,200}") {
        let m = &*SHARED;
        let once = m.mask_text(&text).text.into_owned();
        // Masked output holds nothing left to mask.
        let twice = m.mask_text(&once).text.into_owned();
        prop_assert_eq!(once, twice);
    }
}

/// JSON documents: strings decoded, masked and encoded again; the rest kept byte for byte.
#[test]
fn json_strings_are_masked_as_text_and_stay_json() {
    let m = &*SHARED;
    let doc = r#"{ "mail": "ada\u0040example.com", "note" : "say \"hi\" to bob@example.com\n",
        "n": [4111111111111111, 42, -4111111111111111.5e0, true], "ada@example.com": null }"#;
    let masked = m.mask_json(doc).unwrap();
    assert_eq!(
        masked.text,
        r#"{ "mail": "[email]", "note" : "say \"hi\" to [email]\n",
        "n": [null, 42, null, true], "[email]": null }"#
    );
    assert_eq!(masked.counts.get("email"), Some(3));
    assert_eq!(masked.counts.get("payment_card"), Some(2));
    // Nothing to mask: the document itself comes back.
    let plain = r#"{"a": "x\u00e9", "b": [1, 2.5]}"#;
    assert!(matches!(m.mask_json(plain).unwrap().text, Cow::Borrowed(_)));
    // Not JSON: cannot be masked as JSON.
    assert!(m.mask_json("{\"a\": 1,}").is_none());
    assert!(m.mask_json("ada@example.com").is_none());
    // Non-ASCII and control characters around a finding are written as JSON writes them.
    let masked = m
        .mask_json("[\"é\\u0001 ada@example.com \\ud83d\\ude00\"]")
        .unwrap();
    assert_eq!(masked.text, "[\"é\\u0001 [email] 😀\"]");
}

/// A finding the document's text holds across tokens (a key naming the secret before its
/// value, a private key split over array elements) masks every token it touches.
#[test]
fn json_findings_across_tokens_mask_the_tokens_they_touch() {
    let m = &*SHARED;
    let doc = r#"{"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#;
    assert_eq!(
        m.mask_json(doc).unwrap().text,
        r#"{"aws_secret_access_key": "[aws_secret_key]"}"#
    );
    let doc = r#"["-----BEGIN RSA PRIVATE KEY-----", "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6", "-----END RSA PRIVATE KEY-----", "ok"]"#;
    let masked = m.mask_json(doc).unwrap();
    assert_eq!(
        masked.text,
        r#"["[private_key]", "[private_key]", "[private_key]", "ok"]"#
    );
    assert_eq!(masked.counts.get("private_key"), Some(1));
}

/// A small deterministic generator for the escaping choices of [`write_json`].
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// `value` as JSON text written the many ways JSON allows: any character may be a `\u`
/// escape (a surrogate pair beyond the BMP), `/` may be escaped, and whitespace falls
/// between tokens.
fn write_json(value: &serde_json::Value, rng: &mut Rng, out: &mut String) {
    use serde_json::Value;
    let ws = |rng: &mut Rng, out: &mut String| {
        out.push_str(["", "", " ", "\n  ", "\t", "\r\n"][(rng.next() % 6) as usize]);
    };
    ws(rng, out);
    match value {
        Value::String(s) => write_json_string(s, rng, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, rng, out);
            }
            ws(rng, out);
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(rng, out);
                write_json_string(key, rng, out);
                ws(rng, out);
                out.push(':');
                write_json(item, rng, out);
            }
            ws(rng, out);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
    ws(rng, out);
}

fn write_json_string(s: &str, rng: &mut Rng, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\t' => Some("\\t"),
            '\r' => Some("\\r"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '/' if rng.one_in(2) => Some("\\/"),
            _ => None,
        };
        let must = c < ' ' || c == '"' || c == '\\';
        match short {
            Some(escaped) if !rng.one_in(3) => out.push_str(escaped),
            _ if must || rng.one_in(4) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    if rng.one_in(2) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out.push('"');
}

/// What [`Masker::mask_json`] must make of `value`: every string masked as text, keys
/// included (masked keys that collide keep the last, as a JSON reader does), every number
/// holding a finding null.
fn masked_json(m: &Masker, value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(m.mask_text(s).text.into_owned()),
        Value::Number(n) if !m.find(&n.to_string()).is_empty() => Value::Null,
        Value::Array(items) => Value::Array(items.iter().map(|v| masked_json(m, v)).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| (m.mask_text(k).text.into_owned(), masked_json(m, v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Strings with what JSON must escape, non-ASCII, and now and then a real finding.
fn json_text() -> impl Gen<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(vec![
            "\"", "\\", "\n", "\t", "\r", "\u{0}", "\u{1f}", "\u{7f}", "é", "😀", "\u{2028}", "/",
            " ", "a", "7", "@", ":", "-", ".", "\\u0040",
        ])
        .prop_map(str::to_string),
        2 => "\\PC{0,6}",
        1 => any_planted(),
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

fn json_value() -> impl Gen<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        proptest::bool::ANY.prop_map(Value::Bool),
        proptest::num::i64::ANY.prop_map(Value::from),
        // Quarters: read back exactly, so documents compare equal.
        proptest::num::i32::ANY.prop_map(|n| Value::from(f64::from(n) / 4.0)),
        proptest::sample::select(vec![
            4_111_111_111_111_111u64,
            5_555_555_555_554_444,
            378_282_246_310_005
        ])
        .prop_map(Value::from),
        json_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((json_text(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Whatever strings a document holds and however it is written, its masked form is
    /// JSON that reads as the document with each string masked as text and each number
    /// holding a finding null, with nothing left to mask.
    #[test]
    fn masked_json_is_json_of_the_same_shape(value in json_value(), seed in proptest::num::u64::ANY) {
        let m = &*SHARED;
        let mut text = String::new();
        write_json(&value, &mut Rng(seed), &mut text);
        prop_assert_eq!(&serde_json::from_str::<serde_json::Value>(&text).unwrap(), &value);
        let masked = m.mask_json(&text).expect("the document is JSON");
        let read: serde_json::Value = serde_json::from_str(&masked.text)
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}: {}", masked.text)))?;
        prop_assert_eq!(&read, &masked_json(m, &value), "{}", text);
        // Masking again changes nothing: no finding is left.
        let again = m.mask_json(&masked.text).unwrap();
        prop_assert_eq!(again.text.as_ref(), masked.text.as_ref());
    }
}

/// A replacement can make a finding of what surrounds it: that is masked too, and counted;
/// a replacement that reads as a finding again (a token in a URL's password) is left alone.
#[test]
fn what_a_replacement_brings_to_light_is_masked_too() {
    let m = &*SHARED;
    let masked = m.mask_text("ada@example.com4222222222222 and bob@example.org");
    assert_eq!(masked.text, "[email][payment_card] and [email]");
    assert_eq!(masked.counts.get("email"), Some(2));
    assert_eq!(masked.counts.get("payment_card"), Some(1));
    assert_eq!(
        m.mask_text("postgres://app:s3cr3t@db").text,
        "postgres://app:[password]@db"
    );
    // A finding brought to light before an earlier replacement moves it; that one is
    // still known as a replacement, not found (and counted) again.
    let masked = m.mask_text("ada@example.com4222222222222 postgres://app:s3cr3t@db");
    assert_eq!(
        masked.text,
        "[email][payment_card] postgres://app:[password]@db"
    );
    assert_eq!(masked.counts.total(), 3, "{:?}", masked.counts);
    let hashing = masker().with_strategy("password", Strategy::Hash);
    let once = hashing
        .mask_text("postgres://app:s3cr3t@db")
        .text
        .into_owned();
    // Hashed once: the hash is not looked at again (it reads as a password too).
    assert_eq!(
        once.len(),
        "postgres://app:h:0123456789abcdef@db".len(),
        "{once}"
    );
    assert!(once.starts_with("postgres://app:h:"), "{once}");
}
