//! Messages a server sends: the few the gateway writes itself, and a light reading of the
//! ones it summarises for the audit record (command tags, errors, row counts).

use crate::frame::{DecodeError, begin_frame, end_frame, parts};
use crate::frontend::frame;
use crate::{cstr, finished, put_cstr, read_count, read_i16, read_i32};

/// `ErrorResponse` or `NoticeResponse` with severity, SQLSTATE code and message.
fn fields_message(
    tag: u8,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    out: &mut Vec<u8>,
) {
    let fields = [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ];
    write_message_fields(
        tag,
        fields.into_iter().chain(detail.map(|d| (b'D', d))),
        out,
    );
}

/// Writes an `ErrorResponse` (severity `ERROR` or `FATAL`).
pub fn error_response(severity: &str, code: &str, message: &str, out: &mut Vec<u8>) {
    fields_message(b'E', severity, code, message, None, out);
}

/// Writes an `ErrorResponse` pointing at a character of the statement (`position`, from 1,
/// in characters), as the server reports a syntax error.
pub fn error_response_at(
    severity: &str,
    code: &str,
    message: &str,
    position: u32,
    out: &mut Vec<u8>,
) {
    let position = position.to_string();
    let fields = [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
        (b'P', position.as_str()),
    ];
    write_message_fields(b'E', fields, out);
}

/// Writes an `ErrorResponse` with a DETAIL line.
pub fn error_response_detail(
    severity: &str,
    code: &str,
    message: &str,
    detail: &str,
    out: &mut Vec<u8>,
) {
    fields_message(b'E', severity, code, message, Some(detail), out);
}

/// Writes a `NoticeResponse` (psql prints these as `NOTICE:  ...`).
pub fn notice_response(code: &str, message: &str, out: &mut Vec<u8>) {
    fields_message(b'N', "NOTICE", code, message, None, out);
}

pub fn auth_ok(out: &mut Vec<u8>) {
    frame(b'R', &0i32.to_be_bytes(), out);
}

pub fn auth_cleartext(out: &mut Vec<u8>) {
    frame(b'R', &3i32.to_be_bytes(), out);
}

pub fn backend_key_data(pid: i32, secret: i32, out: &mut Vec<u8>) {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&secret.to_be_bytes());
    frame(b'K', &body, out);
}

/// `ReadyForQuery` with transaction status `I` (idle), `T` (in a transaction) or `E` (failed).
pub fn ready_for_query(status: u8, out: &mut Vec<u8>) {
    frame(b'Z', &[status], out);
}

/// A server message, lightly read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend<'a> {
    CommandComplete(&'a str),
    /// SQLSTATE code and message of an error.
    Error {
        code: &'a str,
        message: &'a str,
    },
    ReadyForQuery(u8),
    DataRow {
        columns: i16,
    },
    EmptyQuery,
    PortalSuspended,
    CopyData(usize),
    BackendKeyData {
        pid: i32,
        secret: i32,
    },
    Other(u8),
}

/// Reads a complete tagged server frame.
pub fn parse(frame: &[u8]) -> Result<Backend<'_>, DecodeError> {
    let (tag, body) = parts(frame);
    Ok(match tag {
        b'C' => Backend::CommandComplete(cstr(body)?.0),
        b'E' => {
            let (code, message) = error_fields(body)?;
            Backend::Error { code, message }
        }
        b'Z' => Backend::ReadyForQuery(
            *body
                .first()
                .ok_or(DecodeError::Malformed("empty ReadyForQuery"))?,
        ),
        b'D' => Backend::DataRow {
            columns: read_i16(body)?.0,
        },
        b'I' => Backend::EmptyQuery,
        b's' => Backend::PortalSuspended,
        b'd' => Backend::CopyData(body.len()),
        b'K' => {
            let (pid, rest) = crate::read_i32(body)?;
            let (secret, _) = crate::read_i32(rest)?;
            Backend::BackendKeyData { pid, secret }
        }
        other => Backend::Other(other),
    })
}

