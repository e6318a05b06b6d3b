//! The session's client encoding, for what the gateway reads and rewrites in the server's
//! messages: texts are decoded from the encoding the server reported, masked, and encoded
//! back, so a session in LATIN9 sees its own error texts and values, masked where needed,
//! never a stand-in message. Byte-exact where nothing is masked: a text is only re-encoded
//! when masking changed it.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// How the session's texts are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientEncoding {
    #[default]
    Utf8,
    /// An ASCII-compatible encoding the gateway can read and write exactly.
    Other(&'static Encoding),
    /// `SQL_ASCII` (the server does not convert: texts are whatever bytes were stored) or an
    /// encoding no maintained decoder covers (EUC_TW, EUC_JIS_2004, MULE_INTERNAL): only
    /// what is valid UTF-8 can be read.
    Unread,
}

impl ClientEncoding {
    /// The encoding PostgreSQL reports as `client_encoding` (its own names; the server
    /// reports the canonical spelling).
    pub fn named(name: &str) -> ClientEncoding {
        use encoding_rs::*;
        let encoding = match name.to_ascii_uppercase().as_str() {
            "UTF8" | "UNICODE" => return ClientEncoding::Utf8,
            // The WHATWG decoders read ISO-8859-1 and -9 as their Windows supersets; every
            // byte maps both ways, so a round trip stays exact.
            "LATIN1" => WINDOWS_1252,
            "LATIN2" => ISO_8859_2,
            "LATIN3" => ISO_8859_3,
            "LATIN4" => ISO_8859_4,
            "LATIN5" => WINDOWS_1254,
            "LATIN6" => ISO_8859_10,
            "LATIN7" => ISO_8859_13,
            "LATIN8" => ISO_8859_14,
            "LATIN9" => ISO_8859_15,
            "LATIN10" => ISO_8859_16,
            "ISO_8859_5" => ISO_8859_5,
            "ISO_8859_6" => ISO_8859_6,
            "ISO_8859_7" => ISO_8859_7,
            "ISO_8859_8" => ISO_8859_8,
            "WIN866" => IBM866,
            "WIN874" => WINDOWS_874,
            "WIN1250" => WINDOWS_1250,
            "WIN1251" => WINDOWS_1251,
            "WIN1252" => WINDOWS_1252,
            "WIN1253" => WINDOWS_1253,
            "WIN1254" => WINDOWS_1254,
            "WIN1255" => WINDOWS_1255,
            "WIN1256" => WINDOWS_1256,
            "WIN1257" => WINDOWS_1257,
            "WIN1258" => WINDOWS_1258,
            "KOI8R" => KOI8_R,
            "KOI8U" => KOI8_U,
            "EUC_JP" => EUC_JP,
            "EUC_KR" => EUC_KR,
            // GBK's decoder reads every EUC_CN (GB 2312) sequence the same way.
            "EUC_CN" => GBK,
            _ => return ClientEncoding::Unread,
        };
        ClientEncoding::Other(encoding)
    }

