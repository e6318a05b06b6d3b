//! Masking keeps every value valid for its type. Random typed rows (text, varchar, json,
//! jsonb, inet, cidr, bytea, int8, numeric, text[], jsonb[]) holding what the built-in
//! detectors find are encoded as a server sends them — text and binary result values, COPY
//! text, CSV and binary rows — and go through the rewriter with every built-in detector on:
//! each value that comes out must parse as its type and hold no finding, and one without a
//! finding must come out as it went in. Then the same rows through the gateway from a real
//! server, read with psycopg in text and binary and copied out in every format: the server
//! must load all of it back (its type checks are the oracle), and nothing loaded may hold a
//! finding.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod harness;

use std::net::IpAddr;
use std::sync::LazyLock;

use gatehouse_config::{DetectorSelection, MaskingConfig};
use gatehouse_mask::{Kind, Masker};
use gatehouse_pg::catalog::Catalog;
use gatehouse_pg::masking::{
    ColumnMask, ColumnPlan, CopyPlan, MaskCounts, MaskPolicy, ResultPlan, Rewriter,
};
use gatehouse_sql::lineage::{CopyFormat, CopyKind};
use gatehouse_wire_pg::{copy, frontend, rows};
use harness::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use serde_json::Value as Json;

/// Every built-in detector, named one by one: whatever the default selection becomes, these
/// tests hold for all of them.
fn all_detectors() -> MaskingConfig {
    MaskingConfig {
        detectors: DetectorSelection::Only(
            Kind::BUILTIN.iter().map(|k| k.name().to_string()).collect(),
        ),
        ..MaskingConfig::default()
    }
}

static POLICY: LazyLock<MaskPolicy> =
    LazyLock::new(|| MaskPolicy::from_config(&all_detectors(), b"test-mask-key").unwrap());

fn masker() -> &'static Masker {
    &POLICY.masker
}

/// The column types of a test row, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Text,
    Varchar,
    Json,
    Jsonb,
    Inet,
    Cidr,
    Bytea,
    Int8,
    Numeric,
    TextArray,
    JsonbArray,
}

const TYPES: [Ty; 11] = [
    Ty::Text,
    Ty::Varchar,
    Ty::Json,
    Ty::Jsonb,
    Ty::Inet,
    Ty::Cidr,
    Ty::Bytea,
    Ty::Int8,
    Ty::Numeric,
    Ty::TextArray,
    Ty::JsonbArray,
];

impl Ty {
    fn oid(self) -> u32 {
        match self {
            Ty::Text => 25,
            Ty::Varchar => 1043,
            Ty::Json => 114,
            Ty::Jsonb => 3802,
            Ty::Inet => 869,
            Ty::Cidr => 650,
            Ty::Bytea => 17,
            Ty::Int8 => 20,
            Ty::Numeric => 1700,
            Ty::TextArray => 1009,
            Ty::JsonbArray => 3807,
        }
    }
}

/// One test value.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Json(Json),
    Inet(IpAddr, u8),
    Bytea(Vec<u8>),
    Int8(i64),
    Numeric(String),
    TextArray(Vec<Option<String>>),
    JsonbArray(Vec<Option<Json>>),
}

type Row = Vec<Option<Value>>;

/// What the detectors find, planted in the values.
const SECRETS: &[&str] = &[
    "ada@example.com",
    "bob.smith+db@mail.example.org",
    "+442071838750",
    "(415) 555-2671",
    "4111 1111 1111 1111",
    "4111111111111111",
    "5555-5555-5555-4444",
    "378282246310005",
    "GB82 WEST 1234 5698 7654 32",
    "123-45-6789",
    "192.168.10.254",
    "2001:db8::8a2e:370:7334",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----",
    "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "glpat-xxxxxxxxxxxxxxxxxxxx",
    "xoxb-123456789012-abcdefghijkl",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "postgres://app:s3cr3t@db.internal:5432/app",
    "Password=hunter2",
];

