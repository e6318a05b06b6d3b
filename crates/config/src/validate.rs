//! `Config::validate`: every semantic check in one place. It collects all problems instead of
//! stopping at the first, so an operator fixes a config in one round trip.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Problem;
use crate::model::{
    AdminConfig, Config, CredentialsConfig, LedgerConfig, ResourceConfig, ResourceKind,
};
use crate::secret::{EnvLookup, process_env};
use crate::size::ByteSize;

const CHECKPOINT_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(3600));
const HEARTBEAT_MIN: Duration = Duration::from_secs(1);
const BATCHED_WINDOW: (Duration, Duration) = (Duration::from_micros(100), Duration::from_secs(1));
const SEGMENT_SIZE: (ByteSize, ByteSize) = (ByteSize::MIB, ByteSize::gib(4));
const RETRY_INTERVAL: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));
const MAX_ENTRY_SIZE: (ByteSize, ByteSize) = (ByteSize::KIB, ByteSize::mib(16));
const NAME_MAX: usize = 63;

impl Config {
    /// Checks everything the types cannot: ranges, names, uniqueness, that password sources
    /// exist and are non-empty (read from the process environment and file system now), and that
    /// no two listeners share an address. Returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        self.validate_with_env(&process_env)
    }

    /// [`Config::validate`] with the environment supplied by the caller (tests, dry runs).
    pub fn validate_with_env(&self, env: EnvLookup<'_>) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            problems.push(Problem::new("data_dir", "must not be empty"));
        }
        if self.log.level.trim().is_empty() {
            problems.push(Problem::new(
                "log.level",
                "must not be empty; write e.g. \"info\" or \"info,gatehouse_ledger=debug\"",
            ));
        }
        check_admin(&self.admin, &mut problems);
        check_ledger(&self.ledger, &mut problems);
        check_resources(&self.resources, env, &mut problems);
        check_identities(&self.identities, &mut problems);
        check_issuers(&self.issuers, &mut problems);
        check_listeners(self, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn check_admin(admin: &AdminConfig, problems: &mut Vec<Problem>) {
    if let Some(tls) = &admin.tls {
        // Read as PEM when the gateway starts; here only that the files are there, as for
        // a resource's `tls`, so `config check` on another machine can say what is missing.
        for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
            if path.as_os_str().is_empty() {
                problems.push(Problem::new(
                    format!("admin.tls.{key}"),
                    "must not be empty",
                ));
            } else if let Err(e) = std::fs::metadata(path) {
                problems.push(Problem::new(
                    format!("admin.tls.{key}"),
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
    }
}

/// A webhook is https, or http to a loopback host (a local relay): the URL is a secret
/// (whoever has it can post) and the body names people and statements, so neither crosses
/// a network in the clear. The message never repeats the URL.
fn check_webhook_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://").filter(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    }) else {
        return Err("is not a URL; write https://host/path".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // user:password@ is part of the secret; only what follows names the host.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h),
        None => Some(host_port.split(':').next().unwrap_or("")),
    };
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Err("has no host; write https://host/path".into());
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(
            "must be an https:// URL; http:// is accepted only for a loopback host (127.0.0.1, [::1], localhost)".into(),
        ),
        _ => Err(format!("must be an https:// URL, not {scheme}://")),
    }
}

fn check_ledger(ledger: &LedgerConfig, problems: &mut Vec<Problem>) {
    if let Some(days) = ledger.retention_days
        && !(1..=36_500).contains(&days)
    {
        problems.push(Problem::new(
            "ledger.retention_days",
            format!("{days} is not between 1 and 36500 days (leave it out to keep everything)"),
        ));
    }
    if let Err(why) = check_origin(&ledger.origin) {
        problems.push(Problem::new(
            "ledger.origin",
            format!("{:?} {why}", ledger.origin),
        ));
    }
    duration_in(
        problems,
        "ledger.checkpoint_interval",
        ledger.checkpoint_interval,
        CHECKPOINT_INTERVAL.0,
        Some(CHECKPOINT_INTERVAL.1),
    );
    duration_in(
        problems,
        "ledger.heartbeat_interval",
        ledger.heartbeat_interval,
        HEARTBEAT_MIN,
        None,
    );
    duration_in(
        problems,
        "ledger.batched_window",
        ledger.batched_window,
        BATCHED_WINDOW.0,
        Some(BATCHED_WINDOW.1),
    );
    size_in(
        problems,
        "ledger.segment_size",
        ledger.segment_size,
        SEGMENT_SIZE,
    );
    duration_in(
        problems,
        "ledger.retry_interval",
        ledger.retry_interval,
        RETRY_INTERVAL.0,
        Some(RETRY_INTERVAL.1),
    );
    size_in(
        problems,
        "ledger.max_entry_size",
        ledger.max_entry_size,
        MAX_ENTRY_SIZE,
    );
    // An entry must fit in a fresh segment, or the writer could never place it.
    if ledger.max_entry_size >= ledger.segment_size {
        problems.push(Problem::new(
            "ledger.max_entry_size",
            format!(
                "{} must be smaller than ledger.segment_size ({})",
                ledger.max_entry_size, ledger.segment_size
            ),
        ));
    }
}

/// The origin is the first line of a signed checkpoint (C2SP tlog-checkpoint) and the signing
/// key's name in a signed note, where whitespace and `+` are separators.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin.is_empty() {
        Err("is empty; write e.g. \"gatehouse.example.com/ledger\"")
    } else if origin.contains(|c: char| c.is_whitespace() || c.is_control()) {
        Err("must not contain whitespace or control characters")
    } else if origin.contains('+') {
        Err("must not contain '+'")
    } else {
        Ok(())
    }
}

