//! The row formats of `COPY ... TO STDOUT` inside CopyData messages: CSV fields (split and
//! written again, quotes and escapes as PostgreSQL's `copyto.c` and `copyfromparse.c` treat
//! them) and the binary format's header, tuples and trailer. The server sends one row per
//! CopyData (the binary header rides with the first row, the trailer alone), so each
//! message is read on its own.

use std::borrow::Cow;
use std::ops::Range;

use crate::frame::DecodeError;
use crate::{put_value, read_i16, read_value};

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