/// Text with what formats escape or quote (quotes, backslashes, delimiters, braces, line
/// ends, control characters, `NULL`, `\N`), non-ASCII, and findings. Never NUL: no text
/// type holds one.
fn any_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![
            "\"", "\\", "\n", "\r", "\t", ",", ";", "|", "{", "}", "(", ")", "[", "]", "'",
            "\u{1}", "\u{7f}", "é", "😀", "\u{2028}", " ", "NULL", "\\N", "x", "42", "@", ":",
            "-", ".", "\\u0040", "\\x41",
        ])
        .prop_map(str::to_string),
        2 => "\\PC{0,8}",
        2 => prop::sample::select(SECRETS).prop_map(str::to_string),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        // Quarters: every reader reads them back exactly.
        any::<i32>().prop_map(|n| Json::from(f64::from(n) / 4.0)),
        prop::sample::select(vec![4_111_111_111_111_111u64, 378_282_246_310_005])
            .prop_map(Json::from),
        any_text().prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec((any_text(), inner), 0..4)
                .prop_map(|members| Json::Object(members.into_iter().collect())),
        ]
    })
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::from(a.to_be_bytes())),
        any::<u128>().prop_map(|a| IpAddr::from(a.to_be_bytes())),
        prop::sample::select(vec![
            "10.1.2.3",
            "192.168.10.254",
            "2001:db8::8a2e:370:7334"
        ])
        .prop_map(|a| a.parse().unwrap()),
    ]
}

fn value(ty: Ty) -> BoxedStrategy<Value> {
    let card = prop::sample::select(vec![
        4_111_111_111_111_111i64,
        5_555_555_555_554_444,
        378_282_246_310_005,
        -4_111_111_111_111_111,
    ]);
    match ty {
        Ty::Text | Ty::Varchar => any_text().prop_map(Value::Text).boxed(),
        Ty::Json | Ty::Jsonb => json().prop_map(Value::Json).boxed(),
        Ty::Inet => (address(), any::<prop::sample::Index>())
            .prop_map(|(a, i)| {
                let max = if a.is_ipv4() { 32 } else { 128 };
                let bits = if i.index(3) == 0 {
                    i.index(max + 1) as u8
                } else {
                    max as u8
                };
                Value::Inet(a, bits)
            })
            .boxed(),
        Ty::Cidr => (address(), any::<prop::sample::Index>())
            .prop_map(|(a, i)| {
                let bits = i.index(if a.is_ipv4() { 33 } else { 129 }) as u8;
                Value::Inet(network(a, bits), bits)
            })
            .boxed(),
        Ty::Bytea => prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            any_text().prop_map(String::into_bytes),
        ]
        .prop_map(Value::Bytea)
        .boxed(),
        Ty::Int8 => prop_oneof![any::<i64>(), card]
            .prop_map(Value::Int8)
            .boxed(),
        Ty::Numeric => prop_oneof![
            (card.clone(), 0..100u32).prop_map(|(c, f)| format!("{c}.{f:02}")),
            card.clone()
                .prop_map(|c| format!("-0.{}", c.unsigned_abs())),
            (any::<i64>(), "[0-9]{0,6}").prop_map(|(n, f)| if f.is_empty() {
                n.to_string()
            } else {
                format!("{n}.{f}")
            }),
        ]
        .prop_map(Value::Numeric)
        .boxed(),
        Ty::TextArray => prop::collection::vec(prop::option::of(any_text()), 0..4)
            .prop_map(Value::TextArray)
            .boxed(),
        Ty::JsonbArray => prop::collection::vec(prop::option::of(json()), 0..3)
            .prop_map(Value::JsonbArray)
            .boxed(),
    }
}

fn row() -> impl Strategy<Value = Row> {
    TYPES
        .iter()
        .map(|ty| prop::option::weighted(0.9, value(*ty)))
        .collect::<Vec<_>>()
}

/// The network of `address` with `bits` of prefix (a cidr has no bits set past it).
fn network(address: IpAddr, bits: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    }
}

/// JSON as the `json` type keeps whatever the client wrote: here every non-ASCII character
/// and every `@` is a `\u` escape (surrogate pairs beyond the BMP), which only a reader that
/// decodes the strings sees through. (Neither occurs outside strings.)
fn escaped_json(value: &Json) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() && c != '@' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// A quoted array element (or a record field): quotes and backslashes escaped.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn inet_text(address: IpAddr, bits: u8, ty: Ty) -> String {
    let max = if address.is_ipv4() { 32 } else { 128 };
    if ty == Ty::Inet && bits == max {
        address.to_string()
    } else {
        format!("{address}/{bits}")
    }
}