fn duration_in(
    problems: &mut Vec<Problem>,
    key: &str,
    value: Duration,
    min: Duration,
    max: Option<Duration>,
) {
    let show = humantime::format_duration;
    if value < min {
        problems.push(Problem::new(
            key,
            format!("{} is too short; use at least {}", show(value), show(min)),
        ));
    } else if let Some(max) = max.filter(|max| value > *max) {
        problems.push(Problem::new(
            key,
            format!("{} is too long; use at most {}", show(value), show(max)),
        ));
    }
}

fn size_in(
    problems: &mut Vec<Problem>,
    key: &str,
    value: ByteSize,
    (min, max): (ByteSize, ByteSize),
) {
    if value < min {
        problems.push(Problem::new(
            key,
            format!("{value} is too small; use at least {min}"),
        ));
    } else if value > max {
        problems.push(Problem::new(
            key,
            format!("{value} is too large; use at most {max}"),
        ));
    }
}

fn check_resources(resources: &[ResourceConfig], env: EnvLookup<'_>, problems: &mut Vec<Problem>) {
    // name -> indices using it, in file order; BTreeMap keeps the report order stable.
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, resource) in resources.iter().enumerate() {
        let at = format!("resources[{i}]");
        by_name.entry(resource.name.as_str()).or_default().push(i);
        if !is_valid_name(&resource.name) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!(
                    "{:?} is not a valid name; use 1 to {NAME_MAX} characters from a-z, 0-9, '_', '.', '-', starting with a letter or digit",
                    resource.name
                ),
            ));
        }
        if let Some(target) = &resource.target
            && let Err(why) = check_target(target)
        {
            problems.push(Problem::new(
                format!("{at}.target"),
                format!("{target:?} is not host:port: {why}"),
            ));
        }
        if resource.database.as_deref().is_some_and(str::is_empty) {
            problems.push(Problem::new(
                format!("{at}.database"),
                "must not be empty; leave it out instead",
            ));
        }
        if let Some(credentials) = &resource.credentials {
            check_credentials(credentials, &format!("{at}.credentials"), env, problems);
        }
        if let Some(tls) = &resource.tls {
            for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
                if let Err(e) = std::fs::metadata(path) {
                    problems.push(Problem::new(
                        format!("{at}.tls.{key}"),
                        format!("cannot read {}: {e}", path.display()),
                    ));
                }
            }
        }
        if let Some(tls) = &resource.target_tls {
            if let Err(e) = std::fs::metadata(&tls.ca) {
                problems.push(Problem::new(
                    format!("{at}.target_tls.ca"),
                    format!("cannot read {}: {e}", tls.ca.display()),
                ));
            }
            if tls.server_name.as_deref().is_some_and(str::is_empty) {
                problems.push(Problem::new(
                    format!("{at}.target_tls.server_name"),
                    "must not be empty; leave it out to use the host part of target",
                ));
            }
        }
        check_masking(&resource.masking, &format!("{at}.masking"), env, problems);
        check_limits(&resource.limits, &format!("{at}.limits"), problems);
        for (j, name) in resource.startup_parameters.iter().enumerate() {
            if let Some(why) = gatehouse_sql::startup_parameter_forbidden(name) {
                problems.push(Problem::new(
                    format!("{at}.startup_parameters[{j}]"),
                    format!("{name:?} cannot be allowed: {why}"),
                ));
            }
        }
        let reviews = &resource.reviews;
        if !(1..=10).contains(&reviews.approvals) {
            problems.push(Problem::new(
                format!("{at}.reviews.approvals"),
                format!("must be 1 to 10, not {}", reviews.approvals),
            ));
        }
        if reviews.timeout < Duration::from_secs(1) || reviews.timeout > Duration::from_secs(86_400)
        {
            problems.push(Problem::new(
                format!("{at}.reviews.timeout"),
                "must be between 1s and 24h",
            ));
        }
        for (n, hook) in reviews.notify.iter().enumerate() {
            if let Err(why) = check_webhook_url(&hook.url) {
                problems.push(Problem::new(format!("{at}.reviews.notify[{n}].url"), why));
            }
        }
        if reviews.approvers.iter().any(|g| g.trim().is_empty()) {
            problems.push(Problem::new(
                format!("{at}.reviews.approvers"),
                "must not hold an empty group name",
            ));
        }
        if let Err(found) = gatehouse_sql::validate_rules(&resource.rules) {
            for (j, key, problem) in found {
                problems.push(Problem::new(format!("{at}.rules[{j}].{key}"), problem));
            }
        }
        if resource.kind == ResourceKind::Postgres {
            // A PostgreSQL resource is served by a listener that needs all four.
            let missing = [
                ("listen", resource.listen.is_none()),
                ("target", resource.target.is_none()),
                ("database", resource.database.is_none()),
                ("credentials", resource.credentials.is_none()),
            ];
            for (key, absent) in missing {
                if absent {
                    problems.push(Problem::new(
                        format!("{at}.{key}"),
                        "is required for a postgres resource",
                    ));
                }
            }
        }
    }
    let mut duplicates: Vec<(usize, &str, &[usize])> = by_name
        .iter()
        .filter(|(_, indices)| indices.len() > 1)
        .map(|(name, indices)| (indices[0], *name, &indices[1..]))
        .collect();
    duplicates.sort_by_key(|(first, _, _)| *first);
    for (first, name, others) in duplicates {
        let others: Vec<String> = others.iter().map(|j| format!("resources[{j}]")).collect();
        problems.push(Problem::new(
            format!("resources[{first}].name"),
            format!("{name:?} is used by {} too", others.join(" and ")),
        ));
    }
}

