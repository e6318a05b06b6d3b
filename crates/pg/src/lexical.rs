//! How the server reads the session's SQL text, followed from what the server reports
//! (ParameterStatus for `standard_conforming_strings` and `client_encoding`, which cover
//! startup options, SET and `set_config` alike), and the checks that keep the gateway's
//! reading equal to the server's. Pure.
//!
//! While statements are in flight the server may change a setting the gateway hears of
//! only at the next ReadyForQuery (PostgreSQL reports changed settings just before it).
//! A text whose reading could change with those settings is then refused
//! ([`Lexicon::unsettled_reading`]); one that reads the same either way is decided now.

use gatehouse_sql::{Lexical, reads_alike};

use crate::encoding::ClientEncoding;

/// Client encodings in which the second byte of a character can be an ASCII byte such as
/// `\`, `'` or `;`: the server converts them to its own encoding before parsing, so the
/// same bytes split into other tokens than they do here. PostgreSQL allows them only as
/// client encodings for the same reason.
const UNSAFE_ENCODINGS: [&str; 7] = [
    "SJIS",
    "SHIFT_JIS_2004",
    "BIG5",
    "GBK",
    "UHC",
    "JOHAB",
    "GB18030",
];

/// Whether text in `encoding` can be split differently by the server than by the gateway.
pub(crate) fn is_unsafe_encoding(encoding: &str) -> bool {
    UNSAFE_ENCODINGS
        .iter()
        .any(|e| e.eq_ignore_ascii_case(encoding))
}

/// The session's lexical settings, as the server last reported them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lexicon {
    pub lexical: Lexical,
    pub client_encoding: String,
    /// How the server's texts are read and written back (masking).
    pub encoding: ClientEncoding,
}

/// A reported setting the gateway cannot read statements under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnsafeSetting {
    pub name: &'static str,
    pub value: String,
}

impl Lexicon {
    /// Takes one ParameterStatus report. Returns an error for a client encoding the gateway
    /// will not read; the session must then end.
    pub(crate) fn observe(&mut self, name: &str, value: &str) -> Result<(), UnsafeSetting> {
        if name.eq_ignore_ascii_case("standard_conforming_strings") {
            self.lexical.backslash_escapes = !value.eq_ignore_ascii_case("on");
        } else if name.eq_ignore_ascii_case("client_encoding") {
            self.client_encoding = value.to_string();
            self.encoding = ClientEncoding::named(value);
            if is_unsafe_encoding(value) {
                return Err(UnsafeSetting {
                    name: "client_encoding",
                    value: value.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Reads every ParameterStatus in a run of server frames (the greeting).
    pub(crate) fn observe_frames(&mut self, mut frames: &[u8]) -> Result<(), UnsafeSetting> {
        while let Ok(Some(len)) = gatehouse_wire_pg::split_frame(frames) {
            let frame = &frames[..len];
            if frame[0] == b'S'
                && let Ok((name, value)) = gatehouse_wire_pg::backend::parameter_status(&frame[5..])
            {
                self.observe(name, value)?;
            }
            frames = &frames[len..];
        }
        Ok(())
    }

    /// Why `sql` cannot be decided now, when statements still in flight may change the
    /// settings it is read under; `None` when it reads the same whatever they do.
    pub(crate) fn unsettled_reading(sql: &str) -> Option<&'static str> {
        if !reads_alike(sql) {
            return Some(
                "it reads differently with standard_conforming_strings on and off, and statements still in flight may change that setting",
            );
        }
        if encoding_sensitive(sql.as_bytes()) {
            return Some(
                "its non-ASCII characters could be read differently if statements still in flight change client_encoding",
            );
        }
        None
    }
}

/// Whether a non-ASCII byte is directly followed by a byte that an unsafe encoding could
/// take as the second half of a character (digits, letters and most punctuation from `0`
/// up: `;`, `\`, `:` among them). Quotes, spaces, `-`, `/`, `*`, `(`, `)` and `,` cannot.
fn encoding_sensitive(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .any(|w| w[0] >= 0x80 && (0x30..=0x7e).contains(&w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_server() {
        let mut lexicon = Lexicon::default();
        assert!(!lexicon.lexical.backslash_escapes);
        lexicon
            .observe("standard_conforming_strings", "off")
            .unwrap();
        assert!(lexicon.lexical.backslash_escapes);
        lexicon
            .observe("standard_conforming_strings", "on")
            .unwrap();
        assert!(!lexicon.lexical.backslash_escapes);
        lexicon.observe("client_encoding", "UTF8").unwrap();
        lexicon.observe("client_encoding", "LATIN1").unwrap();
        for bad in [
            "SJIS",
            "big5",
            "GBK",
            "UHC",
            "JOHAB",
            "GB18030",
            "SHIFT_JIS_2004",
        ] {
            assert_eq!(
                lexicon.observe("client_encoding", bad),
                Err(UnsafeSetting {
                    name: "client_encoding",
                    value: bad.into()
                })
            );
        }
        lexicon.observe("TimeZone", "UTC").unwrap();
    }

    #[test]
    fn a_greeting_is_read_frame_by_frame() {
        let mut frames = Vec::new();
        for (k, v) in [
            ("client_encoding", "UTF8"),
            ("standard_conforming_strings", "off"),
        ] {
            let mut body = Vec::new();
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
            gatehouse_wire_pg::frontend::frame(b'S', &body, &mut frames);
        }
        let mut lexicon = Lexicon::default();
        lexicon.observe_frames(&frames).unwrap();
        assert!(lexicon.lexical.backslash_escapes);
        assert_eq!(lexicon.client_encoding, "UTF8");
    }

    #[test]
    fn unsettled_texts_that_could_read_differently_are_named() {
        assert!(Lexicon::unsettled_reading("SELECT 1").is_none());
        assert!(Lexicon::unsettled_reading(r"SELECT 'C:\temp'").is_none());
        assert!(Lexicon::unsettled_reading(r"SELECT 'a\' -- '; DELETE FROM t; --").is_some());
        // "ぁ" then a backslash: in SJIS the last UTF-8 byte and the backslash can be one
        // character.
        assert!(Lexicon::unsettled_reading("SELECT E'ぁ\\' || 1").is_some());
        assert!(Lexicon::unsettled_reading("SELECT 'é'").is_none());
        assert!(Lexicon::unsettled_reading("SELECT 'éa'").is_some());
    }
}
