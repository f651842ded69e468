//! Where aha's diagnostics (the `tracing` macros in every crate) go, chosen once at start-up.
//!
//! The workbench (no subcommand) owns the terminal, so its log is appended to
//! `<data dir>/logs/aha.log` (filter from `AHA_LOG`, default `info`) and never written to the
//! screen. Other subcommands write to stderr, and only when `AHA_LOG` is set: stderr carries the
//! reasoning stream.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Nowhere.
    Off,
    /// stderr, with this filter.
    Stderr(String),
    /// Appended to this file, with this filter.
    File(PathBuf, String),
}

/// The filter the workbench uses when `AHA_LOG` is not set.
pub const WORKBENCH_DEFAULT_FILTER: &str = "info";

/// Chooses the log's target: `workbench` is whether aha runs without a subcommand, `aha_log`
/// the value of `AHA_LOG`, `data_dir` aha's data folder.
pub fn target(workbench: bool, aha_log: Option<String>, data_dir: &Path) -> LogTarget {
    match (workbench, aha_log) {
        (true, f) => LogTarget::File(
            data_dir.join("logs").join("aha.log"),
            f.unwrap_or_else(|| WORKBENCH_DEFAULT_FILTER.to_string()),
        ),
        (false, Some(f)) => LogTarget::Stderr(f),
        (false, None) => LogTarget::Off,
    }
}

/// Opens `path` for appending (creating its folder).
fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// A subscriber that appends plain lines (no colour codes) to `file`. Each event is written
/// while it is emitted, so a line logged by the panic hook is on disk before the process ends.
fn file_subscriber(file: File, filter: &str) -> impl tracing::Subscriber + Send + Sync + 'static {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .finish()
}

/// Installs the process's subscriber for `t`. A log file that cannot be opened means no log
/// (the workbench must not write to the terminal it is about to take over).
pub fn init(t: &LogTarget) {
    match t {
        LogTarget::Off => {}
        LogTarget::Stderr(filter) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .finish()
                .try_init();
        }
        LogTarget::File(path, filter) => {
            if let Ok(f) = open_append(path) {
                let _ = file_subscriber(f, filter).try_init();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workbench_logs_to_a_file_and_subcommands_to_stderr_when_asked() {
        let d = Path::new("/data/aha");
        let file = d.join("logs").join("aha.log");
        assert_eq!(
            target(true, None, d),
            LogTarget::File(file.clone(), "info".into())
        );
        assert_eq!(
            target(true, Some("debug".into()), d),
            LogTarget::File(file, "debug".into())
        );
        assert_eq!(target(false, None, d), LogTarget::Off);
        assert_eq!(
            target(false, Some("warn".into()), d),
            LogTarget::Stderr("warn".into())
        );
    }

    #[test]
    fn the_file_writer_appends_filtered_plain_lines() {
        let d = tempfile::tempdir().unwrap();
        let LogTarget::File(path, filter) = target(true, None, d.path()) else {
            panic!("the workbench logs to a file");
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "an earlier line\n").unwrap();
        let sub = file_subscriber(open_append(&path).unwrap(), &filter);
        tracing::subscriber::with_default(sub, || {
            tracing::info!("workbench started");
            tracing::debug!("below the default filter");
            tracing::error!("panic: boom");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "an earlier line");
        assert!(
            lines[1].contains("INFO") && lines[1].ends_with("workbench started"),
            "{text}"
        );
        assert!(
            lines[2].contains("ERROR") && lines[2].ends_with("panic: boom"),
            "{text}"
        );
        assert!(
            !text.contains('\u{1b}'),
            "no colour codes in the file: {text:?}"
        );
    }
}
