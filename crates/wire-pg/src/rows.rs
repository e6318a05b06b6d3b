//! Query results: `RowDescription` and `DataRow`, read in place and written back with correct
//! lengths, so the gateway can rewrite (mask) values and copy nothing for rows it keeps.

use crate::frame::{DecodeError, begin_frame, end_frame};
use crate::{
    cstr, finished, put_cstr, put_value, read_count, read_i16, read_i32, read_u32, read_value,
};

/// One column of a `RowDescription`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDescription<'a> {
    pub name: &'a str,
    /// The table the column comes from, or 0 for a computed column.
    pub table_oid: u32,
    /// The column's attribute number in that table, or 0.
    pub column: i16,
    pub type_oid: u32,
    /// `pg_type.typlen`: negative for variable-width types.
    pub type_size: i16,
    /// `pg_attribute.atttypmod`, e.g. the length of a `varchar(n)`; -1 when there is none.
    pub type_modifier: i32,
    /// 0 for text, 1 for binary. Zero (unknown yet) in the reply to Describe of a statement.
    pub format: i16,
}

/// Reads a `RowDescription` ('T') body.
pub fn row_description(body: &[u8]) -> Result<Vec<FieldDescription<'_>>, DecodeError> {
    let (count, mut rest) = read_count(body)?;
    // A field takes at least 19 bytes, so a count the body cannot hold reserves nothing.
    let mut fields = Vec::with_capacity(count.min(rest.len() / 19));
    for _ in 0..count {
        let (name, r) = cstr(rest)?;
        let (table_oid, r) = read_u32(r)?;
        let (column, r) = read_i16(r)?;
        let (type_oid, r) = read_u32(r)?;
        let (type_size, r) = read_i16(r)?;
        let (type_modifier, r) = read_i32(r)?;
        let (format, r) = read_i16(r)?;
        fields.push(FieldDescription {
            name,
            table_oid,
            column,
            type_oid,
            type_size,
            type_modifier,
            format,
        });
        rest = r;
    }
    finished(rest)?;
    Ok(fields)
}

/// Writes a `RowDescription` frame.
///
/// # Panics
/// With more than 32,767 fields, which the message cannot count (PostgreSQL's own limit is 1,664).
pub fn write_row_description(fields: &[FieldDescription<'_>], out: &mut Vec<u8>) {
    let count = i16::try_from(fields.len()).expect("a RowDescription holds at most 32767 fields");
    let start = begin_frame(b'T', out);
    out.extend_from_slice(&count.to_be_bytes());
    for field in fields {
        put_cstr(out, field.name);
        out.extend_from_slice(&field.table_oid.to_be_bytes());
        out.extend_from_slice(&field.column.to_be_bytes());
        out.extend_from_slice(&field.type_oid.to_be_bytes());
        out.extend_from_slice(&field.type_size.to_be_bytes());
        out.extend_from_slice(&field.type_modifier.to_be_bytes());
        out.extend_from_slice(&field.format.to_be_bytes());
    }
    end_frame(out, start);
}

/// The column values of a `DataRow`, borrowed from its body: `None` is SQL NULL.
///
/// Each value is checked as it is read, in one pass and without allocating. Every error,
/// trailing bytes included, is reported no later than with the last counted value, so a
/// caller that reads them all sees it; after an error the iterator ends.
#[derive(Debug, Clone)]
pub struct DataRowIter<'a> {
    rest: &'a [u8],
    remaining: usize,
}

/// Reads a `DataRow` ('D') body.
pub fn data_row(body: &[u8]) -> Result<DataRowIter<'_>, DecodeError> {
    let (count, rest) = read_count(body)?;
    // With no values there is no last one to report trailing bytes.
    if count == 0 {
        finished(rest)?;
    }
    Ok(DataRowIter {
        rest,
        remaining: count,
    })
}

impl DataRowIter<'_> {
    /// How many values are left to read, as the row counts them.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl<'a> Iterator for DataRowIter<'a> {
    type Item = Result<Option<&'a [u8]>, DecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let item = read_value(self.rest).and_then(|(value, rest)| {
            self.remaining -= 1;
            self.rest = rest;
            if self.remaining == 0 {
                finished(rest)?;
            }
            Ok(value)
        });
        if item.is_err() {
            self.remaining = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Fewer when an error ends the row early.
        (0, Some(self.remaining))
    }
}

