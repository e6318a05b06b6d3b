//! PostgreSQL startup parameters: which a client may set as it connects. Most are display
//! and timing preferences; a few change who runs statements or how their text is read,
//! and those the gateway decides itself instead of passing on.

/// Parameters any client may set: display formats, time zones, timeouts, the search path.
/// `client_encoding` is among them because the gateway follows the encoding the server
/// reports and refuses the unsafe ones.
const SAFE: [&str; 22] = [
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
    "bytea_output",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "default_transaction_deferrable",
    "client_min_messages",
    "timezone_abbreviations",
    "geqo",
    "jit",
];

/// Whether `name` is on the built-in list of parameters any client may set.
pub fn startup_parameter_safe(name: &str) -> bool {
    SAFE.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// Why `name` may never be passed on from a client, whatever the configuration says;
/// `None` when a resource may allow it.
pub fn startup_parameter_forbidden(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "options" => Some("it carries arbitrary settings (-c name=value) past every other check"),
        "role" | "session_authorization" => {
            Some("it changes which database role runs the statements")
        }
        "user" | "database" | "replication" => {
            Some("the gateway sets it from the resource's configuration")
        }
        _ if lower.starts_with("_pq_.") => {
            Some("it is a protocol extension the gateway does not speak")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_forbidden_and_the_rest() {
        for name in [
            "application_name",
            "DateStyle",
            "TimeZone",
            "client_encoding",
        ] {
            assert!(startup_parameter_safe(name), "{name}");
            assert!(startup_parameter_forbidden(name).is_none(), "{name}");
        }
        for name in [
            "options",
            "ROLE",
            "session_authorization",
            "_pq_.compression",
        ] {
            assert!(!startup_parameter_safe(name), "{name}");
            assert!(startup_parameter_forbidden(name).is_some(), "{name}");
        }
        // Neither: refused unless a resource allows it.
        for name in ["standard_conforming_strings", "work_mem", "backslash_quote"] {
            assert!(!startup_parameter_safe(name), "{name}");
            assert!(startup_parameter_forbidden(name).is_none(), "{name}");
        }
    }
}
