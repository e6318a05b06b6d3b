//! Loading real files from a temporary folder: the example, defaults, and one test per kind of
//! mistake, each checking that the message names the file and the key.
//!
//! Environment: tests run in parallel and `std::env::set_var` is `unsafe` (forbidden here), so
//! nothing sets variables. The "is set" case uses `PATH`, which every environment has; the
//! "missing" case uses a name nobody sets; exact values go through `validate_with_env`.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use std::env::VarError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_config::{
    ByteSize, Config, ConfigError, DetectorSelection, Durability, LedgerConfig, LogFormat, Problem,
    RecordingConfig, ResourceKind,
};
use gatehouse_mask::Strategy;

const UNSET: &str = "GATEHOUSE_TEST_SURELY_UNSET_4711";

const EXAMPLE: &str = include_str!("../../../examples/gatehouse.toml");

/// A folder holding `gatehouse.toml` with `text`; the folder lives as long as the guard.
fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// The error message for loading `text` from a real file, with the file's path shortened to
/// `gatehouse.toml` so expectations read like what an operator sees.
fn load_error(text: &str) -> String {
    let (_dir, path) = write_config(text);
    let err = Config::load(&path).expect_err("config should be rejected");
    assert_eq!(err.file(), path);
    let message = err.to_string();
    for line in message.lines() {
        assert!(
            line.starts_with(&path.display().to_string()),
            "line does not name the file: {line}"
        );
    }
    message.replace(&path.display().to_string(), "gatehouse.toml")
}

/// The validation problems of the config file at `path`, which must have some.
fn load_problems(path: &Path) -> Vec<Problem> {
    match Config::load(path).unwrap_err() {
        ConfigError::Invalid { problems, .. } => problems,
        other => panic!("expected validation problems, got {other}"),
    }
}

fn fake_env(name: &str) -> Result<String, VarError> {
    match name {
        "PG_DEMO_PASSWORD" => Ok("demo-password-from-env".to_owned()),
        _ => Err(VarError::NotPresent),
    }
}

const PG: &str = "[[resources]]\nname = \"pg\"\nkind = \"http\"\n";

#[test]
fn example_file_loads() {
    let (dir, path) = write_config(EXAMPLE);
    let config = Config::parse_toml_str(EXAMPLE, &path).unwrap();
    assert_eq!(config.validate_with_env(&fake_env), Ok(()));

    // The example documents the defaults, so it must agree with them.
    let defaults = Config::default();
    assert_eq!(config.log, defaults.log);
    assert_eq!(config.admin, defaults.admin);
    assert_eq!(config.ledger, defaults.ledger);
    assert_eq!(config.data_dir, dir.path().join("gatehouse-data"));

    let pg = config.resource("pg-demo").unwrap();
    assert_eq!(pg.kind, ResourceKind::Postgres);
    assert_eq!(pg.durability, Durability::Sync);
    assert_eq!(pg.listen, Some("127.0.0.1:6432".parse().unwrap()));
    assert_eq!(pg.target.as_deref(), Some("127.0.0.1:5432"));
    assert_eq!(pg.database.as_deref(), Some("app"));
    assert_eq!(pg.recording, RecordingConfig::default());
    let creds = pg.credentials.as_ref().unwrap();
    assert_eq!(creds.user, "gatehouse");
    assert_eq!(
        creds.password_with_env(&fake_env).unwrap().expose(),
        "demo-password-from-env"
    );
    assert!(config.resource("nope").is_none());

    // Through `load`, the real environment decides; PG_DEMO_PASSWORD is normally unset here.
    if std::env::var_os("PG_DEMO_PASSWORD").is_none() {
        assert_eq!(
            load_error(EXAMPLE),
            "gatehouse.toml: resources[0].credentials.password_env: environment variable PG_DEMO_PASSWORD is not set"
        );
    }
}