/// A value's text format.
fn text_form(ty: Ty, value: &Value) -> Vec<u8> {
    match value {
        Value::Text(s) => s.clone().into_bytes(),
        Value::Json(j) if ty == Ty::Json => escaped_json(j).into_bytes(),
        Value::Json(j) => j.to_string().into_bytes(),
        Value::Inet(a, bits) => inet_text(*a, *bits, ty).into_bytes(),
        Value::Bytea(b) => format!("\\x{}", hex::encode(b)).into_bytes(),
        Value::Int8(n) => n.to_string().into_bytes(),
        Value::Numeric(n) => n.clone().into_bytes(),
        Value::TextArray(items) => array_text(items.iter().cloned()),
        Value::JsonbArray(items) => {
            array_text(items.iter().map(|i| i.as_ref().map(Json::to_string)))
        }
    }
}

fn array_text(items: impl Iterator<Item = Option<String>>) -> Vec<u8> {
    let items: Vec<String> = items
        .map(|i| i.map_or_else(|| "NULL".to_string(), |t| quoted(&t)))
        .collect();
    format!("{{{}}}", items.join(",")).into_bytes()
}

/// A value's binary format, as the server's `*_send` functions write it.
fn binary_form(ty: Ty, value: &Value) -> Vec<u8> {
    match value {
        Value::Text(s) => s.clone().into_bytes(),
        Value::Json(j) if ty == Ty::Json => escaped_json(j).into_bytes(),
        Value::Json(j) => jsonb_send(j),
        Value::Inet(a, bits) => {
            let (family, octets) = match a {
                IpAddr::V4(a) => (2, a.octets().to_vec()),
                IpAddr::V6(a) => (3, a.octets().to_vec()),
            };
            let mut out = vec![family, *bits, u8::from(ty == Ty::Cidr), octets.len() as u8];
            out.extend(octets);
            out
        }
        Value::Bytea(b) => b.clone(),
        Value::Int8(n) => n.to_be_bytes().to_vec(),
        Value::Numeric(n) => numeric_send(n),
        Value::TextArray(items) => array_send(
            25,
            items
                .iter()
                .map(|i| i.as_ref().map(|t| t.as_bytes().to_vec())),
        ),
        Value::JsonbArray(items) => {
            array_send(3802, items.iter().map(|i| i.as_ref().map(jsonb_send)))
        }
    }
}

fn jsonb_send(value: &Json) -> Vec<u8> {
    let mut out = vec![1];
    out.extend(value.to_string().into_bytes());
    out
}

/// `array_send` of a one-dimensional array (no dimensions when empty).
fn array_send(element: u32, items: impl ExactSizeIterator<Item = Option<Vec<u8>>>) -> Vec<u8> {
    let items: Vec<Option<Vec<u8>>> = items.collect();
    let ndim = i32::from(!items.is_empty());
    let mut out = ndim.to_be_bytes().to_vec();
    out.extend(i32::from(items.iter().any(Option::is_none)).to_be_bytes());
    out.extend(element.to_be_bytes());
    if ndim == 1 {
        out.extend((items.len() as i32).to_be_bytes());
        out.extend(1i32.to_be_bytes());
    }
    for item in &items {
        put(&mut out, item.as_deref());
    }
    out
}

fn put(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend((-1i32).to_be_bytes()),
        Some(v) => {
            out.extend((v.len() as i32).to_be_bytes());
            out.extend(v);
        }
    }
}

/// `numeric_send` of a decimal: base-10000 digits aligned on the decimal point, leading
/// and trailing zero digits dropped.
fn numeric_send(text: &str) -> Vec<u8> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let (int, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let int = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    let fraction_padded = format!("{fraction}{}", "0".repeat((4 - fraction.len() % 4) % 4));
    let all = format!("{int}{fraction_padded}");
    let mut groups: Vec<i16> = (0..all.len())
        .step_by(4)
        .map(|i| all[i..i + 4].parse().unwrap())
        .collect();
    let mut weight = (int.len() / 4) as i16 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    let mut out = Vec::new();
    out.extend((groups.len() as i16).to_be_bytes());
    out.extend(weight.to_be_bytes());
    out.extend(sign.to_be_bytes());
    out.extend((fraction.len() as i16).to_be_bytes());
    for g in groups {
        out.extend(g.to_be_bytes());
    }
    out
}

/// Whether text holds nothing left to mask: masking it again changes nothing.
fn clean(text: &str) -> bool {
    masker().mask_text(text).text == text
}