/// Writes a `DataRow` frame from column values (`None` is SQL NULL).
///
/// Values go straight into `out` and the count and length are filled in afterwards, so no
/// intermediate buffer is built. Any byte container works, e.g. `Option<&[u8]>` for kept
/// values mixed with owned replacements through `Option<Cow<[u8]>>`.
///
/// # Panics
/// With more than 32,767 values, which the message cannot count.
pub fn write_data_row<V: AsRef<[u8]>>(
    values: impl IntoIterator<Item = Option<V>>,
    out: &mut Vec<u8>,
) {
    let start = begin_frame(b'D', out);
    let count_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let mut count = 0usize;
    for value in values {
        put_value(out, value.as_ref().map(AsRef::as_ref));
        count += 1;
    }
    let count = i16::try_from(count).expect("a DataRow holds at most 32767 values");
    out[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
    end_frame(out, start);
}

/// A `DataRow` rewritten value by value into the caller's buffer, copying nothing while
/// values are kept: the frame is copied up to the first value that changes, and from there
/// on value by value. Feed every value the row holds, in order, with [`RowRewrite::keep`]
/// or [`RowRewrite::replace`]. The buffer is the caller's so that one can serve every row
/// of a result (a row's own `Vec` would be an allocation per row).
#[derive(Debug)]
pub struct RowRewrite<'a, 'o> {
    /// The whole frame, tag and length included.
    frame: &'a [u8],
    out: &'o mut Vec<u8>,
    /// Where the rewritten frame starts in `out`, from the first value that changes.
    start: Option<usize>,
    /// Where the next value (its length field) starts in `frame`.
    at: usize,
}

impl<'a, 'o> RowRewrite<'a, 'o> {
    /// `frame` is the whole `DataRow` frame whose values are about to be fed; a rewritten
    /// frame is appended to `out`.
    #[inline]
    pub fn new(frame: &'a [u8], out: &'o mut Vec<u8>) -> Self {
        // Tag, length, value count.
        RowRewrite {
            frame,
            out,
            start: None,
            at: 1 + 4 + 2,
        }
    }

    /// The next value stays as it is (`value` as the row's reader returned it).
    #[inline]
    pub fn keep(&mut self, value: Option<&[u8]>) {
        let raw = 4 + value.map_or(0, <[u8]>::len);
        if self.start.is_some() {
            self.out
                .extend_from_slice(&self.frame[self.at..self.at + raw]);
        }
        self.at += raw;
    }

    /// The next value becomes `with` (`None`: NULL).
    #[inline]
    pub fn replace(&mut self, value: Option<&[u8]>, with: Option<&[u8]>) {
        put_value(self.changed(value), with);
    }

    /// The next value becomes what `write` appends; its length is filled in after.
    pub fn replace_with(&mut self, value: Option<&[u8]>, write: impl FnOnce(&mut Vec<u8>)) {
        let out = self.changed(value);
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        write(out);
        let len = out.len() - len_at - 4;
        crate::patch_len(out, len_at, len);
    }

    /// Steps past the next value, which changes: the output, begun with the frame up to
    /// it if this is the first change.
    #[inline]
    fn changed(&mut self, value: Option<&[u8]>) -> &mut Vec<u8> {
        if self.start.is_none() {
            self.start = Some(self.out.len());
            self.out.extend_from_slice(&self.frame[..self.at]);
        }
        self.at += 4 + value.map_or(0, <[u8]>::len);
        self.out
    }

    /// Whether a rewritten frame was appended to the buffer (when every value was kept,
    /// nothing was).
    pub fn finish(self) -> bool {
        let Some(start) = self.start else {
            return false;
        };
        end_frame(self.out, start);
        true
    }

    /// Takes back whatever was appended: the row is not going to be finished.
    pub fn abandon(self) {
        if let Some(start) = self.start {
            self.out.truncate(start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parts;
    use crate::split_frame;
    use std::borrow::Cow;

    fn field(name: &str, type_oid: u32, format: i16) -> FieldDescription<'_> {
        FieldDescription {
            name,
            table_oid: 16384,
            column: 2,
            type_oid,
            type_size: -1,
            type_modifier: -1,
            format,
        }
    }

    #[test]
    fn row_descriptions_round_trip() {
        let fields = [
            field("email", 25, 0),
            FieldDescription {
                name: "n",
                table_oid: 0,
                column: 0,
                type_oid: 23,
                type_size: 4,
                type_modifier: -1,
                format: 1,
            },
        ];
        let mut out = b"before".to_vec();
        write_row_description(&fields, &mut out);
        let frame = &out[6..];
        assert_eq!(split_frame(frame), Ok(Some(frame.len())));
        let (tag, body) = parts(frame);
        assert_eq!(tag, b'T');
        assert_eq!(row_description(body).unwrap(), fields);

        let mut empty = Vec::new();
        write_row_description(&[], &mut empty);
        assert_eq!(empty, b"T\0\0\0\x06\0\0");
        assert_eq!(row_description(&empty[5..]).unwrap(), []);
    }

    #[test]
    fn row_description_matches_hand_encoding() {
        // One column "a": table 0, attnum 0, int4, typlen 4, typmod -1, text format.
        let body = b"\0\x01a\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0";
        assert_eq!(
            row_description(body).unwrap(),
            [FieldDescription {
                name: "a",
                table_oid: 0,
                column: 0,
                type_oid: 23,
                type_size: 4,
                type_modifier: -1,
                format: 0,
            }]
        );
    }

    #[test]
    fn malformed_row_descriptions_are_errors() {
        let mut out = Vec::new();
        write_row_description(&[field("a", 25, 0), field("b", 25, 0)], &mut out);
        let body = &out[5..];
        for cut in 0..body.len() {
            assert!(row_description(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert!(row_description(&trailing).is_err());
        let mut too_many = body.to_vec();
        too_many[1] = 3;
        assert!(row_description(&too_many).is_err());
        let mut too_few = body.to_vec();
        too_few[1] = 1;
        assert!(
            row_description(&too_few).is_err(),
            "second field is trailing"
        );
        assert!(row_description(b"\xff\xff").is_err(), "negative count");
        let mut not_utf8 = body.to_vec();
        not_utf8[2] = 0xff;
        assert!(row_description(&not_utf8).is_err());
    }

    #[test]
    fn data_rows_round_trip() {
        let values: [Option<&[u8]>; 4] = [Some(b"alice"), None, Some(b""), Some(b"\0\x01")];
        let mut out = Vec::new();
        write_data_row(values, &mut out);
        assert_eq!(split_frame(&out), Ok(Some(out.len())));
        let (tag, body) = parts(&out);
        assert_eq!(tag, b'D');
        let row = data_row(body).unwrap();
        assert_eq!(row.remaining(), 4);
        assert_eq!(row.collect::<Result<Vec<_>, _>>().unwrap(), values);

        // Rewriting a row: kept values borrowed, replacements owned.
        let masked = data_row(body)
            .unwrap()
            .enumerate()
            .map(|(i, v)| match (i, v.unwrap()) {
                (0, v) => v.map(|_| Cow::Owned(b"*****".to_vec())),
                (_, v) => v.map(Cow::Borrowed),
            });
        let mut rewritten = Vec::new();
        write_data_row(masked, &mut rewritten);
        assert_eq!(rewritten.len(), out.len());
        let row = data_row(&rewritten[5..]).unwrap();
        let row = row.collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(row[0], Some(&b"*****"[..]));
        assert_eq!(row[1..], values[1..]);
    }

    #[test]
    fn data_row_matches_hand_encoding() {
        let mut out = Vec::new();
        write_data_row([Some(&b"ab"[..]), None], &mut out);
        assert_eq!(out, b"D\0\0\0\x10\0\x02\0\0\0\x02ab\xff\xff\xff\xff");
        let mut empty = Vec::new();
        write_data_row(std::iter::empty::<Option<&[u8]>>(), &mut empty);
        assert_eq!(empty, b"D\0\0\0\x06\0\0");
        assert_eq!(data_row(&empty[5..]).unwrap().count(), 0);
        assert!(
            data_row(b"\0\0x").is_err(),
            "trailing bytes after no values"
        );
    }

    /// Reads a whole row, as a caller that rewrites it does.
    fn read_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, DecodeError> {
        data_row(body)?.collect()
    }

    #[test]
    fn malformed_data_rows_are_errors() {
        let body = b"\0\x02\0\0\0\x02ab\xff\xff\xff\xff";
        assert_eq!(read_row(body).unwrap(), [Some(&b"ab"[..]), None]);
        for cut in 0..body.len() {
            assert!(read_row(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = body.to_vec();
        trailing.push(b'x');
        assert!(read_row(&trailing).is_err());
        // Trailing bytes come with the last value, and the iterator ends after an error.
        let mut row = data_row(&trailing).unwrap();
        assert_eq!(row.next(), Some(Ok(Some(&b"ab"[..]))));
        assert!(matches!(row.next(), Some(Err(_))));
        assert_eq!(row.next(), None);
        let mut too_many = body.to_vec();
        too_many[1] = 3;
        assert!(read_row(&too_many).is_err());
        let mut too_few = body.to_vec();
        too_few[1] = 1;
        assert!(read_row(&too_few).is_err());
        assert!(data_row(b"\xff\xff").is_err(), "negative count");
        assert!(read_row(b"\0\x01\xff\xff\xff\xfe").is_err(), "length -2");
        assert!(read_row(b"\0\x01\x80\0\0\0").is_err(), "length i32::MIN");
        assert!(
            read_row(b"\0\x01\0\0\0\x03ab").is_err(),
            "value past the end"
        );
        assert!(read_row(b"\0\x01\x7f\xff\xff\xffab").is_err());
        assert!(data_row(b"").is_err());
    }

    #[test]
    fn rewriting_copies_only_what_changes_and_keeps_lengths_right() {
        let values: [Option<&[u8]>; 4] = [Some(b"7"), None, Some(b"ada@example.com"), Some(b"")];
        let mut frame = Vec::new();
        write_data_row(values, &mut frame);
        // What the buffer held before stays; a kept row adds nothing.
        let mut out = b"before".to_vec();
        let mut kept = RowRewrite::new(&frame, &mut out);
        values.iter().for_each(|v| kept.keep(*v));
        assert!(!kept.finish());
        assert_eq!(out, b"before");
        for at in 0..values.len() {
            for with in [None, Some(&b"[email]"[..]), Some(&b""[..])] {
                let mut expected = values;
                expected[at] = with;
                let mut want = Vec::new();
                write_data_row(expected, &mut want);
                let mut out = b"before".to_vec();
                let mut rw = RowRewrite::new(&frame, &mut out);
                for (i, v) in values.iter().enumerate() {
                    if i == at {
                        rw.replace(*v, with);
                    } else {
                        rw.keep(*v);
                    }
                }
                assert!(rw.finish());
                assert_eq!(out[..6], b"before"[..]);
                assert_eq!(out[6..], want, "value {at} -> {with:?}");
                // Written in place, when there is a value.
                if let Some(bytes) = with {
                    let mut out = Vec::new();
                    let mut rw = RowRewrite::new(&frame, &mut out);
                    for (i, v) in values.iter().enumerate() {
                        if i == at {
                            rw.replace_with(*v, |out| out.extend_from_slice(bytes));
                        } else {
                            rw.keep(*v);
                        }
                    }
                    assert!(rw.finish());
                    assert_eq!(out, want, "value {at} written in place");
                    // An abandoned row leaves the buffer as it was.
                    let mut out = b"before".to_vec();
                    let mut rw = RowRewrite::new(&frame, &mut out);
                    for (i, v) in values.iter().enumerate().take(at + 1) {
                        if i == at {
                            rw.replace_with(*v, |out| out.extend_from_slice(bytes));
                        } else {
                            rw.keep(*v);
                        }
                    }
                    rw.abandon();
                    assert_eq!(out, b"before");
                }
            }
        }
    }
}