#[test]
fn empty_file_gives_defaults() {
    let (dir, path) = write_config("");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.data_dir, dir.path().join("gatehouse-data"));
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.admin.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        config.ledger,
        LedgerConfig {
            origin: "gatehouse.local/ledger".to_owned(),
            checkpoint_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(60),
            batched_window: Duration::from_millis(5),
            segment_size: ByteSize::mib(64),
            retry_interval: Duration::from_secs(1),
            max_entry_size: ByteSize::mib(1),
            retention_days: None,
        }
    );
    assert!(config.resources.is_empty());
    assert_eq!(
        config,
        Config {
            data_dir: config.data_dir.clone(),
            ..Config::default()
        }
    );
}

#[test]
fn values_are_typed() {
    let text = r#"
data_dir = "/var/lib/gatehouse"
[log]
format = "json"
level = "info,gatehouse_ledger=debug"
[ledger]
checkpoint_interval = "250ms"
batched_window = "100us"
segment_size = 2097152
max_entry_size = "64 KiB"
retention_days = 400
[[resources]]
name = "api"
kind = "http"
durability = "batched"
listen = "[::1]:0"
"#;
    let (_dir, path) = write_config(text);
    let config = Config::load(&path).unwrap();
    assert_eq!(config.data_dir, Path::new("/var/lib/gatehouse"));
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(
        config.ledger.checkpoint_interval,
        Duration::from_millis(250)
    );
    assert_eq!(config.ledger.batched_window, Duration::from_micros(100));
    assert_eq!(config.ledger.segment_size.bytes(), 2 << 20);
    assert_eq!(config.ledger.max_entry_size, ByteSize::kib(64));
    assert_eq!(config.ledger.retention_days, Some(400));
    assert_eq!(config.resources[0].durability, Durability::Batched);
}

#[test]
fn retention_must_be_a_sensible_number_of_days() {
    assert_eq!(
        load_error("[ledger]\nretention_days = 0\n"),
        "gatehouse.toml: ledger.retention_days: 0 is not between 1 and 36500 days (leave it out to keep everything)"
    );
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "{}: cannot read the config file: ",
            path.display()
        )),
        "{message}"
    );
}

#[test]
fn unknown_key_at_top_level() {
    assert_eq!(
        load_error("data_dir = \"x\"\nbogus = 1\n"),
        "gatehouse.toml:2:1: bogus: unknown key; expected one of data_dir, log, admin, ledger, resources, identities, issuers, policy"
    );
}

#[test]
fn unknown_key_nested() {
    let text = "# comment\n\n[log]\nlevel = \"info\"\n\n[ledger]\nsegment_sise = \"64MiB\"\n";
    assert_eq!(
        load_error(text),
        "gatehouse.toml:7:1: ledger.segment_sise: unknown key; expected one of origin, checkpoint_interval, \
         heartbeat_interval, batched_window, segment_size, retry_interval, max_entry_size, retention_days"
    );
    let text = format!("{PG}[resources.credentials]\nuser = \"u\"\npasword_env = \"X\"\n");
    assert_eq!(
        load_error(&text),
        "gatehouse.toml:6:1: resources[0].credentials.pasword_env: unknown key; expected one of user, password_env, password_file"
    );
    let text = format!("{PG}{PG}port = 5432\n");
    assert_eq!(
        load_error(&text),
        "gatehouse.toml:7:1: resources[1].port: unknown key; expected one of name, kind, durability, listen, \
         target, database, credentials, rules, on_unparsed, tls, target_tls, recording, masking, reviews, environment, tags, limits, startup_parameters"
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        load_error("[[identities]]\nname = \"a\"\ngroups = \"ops\"\n"),
        "gatehouse.toml:3:10: identities[0].groups: wrong type: expected an array, found string \"ops\""
    );
    assert_eq!(
        load_error("log = \"debug\"\n"),
        "gatehouse.toml:1:7: log: wrong type: expected a table, found string \"debug\""
    );
    assert_eq!(
        load_error("[[resources]]\nname = \"x\"\nkind = \"postgress\"\n"),
        "gatehouse.toml:3:8: resources[0].kind: unknown value \"postgress\"; expected one of postgres, mysql, ssh, http, kubernetes"
    );
    assert_eq!(
        load_error("[admin]\nlisten = \"localhost:8080\"\n"),
        "gatehouse.toml:2:10: admin.listen: invalid socket address syntax; write ip:port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
    );
}

