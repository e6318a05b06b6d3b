//! Messages a client sends, read without copying. Only the ones the gateway acts on are
//! typed; the rest are `Other` and pass through as bytes.

use crate::frame::{DecodeError, parts};
use crate::{cstr, finished, read_count, read_i16, read_i32, read_value};

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

/// The result-column format codes of a `Bind` body, as sent: none means every column is text,
/// one applies to every column, otherwise there is one per column (see [`result_format`]).
///
/// The whole body is read (names, parameter formats, parameter values) and must hold
/// exactly these parts.
pub fn bind_result_formats(body: &[u8]) -> Result<Vec<i16>, DecodeError> {
    // Portal and statement names are not returned, so their encoding does not matter here.
    let rest = skip_cstr(body)?;
    let rest = skip_cstr(rest)?;
    let (param_formats, mut rest) = read_count(rest)?;
    for _ in 0..param_formats {
        rest = read_i16(rest)?.1;
    }
    let (params, mut rest) = read_count(rest)?;
    for _ in 0..params {
        rest = read_value(rest)?.1;
    }
    let (count, mut rest) = read_count(rest)?;
    let mut formats = Vec::with_capacity(count.min(rest.len() / 2));
    for _ in 0..count {
        let (format, r) = read_i16(rest)?;
        formats.push(format);
        rest = r;
    }
    finished(rest)?;
    Ok(formats)
}

/// The format (0 text, 1 binary) of result column `column` under Bind's result format codes.
///
/// A column past the end of a per-column list gets 0; the server rejects a Bind whose list
/// does not match the column count, so no rows arrive in that case anyway.
pub fn result_format(formats: &[i16], column: usize) -> i16 {
    match formats {
        [] => 0,
        [all] => *all,
        each => each.get(column).copied().unwrap_or(0),
    }
}

fn skip_cstr(buf: &[u8]) -> Result<&[u8], DecodeError> {
    let end = memchr::memchr(0, buf).ok_or(DecodeError::Malformed("unterminated string"))?;
    Ok(&buf[end + 1..])
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

    /// A Bind body: portal, statement, parameter formats, parameter values, result formats.
    fn bind(param_formats: &[i16], params: &[Option<&[u8]>], results: &[i16]) -> Vec<u8> {
        let mut body = b"portal\0stmt\0".to_vec();
        body.extend((param_formats.len() as i16).to_be_bytes());
        for f in param_formats {
            body.extend(f.to_be_bytes());
        }
        body.extend((params.len() as i16).to_be_bytes());
        for p in params {
            crate::put_value(&mut body, *p);
        }
        body.extend((results.len() as i16).to_be_bytes());
        for f in results {
            body.extend(f.to_be_bytes());
        }
        body
    }

    #[test]
    fn bind_result_formats_are_read_past_the_parameters() {
        let body = bind(&[1], &[Some(b"\0\0\0\x07"), None], &[0, 1, 1]);
        assert_eq!(bind_result_formats(&body).unwrap(), [0, 1, 1]);
        assert_eq!(bind_result_formats(&bind(&[], &[], &[])).unwrap(), []);
        assert_eq!(
            bind_result_formats(&bind(&[0, 1], &[Some(b"x"), Some(b"")], &[1])).unwrap(),
            [1]
        );
        // The existing typed reading still works on the same body.
        assert_eq!(
            parse(&msg(b'B', &body)).unwrap(),
            Frontend::Bind {
                portal: "portal",
                statement: "stmt"
            }
        );
        // Names need not be UTF-8 for this.
        let mut latin1 = bind(&[], &[], &[1]);
        latin1[0] = 0xe9;
        assert_eq!(bind_result_formats(&latin1).unwrap(), [1]);
    }

    #[test]
    fn malformed_binds_are_errors() {
        let body = bind(&[1], &[Some(b"abc"), None], &[0, 1]);
        for cut in 0..body.len() {
            assert!(bind_result_formats(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(bind_result_formats(&trailing).is_err());
        let mut too_few = body.clone();
        let at = too_few.len() - 5;
        too_few[at] = 1;
        assert!(
            bind_result_formats(&too_few).is_err(),
            "result count too low"
        );
        let mut negative = bind(&[], &[Some(b"abc")], &[]);
        negative[16..20].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(
            bind_result_formats(&negative).is_err(),
            "parameter length -2"
        );
        let mut past_end = bind(&[], &[Some(b"abc")], &[]);
        past_end[16..20].copy_from_slice(&9i32.to_be_bytes());
        assert!(bind_result_formats(&past_end).is_err());
        assert!(bind_result_formats(b"p\0s\0\xff\xff\0\0\0\0").is_err());
    }

    #[test]
    fn result_formats_follow_the_bind_rule() {
        assert_eq!(result_format(&[], 5), 0);
        assert_eq!(result_format(&[1], 0), 1);
        assert_eq!(result_format(&[1], 9), 1);
        assert_eq!(result_format(&[0, 1, 0], 1), 1);
        assert_eq!(result_format(&[0, 1, 0], 2), 0);
        assert_eq!(result_format(&[1, 1], 7), 0);
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