/// Whether a JSON document holds nothing left to mask, in any string or number.
fn clean_json(value: &Json) -> bool {
    match value {
        Json::String(s) => clean(s),
        Json::Number(n) => masker().find(&n.to_string()).is_empty(),
        Json::Array(items) => items.iter().all(clean_json),
        Json::Object(members) => members.iter().all(|(k, v)| clean(k) && clean_json(v)),
        _ => true,
    }
}

fn check(ok: bool, what: &str, ty: Ty, bytes: &[u8]) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{ty:?}: {what}: {:?}",
            String::from_utf8_lossy(bytes)
        ))
    }
}

/// A JSON document read with serde_json: valid, and clean.
fn check_json(ty: Ty, bytes: &[u8]) -> Result<(), String> {
    let parsed: Json = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "{ty:?}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })?;
    check(clean_json(&parsed), "a finding is left", ty, bytes)
}

/// An address `addr[/bits]`, with no bits past the prefix for a cidr.
fn check_inet_text(ty: Ty, text: &str) -> Result<(), String> {
    let (address, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|e| format!("{ty:?}: not an address ({e}): {text}"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b
            .parse::<u8>()
            .map_err(|e| format!("{ty:?}: bits ({e}): {text}"))?,
        None => max,
    };
    check(bits <= max, "too many bits", ty, text.as_bytes())?;
    if ty == Ty::Cidr {
        check(
            network(address, bits) == address,
            "host bits set",
            ty,
            text.as_bytes(),
        )?;
    }
    check(
        masker().find(text).is_empty(),
        "a finding is left",
        ty,
        text.as_bytes(),
    )
}

/// A value in text format: it parses as its type and holds no finding.
fn check_text(ty: Ty, bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{ty:?}: not UTF-8: {bytes:?}"))?;
    match ty {
        Ty::Text | Ty::Varchar => {
            check(!text.contains('\0'), "holds NUL", ty, bytes)?;
            check(clean(text), "a finding is left", ty, bytes)
        }
        Ty::Json | Ty::Jsonb => check_json(ty, bytes),
        Ty::Inet | Ty::Cidr => check_inet_text(ty, text),
        Ty::Bytea => {
            let decoded = text
                .strip_prefix("\\x")
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| format!("bytea: not \\x and hex: {text}"))?;
            check_bytes(&decoded)
        }
        Ty::Int8 => {
            check(text.parse::<i64>().is_ok(), "not an int8", ty, bytes)?;
            check(
                masker().find(text).is_empty(),
                "a finding is left",
                ty,
                bytes,
            )
        }
        Ty::Numeric => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let (int, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
            let number = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
            check(number(int) && number(fraction), "not a numeric", ty, bytes)?;
            check(
                masker().find(text).is_empty(),
                "a finding is left",
                ty,
                bytes,
            )
        }
        Ty::TextArray | Ty::JsonbArray => {
            let items =
                parse_text_array(text).ok_or_else(|| format!("{ty:?}: not an array: {text}"))?;
            for item in items.iter().flatten() {
                if ty == Ty::TextArray {
                    check(clean(item), "a finding is left", ty, bytes)?;
                } else {
                    check_json(ty, item.as_bytes())?;
                }
            }
            Ok(())
        }
    }
}

fn check_bytes(bytes: &[u8]) -> Result<(), String> {
    match std::str::from_utf8(bytes) {
        Ok(text) => check(clean(text), "a finding is left", Ty::Bytea, bytes),
        Err(_) => Ok(()),
    }
}