#[test]
fn missing_required_key() {
    assert_eq!(
        load_error("[[resources]]\nkind = \"ssh\"\n"),
        "gatehouse.toml:1:1: resources[0].name: required key is missing"
    );
    assert_eq!(
        load_error(&format!(
            "{PG}credentials = {{ password_env = \"PATH\" }}\n"
        )),
        "gatehouse.toml:4:15: resources[0].credentials.user: required key is missing"
    );
}

#[test]
fn bad_duration() {
    let message =
        load_error("[ledger]\ncheckpoint_interval = \"1 sec\"\nheartbeat_interval = \"10\"\n");
    assert!(
        message.starts_with(
            "gatehouse.toml:3:22: ledger.heartbeat_interval: \"10\" is not a duration ("
        ),
        "{message}"
    );
    assert_eq!(
        load_error("[ledger]\nbatched_window = 5\n"),
        "gatehouse.toml:2:18: ledger.batched_window: wrong type: expected a duration string with a unit, like \"1s\" or \"250ms\", found integer `5`"
    );
}

#[test]
fn bad_size() {
    let message = load_error("[ledger]\nsegment_size = \"64MB\"\n");
    assert!(
        message.starts_with(
            "gatehouse.toml:2:16: ledger.segment_size: \"64MB\" is not a size: \"MB\" is ambiguous"
        ),
        "{message}"
    );
}

#[test]
fn recording_settings_are_typed_and_checked() {
    let text =
        format!("{PG}[resources.recording]\nresults = false\nmax_session_bytes = \"1MiB\"\n");
    let (_dir, path) = write_config(&text);
    let config = Config::load(&path).unwrap();
    let recording = &config.resource("pg").unwrap().recording;
    assert!(!recording.results);
    assert_eq!(recording.max_session_bytes, ByteSize::mib(1));
    let text = format!("{PG}[resources.recording]\nmax_session_bytes = \"16MB\"\n");
    assert!(
        load_error(&text).starts_with(
            "gatehouse.toml:5:21: resources[0].recording.max_session_bytes: \"16MB\" is not a size"
        ),
        "{}",
        load_error(&text)
    );
    let text = format!("{PG}[resources.recording]\nresult = false\n");
    assert_eq!(
        load_error(&text),
        "gatehouse.toml:5:1: resources[0].recording.result: unknown key; expected results or max_session_bytes"
    );
}