/// The SQLSTATE (`C`) and message (`M`) fields of an ErrorResponse or NoticeResponse body.
pub fn error_fields(mut body: &[u8]) -> Result<(&str, &str), DecodeError> {
    let (mut code, mut message) = ("", "");
    while let Some(&field) = body.first() {
        if field == 0 {
            break;
        }
        let (value, rest) = cstr(&body[1..])?;
        match field {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
        body = rest;
    }
    Ok((code, message))
}

/// Every field of an `ErrorResponse` or `NoticeResponse` ('E'/'N') body, in order: the field
/// type byte (`S`, `C`, `M`, `D`, ...) and its value.
///
/// A value that is not UTF-8 (a server whose `client_encoding` is something else) is an
/// error rather than a lossy conversion: rewriting it would change bytes the client sees.
pub fn message_fields(body: &[u8]) -> Result<Vec<(u8, &str)>, DecodeError> {
    message_fields_raw(body)?
        .into_iter()
        .map(|(field, value)| {
            std::str::from_utf8(value)
                .map(|text| (field, text))
                .map_err(|_| DecodeError::Malformed("string is not UTF-8"))
        })
        .collect()
}

/// [`message_fields`] as bytes: values in whatever encoding the session uses, for a reader
/// that decodes them itself.
pub fn message_fields_raw(body: &[u8]) -> Result<Vec<(u8, &[u8])>, DecodeError> {
    let mut fields = Vec::with_capacity(16);
    let mut rest = body;
    loop {
        match rest.split_first() {
            None => return Err(DecodeError::Malformed("field list lacks its final NUL")),
            Some((0, tail)) => {
                finished(tail)?;
                return Ok(fields);
            }
            Some((&field, tail)) => {
                let end =
                    memchr::memchr(0, tail).ok_or(DecodeError::Malformed("unterminated string"))?;
                fields.push((field, &tail[..end]));
                rest = &tail[end + 1..];
            }
        }
    }
}

/// [`write_message_fields`] with values as bytes (a NUL inside one becomes a space).
pub fn write_message_fields_raw<'a>(
    tag: u8,
    fields: impl IntoIterator<Item = (u8, &'a [u8])>,
    out: &mut Vec<u8>,
) {
    let start = begin_frame(tag, out);
    for (field, value) in fields {
        if field != 0 {
            out.push(field);
            out.extend(value.iter().map(|&b| if b == 0 { b' ' } else { b }));
            out.push(0);
        }
    }
    out.push(0);
    end_frame(out, start);
}

/// Writes an `ErrorResponse` (`tag` `b'E'`) or `NoticeResponse` (`b'N'`) with these fields.
///
/// A field type of 0 is skipped: it would end the list there. A NUL inside a value becomes
/// a space.
pub fn write_message_fields<'a>(
    tag: u8,
    fields: impl IntoIterator<Item = (u8, &'a str)>,
    out: &mut Vec<u8>,
) {
    write_message_fields_raw(tag, fields.into_iter().map(|(f, v)| (f, v.as_bytes())), out);
}

/// A `NotificationResponse` ('A') body: the notifying backend's process id, the channel and
/// the payload.
pub fn notification(body: &[u8]) -> Result<(i32, &str, &str), DecodeError> {
    let (pid, rest) = read_i32(body)?;
    let (channel, rest) = cstr(rest)?;
    let (payload, rest) = cstr(rest)?;
    finished(rest)?;
    Ok((pid, channel, payload))
}

/// [`notification`] as bytes: channel and payload in the session's encoding.
pub fn notification_raw(body: &[u8]) -> Result<(i32, &[u8], &[u8]), DecodeError> {
    let (pid, rest) = read_i32(body)?;
    let split = |buf: &'_ [u8]| -> Result<(usize, usize), DecodeError> {
        let end = memchr::memchr(0, buf).ok_or(DecodeError::Malformed("unterminated string"))?;
        Ok((end, end + 1))
    };
    let (end, next) = split(rest)?;
    let channel = &rest[..end];
    let rest = &rest[next..];
    let (end, next) = split(rest)?;
    let payload = &rest[..end];
    finished(&rest[next..])?;
    Ok((pid, channel, payload))
}

