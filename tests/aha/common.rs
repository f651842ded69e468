//! Shared helpers: real models (pulled once through aha's own registry) and a lock so that
//! tests using real models do not fight over the two cores.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

static HEAVY: Mutex<()> = Mutex::new(());
static PULL: Mutex<()> = Mutex::new(());

/// Serialises tests that run a real model.
pub fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The path of a known model, pulled through `aha`'s registry on first use.
pub fn model(name: &str) -> PathBuf {
    let _g = PULL.lock().unwrap_or_else(|e| e.into_inner());
    init_threads();
    aha::engine::registry::resolve(name, true)
        .unwrap_or_else(|e| panic!("cannot get model {name}: {e:#}"))
        .path
}

/// Sets the thread count once.
pub fn init_threads() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| aha::cli::set_threads(None));
}

/// The aha binary under test, with the prompt cache off so that tests leave no entries in the
/// user's data folder (the prompt cache's own tests turn it on, in a folder of their own).
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_aha"));
    c.env("AHA_PROMPT_CACHE", "off");
    c
}

/// Spawns `cmd` (an `aha serve …` command line) with its stderr read into a log, and waits up to
/// three minutes for the line that names its address. Returns the child, its port and the log.
pub fn spawn_serve(
    mut cmd: std::process::Command,
) -> (std::process::Child, u16, std::sync::Arc<Mutex<String>>) {
    use std::io::BufRead;
    let mut child = cmd
        .env_remove("AHA_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot start aha serve");
    let err = child.stderr.take().expect("stderr is piped");
    let log = std::sync::Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let l = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("at http://").nth(1) {
                let port = rest
                    .split('/')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok());
                let _ = tx.send(port);
            }
            l.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let port = rx
        .recv_timeout(std::time::Duration::from_secs(180))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("aha serve did not start: {}", log.lock().unwrap()));
    (child, port, log)
}

/// A Python that can `import {imports}` (e.g. "openai" or "mcp, uvicorn"): $AHA_TEST_PYTHON
/// (set by .ci/run, which installs `openai` and `mcp` there; it must have them), else the venv
/// under ~/.cache that .ci/run uses, made and filled with pip here if needed. None only where
/// there is no python3 venv or pip.
pub fn test_python(imports: &str) -> Option<std::path::PathBuf> {
    use std::process::{Command, Stdio};
    let ok = |p: &std::path::Path| {
        Command::new(p)
            .args(["-c", &format!("import {imports}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(p) = std::env::var_os("AHA_TEST_PYTHON").map(PathBuf::from) {
        assert!(
            ok(&p),
            "AHA_TEST_PYTHON={} cannot import {imports} (.ci/run installs openai and mcp)",
            p.display()
        );
        return Some(p);
    }
    let venv = dirs::cache_dir()?.join("aha-openai-venv");
    let py = venv.join("bin").join("python");
    if ok(&py) {
        return Some(py);
    }
    let made = (py.is_file()
        || Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success()))
        && Command::new(venv.join("bin").join("pip"))
            .args(["install", "-q", "openai", "mcp"])
            .status()
            .is_ok_and(|s| s.success());
    (made && ok(&py)).then_some(py)
}