    /// `bytes` as text, or `None` when they are not exactly that encoding's text.
    pub fn decode<'a>(self, bytes: &'a [u8]) -> Option<Cow<'a, str>> {
        match self {
            ClientEncoding::Utf8 | ClientEncoding::Unread => {
                std::str::from_utf8(bytes).ok().map(Cow::Borrowed)
            }
            ClientEncoding::Other(encoding) => {
                encoding.decode_without_bom_handling_and_without_replacement(bytes)
            }
        }
    }

    /// `text` in this encoding, or `None` when a character has no encoding in it.
    pub fn encode<'a>(self, text: &'a str) -> Option<Cow<'a, [u8]>> {
        match self {
            ClientEncoding::Utf8 | ClientEncoding::Unread => Some(Cow::Borrowed(text.as_bytes())),
            ClientEncoding::Other(encoding) => {
                let (bytes, _, unmappable) = encoding.encode(text);
                (!unmappable).then_some(bytes)
            }
        }
    }

    /// A Query or Parse message with its texts in UTF-8, for the gateway to read while the
    /// server gets the client's own bytes. `None` when nothing needs reading differently (a
    /// UTF-8 session, ASCII texts, another message) or the texts are not this encoding's
    /// (the message is then read as it is, and refused if it cannot be).
    pub fn readable_frame(self, frame: &[u8]) -> Option<Vec<u8>> {
        let ClientEncoding::Other(_) = self else {
            return None;
        };
        let (&tag, body) = (frame.first()?, frame.get(5..)?);
        // The texts that are decoded; what follows them (a Parse's parameter types) is kept.
        let texts = match tag {
            b'Q' => 1,
            b'P' => 2,
            _ => return None,
        };
        let mut end = 0;
        let mut decoded = Vec::with_capacity(body.len() + 16);
        for _ in 0..texts {
            let len = memchr::memchr(0, &body[end..])?;
            let text = &body[end..end + len];
            decoded.extend_from_slice(self.decode(text)?.as_bytes());
            decoded.push(0);
            end += len + 1;
        }
        if body[..end].is_ascii() {
            return None;
        }
        decoded.extend_from_slice(&body[end..]);
        let mut out = Vec::with_capacity(decoded.len() + 5);
        out.push(tag);
        out.extend_from_slice(&u32::try_from(decoded.len() + 4).ok()?.to_be_bytes());
        out.extend_from_slice(&decoded);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin9_reads_and_writes_its_own_bytes() {
        let latin9 = ClientEncoding::named("LATIN9");
        // "€ é" in ISO-8859-15: the euro sign is 0xA4 there.
        let bytes = [0xA4, b' ', 0xE9];
        let text = latin9.decode(&bytes).unwrap();
        assert_eq!(text, "€ é");
        assert_eq!(latin9.encode(&text).unwrap().as_ref(), &bytes);
        // A character LATIN9 has no byte for is not written.
        assert!(latin9.encode("日本").is_none());
    }

    #[test]
    fn every_byte_of_a_single_byte_encoding_round_trips() {
        for name in ["LATIN1", "LATIN5", "WIN1251", "KOI8R", "WIN866"] {
            let encoding = ClientEncoding::named(name);
            let all: Vec<u8> = (0..=255).collect();
            let text = encoding.decode(&all).unwrap();
            assert_eq!(encoding.encode(&text).unwrap().as_ref(), &all[..], "{name}");
        }
    }

    #[test]
    fn multibyte_encodings_round_trip() {
        let euc_jp = ClientEncoding::named("EUC_JP");
        let bytes = euc_jp.encode("日本語のテキスト").unwrap().into_owned();
        assert_eq!(euc_jp.decode(&bytes).unwrap(), "日本語のテキスト");
        // A truncated sequence is not text in that encoding.
        assert!(euc_jp.decode(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn a_latin1_query_is_read_as_its_characters() {
        let latin1 = ClientEncoding::named("LATIN1");
        let mut frame = vec![b'Q', 0, 0, 0, 20];
        frame.extend_from_slice(b"SELECT 'caf\xE9'\0");
        let readable = latin1.readable_frame(&frame).unwrap();
        assert_eq!(&readable[5..], "SELECT 'café'\0".as_bytes());
        assert_eq!(
            u32::from_be_bytes(readable[1..5].try_into().unwrap()) as usize,
            readable.len() - 1
        );
        // A Parse keeps its parameter types after the texts.
        let mut parse = vec![b'P', 0, 0, 0, 0];
        parse.extend_from_slice(b"s\xE9\0SELECT $1\0\x00\x01\x00\x00\x00\x19");
        let readable = latin1.readable_frame(&parse).unwrap();
        assert_eq!(
            &readable[5..],
            "sé\0SELECT $1\0\x00\x01\x00\x00\x00\x19".as_bytes()
        );
        // ASCII, or a UTF-8 session: nothing to change.
        assert!(latin1.readable_frame(b"Q\0\0\0\x0dSELECT 1\0").is_none());
        assert!(ClientEncoding::Utf8.readable_frame(&frame).is_none());
    }

    #[test]
    fn unknown_encodings_read_only_utf8() {
        let unread = ClientEncoding::named("SQL_ASCII");
        assert_eq!(unread, ClientEncoding::Unread);
        assert_eq!(unread.decode(b"plain").unwrap(), "plain");
        assert!(unread.decode(&[0xE9]).is_none());
        assert_eq!(ClientEncoding::named("UTF8"), ClientEncoding::Utf8);
    }
}
