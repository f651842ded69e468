//! `aha undo`: restores the files the agent's last turn changed in this workspace (from the undo
//! store under `.aha/checkpoints`), with or without git. Loads no model.

use crate::tools::Checkpoints;
use anyhow::Result;

/// Runs `aha undo` in `workspace` (default: the current directory).
pub fn undo(workspace: Option<std::path::PathBuf>) -> Result<i32> {
    let ws = match workspace {
        Some(w) => w,
        None => std::env::current_dir()?,
    };
    let ws = std::fs::canonicalize(&ws)?;
    let restored = Checkpoints::open(&ws)?.undo_last_turn()?;
    if restored.is_empty() {
        eprintln!("nothing to undo in {}", ws.display());
    } else {
        for p in &restored {
            println!("restored {}", p.strip_prefix(&ws).unwrap_or(p).display());
        }
    }
    Ok(0)
}