/// A one-dimensional array in text format, as `array_in` reads it: quoted elements with
/// backslash escapes, unquoted ones up to the next comma or brace, `NULL`.
fn parse_text_array(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.is_empty() {
        return Some(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let item = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => s.push(chars.next()?),
                    c => s.push(c),
                }
            }
            Some(s)
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if "\"{}\\".contains(c) || c.is_whitespace() {
                    return None;
                }
                s.push(c);
                chars.next();
            }
            (s != "NULL").then_some(s)
        };
        items.push(item);
        match chars.next() {
            None => return Some(items),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// A value in binary format: its layout is what the type's `*_recv` takes, and it holds no
/// finding.
fn check_binary(ty: Ty, bytes: &[u8]) -> Result<(), String> {
    match ty {
        Ty::Text | Ty::Varchar | Ty::Json => check_text(ty, bytes),
        Ty::Jsonb => match bytes.split_first() {
            Some((1, text)) => check_json(ty, text),
            _ => Err(format!("jsonb: no version byte: {bytes:?}")),
        },
        Ty::Inet | Ty::Cidr => {
            let [family, bits, is_cidr, len, address @ ..] = bytes else {
                return Err(format!("{ty:?}: too short: {bytes:?}"));
            };
            let ip = match (family, len, address.len()) {
                (2, 4, 4) => IpAddr::from(<[u8; 4]>::try_from(address).unwrap()),
                (3, 16, 16) => IpAddr::from(<[u8; 16]>::try_from(address).unwrap()),
                _ => return Err(format!("{ty:?}: bad layout: {bytes:?}")),
            };
            check(*is_cidr == u8::from(ty == Ty::Cidr), "cidr flag", ty, bytes)?;
            check_inet_text(ty, &format!("{ip}/{bits}"))
        }
        Ty::Bytea => check_bytes(bytes),
        Ty::Int8 => {
            let n = i64::from_be_bytes(bytes.try_into().map_err(|_| format!("int8: {bytes:?}"))?);
            check(
                masker().find(&n.to_string()).is_empty(),
                "a finding is left",
                ty,
                bytes,
            )
        }
        Ty::Numeric => {
            let word = |i: usize| i16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]);
            check(
                bytes.len() >= 8 && bytes.len().is_multiple_of(2),
                "numeric layout",
                ty,
                bytes,
            )?;
            let ndigits = word(0) as usize;
            check(bytes.len() == 8 + 2 * ndigits, "numeric length", ty, bytes)?;
            check(
                matches!(word(2) as u16, 0 | 0x4000 | 0xC000),
                "numeric sign",
                ty,
                bytes,
            )?;
            let digits: Vec<i16> = (0..ndigits).map(|i| word(4 + i)).collect();
            check(
                digits.iter().all(|d| (0..10_000).contains(d)),
                "numeric digits",
                ty,
                bytes,
            )?;
            // The digit groups written out in full: no card number among them.
            let text: String = digits.iter().map(|d| format!("{d:04}")).collect();
            check(
                masker().find(text.trim_start_matches('0')).is_empty(),
                "a finding is left",
                ty,
                bytes,
            )
        }
        Ty::TextArray | Ty::JsonbArray => {
            let element = if ty == Ty::TextArray {
                Ty::Text
            } else {
                Ty::Jsonb
            };
            for item in parse_binary_array(bytes, element.oid())?
                .into_iter()
                .flatten()
            {
                check_binary(element, &item)?;
            }
            Ok(())
        }
    }
}

/// `array_recv` of a one-dimensional array of `element`.
fn parse_binary_array(bytes: &[u8], element: u32) -> Result<Vec<Option<Vec<u8>>>, String> {
    let bad = || format!("array: bad layout: {bytes:?}");
    let int = |at: usize| -> Result<i32, String> {
        Ok(i32::from_be_bytes(
            bytes.get(at..at + 4).ok_or_else(bad)?.try_into().unwrap(),
        ))
    };
    let ndim = int(0)?;
    let flags = int(4)?;
    if !(0..=1).contains(&ndim) || !(0..=1).contains(&flags) || int(8)? as u32 != element {
        return Err(bad());
    }
    let (count, mut at) = if ndim == 1 { (int(12)?, 20) } else { (0, 12) };
    let mut items = Vec::new();
    for _ in 0..count {
        let len = int(at)?;
        at += 4;
        if len == -1 {
            check(
                flags == 1,
                "NULL without the null flag",
                Ty::TextArray,
                bytes,
            )?;
            items.push(None);
        } else {
            let len = usize::try_from(len).map_err(|_| bad())?;
            items.push(Some(bytes.get(at..at + len).ok_or_else(bad)?.to_vec()));
            at += len;
        }
    }
    if at != bytes.len() {
        return Err(bad());
    }
    Ok(items)
}

/// How a row travels.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// A DataRow in text or binary format.
    Row { binary: bool },
    /// A CopyData of `COPY ... TO STDOUT`.
    Copy { kind: CopyKind, delimiter: u8 },
}

/// The plan of one test row's columns, with their types known or (as `COPY (query)` has
/// them) not.
fn plan(catalog: &Catalog, format: i16, known: bool) -> ResultPlan {
    ResultPlan {
        columns: TYPES
            .iter()
            .map(|ty| {
                let oid = if known { ty.oid() } else { 0 };
                ColumnPlan::new(&POLICY, catalog, ColumnMask::Content, oid, format)
            })
            .collect(),
    }
}

