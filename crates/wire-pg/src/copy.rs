//! The row formats of `COPY ... TO STDOUT` inside CopyData messages: text fields (split on
//! the delimiter, backslash escapes undone and written again) and CSV fields (quotes and
//! escapes), as PostgreSQL's `copyto.c` and `copyfromparse.c` treat them, and the binary
//! format's header, tuples and trailer. The server sends one row per
//! CopyData (the binary header rides with the first row, the trailer alone), so each
//! message is read on its own.

use std::borrow::Cow;
use std::ops::Range;

use crate::frame::DecodeError;
use crate::{put_value, read_i16, read_value};

/// One field of a text-format row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextField<'a> {
    /// The field's bytes as written, escapes included (what the NULL string is compared
    /// with).
    pub raw: Range<usize>,
    /// The value with backslash escapes undone.
    pub value: Cow<'a, [u8]>,
}

/// Splits one text-format row (its line end removed) into fields on `delimiter`; a
/// delimiter after a backslash is part of the value. Escapes are undone as `COPY FROM`
/// reads them: `\b \f \n \r \t \v`, one to three octal digits, `\x` and one or two hex
/// digits, and a backslash before any other character stands for that character. `Err`
/// when the row ends in a lone backslash.
pub fn text_fields(line: &str, delimiter: u8) -> Result<Vec<TextField<'_>>, DecodeError> {
    let b = line.as_bytes();
    let mut fields = Vec::new();
    let mut start = 0;
    let mut value: Option<Vec<u8>> = None;
    let mut at = 0;
    loop {
        match b.get(at) {
            None => {}
            Some(&c) if c == delimiter => {}
            Some(b'\\') => {
                let out = value.get_or_insert_with(|| b[start..at].to_vec());
                let c = *b
                    .get(at + 1)
                    .ok_or(DecodeError::Malformed("COPY row ends in a backslash"))?;
                at += 2;
                let digits = |at: usize, radix: u32, max: usize| {
                    b[at..]
                        .iter()
                        .take(max)
                        .take_while(|d| char::from(**d).is_digit(radix))
                        .count()
                };
                match c {
                    b'0'..=b'7' => {
                        let n = 1 + digits(at, 8, 2);
                        let octal = std::str::from_utf8(&b[at - 1..at - 1 + n]).unwrap_or("0");
                        out.push(u32::from_str_radix(octal, 8).unwrap_or(0) as u8);
                        at += n - 1;
                    }
                    b'x' if digits(at, 16, 2) > 0 => {
                        let n = digits(at, 16, 2);
                        let hex = std::str::from_utf8(&b[at..at + n]).unwrap_or("0");
                        out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                        at += n;
                    }
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'v' => out.push(11),
                    other => out.push(other),
                }
                continue;
            }
            Some(&c) => {
                if let Some(v) = value.as_mut() {
                    v.push(c);
                }
                at += 1;
                continue;
            }
        }
        // The end of a field.
        fields.push(TextField {
            raw: start..at,
            value: match value.take() {
                Some(v) => Cow::Owned(v),
                None => Cow::Borrowed(&b[start..at]),
            },
        });
        if at >= b.len() {
            return Ok(fields);
        }
        at += 1;
        start = at;
    }
}

/// Writes `value` as one text-format field: backslashes, the delimiter and line ends
/// escaped as `COPY TO` escapes them, so `COPY FROM` reads back exactly `value`.
pub fn write_text_escaped(value: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &c in value {
        let escaped = match c {
            8 => b'b',
            12 => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            11 => b'v',
            b'\\' => b'\\',
            c if c == delimiter => c,
            c => {
                out.push(c);
                continue;
            }
        };
        out.push(b'\\');
        out.push(escaped);
    }
}

/// One CSV field of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvField<'a> {
    /// The field's bytes as written, quotes included.
    pub raw: Range<usize>,
    /// The value with quoting undone.
    pub value: Cow<'a, str>,
    /// Whether any part was quoted (a quoted empty string is not NULL).
    pub quoted: bool,
}