fn check_limits(limits: &crate::LimitsConfig, at: &str, problems: &mut Vec<Problem>) {
    for (key, value) in [
        ("max_connections", limits.max_connections),
        ("max_startups", limits.max_startups),
        ("max_startups_per_source", limits.max_startups_per_source),
    ] {
        if value == 0 {
            problems.push(Problem::new(
                format!("{at}.{key}"),
                "must be at least 1".to_string(),
            ));
        }
    }
    if limits.max_startups_per_source > limits.max_startups {
        problems.push(Problem::new(
            format!("{at}.max_startups_per_source"),
            format!(
                "must not exceed max_startups ({}), not {}",
                limits.max_startups, limits.max_startups_per_source
            ),
        ));
    }
}

fn check_masking(
    masking: &crate::MaskingConfig,
    at: &str,
    env: EnvLookup<'_>,
    problems: &mut Vec<Problem>,
) {
    let custom: Vec<&str> = masking.patterns.iter().map(|p| p.name.as_str()).collect();
    if let crate::DetectorSelection::Only(names) = &masking.detectors {
        for (j, name) in names.iter().enumerate() {
            if gatehouse_mask::Kind::builtin(name).is_none() {
                problems.push(Problem::new(
                    format!("{at}.detectors[{j}]"),
                    format!("{name:?} is not a built-in detector; {}", builtin_names()),
                ));
            }
        }
    }
    for kind in masking.strategies.keys() {
        if gatehouse_mask::Kind::builtin(kind).is_none() && !custom.contains(&kind.as_str()) {
            problems.push(Problem::new(
                format!("{at}.strategies.{kind}"),
                format!(
                    "{kind:?} is neither a built-in detector nor a pattern name; {}",
                    builtin_names()
                ),
            ));
        }
    }
    for (j, column) in masking.columns.iter().enumerate() {
        if let Err(e) = gatehouse_mask::check_pattern(&column.column) {
            problems.push(Problem::new(
                format!("{at}.columns[{j}].column"),
                e.to_string(),
            ));
        }
    }
    for (j, pattern) in masking.patterns.iter().enumerate() {
        if !is_valid_name(&pattern.name) || gatehouse_mask::Kind::builtin(&pattern.name).is_some() {
            problems.push(Problem::new(
                format!("{at}.patterns[{j}].name"),
                format!(
                    "{:?} must be a name (a-z, 0-9, '_', '.', '-') that no built-in detector has",
                    pattern.name
                ),
            ));
        }
        if let Err(e) =
            gatehouse_mask::Detectors::select(&[], &[(pattern.name.clone(), pattern.regex.clone())])
        {
            problems.push(Problem::new(
                format!("{at}.patterns[{j}].regex"),
                e.to_string(),
            ));
        }
    }
    if let Err(p) = masking.key_with_env(env) {
        problems.push(p.within(at));
    }
}