/// The row as a server sends it in `form`.
fn encode(row: &Row, form: Form) -> Vec<u8> {
    let mut out = Vec::new();
    match form {
        Form::Row { binary } => {
            let values: Vec<Option<Vec<u8>>> = TYPES
                .iter()
                .zip(row)
                .map(|(ty, v)| {
                    v.as_ref().map(|v| {
                        if binary {
                            binary_form(*ty, v)
                        } else {
                            text_form(*ty, v)
                        }
                    })
                })
                .collect();
            rows::write_data_row(values.iter().map(|v| v.as_deref()), &mut out);
        }
        Form::Copy {
            kind: CopyKind::Binary,
            ..
        } => {
            let mut body = copy::BINARY_SIGNATURE.to_vec();
            body.extend([0; 8]);
            let values: Vec<Option<Vec<u8>>> = TYPES
                .iter()
                .zip(row)
                .map(|(ty, v)| v.as_ref().map(|v| binary_form(*ty, v)))
                .collect();
            copy::write_binary_chunk(&[], [values], false, &mut body);
            frontend::frame(b'd', &body, &mut out);
        }
        Form::Copy { kind, delimiter } => {
            let mut line = Vec::new();
            for (i, (ty, v)) in TYPES.iter().zip(row).enumerate() {
                if i > 0 {
                    line.push(delimiter);
                }
                match (v, kind) {
                    (None, CopyKind::Csv) => {}
                    (None, _) => line.extend_from_slice(b"\\N"),
                    (Some(v), CopyKind::Csv) => copy::write_csv_quoted(
                        &String::from_utf8(text_form(*ty, v)).unwrap(),
                        b'"',
                        b'"',
                        &mut line,
                    ),
                    (Some(v), _) => {
                        copy::write_text_escaped(&text_form(*ty, v), delimiter, &mut line)
                    }
                }
            }
            line.push(b'\n');
            frontend::frame(b'd', &line, &mut out);
        }
    }
    out
}

/// A row's values; `None` for NULL.
type Values = Vec<Option<Vec<u8>>>;

/// The values of a message the rewriter sent, and whether they are in binary format.
fn decode(frame: &[u8], form: Form) -> Result<(Values, bool), String> {
    let body = &frame[5..];
    let values = match form {
        Form::Row { binary } => {
            let values = rows::data_row(body)
                .map_err(|e| e.to_string())?
                .map(|v| v.map(|v| v.map(<[u8]>::to_vec)))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            return Ok((values, binary));
        }
        Form::Copy {
            kind: CopyKind::Binary,
            ..
        } => {
            let chunk = copy::binary_chunk(body).map_err(|e| e.to_string())?;
            let [row] = &chunk.rows[..] else {
                return Err(format!("{} rows", chunk.rows.len()));
            };
            return Ok((row.iter().map(|v| v.map(<[u8]>::to_vec)).collect(), true));
        }
        Form::Copy { kind, delimiter } => {
            let line = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            let line = line.strip_suffix('\n').ok_or("no line end")?;
            if kind == CopyKind::Csv {
                copy::csv_fields(line, delimiter, b'"', b'"')
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|f| {
                        let null = !f.quoted && f.value.is_empty();
                        (!null).then(|| f.value.as_bytes().to_vec())
                    })
                    .collect()
            } else {
                copy::text_fields(line, delimiter)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|f| (&line[f.raw.clone()] != "\\N").then(|| f.value.into_owned()))
                    .collect()
            }
        }
    };
    Ok((values, false))
}

/// Whether the rewriter must leave `value` as it is: it holds nothing any detector finds.
fn holds_nothing(ty: Ty, value: &Value) -> bool {
    let m = masker();
    let text = text_form(ty, value);
    match value {
        Value::Json(j) => {
            m.mask_json(std::str::from_utf8(&text).unwrap())
                .is_some_and(|masked| masked.counts.is_empty())
                && clean_json(j)
        }
        Value::Bytea(b) => std::str::from_utf8(b).map_or(true, |t| m.find(t).is_empty()),
        Value::TextArray(items) => items.iter().flatten().all(|t| m.find(t).is_empty()),
        Value::JsonbArray(items) => items.iter().flatten().all(|j| {
            m.mask_json(&j.to_string())
                .is_some_and(|masked| masked.counts.is_empty())
        }),
        Value::Inet(..) => {
            // What the binary format reads as text, too.
            let binary = binary_form(ty, value);
            let read = gatehouse_wire_pg::types::binary_text(ty.oid(), &binary).unwrap();
            m.find(&read).is_empty() && m.find(std::str::from_utf8(&text).unwrap()).is_empty()
        }
        _ => m.find(std::str::from_utf8(&text).unwrap()).is_empty(),
    }
}

