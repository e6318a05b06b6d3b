//! PostgreSQL's built-in types as far as masking needs them: which values carry text, the
//! text and binary formats of arrays and records, so that values nested inside them can be
//! rewritten, and the text of the scalars whose binary format hides it (numbers,
//! addresses).

use std::ops::Range;

use crate::frame::DecodeError;
use crate::{finished, len_i32, patch_len, put_value, read_i32, read_u32, read_value};

/// How a value of a type is laid out, for masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeClass {
    /// Character data: the binary format is the string's bytes, the same as the text format.
    Text,
    /// `json`: the binary format is the JSON text.
    Json,
    /// `jsonb` and `jsonpath`: the binary format is a version byte (1) and then the text.
    Jsonb,
    /// `bytea`: the binary format is the raw bytes (the text format is `\x` hex or escapes).
    Bytea,
    /// Arrays: the binary format is walked by [`rewrite_binary_array`].
    Array,
    /// Records and catalog row types: the binary format is walked by [`rewrite_binary_record`].
    Record,
    /// Any other built-in type (numbers, times, network addresses, geometry, ...). Its binary
    /// format is a fixed layout, not text, although some still carry data a detector may care
    /// about (`inet` addresses, `tsvector` lexemes); the caller decides.
    Scalar,
    /// OIDs from 10000 up: types made by initdb after bootstrap (the `information_schema`
    /// domains), by extensions (`citext`) and by users (domains, enums, composites). The
    /// caller resolves them through `pg_type`.
    Unknown,
}

/// The class of a built-in type OID.
///
/// OIDs are those of `src/include/catalog/pg_type.dat`, checked against `pg_type` of a
/// PostgreSQL 15 server. Built-in OIDs are fixed across versions; a type added by a later
/// version and missing here falls to `Scalar`.
pub fn builtin_class(oid: u32) -> TypeClass {
    match oid {
        // "char" 18, name 19, text 25, xml 142, unknown 705, bpchar 1042, varchar 1043,
        // cstring 2275. refcursor 1790 (a cursor name) and pg_node_tree 194 (stored
        // expressions, constants included) send their text as is too.
        18 | 19 | 25 | 142 | 194 | 705 | 1042 | 1043 | 1790 | 2275 => TypeClass::Text,
        114 => TypeClass::Json,
        // jsonb 3802, jsonpath 4072.
        3802 | 4072 => TypeClass::Jsonb,
        17 => TypeClass::Bytea,
        // record 2249, and the row types of the bootstrap and shared catalogs, which have
        // fixed OIDs and are sent by record_send: pg_type 71, pg_attribute 75, pg_proc 81,
        // pg_class 83, pg_database 1248, pg_authid 2842, pg_auth_members 2843,
        // pg_shseclabel 4066, pg_subscription 6101.
        71 | 75 | 81 | 83 | 1248 | 2249 | 2842 | 2843 | 4066 | 6101 => TypeClass::Record,
        // Every type of category 'A' below 10000, i.e. the `_xxx` array types, plus
        // int2vector 22 and oidvector 30 (sent as 1-D arrays), and the pseudo-types anyarray
        // 2277 and anycompatiblearray 5078, whose values (e.g. pg_stats.most_common_vals)
        // are sent by array_send. Commonly met: _bool 1000, _bytea 1001, _char 1002,
        // _name 1003, _int2 1005, _int4 1007, _text 1009, _bpchar 1014, _varchar 1015,
        // _int8 1016, _float4 1021, _float8 1022, _oid 1028, _macaddr 1040, _inet 1041,
        // _timestamp 1115, _date 1182, _time 1183, _timestamptz 1185, _interval 1187,
        // _numeric 1231, _timetz 1270, _record 2287, _uuid 2951, _jsonb 3807, _json 199,
        // _xml 143, _cidr 651.
        22 | 30 | 143 | 199 | 210 | 270 | 271 | 272 | 273 | 629 | 651 | 719 | 775 | 791 | 1000
        | 1001 | 1002 | 1003 | 1005 | 1006 | 1007 | 1008 | 1009 | 1010 | 1011 | 1012 | 1013
        | 1014 | 1015 | 1016 | 1017 | 1018 | 1019 | 1020 | 1021 | 1022 | 1027 | 1028 | 1034
        | 1040 | 1041 | 1115 | 1182 | 1183 | 1185 | 1187 | 1231 | 1263 | 1270 | 1561 | 1563
        | 2201 | 2207 | 2208 | 2209 | 2210 | 2211 | 2277 | 2287 | 2949 | 2951 | 3221 | 3643
        | 3644 | 3645 | 3735 | 3770 | 3807 | 3905 | 3907 | 3909 | 3911 | 3913 | 3927 | 4073
        | 4090 | 4097 | 4192 | 5039 | 5078 | 6150 | 6151 | 6152 | 6153 | 6155 | 6157 => {
            TypeClass::Array
        }
        // FirstGenbkiObjectId: OIDs below it are assigned in the catalog sources.
        0..=9_999 => TypeClass::Scalar,
        _ => TypeClass::Unknown,
    }
}

/// Whether the text of a value of built-in type `oid` can never hold what a content
/// detector looks for (an e-mail address, a card number, a token ...): booleans, small
/// integers, floats, dates and times, intervals, UUIDs, transaction ids. Their output
/// functions write a fixed shape of digits and punctuation, so scanning them only finds
/// what is not there. `int8` and `numeric` are not among them: a card number fits in
/// either.
pub fn text_is_inert(oid: u32) -> bool {
    // bool 16, int2 21, int4 23, oid 26, xid 28, cid 29, float4 700, float8 701, date 1082,
    // time 1083, timestamp 1114, timestamptz 1184, interval 1186, timetz 1266, uuid 2950,
    // pg_lsn 3220, xid8 5069.
    matches!(
        oid,
        16 | 21
            | 23
            | 26
            | 28
            | 29
            | 700
            | 701
            | 1082
            | 1083
            | 1114
            | 1184
            | 1186
            | 1266
            | 2950
            | 3220
            | 5069
    )
}

