//! Framing: the untagged startup-phase packets and the tagged messages after them.

/// Largest frame accepted (PostgreSQL's own limit for most messages is 1 GiB).
pub const MAX_FRAME: usize = 1 << 30;

/// Why bytes are not a valid frame or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("unsupported protocol version {0}.{1}")]
    BadVersion(u16, u16),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;

/// A packet of the startup phase, before the first tagged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
    /// Protocol 3.x startup with its parameters (`user`, `database`, `application_name`, ...).
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// The value of a startup parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Decodes one startup-phase packet from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, and the packet with its length otherwise.
pub fn split_startup(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, DecodeError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    // A startup packet is small; PostgreSQL itself refuses more than 10,000 bytes.
    if !(8..=10_000).contains(&len) {
        return Err(DecodeError::BadLength(len.into()));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let code = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[8..len];
    let packet = match code {
        SSL_REQUEST if len == 8 => StartupPacket::SslRequest,
        GSSENC_REQUEST if len == 8 => StartupPacket::GssEncRequest,
        CANCEL_REQUEST if len == 16 => {
            let (pid, rest) = crate::read_i32(body)?;
            let (secret, _) = crate::read_i32(rest)?;
            StartupPacket::Cancel { pid, secret }
        }
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            return Err(DecodeError::BadLength(len as i64));
        }
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 {
                return Err(DecodeError::BadVersion(major, minor));
            }
            StartupPacket::Startup {
                minor,
                params: startup_params(body)?,
            }
        }
    };
    Ok(Some((packet, len)))
}

fn startup_params(mut body: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let mut params = Vec::new();
    loop {
        match body.first() {
            None => return Err(DecodeError::Malformed("startup packet lacks its final NUL")),
            Some(0) => return Ok(params),
            Some(_) => {
                let (name, rest) = crate::cstr(body)?;
                let (value, rest) = crate::cstr(rest)?;
                params.push((name.to_string(), value.to_string()));
                body = rest;
            }
        }
    }
}

/// Finds the length of the tagged frame at the start of `buf`: tag byte, then a
/// big-endian length that counts itself but not the tag.
///
/// `Ok(None)` means the frame is not complete yet.
pub fn split_frame(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize > MAX_FRAME {
        return Err(DecodeError::BadLength(len.into()));
    }
    let total = 1 + len as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// A complete tagged frame: its tag and its body (after the length).
pub fn parts(frame: &[u8]) -> (u8, &[u8]) {
    (frame[0], &frame[5..])
}

/// Starts a frame whose length is not known yet: writes the tag and a placeholder length and
/// returns where the frame starts, for [`end_frame`]. Writing the body straight into `out`
/// avoids building it in a separate buffer first.
pub(crate) fn begin_frame(tag: u8, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.push(tag);
    out.extend_from_slice(&[0; 4]);
    start
}

/// Sets the length of the frame begun at `start` to cover everything written since.
pub(crate) fn end_frame(out: &mut [u8], start: usize) {
    // The length counts itself but not the tag.
    let len = out.len() - start - 1;
    crate::patch_len(out, start + 1, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196608i32.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    #[test]
    fn startup_packets_decode_and_report_incomplete() {
        let bytes = startup(&[("user", "alice"), ("database", "app")]);
        for cut in 0..bytes.len() {
            assert_eq!(split_startup(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let (packet, len) = split_startup(&bytes).unwrap().unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(packet.param("user"), Some("alice"));
        assert_eq!(packet.param("database"), Some("app"));

        let ssl = [0, 0, 0, 8, 4, 210, 22, 47];
        assert_eq!(
            split_startup(&ssl).unwrap().unwrap().0,
            StartupPacket::SslRequest
        );
        let mut cancel = vec![0, 0, 0, 16, 4, 210, 22, 46];
        cancel.extend(7i32.to_be_bytes());
        cancel.extend(9i32.to_be_bytes());
        assert_eq!(
            split_startup(&cancel).unwrap().unwrap().0,
            StartupPacket::Cancel { pid: 7, secret: 9 }
        );
    }

    #[test]
    fn bad_startup_packets_are_errors() {
        assert!(split_startup(&[0, 0, 0, 4, 0, 3, 0, 0]).is_err());
        assert!(split_startup(&[0x7f, 0, 0, 0, 0, 3, 0, 0]).is_err());
        let mut v2 = vec![0, 0, 0, 9, 0, 2, 0, 0, 0];
        assert_eq!(split_startup(&v2), Err(DecodeError::BadVersion(2, 0)));
        v2[5] = 3;
        v2[8] = b'x';
        assert!(split_startup(&v2).is_err(), "missing final NUL");
    }

    #[test]
    fn tagged_frames_split_at_their_length() {
        let frame = [b'Q', 0, 0, 0, 8, b's', b'e', b'l', 0, b'X'];
        assert_eq!(split_frame(&frame[..4]), Ok(None));
        assert_eq!(split_frame(&frame[..8]), Ok(None));
        assert_eq!(split_frame(&frame), Ok(Some(9)));
        assert_eq!(parts(&frame[..9]), (b'Q', &b"sel\0"[..]));
        assert!(split_frame(&[b'Q', 0, 0, 0, 3]).is_err());
        assert!(split_frame(&[b'Q', 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