#[test]
fn masking_is_on_by_default_and_its_settings_are_checked() {
    let (_dir, path) = write_config(PG);
    let masking = Config::load(&path).unwrap().resources[0].masking.clone();
    assert!(masking.enabled);
    assert_eq!(masking.detectors, DetectorSelection::Default);
    let all = format!("{PG}[resources.masking]\ndetectors = \"all\"\n");
    let (_dir, path) = write_config(&all);
    let masking = Config::load(&path).unwrap().resources[0].masking.clone();
    assert_eq!(masking.detectors, DetectorSelection::All);
    let wrong = format!("{PG}[resources.masking]\ndetectors = \"most\"\n");
    let (_dir, path) = write_config(&wrong);
    let error = Config::load(&path).unwrap_err().to_string();
    assert!(
        error.contains("write \"default\", \"all\" or a list"),
        "{error}"
    );

    let text = format!(
        "{PG}[resources.masking]\ndetectors = [\"email\", \"us_ssn\"]\nkey_file = \"mask.key\"\n\
         [resources.masking.strategies]\nemail = \"hash\"\nemployee = \"partial:2\"\n\
         [[resources.masking.columns]]\ncolumn = \"public.customers.ssn\"\nstrategy = \"partial\"\n\
         [[resources.masking.patterns]]\nname = \"employee\"\nregex = \"EMP-[0-9]{{6}}\"\n"
    );
    let (dir, path) = write_config(&text);
    std::fs::write(dir.path().join("mask.key"), "k3y\n").unwrap();
    let config = Config::load(&path).unwrap();
    let masking = &config.resources[0].masking;
    assert_eq!(
        masking.detectors,
        DetectorSelection::Only(vec!["email".into(), "us_ssn".into()])
    );
    assert_eq!(masking.strategies["email"].0, Strategy::Hash);
    assert_eq!(
        masking.columns[0].strategy.0,
        Strategy::Partial { keep_last: 4 }
    );
    assert_eq!(
        masking.key_file.as_deref(),
        Some(dir.path().join("mask.key").as_path())
    );
    assert_eq!(masking.key().unwrap().unwrap().expose(), "k3y");

    // Every mistake is named by its key.
    let text = format!(
        "{PG}[resources.masking]\ndetectors = [\"emails\"]\nkey_env = \"{UNSET}\"\n\
         [resources.masking.strategies]\nnope = \"hash\"\n\
         [[resources.masking.columns]]\ncolumn = \"ssn\"\n\
         [[resources.masking.patterns]]\nname = \"email\"\nregex = \"(\"\n"
    );
    let (_dir, path) = write_config(&text);
    let keys: Vec<String> = load_problems(&path).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "resources[0].masking.detectors[0]",
            "resources[0].masking.strategies.nope",
            "resources[0].masking.columns[0].column",
            "resources[0].masking.patterns[0].name",
            "resources[0].masking.patterns[0].regex",
            "resources[0].masking.key_env",
        ]
    );
    let text = format!("{PG}[resources.masking.strategies]\nemail = \"blur\"\n");
    assert!(
        load_error(&text).contains("\"blur\" is not a masking strategy"),
        "{}",
        load_error(&text)
    );
    let text = format!("{PG}[resources.masking]\ndetectors = \"some\"\n");
    assert!(
        load_error(&text).contains("write \"default\", \"all\" or a list"),
        "{}",
        load_error(&text)
    );
}