/// The element type of a built-in array type (`_text` 1009 → `text` 25), from
/// `pg_type.typelem` of a PostgreSQL 15 server; `None` for other types and for arrays whose
/// element type is not fixed (`anyarray`).
pub fn array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        22 => 21,
        30 => 26,
        143 => 142,
        199 => 114,
        210 => 71,
        270 => 75,
        271 => 5069,
        272 => 81,
        273 => 83,
        629 => 628,
        651 => 650,
        719 => 718,
        775 => 774,
        791 => 790,
        1000 => 16,
        1001 => 17,
        1002 => 18,
        1003 => 19,
        1005 => 21,
        1006 => 22,
        1007 => 23,
        1008 => 24,
        1009 => 25,
        1010 => 27,
        1011 => 28,
        1012 => 29,
        1013 => 30,
        1014 => 1042,
        1015 => 1043,
        1016 => 20,
        1017 => 600,
        1018 => 601,
        1019 => 602,
        1020 => 603,
        1021 => 700,
        1022 => 701,
        1027 => 604,
        1028 => 26,
        1034 => 1033,
        1040 => 829,
        1041 => 869,
        1115 => 1114,
        1182 => 1082,
        1183 => 1083,
        1185 => 1184,
        1187 => 1186,
        1231 => 1700,
        1263 => 2275,
        1270 => 1266,
        1561 => 1560,
        1563 => 1562,
        2201 => 1790,
        2207 => 2202,
        2208 => 2203,
        2209 => 2204,
        2210 => 2205,
        2211 => 2206,
        2287 => 2249,
        2949 => 2970,
        2951 => 2950,
        3221 => 3220,
        3643 => 3614,
        3644 => 3642,
        3645 => 3615,
        3735 => 3734,
        3770 => 3769,
        3807 => 3802,
        3905 => 3904,
        3907 => 3906,
        3909 => 3908,
        3911 => 3910,
        3913 => 3912,
        3927 => 3926,
        4073 => 4072,
        4090 => 4089,
        4097 => 4096,
        4192 => 4191,
        5039 => 5038,
        6150 => 4451,
        6151 => 4532,
        6152 => 4533,
        6153 => 4534,
        6155 => 4535,
        6157 => 4536,
        _ => return None,
    })
}