/// Splits one CSV row (its line end removed) into fields. A quote may open anywhere in a
/// field; inside quotes, `escape` before a quote or an escape stands for that character,
/// and with `escape == quote` a doubled quote is one quote. `Err` when a quote is left
/// open (a CopyData that does not hold one whole row).
pub fn csv_fields(
    line: &str,
    delimiter: u8,
    quote: u8,
    escape: u8,
) -> Result<Vec<CsvField<'_>>, DecodeError> {
    let bytes = line.as_bytes();
    let mut fields = Vec::new();
    let mut start = 0;
    let mut value: Option<Vec<u8>> = None;
    let mut quoted = false;
    let mut in_quotes = false;
    let mut i = 0;
    while i <= bytes.len() {
        let b = bytes.get(i).copied();
        if in_quotes {
            let Some(b) = b else {
                return Err(DecodeError::Malformed("CSV quote left open"));
            };
            let next = bytes.get(i + 1).copied();
            let out = value.get_or_insert_with(|| bytes[start..i].to_vec());
            if b == escape && (next == Some(quote) || (next == Some(escape) && escape != quote)) {
                out.push(next.unwrap_or(b));
                i += 2;
                continue;
            }
            if b == quote {
                in_quotes = false;
            } else {
                out.push(b);
            }
            i += 1;
            continue;
        }
        match b {
            None => {}
            Some(b) if b == delimiter => {}
            Some(b) if b == quote => {
                value.get_or_insert_with(|| bytes[start..i].to_vec());
                in_quotes = true;
                quoted = true;
                i += 1;
                continue;
            }
            Some(b) => {
                if let Some(v) = value.as_mut() {
                    v.push(b);
                }
                i += 1;
                continue;
            }
        }
        // The end of a field.
        let value = match value.take() {
            None => Cow::Borrowed(&line[start..i]),
            Some(bytes) => Cow::Owned(
                String::from_utf8(bytes)
                    .map_err(|_| DecodeError::Malformed("CSV field is not UTF-8"))?,
            ),
        };
        fields.push(CsvField {
            raw: start..i,
            value,
            quoted,
        });
        quoted = false;
        i += 1;
        start = i;
    }
    Ok(fields)
}

/// Writes `value` as one quoted CSV field: quoted whole, so no delimiter, line end or
/// NULL marker inside it can be misread.
pub fn write_csv_quoted(value: &str, quote: u8, escape: u8, out: &mut Vec<u8>) {
    out.push(quote);
    for &b in value.as_bytes() {
        if b == quote || b == escape {
            out.push(escape);
        }
        out.push(b);
    }
    out.push(quote);
}

/// `PGCOPY\n\377\r\n\0`: the binary format's signature.
pub const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// One CopyData of a binary COPY: the header (if this is the first), the rows in it, and
/// whether it ends the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryChunk<'a> {
    /// The header bytes (signature, flags, extension), kept as they were.
    pub header: &'a [u8],
    pub rows: Vec<Vec<Option<&'a [u8]>>>,
    pub trailer: bool,
}

/// Reads one CopyData of a binary COPY. Every byte must belong to the header, a row or the
/// trailer (`Int16` -1); anything else is an error, so nothing unread is passed on.
pub fn binary_chunk(body: &[u8]) -> Result<BinaryChunk<'_>, DecodeError> {
    let mut rest = body;
    let mut header: &[u8] = &[];
    if let Some(after) = rest.strip_prefix(BINARY_SIGNATURE.as_slice()) {
        // Int32 flags, Int32 extension length, the extension.
        let ext = after
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or(DecodeError::Malformed("binary COPY header ends early"))?;
        let len = 11 + 8 + ext;
        if body.len() < len {
            return Err(DecodeError::Malformed("binary COPY header ends early"));
        }
        header = &body[..len];
        rest = &body[len..];
    }
    let mut rows = Vec::new();
    let mut trailer = false;
    while !rest.is_empty() {
        if trailer {
            return Err(DecodeError::Malformed("data after the binary COPY trailer"));
        }
        let (count, after) = read_i16(rest)?;
        rest = after;
        if count == -1 {
            trailer = true;
            continue;
        }
        let count =
            usize::try_from(count).map_err(|_| DecodeError::Malformed("negative field count"))?;
        let mut row = Vec::with_capacity(count);
        for _ in 0..count {
            let (value, after) = read_value(rest)?;
            row.push(value);
            rest = after;
        }
        rows.push(row);
    }
    Ok(BinaryChunk {
        header,
        rows,
        trailer,
    })
}

