//! Real servers for tests: a throwaway PostgreSQL cluster on a free loopback port with
//! SCRAM authentication, started with `initdb` and `pg_ctl` and removed on drop; and a
//! real OpenID Provider under node (`oidc`); headless Chromium for pages (`browser`).
#![allow(clippy::unwrap_used)] // test support: what cannot be set up fails the test

pub mod browser;
mod oidc;

pub use oidc::{OidcProvider, oidc_dir};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`: `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/<version>/bin` that has them.
pub fn pg_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Makes the `postgres` user own `path` (the server runs as that user when tests run as
/// root, and refuses files it cannot read or a key it does not own).
fn give_to_postgres(path: &Path) -> Result<(), String> {
    let uid = id(&["-u", "postgres"]).ok_or("running as root but no `postgres` user exists")?;
    let gid = id(&["-g", "postgres"]).ok_or("no `postgres` group")?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}

/// A running throwaway PostgreSQL cluster; stopped and deleted when dropped.
#[derive(Debug)]
pub struct PgCluster {
    pub port: u16,
    /// Superuser name and password (SCRAM over TCP).
    pub superuser: String,
    pub password: String,
    bindir: PathBuf,
    data: PathBuf,
    /// Owns the folder holding the data directory and log.
    root: tempfile::TempDir,
    /// `runuser -u postgres --` when the tests run as root (PostgreSQL refuses root).
    as_user: Option<String>,
}

impl PgCluster {
    /// Initialises and starts a cluster; errors say which step failed and show its output.
    pub fn start() -> Result<Self, String> {
        let bindir = pg_bindir().ok_or(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; scripts/test installs them",
        )?;
        let root = tempfile::Builder::new()
            .prefix("gatehouse-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let as_user = (id(&["-u"]) == Some(0)).then(|| "postgres".to_string());
        if as_user.is_some() {
            give_to_postgres(root.path())?;
        }
        let password = format!("pw-{}", free_port());
        let pwfile = root.path().join("pwfile");
        std::fs::write(&pwfile, &password).map_err(|e| format!("pwfile: {e}"))?;
        if as_user.is_some() {
            give_to_postgres(&pwfile)?;
        }
        let data = root.path().join("data");
        let port = free_port();
        let cluster = PgCluster {
            port,
            superuser: "postgres".into(),
            password,
            bindir,
            data,
            root,
            as_user,
        };
        cluster.run_checked(
            "initdb",
            &[
                "-D",
                cluster.data_str(),
                "-U",
                "postgres",
                "--pwfile",
                pwfile.to_str().unwrap_or(""),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = '32MB'\n\
             max_connections = 120\nlog_min_messages = warning\npassword_encryption = 'scram-sha-256'\n",
            cluster.root.path().display()
        );
        cluster.append_conf(&conf)?;
        let log = cluster.root.path().join("postgres.log");
        cluster.run_checked(
            "pg_ctl",
            &[
                "-D",
                cluster.data_str(),
                "-l",
                log.to_str().unwrap_or(""),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        Ok(cluster)
    }

    fn data_str(&self) -> &str {
        self.data.to_str().unwrap_or("")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        match &self.as_user {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    fn run_checked(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.root.path())
            .output()
            .map_err(|e| format!("running {program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out)
    }

    /// Runs SQL as the superuser over TCP with `psql` and returns its output; fails on error.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                &self.superuser,
                "-d",
                database,
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", &self.password)
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Creates a login role with a SCRAM password and a database it owns.
    pub fn create_app(&self, user: &str, password: &str, database: &str) -> Result<(), String> {
        self.psql(
            "postgres",
            &format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"),
        )?;
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {database} OWNER {user}"),
        )?;
        Ok(())
    }

    /// Turns TLS on with the given PEM certificate and key, and from then on refuses every
    /// TCP connection that does not use it (`hostnossl ... reject`), so a test can tell
    /// that a client really spoke TLS.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        for (name, text, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ] {
            let path = self.data.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{name}: {e}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{name}: {e}"))?;
            if self.as_user.is_some() {
                give_to_postgres(&path)?;
            }
        }
        self.append_conf(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )?;
        let hba_path = self.data.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&hba_path).map_err(|e| format!("pg_hba.conf: {e}"))?;
        std::fs::write(
            &hba_path,
            format!("hostnossl all all 127.0.0.1/32 reject\n{hba}"),
        )
        .map_err(|e| format!("pg_hba.conf: {e}"))?;
        self.run_checked("pg_ctl", &["-D", self.data_str(), "reload"])?;
        // A reload is a signal; wait until the server has taken the new settings.
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl").as_deref() == Ok("on") {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(format!(
            "TLS did not come on after a reload; see {}",
            self.log_path().display()
        ))
    }

    /// Appends settings to `postgresql.conf` and restarts the server, for settings that
    /// only take effect at start (`max_prepared_transactions`); the port stays the same.
    pub fn restart_with(&self, settings: &str) -> Result<(), String> {
        self.append_conf(&format!("\n{settings}\n"))?;
        let log = self.log_path();
        self.run_checked(
            "pg_ctl",
            &[
                "-D",
                self.data_str(),
                "-l",
                log.to_str().unwrap_or(""),
                "-w",
                "-t",
                "60",
                "restart",
            ],
        )?;
        Ok(())
    }

    /// Appends settings to `postgresql.conf`.
    fn append_conf(&self, text: &str) -> Result<(), String> {
        let path = self.data.join("postgresql.conf");
        let mut conf =
            std::fs::read_to_string(&path).map_err(|e| format!("postgresql.conf: {e}"))?;
        conf.push_str(text);
        std::fs::write(&path, conf).map_err(|e| format!("postgresql.conf: {e}"))
    }

    /// Where the server log is (handy in failure messages).
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    /// The binaries folder, for tests that run `psql` or `pgbench` themselves.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", self.data_str(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_answers_and_requires_scram() {
        let pg = PgCluster::start().unwrap();
        assert_eq!(pg.psql("postgres", "select 1 + 1").unwrap(), "2");
        assert_eq!(
            pg.psql("postgres", "show password_encryption").unwrap(),
            "scram-sha-256"
        );
        pg.create_app("app", "app-pw", "appdb").unwrap();
        let out = Command::new(pg.bindir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "app",
                "-d",
                "appdb",
                "-X",
                "-c",
                "select 1",
            ])
            .env("PGPASSWORD", "wrong")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
    }
}
