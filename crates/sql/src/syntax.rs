//! A text the parser rejects, reported as the server reports it: the parser's own message,
//! its SQLSTATE and the character the error points at, so clients and tools show the same
//! caret under the same token whether or not a gateway is in between.

use serde::Serialize;

use crate::analyze::{Lexical, parse};

/// How many places a token that occurs several times is tried at before the first is taken.
const MAX_TRIES: usize = 32;

/// The parser's error for a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyntaxError {
    /// SQLSTATE: `42601` (syntax_error) for what the raw parser raises, but for the few
    /// escapes it reports as `22025` (invalid_escape_sequence).
    pub code: &'static str,
    /// The parser's message, e.g. `syntax error at or near "FORM"`.
    pub message: String,
    /// The character the error points at, from 1 (characters, not bytes), when the message
    /// names a place.
    pub position: Option<u32>,
}

impl SyntaxError {
    /// The error `message` the parser gave for `sql` read under `lexical`.
    pub fn new(sql: &str, lexical: Lexical, message: &str) -> SyntaxError {
        let code = if message.starts_with("invalid Unicode") {
            "22025"
        } else {
            "42601"
        };
        SyntaxError {
            code,
            message: message.to_string(),
            position: position(sql, lexical, message),
        }
    }
}

/// Where the error `message` points in `sql`. PostgreSQL's scanner names the token it
/// stopped at (`... at or near "TOKEN"`) or the end of the text; the parser bindings give the
/// message without its offset, so the token is found again: at each place the token's text
/// occurs (as a whole token), the text cut right after it must fail with the same message
/// — the parser stops at the first token it cannot take, and what comes after that token
/// does not change where it stopped.
fn position(sql: &str, lexical: Lexical, message: &str) -> Option<u32> {
    let characters_before = |byte: usize| sql[..byte].chars().count() as u32 + 1;
    if message.ends_with(" at end of input") {
        return Some(characters_before(sql.len()));
    }
    let (_, near) = message.rsplit_once(" at or near \"")?;
    let token = near.strip_suffix('"')?;
    if token.is_empty() {
        return None;
    }
    let mut first = None;
    for (start, _) in sql
        .match_indices(token)
        .filter(|(start, _)| whole_token(sql, *start, start + token.len()))
        .take(MAX_TRIES)
    {
        first.get_or_insert(start);
        let end = start + token.len();
        if let Err(pg_query::Error::Parse(again)) = parse(&sql[..end], lexical)
            && again == message
        {
            return Some(characters_before(start));
        }
    }
    first.map(characters_before)
}

/// Whether `sql[start..end]` is not part of a longer word on either side.
fn whole_token(sql: &str, start: usize, end: usize) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let inner_start = sql[start..end].chars().next().is_some_and(word);
    let inner_end = sql[start..end].chars().next_back().is_some_and(word);
    let before = sql[..start].chars().next_back().is_some_and(word);
    let after = sql[end..].chars().next().is_some_and(word);
    let joined = (inner_start && before) || (inner_end && after);
    !joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(sql: &str) -> SyntaxError {
        let Err(pg_query::Error::Parse(message)) = parse(sql, Lexical::default()) else {
            panic!("{sql:?} parsed");
        };
        SyntaxError::new(sql, Lexical::default(), &message)
    }

    /// The positions PostgreSQL 15 reported for these texts (psycopg's
    /// `diag.statement_position`).
    #[test]
    fn positions_match_the_server() {
        for (sql, message, position) in [
            ("SELEC 1", "syntax error at or near \"SELEC\"", 1),
            ("SELECT 1 +", "syntax error at end of input", 11),
            ("SELECT 'é' FORM t", "syntax error at or near \"t\"", 17),
            (
                "SELECT 1; SELECT * FORM x; SELECT 2",
                "syntax error at or near \"FORM\"",
                20,
            ),
            (
                "SELECT 'abc",
                "unterminated quoted string at or near \"'abc\"",
                8,
            ),
            (
                "SELECT 1a",
                "trailing junk after numeric literal at or near \"1a\"",
                8,
            ),
            ("SELECT é FROM", "syntax error at end of input", 14),
            ("SELECT 1 FROM FROM", "syntax error at or near \"FROM\"", 15),
            ("create table (x int)", "syntax error at or near \"(\"", 14),
            (
                "/* unterminated",
                "unterminated /* comment at or near \"/* unterminated\"",
                1,
            ),
        ] {
            let error = error_of(sql);
            assert_eq!(error.code, "42601", "{sql}");
            assert_eq!(error.message, message, "{sql}");
            assert_eq!(error.position, Some(position), "{sql}");
        }
    }

    #[test]
    fn a_token_inside_a_longer_word_is_not_the_place() {
        // "x" occurs inside "xx" first; the error is at the lone "x".
        let error = error_of("SELECT xx FROM t x x");
        assert_eq!(error.message, "syntax error at or near \"x\"");
        assert_eq!(error.position, Some(20));
    }

    #[test]
    fn the_reading_follows_the_session_strings() {
        // With backslashes escaping, the quote after the backslash does not end the string.
        let sql = r"SELECT 'a\' FORM";
        let lexical = Lexical {
            backslash_escapes: true,
        };
        let Err(pg_query::Error::Parse(message)) = parse(sql, lexical) else {
            panic!("parsed");
        };
        let error = SyntaxError::new(sql, lexical, &message);
        assert!(error.message.starts_with("unterminated quoted string"));
        assert_eq!(error.position, Some(8));
    }
}
