//! Messages a server sends: the few the gateway writes itself, and a light reading of the
//! ones it summarises for the audit record (command tags, errors, row counts).

use crate::frame::{DecodeError, parts};
use crate::frontend::frame;
use crate::{cstr, read_i16};

/// `ErrorResponse` or `NoticeResponse` with severity, SQLSTATE code and message.
fn fields_message(
    tag: u8,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    out: &mut Vec<u8>,
) {
    let mut body = Vec::with_capacity(message.len() + 32);
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.replace('\0', " ").as_bytes());
        body.push(0);
    }
    if let Some(detail) = detail {
        body.push(b'D');
        body.extend_from_slice(detail.replace('\0', " ").as_bytes());
        body.push(0);
    }
    body.push(0);
    frame(tag, &body, out);
}

/// Writes an `ErrorResponse` (severity `ERROR` or `FATAL`).
pub fn error_response(severity: &str, code: &str, message: &str, out: &mut Vec<u8>) {
    fields_message(b'E', severity, code, message, None, out);
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
    fn row_counts_come_from_tags() {
        assert_eq!(rows_from_tag("SELECT 12"), Some(12));
        assert_eq!(rows_from_tag("INSERT 0 3"), Some(3));
        assert_eq!(rows_from_tag("UPDATE 0"), Some(0));
        assert_eq!(rows_from_tag("COPY 7"), Some(7));
        assert_eq!(rows_from_tag("CREATE TABLE"), None);
        assert_eq!(rows_from_tag("BEGIN"), None);
    }
}