#[test]
fn issuers_parse_with_defaults_and_unsafe_settings_are_named() {
    let text = "[[issuers]]\nname = \"okta\"\nissuer = \"https://example.okta.com\"\naudiences = [\"gatehouse\"]\n";
    let (_dir, path) = write_config(text);
    let config = Config::load(&path).unwrap();
    let okta = &config.issuers[0];
    assert_eq!(okta.algorithms, ["RS256", "ES256", "EdDSA"]);
    assert_eq!(okta.leeway, Duration::from_secs(60));
    assert_eq!(
        (okta.username_claim.as_str(), okta.groups_claim.as_str()),
        ("sub", "groups")
    );
    assert_eq!(okta.kind, gatehouse_config::IdentityKind::Human);

    let text = "[[issuers]]\nname = \"Bad Name\"\nissuer = \"http://idp.example.com\"\naudiences = []\n\
                algorithms = [\"RS256\", \"HS256\", \"none\"]\nleeway = \"10m\"\n\n\
                [[issuers]]\nname = \"local\"\nissuer = \"http://127.0.0.1:9000\"\naudiences = [\"gh\"]\n\
                [[issuers.claim_rules]]\nclaims = {}\nidentity = \"ci deploy\"\n";
    let (_dir, path) = write_config(text);
    let problems: Vec<String> = load_problems(&path).iter().map(|p| p.to_string()).collect();
    let expected = [
        "issuers[0].name: \"Bad Name\" is not a valid name",
        "issuers[0].issuer: \"http://idp.example.com\" must use https (http is accepted for loopback addresses only)",
        "issuers[0].audiences: name at least one audience",
        "issuers[0].algorithms: \"HS256\" is not accepted",
        "issuers[0].algorithms: \"none\" is not accepted",
        "issuers[0].leeway: at most 5m",
        "issuers[1].claim_rules[0].claims: name at least one claim",
        "issuers[1].claim_rules[0].identity: \"ci deploy\" is not a valid identity name",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (problem, start) in problems.iter().zip(expected) {
        assert!(problem.starts_with(start), "{problem} / {start}");
    }
}

#[test]
fn out_of_range_values() {
    let text = "[ledger]\nsegment_size = \"512KiB\"\nmax_entry_size = \"32MiB\"\nretry_interval = \"10ms\"\n\
                checkpoint_interval = \"2h\"\nheartbeat_interval = \"500ms\"\nbatched_window = \"50us\"\n";
    assert_eq!(
        load_error(text),
        "gatehouse.toml: ledger.checkpoint_interval: 2h is too long; use at most 1h\n\
         gatehouse.toml: ledger.heartbeat_interval: 500ms is too short; use at least 1s\n\
         gatehouse.toml: ledger.batched_window: 50us is too short; use at least 100us\n\
         gatehouse.toml: ledger.segment_size: 512KiB is too small; use at least 1MiB\n\
         gatehouse.toml: ledger.retry_interval: 10ms is too short; use at least 100ms\n\
         gatehouse.toml: ledger.max_entry_size: 32MiB is too large; use at most 16MiB\n\
         gatehouse.toml: ledger.max_entry_size: 32MiB must be smaller than ledger.segment_size (512KiB)"
    );
    assert_eq!(
        load_error("[ledger]\nsegment_size = \"8GiB\"\n"),
        "gatehouse.toml: ledger.segment_size: 8GiB is too large; use at most 4GiB"
    );
}

#[test]
fn duplicate_resource_name() {
    let text = "[[resources]]\nname = \"pg-demo\"\nkind = \"http\"\n\
                [[resources]]\nname = \"other\"\nkind = \"ssh\"\n\
                [[resources]]\nname = \"pg-demo\"\nkind = \"mysql\"\n";
    assert_eq!(
        load_error(text),
        "gatehouse.toml: resources[0].name: \"pg-demo\" is used by resources[2] too"
    );
}

#[test]
fn invalid_resource_name_and_target() {
    let text = "[[resources]]\nname = \"Prod DB\"\nkind = \"http\"\ntarget = \"db.internal\"\n";
    assert_eq!(
        load_error(text),
        "gatehouse.toml: resources[0].name: \"Prod DB\" is not a valid name; use 1 to 63 characters from a-z, 0-9, \
         '_', '.', '-', starting with a letter or digit\n\
         gatehouse.toml: resources[0].target: \"db.internal\" is not host:port: the port is missing"
    );
}

#[test]
fn missing_env_var() {
    let text = format!("{PG}[resources.credentials]\nuser = \"u\"\npassword_env = \"{UNSET}\"\n");
    assert_eq!(
        load_error(&text),
        format!(
            "gatehouse.toml: resources[0].credentials.password_env: environment variable {UNSET} is not set"
        )
    );
}

#[test]
fn both_or_neither_password_source() {
    let both = format!(
        "{PG}[resources.credentials]\nuser = \"u\"\npassword_env = \"PATH\"\npassword_file = \"pw\"\n"
    );
    assert_eq!(
        load_error(&both),
        "gatehouse.toml: resources[0].credentials: has both password_env and password_file; keep exactly one"
    );
    let neither = format!("{PG}[resources.credentials]\nuser = \"u\"\n");
    assert_eq!(
        load_error(&neither),
        "gatehouse.toml: resources[0].credentials: has neither password_env nor password_file; set exactly one"
    );
}

#[test]
fn invalid_origin() {
    assert_eq!(
        load_error("[ledger]\norigin = \"gatehouse+ledger\"\n"),
        "gatehouse.toml: ledger.origin: \"gatehouse+ledger\" must not contain '+'"
    );
    assert_eq!(
        load_error("[ledger]\norigin = \"my ledger\"\n"),
        "gatehouse.toml: ledger.origin: \"my ledger\" must not contain whitespace or control characters"
    );
    assert_eq!(
        load_error("[ledger]\norigin = \"\"\n"),
        "gatehouse.toml: ledger.origin: \"\" is empty; write e.g. \"gatehouse.example.com/ledger\""
    );
}

#[test]
fn duplicate_listen_address() {
    let text = "[admin]\nlisten = \"127.0.0.1:7000\"\n[[resources]]\nname = \"a\"\nkind = \"http\"\nlisten = \"127.0.0.1:7000\"\n";
    assert_eq!(
        load_error(text),
        "gatehouse.toml: resources[0].listen: 127.0.0.1:7000 is also used by admin.listen"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = format!(
        "[ledger]\norigin = \"a b\"\nretry_interval = \"2m\"\n\
         [[resources]]\nname = \"dup\"\nkind = \"http\"\n[resources.credentials]\nuser = \"u\"\npassword_env = \"{UNSET}\"\n\
         [[resources]]\nname = \"dup\"\nkind = \"mysql\"\n[resources.credentials]\nuser = \"\"\npassword_file = \"missing-secret\"\n"
    );
    let (dir, path) = write_config(&text);
    let problems = load_problems(&path);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ledger.origin",
            "ledger.retry_interval",
            "resources[0].credentials.password_env",
            "resources[1].credentials.user",
            "resources[1].credentials.password_file",
            "resources[0].name",
        ]
    );
    // The relative password file was looked for next to the config file.
    let missing = dir.path().join("missing-secret");
    assert!(
        problems[4]
            .message
            .starts_with(&format!("cannot read {}: ", missing.display())),
        "{}",
        problems[4]
    );
}