/// One row through the rewriter in `form`: every value comes out valid for its type and
/// clean, and (with the types known) a value holding nothing comes out as it went in.
fn round_trip(row: &Row, form: Form, known: bool) -> Result<(), String> {
    let catalog = Catalog::new();
    let rewriter = Rewriter {
        policy: &POLICY,
        catalog: &catalog,
        encoding: Default::default(),
    };
    let frame = encode(row, form);
    let mut counts = MaskCounts::default();
    let out = match form {
        Form::Row { binary } => {
            let plan = plan(&catalog, i16::from(binary), known);
            rewriter.data_row(&frame, Some(&plan), &mut counts)
        }
        Form::Copy { kind, delimiter } => {
            let copy = CopyPlan {
                plan: plan(&catalog, 0, known),
                format: Some(CopyFormat {
                    delimiter,
                    ..CopyFormat::default_for(kind)
                }),
                binary: kind == CopyKind::Binary,
            };
            rewriter.copy_data(&frame, &copy, false, &mut counts)
        }
    };
    let out = out.unwrap_or_else(|| frame.clone());
    let (values, binary) = decode(&out, form)?;
    let (before, _) = decode(&frame, form)?;
    if values.len() != TYPES.len() {
        return Err(format!(
            "{} values: {:?}",
            values.len(),
            String::from_utf8_lossy(&out)
        ));
    }
    for (i, ty) in TYPES.iter().enumerate() {
        let Some(value) = &values[i] else {
            continue;
        };
        let valid = if binary {
            check_binary(*ty, value)
        } else {
            check_text(*ty, value)
        };
        valid.map_err(|e| format!("{form:?} column {i}: {e}"))?;
        if known
            && let Some(v) = &row[i]
            && holds_nothing(*ty, v)
            && before[i] != values[i]
        {
            return Err(format!(
                "{form:?} column {i}: {ty:?} without a finding was changed: {:?} became {:?}",
                String::from_utf8_lossy(before[i].as_deref().unwrap_or_default()),
                String::from_utf8_lossy(value)
            ));
        }
    }
    Ok(())
}

const FORMS: [Form; 8] = [
    Form::Row { binary: false },
    Form::Row { binary: true },
    Form::Copy {
        kind: CopyKind::Text,
        delimiter: b'\t',
    },
    Form::Copy {
        kind: CopyKind::Text,
        delimiter: b'|',
    },
    Form::Copy {
        kind: CopyKind::Text,
        delimiter: b',',
    },
    Form::Copy {
        kind: CopyKind::Csv,
        delimiter: b',',
    },
    Form::Copy {
        kind: CopyKind::Csv,
        delimiter: b';',
    },
    Form::Copy {
        kind: CopyKind::Binary,
        delimiter: b'\t',
    },
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// With every built-in detector on, each value of a random typed row comes out of the
    /// rewriter valid for its type and holding no finding, in every format; with the types
    /// known, values holding nothing come out as they went in.
    #[test]
    fn masked_values_stay_valid_for_their_types(row in row()) {
        for form in FORMS {
            round_trip(&row, form, true).map_err(TestCaseError::fail)?;
            if let Form::Copy { .. } = form {
                // `COPY (query)`: the types are not known.
                round_trip(&row, form, false).map_err(TestCaseError::fail)?;
            }
        }
    }
}

/// The test encoders write what the server writes (`numeric_send` of a few values).
#[test]
fn numeric_send_matches_the_server() {
    for (text, hex_value) in [
        (
            "4111111111111111.25",
            "0005000300000002100f04570457045709c4",
        ),
        ("-0.4111111111111111", "0004ffff40000010100f045704570457"),
        ("12000000", "000100010000000004b0"),
        ("0.5", "0001ffff000000011388"),
        ("0.000012", "0001fffe0000000604b0"),
        ("0", "0000000000000000"),
    ] {
        assert_eq!(hex::encode(numeric_send(text)), hex_value, "{text}");
    }
}

/// Random rows of the same kinds, from a fixed seed.
fn sample_rows(n: usize) -> Vec<Row> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[20; 32]),
    );
    let strategy = row();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

