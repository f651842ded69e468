//! `aha export SESSION [--html] [-o PATH]`: a saved session as Markdown (what the workbench's
//! `/export` writes) or, with `--html`, as one self-contained HTML page of its traces (what
//! `/export --html` writes). Loads no model.

use crate::config::Config;
use crate::session;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A session id (or a unique prefix of one) as the workbench's `/resume` lists them, or the
    /// path of a session log (`.jsonl`).
    pub session: String,
    /// One self-contained HTML page (reasoning coloured by confidence or entropy, steps, forks,
    /// loops, branches side by side, the alternatives on hover) instead of Markdown.
    #[arg(long)]
    pub html: bool,
    /// Where to write (default: `aha-ID.html` or `aha-ID.md` in the current folder; `-` writes
    /// to stdout).
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// Runs `aha export`. The config's `[trace]` table says how forks are counted.
pub fn export(a: ExportArgs, cfg: &Config) -> Result<i32> {
    let path = locate(&a.session)?;
    let loaded = session::load(&path)?;
    if let Some(s) = loaded.skipped_summary() {
        eprintln!("aha: {s}");
    }
    let t = session::replay(&loaded);
    let title = format!("aha session {}", loaded.id);
    let (text, ext) = if a.html {
        let page = session::html::html(&t, &title, &loaded.model, &cfg.trace);
        (page, "html")
    } else {
        (session::export::markdown(&t, &title, &loaded.model), "md")
    };
    let out = a
        .output
        .unwrap_or_else(|| PathBuf::from(format!("aha-{}.{ext}", loaded.id)));
    if out == Path::new("-") {
        use std::io::Write;
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(0);
    }
    std::fs::write(&out, text).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("exported to {}", out.display());
    Ok(0)
}

/// The session log `s` names: a file, or an id in the sessions folder.
fn locate(s: &str) -> Result<PathBuf> {
    let p = Path::new(s);
    let looks_like_path = s.ends_with(".jsonl") || s.contains('/') || s.contains('\\');
    if p.is_dir() {
        bail!("{s} is a folder, not a session log (a .jsonl file)");
    }
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    if looks_like_path {
        // Say why it cannot be read (missing, no permission).
        std::fs::File::open(p).with_context(|| format!("cannot read session log {s}"))?;
        return Ok(p.to_path_buf());
    }
    let dir = session::sessions_dir();
    // The error names the folder it looked in.
    session::find(&dir, s).map_err(|e| {
        anyhow!(
            "{e:#}; AHA_DATA_DIR moves that folder, `/resume` in the workbench lists the \
             sessions, and the path of a session's .jsonl file works too"
        )
    })
}