#[test]
fn password_from_env() {
    // PATH is set (and non-empty) wherever tests run.
    let text = format!("{PG}[resources.credentials]\nuser = \"u\"\npassword_env = \"PATH\"\n");
    let (_dir, path) = write_config(&text);
    let config = Config::load(&path).unwrap();
    let secret = config.resources[0]
        .credentials
        .as_ref()
        .unwrap()
        .password()
        .unwrap();
    assert_eq!(secret.expose(), std::env::var("PATH").unwrap());
}

#[test]
fn password_from_relative_file_and_no_secret_in_debug() {
    const SECRET: &str = "correct-horse-battery-staple";
    let text =
        format!("{PG}[resources.credentials]\nuser = \"u\"\npassword_file = \"secrets/pg\"\n");
    let (dir, path) = write_config(&text);
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/pg"), format!("{SECRET}\n")).unwrap();

    let config = Config::load(&path).unwrap();
    let creds = config.resources[0].credentials.as_ref().unwrap();
    assert_eq!(
        creds.password_file.as_deref(),
        Some(dir.path().join("secrets/pg").as_path())
    );
    let secret = creds.password().unwrap();
    assert_eq!(secret.expose(), SECRET);

    let shown = format!("{config:?} {config:#?} {creds:?} {secret:?} {secret}");
    assert!(!shown.contains(SECRET), "secret leaked: {shown}");
    assert!(shown.contains("[redacted]"));
}

#[test]
fn error_never_contains_the_secret() {
    // An env var that is set but whose value must not be echoed when something else is wrong.
    let path_value = std::env::var("PATH").unwrap();
    let text = format!("{PG}[resources.credentials]\nuser = \"\"\npassword_env = \"PATH\"\n");
    let message = load_error(&text);
    assert_eq!(
        message,
        "gatehouse.toml: resources[0].credentials.user: must not be empty"
    );
    assert!(!message.contains(&path_value));
}

#[test]
fn serializes_back_to_equal_config() {
    let (_dir, path) = write_config(EXAMPLE);
    let config = Config::parse_toml_str(EXAMPLE, &path).unwrap();
    let text = toml::to_string(&config).unwrap();
    let again = Config::parse_toml_str(&text, Path::new("/elsewhere/gatehouse.toml")).unwrap();
    assert_eq!(again, config, "{text}");
}