const COLUMNS: &str = "t text, v varchar, j json, jb jsonb, ip inet, net cidr, b bytea, n8 int8, \
                       num numeric, ta text[], jba jsonb[]";

/// Tables the masked output is loaded into, one per way it was read.
const COPIES: [&str; 8] = [
    "sel_text",
    "sel_binary",
    "copy_text",
    "copy_csv",
    "copy_binary",
    "query_text",
    "query_csv",
    "query_binary",
];

/// Rows with findings in every type, read through the gateway with psycopg (text and binary
/// results) and copied out (text, CSV and binary; of the table, and of a query whose types
/// the gateway does not know): the server loads every row of every way back, and no value
/// loaded holds a finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_rows_load_back_into_the_server() {
    let gw = gateway_on(Setup {
        masking: Some(all_detectors()),
        ..Setup::default()
    })
    .await;
    let rows = sample_rows(48);
    // The rows, as a binary COPY file the server loads (which also checks the encoders).
    let mut file = copy::BINARY_SIGNATURE.to_vec();
    file.extend([0; 8]);
    for (id, row) in rows.iter().enumerate() {
        let mut values = vec![Some((id as i32).to_be_bytes().to_vec())];
        values.extend(
            TYPES
                .iter()
                .zip(row)
                .map(|(ty, v)| v.as_ref().map(|v| binary_form(*ty, v))),
        );
        copy::write_binary_chunk(&[], [values], false, &mut file);
    }
    file.extend((-1i16).to_be_bytes());
    let path = gw.data.path().join("typed.bin");
    std::fs::write(&path, &file).unwrap();
    let mut setup = format!("SET ROLE app; CREATE TABLE typed (id int primary key, {COLUMNS});");
    for table in COPIES {
        setup.push_str(&format!(
            "CREATE TABLE {table} (id int primary key, {COLUMNS});"
        ));
    }
    tokio::task::block_in_place(|| {
        gw.pg.psql("appdb", &setup).unwrap();
        gw.pg
            .psql(
                "appdb",
                &format!("\\copy typed FROM '{}' (FORMAT binary)", path.display()),
            )
            .unwrap();
    });
    let original = findings_in(&gw, "typed");
    assert!(original > rows.len(), "the rows hold findings: {original}");

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/typed_masking.py");
    let through = format!(
        "host=127.0.0.1 port={} user=alice dbname=appdb password={KEY}",
        gw.port
    );
    let direct = format!(
        "host=127.0.0.1 port={} user={} dbname=appdb password={}",
        gw.pg.port, gw.pg.superuser, gw.pg.password
    );
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("python3")
            .arg(&script)
            .args([&through, &direct])
            .output()
            .unwrap()
    });
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "the driver failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("typed masking checks done"), "{stdout}");

    for table in COPIES {
        let count = tokio::task::block_in_place(|| {
            gw.pg
                .psql("appdb", &format!("SELECT count(*) FROM {table}"))
                .unwrap()
        });
        assert_eq!(count.trim(), rows.len().to_string(), "{table}");
        assert_eq!(findings_in(&gw, table), 0, "{table} holds findings");
    }
    let _ = gw.stop.send(true);
}

/// How many values of `table` (read straight from the server) hold a finding.
fn findings_in(gw: &Gateway, table: &str) -> usize {
    let sql = format!(
        "SELECT row_to_json(x) FROM (SELECT id, t, v, j, jb, ip::text, net::text, b, \
         n8::text, num::text, ta, jba FROM {table} ORDER BY id) x"
    );
    let out = tokio::task::block_in_place(|| gw.pg.psql("appdb", &sql).unwrap());
    let mut found = 0;
    for line in out.lines().filter(|l| !l.is_empty()) {
        let row: Json = serde_json::from_str(line).unwrap();
        for (column, value) in row.as_object().unwrap() {
            let clean = match (column.as_str(), value) {
                (_, Json::Null) => true,
                ("j" | "jb", v) => clean_json(v),
                ("jba", Json::Array(items)) => items.iter().all(clean_json),
                ("ta", Json::Array(items)) => items.iter().all(clean_json),
                ("b", Json::String(hex_text)) => {
                    let bytes = hex::decode(hex_text.trim_start_matches("\\x")).unwrap();
                    check_bytes(&bytes).is_ok()
                }
                ("ip" | "net" | "n8" | "num", Json::String(s)) => masker().find(s).is_empty(),
                (_, v) => clean_json(v),
            };
            found += usize::from(!clean);
        }
    }
    found
}