/// [`write_notification`] with channel and payload as bytes.
pub fn write_notification_raw(pid: i32, channel: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    let start = begin_frame(b'A', out);
    out.extend_from_slice(&pid.to_be_bytes());
    for text in [channel, payload] {
        out.extend(text.iter().map(|&b| if b == 0 { b' ' } else { b }));
        out.push(0);
    }
    end_frame(out, start);
}

/// Writes a `NotificationResponse` (a NUL inside a string becomes a space).
pub fn write_notification(pid: i32, channel: &str, payload: &str, out: &mut Vec<u8>) {
    let start = begin_frame(b'A', out);
    out.extend_from_slice(&pid.to_be_bytes());
    put_cstr(out, channel);
    put_cstr(out, payload);
    end_frame(out, start);
}

/// A `CopyOutResponse` ('H') or `CopyBothResponse` ('W') body (`CopyInResponse`, 'G', has the
/// same layout): the overall format (0 text, 1 binary) and one format code per column.
pub fn copy_response(body: &[u8]) -> Result<(i8, Vec<i16>), DecodeError> {
    let (&overall, rest) = body
        .split_first()
        .ok_or(DecodeError::Malformed("message ends early"))?;
    // Anything but 0 or 1 would leave the caller guessing how to read the data, and
    // masking must not guess.
    if overall > 1 {
        return Err(DecodeError::Malformed("COPY format must be 0 or 1"));
    }
    let (count, mut rest) = read_count(rest)?;
    let mut formats = Vec::with_capacity(count.min(rest.len() / 2));
    for _ in 0..count {
        let (format, r) = read_i16(rest)?;
        if !(0..=1).contains(&format) {
            return Err(DecodeError::Malformed("COPY column format must be 0 or 1"));
        }
        formats.push(format);
        rest = r;
    }
    finished(rest)?;
    Ok((overall as i8, formats))
}

/// A `ParameterStatus` ('S') body: the setting's name and its value as the server now has it.
pub fn parameter_status(body: &[u8]) -> Result<(&str, &str), DecodeError> {
    let (name, rest) = cstr(body)?;
    let (value, rest) = cstr(rest)?;
    finished(rest)?;
    Ok((name, value))
}