#[test]
fn from_toml_str_uses_origin_for_relative_paths() {
    let config = Config::from_toml_str(
        "data_dir = \"state\"",
        Path::new("/etc/gatehouse/gatehouse.toml"),
    )
    .unwrap();
    assert_eq!(config.data_dir, Path::new("/etc/gatehouse/state"));
    let config = Config::from_toml_str("", Path::new(gatehouse_config::DEFAULT_FILE)).unwrap();
    assert_eq!(config.data_dir, Path::new("gatehouse-data"));
}

#[test]
fn postgres_resources_need_listen_target_database_and_credentials() {
    let text = "[[resources]]\nname = \"pg\"\nkind = \"postgres\"\n";
    let err = Config::from_toml_str(text, Path::new("gatehouse.toml")).unwrap_err();
    let message = err.to_string();
    for key in ["listen", "target", "database", "credentials"] {
        assert!(
            message.contains(&format!(
                "resources[0].{key}: is required for a postgres resource"
            )),
            "{message}"
        );
    }
}

#[test]
fn identities_are_checked() {
    let good = format!("sha256:{}", "ab".repeat(32));
    let text = format!(
        "[[identities]]\nname = \"alice\"\nkind = \"human\"\ngroups = [\"dba\"]\nkey_hash = \"{good}\"\n\
         [[identities]]\nname = \"alice\"\nkind = \"agent\"\nkey_hash = \"md5:abc\"\n"
    );
    let err = Config::from_toml_str(&text, Path::new("gatehouse.toml")).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("identities[1].name: \"alice\" is already used by identities[0]"),
        "{message}"
    );
    assert!(
        message.contains("identities[1].key_hash: must be \"sha256:\""),
        "{message}"
    );

    // '/' is kept for identities an OpenID Provider names (`<issuer>/<name>`).
    let slash =
        format!("[[identities]]\nname = \"okta/alice\"\nkind = \"human\"\nkey_hash = \"{good}\"\n");
    let message = Config::from_toml_str(&slash, Path::new("gatehouse.toml"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("no '/'"), "{message}");

    let ok = format!(
        "[[identities]]\nname = \"agent:reporting\"\nkind = \"agent\"\nkey_hash = \"{good}\"\n"
    );
    let config = Config::from_toml_str(&ok, Path::new("gatehouse.toml")).unwrap();
    assert_eq!(
        config.identities[0].kind,
        gatehouse_config::IdentityKind::Agent
    );
}

#[test]
fn target_tls_paths_are_relative_to_the_config_and_checked() {
    let text =
        format!("{PG}[resources.target_tls]\nca = \"certs/target-ca.pem\"\nserver_name = \"\"\n");
    let (dir, path) = write_config(&text);
    let problems = load_problems(&path);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "resources[0].target_tls.ca",
            "resources[0].target_tls.server_name"
        ]
    );
    let ca = dir.path().join("certs/target-ca.pem");
    assert!(
        problems[0]
            .message
            .starts_with(&format!("cannot read {}: ", ca.display())),
        "{}",
        problems[0]
    );

    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(&ca, "not checked until the gateway starts").unwrap();
    let text = format!("{PG}[resources.target_tls]\nca = \"certs/target-ca.pem\"\n");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let tls = config.resources[0].target_tls.as_ref().unwrap();
    assert_eq!(tls.ca, ca);
    assert_eq!(tls.server_name, None);
}

#[test]
fn reviews_default_to_ten_minutes_and_one_approval_and_are_checked() {
    let (_dir, path) = write_config(PG);
    let reviews = Config::load(&path).unwrap().resources[0].reviews.clone();
    assert_eq!(reviews.approvals, 1);
    assert_eq!(reviews.timeout, std::time::Duration::from_secs(600));
    assert!(
        reviews.approvers.is_empty(),
        "no approvers unless configured"
    );

    let text = format!(
        "{PG}[resources.reviews]\napprovers = [\"dba\", \"\"]\napprovals = 0\ntimeout = \"0s\"\n\
         [[resources.reviews.notify]]\nurl = \"ftp://hooks.example\"\n"
    );
    let (_dir, path) = write_config(&text);
    let keys: Vec<String> = load_problems(&path).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "resources[0].reviews.approvals",
            "resources[0].reviews.timeout",
            "resources[0].reviews.notify[0].url",
            "resources[0].reviews.approvers",
        ]
    );
    let text = format!("{PG}[resources.reviews]\napprover = [\"dba\"]\n");
    assert!(
        load_error(&text).contains("unknown key"),
        "{}",
        load_error(&text)
    );
}

