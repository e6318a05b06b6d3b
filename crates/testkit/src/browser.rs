//! Headless Chromium for tests that open what the gateway writes (the audit report) the
//! way an auditor would, and read back the DOM the browser built.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The browser: `$CHROMIUM` or `/usr/bin/chromium`. Missing, the test named `test` fails
/// under CI (`CI=true`) and is skipped, saying so, elsewhere.
pub fn chromium(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is not installed (apt-get install -y chromium, or set CHROMIUM)",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: {why}; CI must run this test");
    }
    eprintln!("{test}: SKIPPED: {why}");
    None
}

/// Runs headless Chromium with `args` on `page`, returning its stdout; gives up after a
/// minute rather than hang the suite.
pub fn run_chromium(browser: &Path, work: &Path, args: &[String], page: &Path) -> String {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let profile = work.join(format!("profile-{run}"));
    let out_path = work.join(format!("stdout-{run}.txt"));
    let err_path = work.join(format!("stderr-{run}.txt"));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within a minute; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium failed ({status}); stderr:\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    std::fs::read_to_string(&out_path).unwrap()
}

/// The text of the element with `id` in a serialised DOM.
pub fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let open = at + dom[at..].find('>').unwrap() + 1;
    let close = open + dom[open..].find('<').unwrap();
    &dom[open..close]
}

/// The number in the element with `id` (thousands separators allowed).
pub fn figure(dom: &str, id: &str) -> u64 {
    let text = element_text(dom, id);
    text.replace(',', "")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("#{id} holds {text:?}, not a number"))
}
