//! PostgreSQL wire protocol (v3) as the gateway needs it: split a byte stream into
//! frames without copying, read the few messages it inspects, write the few it
//! originates (errors, notices, authentication requests), and rewrite query results
//! (rows, nested binary values) when it masks them. Everything else passes through
//! untouched, so a message type this crate does not know still reaches the other side.
//!
//! Decoding works on byte slices and tells an incomplete frame (`Ok(None)`: read more)
//! from an invalid one (`Err`); buffering and sockets belong to the caller.

pub mod backend;
pub mod copy;
pub mod frame;
pub mod frontend;
pub mod rows;
pub mod types;

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

#[inline]
pub(crate) fn read_i32(buf: &[u8]) -> Result<(i32, &[u8]), DecodeError> {
    let bytes: [u8; 4] = buf
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(DecodeError::Malformed("message ends early"))?;
    Ok((i32::from_be_bytes(bytes), &buf[4..]))
}

pub(crate) fn read_u32(buf: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    let (value, rest) = read_i32(buf)?;
    Ok((value as u32, rest))
}

/// Reads an `Int16` count of following items, which must not be negative.
pub(crate) fn read_count(buf: &[u8]) -> Result<(usize, &[u8]), DecodeError> {
    let (count, rest) = read_i16(buf)?;
    let count = usize::try_from(count).map_err(|_| DecodeError::Malformed("negative count"))?;
    Ok((count, rest))
}

/// Reads a length-prefixed value: `Int32` length (-1 for SQL NULL), then that many bytes.
#[inline]
pub(crate) fn read_value(buf: &[u8]) -> Result<(Option<&[u8]>, &[u8]), DecodeError> {
    let (len, rest) = read_i32(buf)?;
    if len == -1 {
        return Ok((None, rest));
    }
    let len = usize::try_from(len).map_err(|_| DecodeError::Malformed("negative value length"))?;
    if rest.len() < len {
        return Err(DecodeError::Malformed("value ends early"));
    }
    let (value, rest) = rest.split_at(len);
    Ok((Some(value), rest))
}

/// Rejects bytes left over after the last field of a message or value.
pub(crate) fn finished(rest: &[u8]) -> Result<(), DecodeError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Malformed("trailing bytes"))
    }
}

/// Writes `text` NUL-terminated. A NUL inside would end the string early and shift every
/// field after it, so it becomes a space (decoded strings never contain one).
pub(crate) fn put_cstr(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().map(|b| if b == 0 { b' ' } else { b }));
    out.push(0);
}

/// Writes a length-prefixed value (length -1 for NULL).
pub(crate) fn put_value(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(bytes) => {
            out.extend_from_slice(&len_i32(bytes.len()).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// Overwrites the placeholder `Int32` at `at` with `len`.
#[inline]
pub(crate) fn patch_len(out: &mut [u8], at: usize, len: usize) {
    out[at..at + 4].copy_from_slice(&len_i32(len).to_be_bytes());
}

/// A length as the protocol's `Int32`.
///
/// Panics past 2 GiB: the protocol cannot express it, and a wrong length would desynchronise
/// the stream, which is worse. Values the gateway writes come from frames of at most
/// [`MAX_FRAME`] plus replacements it chose, so this is a bug, not bad input.
pub(crate) fn len_i32(len: usize) -> i32 {
    i32::try_from(len).expect("length exceeds the protocol's 2 GiB limit")
}