/// The text a value of a built-in scalar type in binary format has in text format, for
/// the detectors: a card number kept as a bigint, an address as `inet`, arrive as bytes no
/// text scan would see. Integers (`int2`, `int4`, `int8`, `oid`), `numeric`, `inet`,
/// `cidr`, `macaddr`, `macaddr8`, `bit` and `varbit`; `None` for other types and for a
/// malformed value.
pub fn binary_text(oid: u32, value: &[u8]) -> Option<String> {
    match oid {
        21 => Some(i16::from_be_bytes(value.try_into().ok()?).to_string()),
        23 => Some(i32::from_be_bytes(value.try_into().ok()?).to_string()),
        26 => Some(u32::from_be_bytes(value.try_into().ok()?).to_string()),
        20 => Some(i64::from_be_bytes(value.try_into().ok()?).to_string()),
        1700 => numeric_text(value),
        650 | 869 => inet_text(value),
        829 | 774 if value.len() == if oid == 829 { 6 } else { 8 } => Some(
            value
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        1560 | 1562 => {
            // Int32 bit length, then the bits, high bit first.
            let (bits, rest) = read_i32(value).ok()?;
            let bits = usize::try_from(bits).ok()?;
            if rest.len() != bits.div_ceil(8) {
                return None;
            }
            Some(
                (0..bits)
                    .map(|i| {
                        if rest[i / 8] & (0x80 >> (i % 8)) != 0 {
                            '1'
                        } else {
                            '0'
                        }
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// `numeric_send`: Int16 ndigits, Int16 weight, Int16 sign, Int16 dscale, then ndigits
/// base-10000 digits, the first `weight + 1` of them before the decimal point; written as
/// `numeric_out` writes it.
fn numeric_text(value: &[u8]) -> Option<String> {
    let word = |at: usize| -> Option<i16> {
        Some(i16::from_be_bytes(value.get(at..at + 2)?.try_into().ok()?))
    };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = i32::from(word(2)?);
    let sign = word(4)? as u16;
    let dscale = usize::try_from(word(6)?).ok()?;
    if value.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => return None,
    }
    let digit = |group: i32| -> Option<i16> {
        match usize::try_from(group).ok().filter(|g| *g < ndigits) {
            Some(g) => word(8 + 2 * g).filter(|d| (0..10_000).contains(d)),
            None => Some(0),
        }
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    }
    for group in 0..=weight {
        let d = digit(group)?;
        if group == 0 {
            text.push_str(&d.to_string());
        } else {
            text.push_str(&format!("{d:04}"));
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut group = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(group)?));
            group += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Some(text)
}

/// `inet_send` / `cidr_send`: family (2 for IPv4, 3 for IPv6), prefix bits, whether it is
/// a `cidr`, the address length, the address; written as `inet_out` writes it (the prefix
/// after a `/` unless an `inet` covers one host; IPv6 with an embedded IPv4 address in
/// dotted form).
fn inet_text(value: &[u8]) -> Option<String> {
    let [family, bits, is_cidr, len, address @ ..] = value else {
        return None;
    };
    let (text, max) = match (family, len, address.len()) {
        (2, 4, 4) => {
            let a: [u8; 4] = address.try_into().ok()?;
            (std::net::Ipv4Addr::from(a).to_string(), 32)
        }
        (3, 16, 16) => {
            let a: [u8; 16] = address.try_into().ok()?;
            let v6 = std::net::Ipv6Addr::from(a);
            let w = v6.segments();
            let v4 = || std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]);
            let text = if w[..6] == [0; 6] && w[6] != 0 {
                format!("::{}", v4())
            } else if w[..5] == [0; 5] && w[5] == 0xffff {
                format!("::ffff:{}", v4())
            } else {
                v6.to_string()
            };
            (text, 128)
        }
        _ => return None,
    };
    if *bits > max || *is_cidr > 1 {
        return None;
    }
    Some(if *is_cidr == 1 || *bits != max {
        format!("{text}/{bits}")
    } else {
        text
    })
}

/// Rewrites the elements of an array in text format (`array_out`: `{a,"b c",NULL}`, nested
/// braces for more dimensions, optionally after bounds like `[0:1]=`), with `delimiter`
/// between elements (`,`; `;` for `box`).
///
/// `leaf` is called with the text of each non-NULL element, quotes and backslash escapes
/// undone. A replacement is written quoted, so any text is read back as it is; `Null`
/// writes `NULL`. When something changed, the new value is appended to `out` and
/// `Ok(true)` returned; otherwise (and on error) `out` is left as it was.
pub fn rewrite_text_array(
    value: &str,
    delimiter: u8,
    leaf: &mut dyn FnMut(&str) -> Leaf,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    let start = out.len();
    let result = text_array(value, delimiter, leaf, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn text_array(
    value: &str,
    delimiter: u8,
    leaf: &mut dyn FnMut(&str) -> Leaf,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    let bad = |why| Err(DecodeError::Malformed(why));
    let b = value.as_bytes();
    let mut at = skip_space(b, 0);
    // Bounds: `[lower:upper]` per dimension, then `=`.
    if b.get(at) == Some(&b'[') {
        let eq = b
            .iter()
            .position(|c| *c == b'=')
            .ok_or(DecodeError::Malformed("array bounds without '='"))?;
        if !b[at..eq]
            .iter()
            .all(|c| c.is_ascii_digit() || b"[]:-+ ".contains(c))
        {
            return bad("malformed array bounds");
        }
        at = skip_space(b, eq + 1);
    }
    let mut copy = TextCopy::new(out, false);
    let mut depth = 0;
    // Whether the last thing read was an opening brace (where `}` closes an empty array).
    let mut opened = false;
    loop {
        // An element, a nested array, or the end of an empty one.
        at = skip_space(b, at);
        match b.get(at) {
            Some(b'{') => {
                depth += 1;
                if depth > MAX_DIMS {
                    return bad("array has more than 6 dimensions");
                }
                at += 1;
                opened = true;
                continue;
            }
            Some(b'}') if opened => {}
            None => return bad("array ends early"),
            Some(_) if depth == 0 => return bad("array must start with '{'"),
            Some(_) => {
                let (element, end) = text_element(b, at, delimiter)?;
                if let Some(text) = element {
                    let text = String::from_utf8(text)
                        .map_err(|_| DecodeError::Malformed("array element is not UTF-8"))?;
                    match leaf(&text) {
                        Leaf::Keep => {}
                        Leaf::Replace(new) => copy.replace(b, at..end, Some(&new), out),
                        Leaf::Null => copy.replace(b, at..end, None, out),
                    }
                }
                at = end;
            }
        }
        opened = false;
        // After an element: a delimiter, or closing braces.
        loop {
            at = skip_space(b, at);
            if depth == 0 {
                if at != b.len() {
                    return bad("data after the array");
                }
                return Ok(copy.finish(b, out));
            }
            match b.get(at) {
                Some(b'}') => {
                    depth -= 1;
                    at += 1;
                }
                Some(c) if *c == delimiter => {
                    at += 1;
                    break;
                }
                _ => return bad("array element not followed by a delimiter"),
            }
        }
    }
}

/// One array element at `at`: its bytes with quotes and escapes undone (`None` for an
/// unquoted `NULL`), and where it ends.
fn text_element(
    b: &[u8],
    mut at: usize,
    delimiter: u8,
) -> Result<(Option<Vec<u8>>, usize), DecodeError> {
    let mut text = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    // The end of the text written outside quotes and not trailing space.
    let mut end = at;
    let mut kept = 0;
    loop {
        let Some(&c) = b.get(at) else {
            return Err(DecodeError::Malformed("array element ends early"));
        };
        match c {
            b'\\' => {
                let next = *b
                    .get(at + 1)
                    .ok_or(DecodeError::Malformed("array ends in an escape"))?;
                text.push(next);
                escaped = true;
                at += 2;
                kept = text.len();
                end = at;
            }
            b'"' => {
                quoted = true;
                at += 1;
                loop {
                    match b.get(at) {
                        Some(b'"') => break,
                        Some(b'\\') => {
                            text.push(
                                *b.get(at + 1)
                                    .ok_or(DecodeError::Malformed("array ends in an escape"))?,
                            );
                            at += 2;
                        }
                        Some(c) => {
                            text.push(*c);
                            at += 1;
                        }
                        None => return Err(DecodeError::Malformed("array quote left open")),
                    }
                }
                at += 1;
                kept = text.len();
                end = at;
            }
            b'{' => return Err(DecodeError::Malformed("unexpected '{' in an array element")),
            b'}' => break,
            c if c == delimiter => break,
            c => {
                text.push(c);
                at += 1;
                if !c.is_ascii_whitespace() {
                    kept = text.len();
                    end = at;
                }
            }
        }
    }
    // Unquoted trailing space is not part of the element.
    text.truncate(kept);
    if !quoted && !escaped && text.eq_ignore_ascii_case(b"NULL") {
        return Ok((None, end));
    }
    if !quoted && !escaped && text.is_empty() {
        return Err(DecodeError::Malformed("empty array element"));
    }
    Ok((Some(text), end))
}

fn skip_space(b: &[u8], mut at: usize) -> usize {
    while b.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Rewrites the fields of a record in text format (`record_out`: `(a,"b c",)`, an empty
/// field being NULL), like [`rewrite_text_array`]: `leaf` gets each non-NULL field's text
/// with quotes and escapes undone; a replacement is written quoted, `Null` as nothing.
pub fn rewrite_text_record(
    value: &str,
    leaf: &mut dyn FnMut(&str) -> Leaf,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    let start = out.len();
    let result = text_record(value, leaf, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn text_record(
    value: &str,
    leaf: &mut dyn FnMut(&str) -> Leaf,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    let b = value.as_bytes();
    let mut at = skip_space(b, 0);
    if b.get(at) != Some(&b'(') {
        return Err(DecodeError::Malformed("record must start with '('"));
    }
    at += 1;
    let mut copy = TextCopy::new(out, true);
    loop {
        let field_start = at;
        let mut text = Vec::new();
        let mut null = true;
        loop {
            match b.get(at) {
                None => return Err(DecodeError::Malformed("record ends early")),
                Some(b',' | b')') => break,
                Some(b'\\') => {
                    text.push(
                        *b.get(at + 1)
                            .ok_or(DecodeError::Malformed("record ends in an escape"))?,
                    );
                    at += 2;
                }
                Some(b'"') => {
                    at += 1;
                    loop {
                        match (b.get(at), b.get(at + 1)) {
                            (Some(b'"'), Some(b'"')) => {
                                text.push(b'"');
                                at += 2;
                            }
                            (Some(b'"'), _) => break,
                            (Some(b'\\'), Some(c)) => {
                                text.push(*c);
                                at += 2;
                            }
                            (Some(c), _) => {
                                text.push(*c);
                                at += 1;
                            }
                            (None, _) => {
                                return Err(DecodeError::Malformed("record quote left open"));
                            }
                        }
                    }
                    at += 1;
                }
                Some(c) => {
                    text.push(*c);
                    at += 1;
                }
            }
            null = false;
        }
        if !null {
            let text = String::from_utf8(text)
                .map_err(|_| DecodeError::Malformed("record field is not UTF-8"))?;
            match leaf(&text) {
                Leaf::Keep => {}
                Leaf::Replace(new) => copy.replace(b, field_start..at, Some(&new), out),
                Leaf::Null => copy.replace(b, field_start..at, None, out),
            }
        }
        let end = b[at];
        at += 1;
        if end == b')' {
            break;
        }
    }
    if skip_space(b, at) != b.len() {
        return Err(DecodeError::Malformed("data after the record"));
    }
    Ok(copy.finish(b, out))
}

/// A text value being rewritten into `out`, copied only from its first change.
struct TextCopy {
    start: usize,
    /// A record writes NULL as nothing; an array as `NULL`.
    record: bool,
    /// How much of the value is reflected in `out`; `None` while nothing has changed.
    copied: Option<usize>,
}

impl TextCopy {
    fn new(out: &[u8], record: bool) -> TextCopy {
        TextCopy {
            start: out.len(),
            record,
            copied: None,
        }
    }

    /// Replaces `range` of `value` by `new` written quoted (quotes and backslashes escaped
    /// with a backslash, which arrays and records both read), or by the format's NULL.
    fn replace(
        &mut self,
        value: &[u8],
        range: Range<usize>,
        new: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(&value[self.copied.unwrap_or(0)..range.start]);
        self.copied = Some(range.end);
        match new {
            None if self.record => {}
            None => out.extend_from_slice(b"NULL"),
            Some(new) => {
                out.push(b'"');
                for &c in new {
                    if c == b'"' || c == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(c);
                }
                out.push(b'"');
            }
        }
    }

    /// Copies the rest if anything changed; returns whether it did.
    fn finish(self, value: &[u8], out: &mut Vec<u8>) -> bool {
        match self.copied {
            None => {
                debug_assert_eq!(out.len(), self.start);
                false
            }
            Some(at) => {
                out.extend_from_slice(&value[at..]);
                true
            }
        }
    }
}

/// What to do with one leaf value found inside an array or record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    Keep,
    /// Replace the value's bytes (in the element type's binary format).
    Replace(Vec<u8>),
    /// Make the value SQL NULL.
    Null,
}

/// Deepest nesting walked. Real values nest a few levels; the bound keeps a hostile value
/// from exhausting the stack.
const MAX_DEPTH: usize = 100;

/// PostgreSQL's MAXDIM.
const MAX_DIMS: i32 = 6;

/// Rewrites the leaves of an array in binary format.
///
/// Layout: `Int32` ndim, `Int32` has-nulls flag, `Oid` element type, ndim × (`Int32` length,
/// `Int32` lower bound), then every element as `Int32` length (-1 for NULL) and bytes.
///
/// `leaf` is called with the element type and bytes of each non-NULL element, except that
/// elements which are themselves arrays or records (by [`builtin_class`]) are walked with
/// the same callback. When something changed, the new value is appended to `out` and
/// `Ok(true)` returned. Otherwise (and on error) `out` is left as it was: keep the input.
/// An unchanged value is only read, never copied.
pub fn rewrite_binary_array(
    value: &[u8],
    leaf: &mut dyn FnMut(u32, &[u8]) -> Leaf,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    rewrite(TypeClass::Array, value, leaf, out)
}

/// Rewrites the leaves of a record in binary format, like [`rewrite_binary_array`].
///
/// Layout: `Int32` field count, then per field `Oid` type, `Int32` length (-1 for NULL) and
/// bytes.
pub fn rewrite_binary_record(
    value: &[u8],
    leaf: &mut dyn FnMut(u32, &[u8]) -> Leaf,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    rewrite(TypeClass::Record, value, leaf, out)
}

fn rewrite(
    class: TypeClass,
    value: &[u8],
    leaf: &mut dyn FnMut(u32, &[u8]) -> Leaf,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    let start = out.len();
    let result = walk(class, value, leaf, out, 0);
    // An error can come after part of the value was written.
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn walk(
    class: TypeClass,
    value: &[u8],
    leaf: &mut dyn FnMut(u32, &[u8]) -> Leaf,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<bool, DecodeError> {
    if depth >= MAX_DEPTH {
        return Err(DecodeError::Malformed("value nested too deeply"));
    }
    match class {
        TypeClass::Array => array(value, leaf, out, depth),
        _ => record(value, leaf, out, depth),
    }
}

fn array(
    value: &[u8],
    leaf: &mut dyn FnMut(u32, &[u8]) -> Leaf,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<bool, DecodeError> {
    let (ndim, rest) = read_i32(value)?;
    if !(0..=MAX_DIMS).contains(&ndim) {
        return Err(DecodeError::Malformed("array must have 0 to 6 dimensions"));
    }
    let (has_nulls, rest) = read_i32(rest)?;
    if has_nulls != 0 && has_nulls != 1 {
        return Err(DecodeError::Malformed("array null flag must be 0 or 1"));
    }
    let (element_oid, mut rest) = read_u32(rest)?;
    let mut count: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim {
        let (dim, r) = read_i32(rest)?;
        let (_lower_bound, r) = read_i32(r)?;
        let dim =
            usize::try_from(dim).map_err(|_| DecodeError::Malformed("negative array dimension"))?;
        count = count
            .checked_mul(dim)
            .ok_or(DecodeError::Malformed("array has too many elements"))?;
        rest = r;
    }
    let mut rewrite = Rewrite::new(value, out);
    let mut made_null = false;
    // A count larger than the data ends at the first missing length, so this loop is bounded
    // by the value's size whatever the dimensions claim.
    for _ in 0..count {
        let len_at = value.len() - rest.len();
        let (element, r) = read_value(rest)?;
        made_null |= rewrite.element(element_oid, len_at, element, leaf, out, depth)?;
        rest = r;
    }
    finished(rest)?;
    let start = rewrite.start;
    let changed = rewrite.finish(out);
    if changed && made_null {
        // Readers may trust the flag to skip looking for NULLs.
        out[start + 4..start + 8].copy_from_slice(&1i32.to_be_bytes());
    }
    Ok(changed)
}

fn record(
    value: &[u8],
    leaf: &mut dyn FnMut(u32, &[u8]) -> Leaf,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<bool, DecodeError> {
    let (count, mut rest) = read_i32(value)?;
    let count =
        usize::try_from(count).map_err(|_| DecodeError::Malformed("negative field count"))?;
    let mut rewrite = Rewrite::new(value, out);
    for _ in 0..count {
        let (oid, r) = read_u32(rest)?;
        let len_at = value.len() - r.len();
        let (field, r) = read_value(r)?;
        rewrite.element(oid, len_at, field, leaf, out, depth)?;
        rest = r;
    }
    finished(rest)?;
    Ok(rewrite.finish(out))
}

/// An array or record being rewritten into `out`. Nothing is written until an element
/// changes; then the unchanged bytes before it are copied once, and from there `out` keeps
/// up with the walk. Positions are offsets into `value`.
struct Rewrite<'v> {
    value: &'v [u8],
    /// Where this value's copy begins in `out`.
    start: usize,
    /// How much of `value` is reflected in `out`; `None` while nothing has changed.
    copied: Option<usize>,
}

impl<'v> Rewrite<'v> {
    fn new(value: &'v [u8], out: &[u8]) -> Self {
        Rewrite {
            value,
            start: out.len(),
            copied: None,
        }
    }

    /// Copies the bytes of `value` not yet reflected in `out`, up to `upto`.
    fn copy_to(&mut self, upto: usize, out: &mut Vec<u8>) {
        let from = self.copied.unwrap_or(0);
        out.extend_from_slice(&self.value[from..upto]);
        self.copied = Some(upto);
    }

    /// Handles the element whose length is at `len_at`; returns whether it became NULL.
    fn element(
        &mut self,
        oid: u32,
        len_at: usize,
        element: Option<&[u8]>,
        leaf: &mut dyn FnMut(u32, &[u8]) -> Leaf,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<bool, DecodeError> {
        // NULL stays NULL: there is nothing in it to mask.
        let Some(bytes) = element else {
            return Ok(false);
        };
        let end = len_at + 4 + bytes.len();
        let class = builtin_class(oid);
        if let TypeClass::Array | TypeClass::Record = class {
            self.nested(class, len_at, bytes, leaf, out, depth)?;
            return Ok(false);
        }
        let replacement = match leaf(oid, bytes) {
            Leaf::Keep => return Ok(false),
            Leaf::Replace(new) => Some(new),
            Leaf::Null => None,
        };
        self.copy_to(len_at, out);
        put_value(out, replacement.as_deref());
        self.copied = Some(end);
        Ok(replacement.is_none())
    }

    /// Walks an element that is itself an array or record.
    fn nested(
        &mut self,
        class: TypeClass,
        len_at: usize,
        bytes: &[u8],
        leaf: &mut dyn FnMut(u32, &[u8]) -> Leaf,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), DecodeError> {
        let end = len_at + 4 + bytes.len();
        if self.copied.is_some() {
            // Already rewriting: the element goes right after what is copied so far, behind
            // a length filled in once it is known.
            self.copy_to(len_at, out);
            let len_pos = out.len();
            out.extend_from_slice(&[0; 4]);
            if walk(class, bytes, leaf, out, depth + 1)? {
                let len = out.len() - len_pos - 4;
                patch_len(out, len_pos, len);
                self.copied = Some(end);
            } else {
                // Unchanged: it is copied as is with the bytes after it.
                out.truncate(len_pos);
            }
        } else {
            let mark = out.len();
            if walk(class, bytes, leaf, out, depth + 1)? {
                // The first change, written before the unchanged bytes that must precede it:
                // append those and the new length, then rotate them in front. This happens
                // once per value; copying the prefix before every nested walk instead would
                // copy it again for each unchanged element.
                let nested_len = out.len() - mark;
                self.copy_to(len_at, out);
                out.extend_from_slice(&len_i32(nested_len).to_be_bytes());
                out[mark..].rotate_left(nested_len);
                self.copied = Some(end);
            }
        }
        Ok(())
    }

    /// Copies the rest of the value if anything changed; returns whether it did.
    fn finish(mut self, out: &mut Vec<u8>) -> bool {
        if self.copied.is_none() {
            return false;
        }
        self.copy_to(self.value.len(), out);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test builders for the binary formats, checked against PostgreSQL's output below.
    fn array(element_oid: u32, dims: &[i32], elements: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (dims.len() as i32).to_be_bytes().to_vec();
        out.extend((elements.iter().any(Option::is_none) as i32).to_be_bytes());
        out.extend(element_oid.to_be_bytes());
        for dim in dims {
            out.extend(dim.to_be_bytes());
            out.extend(1i32.to_be_bytes());
        }
        for element in elements {
            put_value(&mut out, *element);
        }
        out
    }

    fn record(fields: &[(u32, Option<&[u8]>)]) -> Vec<u8> {
        let mut out = (fields.len() as i32).to_be_bytes().to_vec();
        for (oid, value) in fields {
            out.extend(oid.to_be_bytes());
            put_value(&mut out, *value);
        }
        out
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Replaces every text leaf with its upper-case form, keeps the rest.
    fn upper(oid: u32, bytes: &[u8]) -> Leaf {
        match builtin_class(oid) {
            TypeClass::Text => Leaf::Replace(bytes.to_ascii_uppercase()),
            _ => Leaf::Keep,
        }
    }

    fn rewrite_array(value: &[u8], leaf: impl FnMut(u32, &[u8]) -> Leaf) -> Option<Vec<u8>> {
        let mut leaf = leaf;
        let mut out = Vec::new();
        let changed = rewrite_binary_array(value, &mut leaf, &mut out).unwrap();
        assert_eq!(changed, !out.is_empty());
        changed.then_some(out)
    }

    fn rewrite_record(value: &[u8], leaf: impl FnMut(u32, &[u8]) -> Leaf) -> Option<Vec<u8>> {
        let mut leaf = leaf;
        let mut out = Vec::new();
        let changed = rewrite_binary_record(value, &mut leaf, &mut out).unwrap();
        assert_eq!(changed, !out.is_empty());
        changed.then_some(out)
    }

    /// Binary values read as the text PostgreSQL writes for them (the hex is
    /// `numeric_send`, `inet_send`, ... of a PostgreSQL 15 server).
    #[test]
    fn scalars_in_binary_read_as_their_text() {
        let card = 4_111_111_111_111_111i64;
        assert_eq!(
            binary_text(20, &card.to_be_bytes()).as_deref(),
            Some("4111111111111111")
        );
        assert_eq!(
            binary_text(23, &(-7i32).to_be_bytes()).as_deref(),
            Some("-7")
        );
        assert_eq!(binary_text(21, &7i16.to_be_bytes()).as_deref(), Some("7"));
        for (hex_value, text) in [
            (
                "0005000300000002100f04570457045709c4",
                "4111111111111111.25",
            ),
            ("0004ffff40000010100f045704570457", "-0.4111111111111111"),
            ("000100010000000004b0", "12000000"),
            ("0001ffff000000011388", "0.5"),
            ("00000000c0000000", "NaN"),
            ("00000000f0000020", "-Infinity"),
            ("0001fffe0000000604b0", "0.000012"),
            ("0001fffb000000140001", "0.00000000000000000001"),
            ("0000000000000000", "0"),
        ] {
            assert_eq!(binary_text(1700, &hex(hex_value)).as_deref(), Some(text));
        }
        for (oid, hex_value, text) in [
            (869, "02200004c0a80105", "192.168.1.5"),
            (869, "020800040a000000", "10.0.0.0/8"),
            (650, "020801040a000000", "10.0.0.0/8"),
            (650, "02200104c0a80105", "192.168.1.5/32"),
            (
                869,
                "0340001020010db8000000000000000000000001",
                "2001:db8::1/64",
            ),
            (869, "0380001000000000000000000000000001020304", "::1.2.3.4"),
            (
                869,
                "0380001000000000000000000000ffff01020304",
                "::ffff:1.2.3.4",
            ),
            (869, "0380001000000000000000000000000000000102", "::102"),
            (869, "0380001000000000000000000000000000000001", "::1"),
            (
                650,
                "0320011020010db8000000000000000000000000",
                "2001:db8::/32",
            ),
            (774, "08002b0102030405", "08:00:2b:01:02:03:04:05"),
            (829, "08002b010203", "08:00:2b:01:02:03"),
            (1562, "00000005b0", "10110"),
        ] {
            assert_eq!(
                binary_text(oid, &hex(hex_value)).as_deref(),
                Some(text),
                "{hex_value}"
            );
        }
        // Malformed: wrong lengths, families, signs, digits.
        for (oid, hex_value) in [
            (1700, "0001"),
            (1700, "000100000000000004"),
            (1700, "0001000012340000"),
            (1700, "00010000000000002710"),
            (869, "022000"),
            (869, "042000040a000001"),
            (869, "02210004c0a80105"),
            (869, "02200204c0a80105"),
            (829, "08002b01"),
            (1562, "00000009b0"),
        ] {
            assert_eq!(binary_text(oid, &hex(hex_value)), None, "{oid} {hex_value}");
        }
        assert_eq!(binary_text(20, &[0; 4]), None);
        assert_eq!(binary_text(1184, &[0; 8]), None, "no text for other types");
    }

    fn text_array(value: &str, leaf: impl FnMut(&str) -> Leaf) -> Option<String> {
        let mut leaf = leaf;
        let mut out = b"before".to_vec();
        let changed = rewrite_text_array(value, b',', &mut leaf, &mut out).unwrap();
        assert_eq!(changed, out.len() > 6);
        changed.then(|| String::from_utf8(out[6..].to_vec()).unwrap())
    }

    /// Arrays in text format as `array_out` writes them: elements are read with quotes and
    /// escapes undone, replacements written quoted.
    #[test]
    fn text_arrays_read_and_rewrite_their_elements() {
        let value = r#"{a,NULL,"b c","","NULL","x\"y\\z"," sp "}"#;
        let mut seen = Vec::new();
        assert_eq!(
            text_array(value, |e| {
                seen.push(e.to_string());
                Leaf::Keep
            }),
            None
        );
        assert_eq!(seen, ["a", "b c", "", "NULL", "x\"y\\z", " sp "]);
        assert_eq!(
            text_array(value, |e| match e {
                "b c" => Leaf::Replace(b"new \"one\"".to_vec()),
                "x\"y\\z" => Leaf::Null,
                _ => Leaf::Keep,
            })
            .as_deref(),
            Some(r#"{a,NULL,"new \"one\"","","NULL",NULL," sp "}"#)
        );
        // Bounds, nested dimensions, space around unquoted elements, escapes outside quotes.
        assert_eq!(
            text_array("[0:1]={1,2}", |e| Leaf::Replace(
                format!("<{e}>").into_bytes()
            ))
            .as_deref(),
            Some(r#"[0:1]={"<1>","<2>"}"#)
        );
        assert_eq!(
            text_array("{{a,b},{c,d}}", |e| match e {
                "d" => Leaf::Null,
                _ => Leaf::Keep,
            })
            .as_deref(),
            Some("{{a,b},{c,NULL}}")
        );
        let mut seen = Vec::new();
        text_array(r#"{ a b , c\,d ,{}}"#, |e| {
            seen.push(e.to_string());
            Leaf::Keep
        });
        assert_eq!(seen, ["a b", "c,d"]);
        assert_eq!(text_array("{}", |_| Leaf::Null), None);
        // Boxes are separated by semicolons.
        let mut out = Vec::new();
        let mut boxes = Vec::new();
        rewrite_text_array(
            "{(3,4),(1,2);(1,1),(0,0)}",
            b';',
            &mut |e| {
                boxes.push(e.to_string());
                Leaf::Keep
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(boxes, ["(3,4),(1,2)", "(1,1),(0,0)"]);
        for bad in [
            "",
            "{",
            "{a",
            "{a,}",
            "{\"a}",
            "a",
            "{a}b",
            "{{{{{{{a}}}}}}}",
            "{a\\",
            "[1:2]{a}",
        ] {
            let mut out = b"kept".to_vec();
            assert!(
                rewrite_text_array(bad, b',', &mut |_| Leaf::Null, &mut out).is_err(),
                "{bad}"
            );
            assert_eq!(out, b"kept");
        }
    }

    /// Records in text format as `record_out` writes them: an empty field is NULL, a quoted
    /// empty one the empty string; replacements are written quoted, NULL as nothing.
    #[test]
    fn text_records_read_and_rewrite_their_fields() {
        let value = r#"(a,,"","x""y\\z","b c",1)"#;
        let mut seen = Vec::new();
        let mut out = Vec::new();
        let changed = rewrite_text_record(
            value,
            &mut |f| {
                seen.push(f.to_string());
                match f {
                    "b c" => Leaf::Replace(b"q\"".to_vec()),
                    "1" => Leaf::Null,
                    _ => Leaf::Keep,
                }
            },
            &mut out,
        )
        .unwrap();
        assert!(changed);
        assert_eq!(seen, ["a", "", "x\"y\\z", "b c", "1"]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"(a,,"","x""y\\z","q\"",)"#
        );
        for bad in ["", "(", "(a", "a", "(a)b", "(\"a)"] {
            let mut out = b"kept".to_vec();
            assert!(
                rewrite_text_record(bad, &mut |_| Leaf::Null, &mut out).is_err(),
                "{bad}"
            );
            assert_eq!(out, b"kept");
        }
    }

    #[test]
    fn every_builtin_array_knows_its_element() {
        for oid in 0..10_000 {
            let array = builtin_class(oid) == TypeClass::Array;
            // anyarray and anycompatiblearray hold elements of any type.
            let fixed = !matches!(oid, 2277 | 5078);
            assert_eq!(array_element(oid).is_some(), array && fixed, "{oid}");
        }
    }

    #[test]
    fn builtin_classes() {
        for oid in [25, 1043, 1042, 19, 18, 142, 705, 2275] {
            assert_eq!(builtin_class(oid), TypeClass::Text, "{oid}");
        }
        assert_eq!(builtin_class(114), TypeClass::Json);
        assert_eq!(builtin_class(3802), TypeClass::Jsonb);
        assert_eq!(builtin_class(4072), TypeClass::Jsonb);
        assert_eq!(builtin_class(17), TypeClass::Bytea);
        assert_eq!(builtin_class(2249), TypeClass::Record);
        for oid in [
            1009, 1015, 1014, 1003, 199, 3807, 1000, 1005, 1007, 1016, 1021, 1022, 1231, 1182,
            1115, 1185, 2951, 1001, 1041, 651, 143, 2287, 1183, 1270, 1187, 1040, 1028, 1002,
        ] {
            assert_eq!(builtin_class(oid), TypeClass::Array, "{oid}");
        }
        // numeric, int2/4/8, float4/8, bool, date, time, timestamp(tz), interval, uuid, oid,
        // money, inet, cidr, macaddr, bit, varbit, tsvector, point, regclass, regtype.
        for oid in [
            1700, 21, 23, 20, 700, 701, 16, 1082, 1083, 1114, 1184, 1186, 2950, 26, 790, 869, 650,
            829, 1560, 1562, 3614, 600, 2205, 2206,
        ] {
            assert_eq!(builtin_class(oid), TypeClass::Scalar, "{oid}");
        }
        for oid in [10_000, 16_384, 99_999, u32::MAX] {
            assert_eq!(builtin_class(oid), TypeClass::Unknown, "{oid}");
        }
    }

    #[test]
    fn builders_match_postgres() {
        // SELECT array_send(ARRAY['a',NULL]::text[])
        assert_eq!(
            array(25, &[2], &[Some(b"a"), None]),
            hex("00000001000000010000001900000002000000010000000161ffffffff")
        );
        // SELECT array_send(ARRAY[['a','bc'],['d',NULL]]::text[])
        assert_eq!(
            array(25, &[2, 2], &[Some(b"a"), Some(b"bc"), Some(b"d"), None]),
            hex(concat!(
                "000000020000000100000019000000020000000100000002000000010000000161",
                "0000000262630000000164ffffffff"
            ))
        );
        // SELECT array_send('{}'::text[])
        assert_eq!(array(25, &[], &[]), hex("000000000000000000000019"));
        // SELECT record_send(ROW('x',1)): the literal's type is unknown (705).
        let x1 = record(&[(705, Some(b"x")), (23, Some(&1i32.to_be_bytes()))]);
        assert_eq!(
            x1,
            hex("00000002000002c10000000178000000170000000400000001")
        );
        // SELECT array_send(ARRAY[ROW('x',1),ROW('yz',NULL)]): the untyped NULL is unknown.
        let yz = record(&[(705, Some(b"yz")), (705, None)]);
        assert_eq!(
            array(2249, &[2], &[Some(&x1), Some(&yz)]),
            hex(concat!(
                "0000000100000000000008c900000002000000010000001900000002000002c1",
                "00000001780000001700000004000000010000001600000002000002c1000000",
                "02797a000002c1ffffffff"
            ))
        );
        // SELECT record_send(ROW(ARRAY['p','q'], 'r'::text))
        assert_eq!(
            record(&[
                (1009, Some(&array(25, &[2], &[Some(b"p"), Some(b"q")]))),
                (25, Some(b"r")),
            ]),
            hex(concat!(
                "00000002000003f10000001e0000000100000000000000190000000200000001",
                "00000001700000000171000000190000000172"
            ))
        );
    }

    #[test]
    fn text_array_with_a_null() {
        let value = array(25, &[2], &[Some(b"a"), None]);
        assert_eq!(rewrite_array(&value, |_, _| Leaf::Keep), None);
        assert_eq!(
            rewrite_array(&value, upper),
            Some(array(25, &[2], &[Some(b"A"), None]))
        );
        let longer = rewrite_array(&value, |_, _| Leaf::Replace(b"[redacted]".to_vec()));
        assert_eq!(longer, Some(array(25, &[2], &[Some(b"[redacted]"), None])));
        // The callback sees non-NULL elements only, with the element type.
        let mut seen = Vec::new();
        rewrite_array(&value, |oid, bytes| {
            seen.push((oid, bytes.to_vec()));
            Leaf::Keep
        });
        assert_eq!(seen, [(25, b"a".to_vec())]);
    }

    #[test]
    fn nulling_an_element_sets_the_null_flag() {
        let value = array(25, &[2], &[Some(b"a"), Some(b"b")]);
        assert_eq!(value[7], 0);
        let nulled = rewrite_array(&value, |_, b| match b {
            b"b" => Leaf::Null,
            _ => Leaf::Keep,
        });
        assert_eq!(nulled, Some(array(25, &[2], &[Some(b"a"), None])));
        assert_eq!(nulled.unwrap()[7], 1);
    }

    #[test]
    fn lower_bounds_survive() {
        // SELECT array_send('[0:1]={7,8}'::int4[])
        let value = hex("000000010000000000000017000000020000000000000004000000070000000400000008");
        let nulled = rewrite_array(&value, |_, b| match b {
            [0, 0, 0, 7] => Leaf::Null,
            _ => Leaf::Keep,
        });
        // ndim 1, null flag now 1, int4, length 2 from 0, then NULL and 8.
        let expected = concat!(
            "00000001", "00000001", "00000017", "00000002", "00000000", "ffffffff", "00000004",
            "00000008"
        );
        assert_eq!(nulled, Some(hex(expected)));
    }

    #[test]
    fn two_dimensional_array() {
        let value = array(25, &[2, 2], &[Some(b"a"), Some(b"bc"), Some(b"d"), None]);
        assert_eq!(
            rewrite_array(&value, upper),
            Some(array(
                25,
                &[2, 2],
                &[Some(b"A"), Some(b"BC"), Some(b"D"), None]
            ))
        );
        let only_last = rewrite_array(&value, |_, b| match b {
            b"d" => Leaf::Replace(b"dddd".to_vec()),
            _ => Leaf::Keep,
        });
        assert_eq!(
            only_last,
            Some(array(
                25,
                &[2, 2],
                &[Some(b"a"), Some(b"bc"), Some(b"dddd"), None]
            ))
        );
    }

    #[test]
    fn empty_array() {
        let value = array(25, &[], &[]);
        let mut calls = 0;
        assert_eq!(
            rewrite_array(&value, |_, _| {
                calls += 1;
                Leaf::Null
            }),
            None
        );
        assert_eq!(calls, 0);
        // A zero-length dimension holds no elements either.
        assert_eq!(
            rewrite_array(&array(25, &[0], &[]), |_, _| Leaf::Null),
            None
        );
    }

    #[test]
    fn array_of_records() {
        let one = 1i32.to_be_bytes();
        let value = array(
            2249,
            &[2],
            &[
                Some(&record(&[(705, Some(b"x")), (23, Some(&one))])),
                Some(&record(&[(705, Some(b"yz")), (705, None)])),
            ],
        );
        let expected = |first: &[u8], second: &[u8]| {
            array(
                2249,
                &[2],
                &[
                    Some(&record(&[(705, Some(first)), (23, Some(&one))])),
                    Some(&record(&[(705, Some(second)), (705, None)])),
                ],
            )
        };
        assert_eq!(rewrite_array(&value, |_, _| Leaf::Keep), None);
        assert_eq!(rewrite_array(&value, upper), Some(expected(b"X", b"YZ")));
        // Only the second record changes: the first is copied in front of it once.
        let second = rewrite_array(&value, |_, b| match b {
            b"yz" => Leaf::Replace(b"y".to_vec()),
            _ => Leaf::Keep,
        });
        assert_eq!(second, Some(expected(b"x", b"y")));
        // Only the first changes: the second is copied after it unchanged.
        let first = rewrite_array(&value, |_, b| match b {
            b"x" => Leaf::Replace(b"xxx".to_vec()),
            _ => Leaf::Keep,
        });
        assert_eq!(first, Some(expected(b"xxx", b"yz")));
        // A NULL inside a record does not set the array's null flag.
        let nulled = rewrite_array(&value, |oid, _| match oid {
            23 => Leaf::Null,
            _ => Leaf::Keep,
        })
        .unwrap();
        assert_eq!(nulled[7], 0);
    }

    #[test]
    fn record_containing_a_text_array() {
        let pq = array(25, &[2], &[Some(b"p"), Some(b"q")]);
        let value = record(&[(25, Some(b"a")), (1009, Some(&pq)), (25, Some(b"r"))]);
        let with = |a: &[u8], q: Option<&[u8]>, r: &[u8]| {
            let inner = array(25, &[2], &[Some(b"p"), q]);
            record(&[(25, Some(a)), (1009, Some(&inner)), (25, Some(r))])
        };
        let mut seen = Vec::new();
        let kept = rewrite_record(&value, |oid, bytes| {
            seen.push((oid, bytes.to_vec()));
            Leaf::Keep
        });
        assert_eq!(kept, None);
        let texts: Vec<(u32, Vec<u8>)> = [b"a", b"p", b"q", b"r"]
            .iter()
            .map(|t| (25, t.to_vec()))
            .collect();
        assert_eq!(seen, texts);

        let only_q = |b: &[u8]| match b {
            b"q" => Leaf::Null,
            _ => Leaf::Keep,
        };
        assert_eq!(
            rewrite_record(&value, |_, b| only_q(b)),
            Some(with(b"a", None, b"r"))
        );
        // Changed before the array, then inside it.
        assert_eq!(
            rewrite_record(&value, |_, b| match b {
                b"a" => Leaf::Replace(b"AA".to_vec()),
                b => only_q(b),
            }),
            Some(with(b"AA", None, b"r"))
        );
        // Changed before and after the array, not inside it.
        assert_eq!(
            rewrite_record(&value, |_, b| match b {
                b"a" | b"r" => Leaf::Replace(b.to_ascii_uppercase()),
                _ => Leaf::Keep,
            }),
            Some(with(b"A", Some(b"q"), b"R"))
        );
        assert_eq!(
            rewrite_record(&value, |_, b| Leaf::Replace(b.to_vec())),
            Some(value.clone()),
            "replacing with the same bytes reproduces the input"
        );
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let nest = |levels: usize| {
            let mut value = record(&[(25, Some(b"deep"))]);
            for _ in 0..levels {
                value = record(&[(2249, Some(&value))]);
            }
            value
        };
        assert!(rewrite_record(&nest(50), upper).is_some());
        let mut out = Vec::new();
        assert!(rewrite_binary_record(&nest(150), &mut upper, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_values_are_errors_and_leave_out_alone() {
        let one = 1i32.to_be_bytes();
        let values = [
            array(25, &[2, 2], &[Some(b"a"), Some(b"bc"), Some(b"d"), None]),
            array(
                2249,
                &[1],
                &[Some(&record(&[(705, Some(b"x")), (23, Some(&one))]))],
            ),
        ];
        for value in &values {
            for cut in 0..value.len() {
                let mut out = b"kept".to_vec();
                let result = rewrite_binary_array(&value[..cut], &mut upper, &mut out);
                assert!(result.is_err(), "cut at {cut}");
                assert_eq!(out, b"kept");
            }
            let mut trailing = value.clone();
            trailing.push(0);
            let mut out = b"kept".to_vec();
            assert!(rewrite_binary_array(&trailing, &mut upper, &mut out).is_err());
            assert_eq!(out, b"kept", "an error after a change leaves out as it was");
        }

        let bad = |value: &[u8]| rewrite_binary_array(value, &mut upper, &mut Vec::new());
        let text = array(25, &[1], &[Some(b"a")]);
        let patched = |at: usize, with: i32| {
            let mut value = text.clone();
            value[at..at + 4].copy_from_slice(&with.to_be_bytes());
            value
        };
        assert!(bad(&patched(0, 7)).is_err(), "7 dimensions");
        assert!(bad(&patched(0, -1)).is_err(), "negative dimensions");
        assert!(bad(&patched(4, 2)).is_err(), "null flag 2");
        assert!(bad(&patched(12, -1)).is_err(), "negative dimension");
        assert!(bad(&patched(12, 2)).is_err(), "more elements than data");
        assert!(bad(&patched(20, -2)).is_err(), "length -2");
        assert!(bad(&patched(20, 2)).is_err(), "length past the end");
        let mut huge = 6i32.to_be_bytes().to_vec();
        huge.extend([0, 0, 0, 0, 0, 0, 0, 25]);
        for _ in 0..6 {
            huge.extend(i32::MAX.to_be_bytes());
            huge.extend(1i32.to_be_bytes());
        }
        assert!(bad(&huge).is_err(), "element count overflows");

        let bad_record = |value: &[u8]| rewrite_binary_record(value, &mut upper, &mut Vec::new());
        let value = record(&[(25, Some(b"a")), (23, None)]);
        for cut in 0..value.len() {
            assert!(bad_record(&value[..cut]).is_err(), "cut at {cut}");
        }
        let mut negative = value.clone();
        negative[..4].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(bad_record(&negative).is_err(), "negative count");
        let mut too_many = value.clone();
        too_many[3] = 3;
        assert!(bad_record(&too_many).is_err());
        let mut too_few = value.clone();
        too_few[3] = 1;
        assert!(bad_record(&too_few).is_err());
        // A field claiming to be text[] must hold a valid array.
        assert!(bad_record(&record(&[(1009, Some(b"junk"))])).is_err());
    }
}