fn builtin_names() -> String {
    let names: Vec<&str> = gatehouse_mask::Kind::BUILTIN
        .iter()
        .map(|k| k.name())
        .collect();
    format!("the built-in ones are {}", names.join(", "))
}

fn check_identities(identities: &[crate::IdentityConfig], problems: &mut Vec<Problem>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, identity) in identities.iter().enumerate() {
        let at = format!("identities[{i}]");
        // '/' is kept for identities from an OpenID Provider (`<issuer>/<name>`), so a
        // configured key can never share a principal with a token's identity.
        let name_ok = !identity.name.is_empty()
            && identity.name.len() <= 128
            && !identity
                .name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/');
        if !name_ok {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!(
                    "{:?} is not a valid identity name (1 to 128 characters, no spaces, no '/')",
                    identity.name
                ),
            ));
        }
        if let Some(first) = seen.insert(identity.name.as_str(), i) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!("{:?} is already used by identities[{first}]", identity.name),
            ));
        }
        let hash_ok = identity
            .key_hash
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !hash_ok {
            problems.push(Problem::new(
                format!("{at}.key_hash"),
                "must be \"sha256:\" followed by 64 hex digits; make one with `gatehouse keys hash`",
            ));
        }
    }
}

/// Signature algorithms a token may use. HMAC is missing on purpose: with a public key as
/// the HMAC secret anyone could sign; `none` is not an algorithm.
pub const TOKEN_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn check_issuers(issuers: &[crate::IssuerConfig], problems: &mut Vec<Problem>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, issuer) in issuers.iter().enumerate() {
        let at = format!("issuers[{i}]");
        if !is_valid_name(&issuer.name) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!(
                    "{:?} is not a valid name (lower-case letters, digits and '-', starting with a letter)",
                    issuer.name
                ),
            ));
        }
        if let Some(first) = seen.insert(issuer.name.as_str(), i) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!("{:?} is already used by issuers[{first}]", issuer.name),
            ));
        }
        if let Err(why) = check_issuer_url(&issuer.issuer) {
            problems.push(Problem::new(
                format!("{at}.issuer"),
                format!("{:?} {why}", issuer.issuer),
            ));
        }
        if issuer.audiences.is_empty() || issuer.audiences.iter().any(|a| a.is_empty()) {
            problems.push(Problem::new(
                format!("{at}.audiences"),
                "name at least one audience the tokens must be for (e.g. [\"gatehouse\"])",
            ));
        }
        if issuer.algorithms.is_empty() {
            problems.push(Problem::new(
                format!("{at}.algorithms"),
                "must not be empty",
            ));
        }
        for alg in &issuer.algorithms {
            if !TOKEN_ALGORITHMS.contains(&alg.as_str()) {
                problems.push(Problem::new(
                    format!("{at}.algorithms"),
                    format!(
                        "{alg:?} is not accepted; use some of {} (HMAC and none are never accepted)",
                        TOKEN_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if issuer.leeway > Duration::from_secs(300) {
            problems.push(Problem::new(
                format!("{at}.leeway"),
                "at most 5m: a larger leeway accepts expired tokens for longer",
            ));
        }
        if issuer.jwks_refresh < Duration::from_secs(10) {
            problems.push(Problem::new(format!("{at}.jwks_refresh"), "at least 10s"));
        }
        for (r, rule) in issuer.claim_rules.iter().enumerate() {
            let at = format!("{at}.claim_rules[{r}]");
            if rule.claims.is_empty() {
                problems.push(Problem::new(
                    format!("{at}.claims"),
                    "name at least one claim to match, or every token of this issuer would match",
                ));
            }
            if rule.identity.is_empty() || rule.identity.chars().any(char::is_whitespace) {
                problems.push(Problem::new(
                    format!("{at}.identity"),
                    format!("{:?} is not a valid identity name", rule.identity),
                ));
            }
        }
        for (key, claim) in [
            ("username_claim", &issuer.username_claim),
            ("groups_claim", &issuer.groups_claim),
        ] {
            if claim.is_empty() {
                problems.push(Problem::new(format!("{at}.{key}"), "must not be empty"));
            }
        }
    }
}

/// An issuer URL is https, or http to a loopback address (a test or a local provider):
/// its signing keys are fetched from it, and keys fetched over a network in the clear
/// could be replaced by anyone on the path.
fn check_issuer_url(url: &str) -> Result<(), &'static str> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("is not a URL (expected https://host/...)")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err("has no host");
    }
    let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let loopback = matches!(bare, "127.0.0.1" | "[::1]" | "localhost");
    match scheme {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("must use https (http is accepted for loopback addresses only)"),
        _ => Err("must be an https URL"),
    }
}

fn is_valid_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut chars = name.chars();
    name.len() <= NAME_MAX
        && chars.next().is_some_and(allowed)
        && chars.all(|c| allowed(c) || matches!(c, '_' | '.' | '-'))
}