/// Rows affected or returned according to a command tag (`SELECT 5`, `INSERT 0 3`, `COPY 7`).
pub fn rows_from_tag(tag: &str) -> Option<u64> {
    let mut words = tag.split(' ');
    let command = words.next()?;
    let last = tag.rsplit(' ').next()?;
    match command {
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "FETCH" | "MOVE" => {
            last.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_errors_read_back() {
        let mut out = Vec::new();
        error_response("ERROR", "42501", "denied by rule no-drop", &mut out);
        let len = crate::split_frame(&out).unwrap().unwrap();
        assert_eq!(len, out.len());
        assert_eq!(
            parse(&out).unwrap(),
            Backend::Error {
                code: "42501",
                message: "denied by rule no-drop"
            }
        );
        let mut notice = Vec::new();
        notice_response("00000", "held for review", &mut notice);
        assert_eq!(notice[0], b'N');
        assert_eq!(
            error_fields(&notice[5..]).unwrap(),
            ("00000", "held for review")
        );
    }

    #[test]
    fn server_messages_are_read() {
        let mut out = Vec::new();
        ready_for_query(b'T', &mut out);
        assert_eq!(parse(&out).unwrap(), Backend::ReadyForQuery(b'T'));
        let mut key = Vec::new();
        backend_key_data(5, -7, &mut key);
        assert_eq!(
            parse(&key).unwrap(),
            Backend::BackendKeyData { pid: 5, secret: -7 }
        );
        let mut cc = Vec::new();
        frame(b'C', b"SELECT 12\0", &mut cc);
        assert_eq!(parse(&cc).unwrap(), Backend::CommandComplete("SELECT 12"));
    }

    #[test]
    fn message_fields_round_trip_in_order() {
        let fields = [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "23505"),
            (
                b'M',
                "duplicate key value violates unique constraint \"users_email_key\"",
            ),
            (b'D', "Key (email)=(alice@example.com) already exists."),
            (b's', "public"),
            (b't', "users"),
            (b'n', "users_email_key"),
            (b'F', "nbtinsert.c"),
            (b'L', "666"),
            (b'R', "_bt_check_unique"),
        ];
        let mut out = Vec::new();
        write_message_fields(b'E', fields, &mut out);
        assert_eq!(crate::split_frame(&out), Ok(Some(out.len())));
        assert_eq!(out[0], b'E');
        assert_eq!(message_fields(&out[5..]).unwrap(), fields);
        assert_eq!(
            parse(&out).unwrap(),
            Backend::Error {
                code: "23505",
                message: fields[3].1
            }
        );

        let mut odd = Vec::new();
        write_message_fields(b'N', [(0, "dropped"), (b'M', "a\0b")], &mut odd);
        assert_eq!(odd, b"N\0\0\0\x0aMa b\0\0");
        assert_eq!(message_fields(&odd[5..]).unwrap(), [(b'M', "a b")]);
        assert_eq!(message_fields(b"\0").unwrap(), []);
    }

    #[test]
    fn written_errors_keep_their_layout() {
        let mut out = Vec::new();
        error_response_detail("FATAL", "28000", "no\0access", "why", &mut out);
        assert_eq!(
            message_fields(&out[5..]).unwrap(),
            [
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "28000"),
                (b'M', "no access"),
                (b'D', "why"),
            ]
        );
    }

    #[test]
    fn malformed_message_fields_are_errors() {
        let body = b"SERROR\0Mboom\0\0";
        for cut in 0..body.len() {
            assert!(message_fields(&body[..cut]).is_err(), "cut at {cut}");
        }
        assert!(message_fields(b"SERROR\0\0x").is_err(), "trailing bytes");
        assert!(message_fields(b"").is_err());
        // LATIN1 "é" from a server with another client_encoding.
        assert!(message_fields(b"Mcaf\xe9\0\0").is_err());
    }

    #[test]
    fn notifications_round_trip() {
        let mut out = Vec::new();
        write_notification(4242, "jobs", "{\"id\": 7}", &mut out);
        assert_eq!(crate::split_frame(&out), Ok(Some(out.len())));
        assert_eq!(out[0], b'A');
        assert_eq!(
            notification(&out[5..]).unwrap(),
            (4242, "jobs", "{\"id\": 7}")
        );
        assert_eq!(notification(b"\0\0\0\x01c\0\0").unwrap(), (1, "c", ""));
        let body = &out[5..];
        for cut in 0..body.len() {
            assert!(notification(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert!(notification(&trailing).is_err());
        assert!(notification(b"\0\0\0\x01c\0\xff\0").is_err(), "not UTF-8");
    }

    #[test]
    fn copy_responses_decode() {
        assert_eq!(copy_response(b"\0\0\x02\0\0\0\0").unwrap(), (0, vec![0, 0]));
        assert_eq!(copy_response(b"\x01\0\x01\0\x01").unwrap(), (1, vec![1]));
        assert_eq!(copy_response(b"\0\0\0").unwrap(), (0, vec![]));
        let body = b"\x01\0\x02\0\x01\0\x01";
        for cut in 0..body.len() {
            assert!(copy_response(&body[..cut]).is_err(), "cut at {cut}");
        }
        assert!(copy_response(b"\x01\0\x01\0\x01\0").is_err(), "trailing");
        assert!(
            copy_response(b"\x01\0\x01\0\x01\0\x01").is_err(),
            "count too low"
        );
        assert!(copy_response(b"\x02\0\0").is_err(), "overall format 2");
        assert!(copy_response(b"\0\0\x01\0\x02").is_err(), "column format 2");
        assert!(copy_response(b"\0\xff\xff").is_err(), "negative count");
    }

    #[test]
    fn row_counts_come_from_tags() {
        assert_eq!(rows_from_tag("SELECT 12"), Some(12));
        assert_eq!(rows_from_tag("INSERT 0 3"), Some(3));
        assert_eq!(rows_from_tag("UPDATE 0"), Some(0));
        assert_eq!(rows_from_tag("COPY 7"), Some(7));
        assert_eq!(rows_from_tag("CREATE TABLE"), None);
        assert_eq!(rows_from_tag("BEGIN"), None);
    }
}
