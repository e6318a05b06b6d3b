//! PostgreSQL wire protocol (v3) as the gateway needs it: split a byte stream into
//! frames without copying, read the few messages it inspects, and write the few it
//! originates (errors, notices, authentication requests). Everything else passes through
//! untouched, so a message type this crate does not know still reaches the other side.
//!
//! Decoding works on byte slices and tells an incomplete frame (`Ok(None)`: read more)
//! from an invalid one (`Err`); buffering and sockets belong to the caller.

pub mod backend;
pub mod frame;
pub mod frontend;

pub use frame::{DecodeError, MAX_FRAME, StartupPacket, split_frame, split_startup};

/// Reads a NUL-terminated string at the start of `buf`; returns it and the rest.
pub(crate) fn cstr(buf: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    let end = memchr::memchr(0, buf).ok_or(DecodeError::Malformed("unterminated string"))?;
    let text = std::str::from_utf8(&buf[..end])
        .map_err(|_| DecodeError::Malformed("string is not UTF-8"))?;
    Ok((text, &buf[end + 1..]))
}

pub(crate) fn read_i16(buf: &[u8]) -> Result<(i16, &[u8]), DecodeError> {
    let bytes: [u8; 2] = buf
        .get(..2)
        .and_then(|b| b.try_into().ok())
        .ok_or(DecodeError::Malformed("message ends early"))?;
    Ok((i16::from_be_bytes(bytes), &buf[2..]))
}

pub(crate) fn read_i32(buf: &[u8]) -> Result<(i32, &[u8]), DecodeError> {
    let bytes: [u8; 4] = buf
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(DecodeError::Malformed("message ends early"))?;
    Ok((i32::from_be_bytes(bytes), &buf[4..]))
}