/// `host:port` or `[v6]:port`. The host is not resolved here: DNS may differ between the
/// machine checking the config and the moment of connecting.
fn check_target(target: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("missing ']' after an IPv6 address")?;
        let port = after.strip_prefix(':').ok_or("the port is missing")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "the address in brackets is not IPv6")?;
        (host, port)
    } else {
        let (host, port) = target.rsplit_once(':').ok_or("the port is missing")?;
        if host.contains(':') {
            return Err("put an IPv6 address in brackets, e.g. [::1]:5432");
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
        return Err("the host contains whitespace or '/'");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

fn check_credentials(
    credentials: &CredentialsConfig,
    at: &str,
    env: EnvLookup<'_>,
    problems: &mut Vec<Problem>,
) {
    if credentials.user.is_empty() {
        problems.push(Problem::new(format!("{at}.user"), "must not be empty"));
    }
    // Resolving is the check: the value is dropped at once and only the problem is kept.
    if let Err(problem) = credentials.password_with_env(env) {
        problems.push(problem.within(at));
    }
}

/// Two listeners on one port clash if their addresses are equal or either is a wildcard
/// (`0.0.0.0`, `[::]`), which binds every interface. Port 0 asks the OS for a free port, so it
/// never clashes (tests rely on it).
fn check_listeners(config: &Config, problems: &mut Vec<Problem>) {
    let mut listeners: Vec<(String, SocketAddr)> =
        vec![("admin.listen".to_owned(), config.admin.listen)];
    for (i, resource) in config.resources.iter().enumerate() {
        if let Some(listen) = resource.listen {
            listeners.push((format!("resources[{i}].listen"), listen));
        }
    }
    for (j, (key, addr)) in listeners.iter().enumerate() {
        let clash = listeners[..j].iter().find(|(_, earlier)| {
            addr.port() != 0
                && addr.port() == earlier.port()
                && (addr.ip() == earlier.ip()
                    || addr.ip().is_unspecified()
                    || earlier.ip().is_unspecified())
        });
        if let Some((earlier_key, earlier)) = clash {
            let message = if earlier == addr {
                format!("{addr} is also used by {earlier_key}")
            } else {
                format!(
                    "{addr} overlaps {earlier_key} ({earlier}) on port {}",
                    addr.port()
                )
            };
            problems.push(Problem::new(key.clone(), message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["pg-demo", "a", "0", "db_1.prod", &"a".repeat(63)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "Pg", "a b", "ä", &"a".repeat(64)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn webhooks_are_https_or_http_on_loopback() {
        for ok in [
            "https://hooks.slack.com/services/T000/B000/XXXX",
            "HTTPS://hooks.example/x",
            "http://127.0.0.1:9000/hook",
            "http://127.8.9.10/hook",
            "http://[::1]:9000/hook",
            "http://localhost/hook",
            "http://user:secret@127.0.0.1:9000/hook",
        ] {
            assert_eq!(check_webhook_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://hooks.example/secret-path",
            "http://10.0.0.5:9000/secret-path",
            "http://[2001:db8::1]/secret-path",
            // Userinfo naming loopback does not make the host loopback.
            "http://127.0.0.1@hooks.example/secret-path",
            "http://localhost.hooks.example/secret-path",
            "ftp://hooks.example/secret-path",
            "hooks.example/secret-path",
            "hooks.example/secret-path?next=https://x",
            "https:///secret-path",
        ] {
            let why = check_webhook_url(bad).expect_err(bad);
            assert!(!why.contains("secret-path"), "{bad}: {why}");
        }
        assert!(
            check_webhook_url("http://hooks.example/x")
                .unwrap_err()
                .contains("loopback")
        );
        assert_eq!(
            check_webhook_url("ftp://hooks.example/x").unwrap_err(),
            "must be an https:// URL, not ftp://"
        );
    }

    #[test]
    fn targets() {
        for ok in [
            "127.0.0.1:5432",
            "db.internal:5432",
            "[::1]:5432",
            "localhost:1",
        ] {
            assert_eq!(check_target(ok), Ok(()), "{ok}");
        }
        for bad in [
            "db.internal",
            ":5432",
            "db:0",
            "db:99999",
            "::1:5432",
            "[::1]",
            "[nope]:1",
            "a b:1",
        ] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins() {
        assert!(check_origin("gatehouse.local/ledger").is_ok());
        assert!(check_origin("").is_err());
        assert!(check_origin("a b").is_err());
        assert!(check_origin("a+b").is_err());
        assert!(check_origin("a\u{7}").is_err());
    }

    #[test]
    fn defaults_and_demo_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::demo("/tmp/x".into()).validate(), Ok(()));
    }

    #[test]
    fn port_zero_and_distinct_ports_do_not_clash() {
        let mut config = Config::default();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        let resource = |name: &str, listen: &str| ResourceConfig {
            name: name.to_owned(),
            kind: crate::ResourceKind::Http,
            durability: Default::default(),
            listen: Some(listen.parse().unwrap()),
            target: None,
            database: None,
            credentials: None,
            rules: Vec::new(),
            on_unparsed: Default::default(),
            tls: None,
            target_tls: None,
            recording: Default::default(),
            masking: Default::default(),
            reviews: Default::default(),
            environment: None,
            tags: Vec::new(),
            limits: Default::default(),
            startup_parameters: Vec::new(),
        };
        config.resources = vec![
            resource("a", "127.0.0.1:0"),
            resource("b", "127.0.0.1:9000"),
            resource("c", "127.0.0.2:9000"),
        ];
        assert_eq!(config.validate(), Ok(()));
        config.resources.push(resource("d", "0.0.0.0:9000"));
        let problems = config.validate().unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "resources[3].listen");
        assert_eq!(
            problems[0].message,
            "0.0.0.0:9000 overlaps resources[1].listen (127.0.0.1:9000) on port 9000"
        );
    }
}
