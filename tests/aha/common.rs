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

/// The aha binary under test.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_aha"))
}