#[test]
fn admin_tls_paths_are_relative_to_the_config_and_checked() {
    let text = "[admin]\nlisten = \"0.0.0.0:8443\"\ntls = { cert = \"certs/admin.crt\", key = \"certs/admin.key\" }\n";
    let (dir, path) = write_config(text);
    let problems = load_problems(&path);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["admin.tls.cert", "admin.tls.key"]);
    let cert = dir.path().join("certs/admin.crt");
    assert!(
        problems[0]
            .message
            .starts_with(&format!("cannot read {}: ", cert.display())),
        "{}",
        problems[0]
    );

    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(&cert, "read as PEM when the gateway starts").unwrap();
    std::fs::write(dir.path().join("certs/admin.key"), "likewise").unwrap();
    let config = Config::load(&path).unwrap();
    let tls = config.admin.tls.as_ref().unwrap();
    assert_eq!(tls.cert, cert);
    assert_eq!(tls.key, dir.path().join("certs/admin.key"));

    // The table form is the same key.
    let table = "[admin.tls]\ncert = \"certs/admin.crt\"\nkey = \"certs/admin.key\"\n";
    std::fs::write(&path, table).unwrap();
    assert_eq!(Config::load(&path).unwrap().admin.tls, config.admin.tls);

    assert_eq!(
        load_error("[admin]\ntls = { cert = \"a\", key = \"b\", ca = \"c\" }\n"),
        "gatehouse.toml:2:32: admin.tls.ca: unknown key; expected cert or key"
    );
    assert_eq!(
        load_error("[admin]\ntls = { cert = \"a\" }\n"),
        "gatehouse.toml:2:7: admin.tls.key: required key is missing"
    );
    assert_eq!(
        load_error("[admin]\ntls = { cert = \"\", key = \"\" }\n"),
        "gatehouse.toml: admin.tls.cert: must not be empty\ngatehouse.toml: admin.tls.key: must not be empty"
    );
}

#[test]
fn webhooks_must_be_https_off_loopback_and_their_urls_are_never_shown() {
    const SECRET: &str = "T000/B000/XXXXSECRETXXXX";
    let text = format!(
        "{PG}[[resources.reviews.notify]]\nurl = \"http://hooks.example/services/{SECRET}\"\n\
         [[resources.reviews.notify]]\nurl = \"http://127.0.0.1:9000/{SECRET}\"\n\
         [[resources.reviews.notify]]\nurl = \"https://hooks.slack.com/services/{SECRET}\"\nformat = \"slack\"\n"
    );
    let message = load_error(&text);
    assert_eq!(
        message,
        "gatehouse.toml: resources[0].reviews.notify[0].url: must be an https:// URL; http:// is accepted only for a loopback host (127.0.0.1, [::1], localhost)"
    );

    let loopback_and_https: String = text.lines().skip(5).collect::<Vec<_>>().join("\n");
    let (_dir, path) = write_config(&format!("{PG}{loopback_and_https}\n"));
    let config = Config::load(&path).unwrap();
    let hooks = &config.resources[0].reviews.notify;
    assert_eq!(hooks.len(), 2);
    assert!(hooks[1].url.ends_with(SECRET));
    let shown = format!("{config:?} {config:#?} {hooks:?}");
    assert!(!shown.contains(SECRET), "a webhook URL leaked: {shown}");
    assert!(shown.contains("Slack"), "{shown}");
}