/// Writes a binary COPY chunk back: the header, the rows, the trailer.
pub fn write_binary_chunk<V: AsRef<[u8]>>(
    header: &[u8],
    rows: impl IntoIterator<Item = Vec<Option<V>>>,
    trailer: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(header);
    for row in rows {
        let count = i16::try_from(row.len()).expect("a row holds at most 32767 values");
        out.extend_from_slice(&count.to_be_bytes());
        for value in &row {
            put_value(out, value.as_ref().map(AsRef::as_ref));
        }
    }
    if trailer {
        out.extend_from_slice(&(-1i16).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(fields: &'a [CsvField<'a>]) -> Vec<(&'a str, bool)> {
        fields
            .iter()
            .map(|f| (f.value.as_ref(), f.quoted))
            .collect()
    }

    #[test]
    fn text_fields_as_postgres_writes_them() {
        // COPY (SELECT e'a\tb', NULL, 'back\\slash', e'two\nlines', '') TO STDOUT
        let line = "a\\tb\t\\N\tback\\\\slash\ttwo\\nlines\t";
        let fields = text_fields(line, b'\t').unwrap();
        let values: Vec<&[u8]> = fields.iter().map(|f| f.value.as_ref()).collect();
        assert_eq!(
            values,
            [&b"a\tb"[..], b"N", b"back\\slash", b"two\nlines", b""]
        );
        assert_eq!(
            &line[fields[1].raw.clone()],
            "\\N",
            "NULL is compared as written"
        );
        // An escaped delimiter is part of the value; octal, hex and other escapes.
        let fields = text_fields("a\\,b,\\101\\x42\\q\\7,", b',').unwrap();
        let values: Vec<&[u8]> = fields.iter().map(|f| f.value.as_ref()).collect();
        assert_eq!(values, [&b"a,b"[..], b"ABq\x07", b""]);
        assert!(text_fields("ends\\", b'\t').is_err());
        assert_eq!(text_fields("", b'\t').unwrap().len(), 1);
    }

    #[test]
    fn text_fields_read_back_as_written() {
        let tricky = "tab\there, new\nline\r\\ back \u{8}\u{b}\u{c}\u{1} é|;";
        for delimiter in [b'\t', b',', b'|', b';'] {
            let mut line = Vec::new();
            write_text_escaped(tricky.as_bytes(), delimiter, &mut line);
            line.push(delimiter);
            write_text_escaped(b"x", delimiter, &mut line);
            let line = String::from_utf8(line).unwrap();
            assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
            let fields = text_fields(&line, delimiter).unwrap();
            assert_eq!(fields.len(), 2, "{line:?}");
            assert_eq!(fields[0].value.as_ref(), tricky.as_bytes());
        }
    }

    #[test]
    fn csv_fields_as_postgres_writes_them() {
        // SELECT 'a,b', '', NULL, 'say "hi"', e'two\nlines' ... COPY ... CSV
        let line = "\"a,b\",\"\",,\"say \"\"hi\"\"\",\"two\nlines\",plain";
        let fields = csv_fields(line, b',', b'"', b'"').unwrap();
        assert_eq!(
            values(&fields),
            [
                ("a,b", true),
                ("", true),
                ("", false),
                ("say \"hi\"", true),
                ("two\nlines", true),
                ("plain", false)
            ]
        );
        assert_eq!(&line[fields[0].raw.clone()], "\"a,b\"");
        // A quote opened mid-field, another escape character, another delimiter.
        let fields = csv_fields("ab\"c;d\"e;'x\\'y'", b';', b'\'', b'\\').unwrap();
        assert_eq!(
            values(&fields),
            [("ab\"c", false), ("d\"e", false), ("x'y", true)]
        );
        assert!(csv_fields("\"open", b',', b'"', b'"').is_err());
        assert_eq!(
            values(&csv_fields("", b',', b'"', b'"').unwrap()),
            [("", false)]
        );
    }

    #[test]
    fn quoted_fields_read_back_as_written() {
        for value in [
            "",
            "a,b",
            "say \"hi\"",
            "back\\slash",
            "line\nend",
            "[email]",
        ] {
            for (quote, escape) in [(b'"', b'"'), (b'"', b'\\')] {
                let mut out = Vec::new();
                write_csv_quoted(value, quote, escape, &mut out);
                let text = String::from_utf8(out).unwrap();
                let fields = csv_fields(&text, b',', quote, escape).unwrap();
                assert_eq!(values(&fields), [(value, true)], "{text}");
            }
        }
    }

    #[test]
    fn binary_chunks_read_and_write_back() {
        // COPY (SELECT 'ab'::text, NULL::int4) TO STDOUT (FORMAT binary): header and row in
        // one message, then the trailer alone.
        let mut first = BINARY_SIGNATURE.to_vec();
        first.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        first.extend_from_slice(&[0, 2, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]);
        let chunk = binary_chunk(&first).unwrap();
        assert_eq!(chunk.header.len(), 19);
        assert_eq!(chunk.rows, vec![vec![Some(&b"ab"[..]), None]]);
        assert!(!chunk.trailer);
        let mut out = Vec::new();
        write_binary_chunk(chunk.header, chunk.rows.clone(), chunk.trailer, &mut out);
        assert_eq!(out, first);

        let last = binary_chunk(&[0xff, 0xff]).unwrap();
        assert!(last.trailer && last.rows.is_empty() && last.header.is_empty());
        assert!(binary_chunk(&[0, 1, 0, 0, 0, 5, b'a']).is_err());
        assert!(binary_chunk(&[0xff, 0xff, 0]).is_err());
        assert!(binary_chunk(&BINARY_SIGNATURE[..]).is_err());
    }
}
