//! Messages a client sends, read without copying. Only the ones the gateway acts on are
//! typed; the rest are `Other` and pass through as bytes.

use crate::frame::{DecodeError, parts};
use crate::{cstr, read_i32};

/// A client message, borrowed from its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// Simple query: one or more statements in one string.
    Query(&'a str),
    /// Extended protocol: prepare `query` as statement `name` ("" = unnamed).
    Parse {
        name: &'a str,
        query: &'a str,
    },
    /// Bind statement `statement` to portal `portal` ("" = unnamed).
    Bind {
        portal: &'a str,
        statement: &'a str,
    },
    Execute {
        portal: &'a str,
        max_rows: i32,
    },
    /// Close a statement (`b'S'`) or portal (`b'P'`).
    Close {
        kind: u8,
        name: &'a str,
    },
    Describe {
        kind: u8,
        name: &'a str,
    },
    Sync,
    Flush,
    Terminate,
    /// Password, SASL initial response or SASL response (all tagged `p`).
    Password(&'a [u8]),
    CopyData(&'a [u8]),
    CopyDone,
    CopyFail(&'a str),
    FunctionCall,
    Other(u8),
}

/// Reads a complete tagged frame (as delimited by [`crate::split_frame`]).
pub fn parse(frame: &[u8]) -> Result<Frontend<'_>, DecodeError> {
    let (tag, body) = parts(frame);
    Ok(match tag {
        b'Q' => Frontend::Query(cstr(body)?.0),
        b'P' => {
            let (name, rest) = cstr(body)?;
            let (query, _) = cstr(rest)?;
            Frontend::Parse { name, query }
        }
        b'B' => {
            let (portal, rest) = cstr(body)?;
            let (statement, _) = cstr(rest)?;
            Frontend::Bind { portal, statement }
        }
        b'E' => {
            let (portal, rest) = cstr(body)?;
            let (max_rows, _) = read_i32(rest)?;
            Frontend::Execute { portal, max_rows }
        }
        b'C' | b'D' => {
            let kind = *body
                .first()
                .ok_or(DecodeError::Malformed("message ends early"))?;
            if kind != b'S' && kind != b'P' {
                return Err(DecodeError::Malformed(
                    "Close/Describe target must be S or P",
                ));
            }
            let (name, _) = cstr(&body[1..])?;
            if tag == b'C' {
                Frontend::Close { kind, name }
            } else {
                Frontend::Describe { kind, name }
            }
        }
        b'S' => Frontend::Sync,
        b'H' => Frontend::Flush,
        b'X' => Frontend::Terminate,
        b'p' => Frontend::Password(body),
        b'd' => Frontend::CopyData(body),
        b'c' => Frontend::CopyDone,
        b'f' => Frontend::CopyFail(cstr(body)?.0),
        b'F' => Frontend::FunctionCall,
        other => Frontend::Other(other),
    })
}

/// The cleartext password inside a `p` message.
pub fn password_text(body: &[u8]) -> Result<&str, DecodeError> {
    Ok(cstr(body)?.0)
}

/// Encodes a frame with `tag` and `body` (used by tests and by the gateway's upstream side).
pub fn frame(tag: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame(tag, body, &mut out);
        out
    }

    #[test]
    fn typed_messages_decode() {
        assert_eq!(
            parse(&msg(b'Q', b"select 1\0")).unwrap(),
            Frontend::Query("select 1")
        );
        assert_eq!(
            parse(&msg(b'P', b"s1\0select $1\0\0\0")).unwrap(),
            Frontend::Parse {
                name: "s1",
                query: "select $1"
            }
        );
        assert_eq!(
            parse(&msg(b'B', b"\0s1\0\0\0\0\0\0\0")).unwrap(),
            Frontend::Bind {
                portal: "",
                statement: "s1"
            }
        );
        assert_eq!(
            parse(&msg(b'E', b"\0\0\0\0\0")).unwrap(),
            Frontend::Execute {
                portal: "",
                max_rows: 0
            }
        );
        assert_eq!(
            parse(&msg(b'C', b"Ss1\0")).unwrap(),
            Frontend::Close {
                kind: b'S',
                name: "s1"
            }
        );
        assert_eq!(parse(&msg(b'S', b"")).unwrap(), Frontend::Sync);
        assert_eq!(parse(&msg(b'X', b"")).unwrap(), Frontend::Terminate);
        assert_eq!(parse(&msg(b'Z', b"")).unwrap(), Frontend::Other(b'Z'));
        assert_eq!(password_text(b"secret\0").unwrap(), "secret");
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(parse(&msg(b'Q', b"no terminator")).is_err());
        assert!(parse(&msg(b'E', b"\0\0")).is_err());
        assert!(parse(&msg(b'C', b"")).is_err());
        assert!(parse(&msg(b'C', b"Zx\0")).is_err());
        assert!(parse(&msg(b'Q', b"\xff\xfe\0")).is_err());
    }
}
