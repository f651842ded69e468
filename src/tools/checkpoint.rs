//! The undo store: before a tool changes a file, its previous content (or its absence) is kept
//! under `<workspace>/.aha/checkpoints/`, so the last turn's changes can be restored — by `/undo`
//! in the workbench or by `aha undo` in a later process — with or without git.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Entry {
    /// `path` (relative to the workspace) held `blob` (or did not exist) before turn `turn`.
    Saved {
        turn: String,
        path: String,
        existed: bool,
        blob: Option<String>,
    },
    /// Turn `turn` was undone.
    Undone { turn: String },
}

/// The undo store of one workspace.
pub struct Checkpoints {
    root: PathBuf,
    dir: PathBuf,
    session: String,
    /// (turn, path) pairs already saved: only the first content before a turn counts.
    saved: HashSet<(String, String)>,
    /// Paths changed in this session, with their content before the session's first change.
    session_files: Vec<(String, Option<String>)>,
}

impl Checkpoints {
    /// Opens (or creates) the store of `workspace` (canonical).
    pub fn open(workspace: &Path) -> Result<Self> {
        let dir = workspace.join(".aha").join("checkpoints");
        let session = format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            std::process::id()
        );
        Ok(Self {
            root: workspace.to_path_buf(),
            dir,
            session,
            saved: HashSet::new(),
            session_files: Vec::new(),
        })
    }

    fn log(&self) -> PathBuf {
        self.dir.join("log.jsonl")
    }

    fn append(&self, e: &Entry) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        writeln!(f, "{}", serde_json::to_string(e)?)?;
        f.sync_data()?;
        Ok(())
    }

    /// Keeps `path`'s current content before turn `turn` changes it.
    pub fn record(&mut self, turn: u64, path: &Path) -> Result<()> {
        let rel = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string();
        let key = format!("{}-{turn}", self.session);
        if !self.saved.insert((key.clone(), rel.clone())) {
            return Ok(());
        }
        let before = std::fs::read(path).ok();
        let blob = match &before {
            Some(bytes) => {
                use sha2::Digest;
                let name = hex::encode(sha2::Sha256::digest(bytes));
                let blobs = self.dir.join("blobs");
                std::fs::create_dir_all(&blobs)?;
                let p = blobs.join(&name);
                if !p.exists() {
                    std::fs::write(&p, bytes)?;
                }
                Some(name)
            }
            None => None,
        };
        if !self.session_files.iter().any(|(p, _)| p == &rel) {
            self.session_files.push((
                rel.clone(),
                before.map(|b| String::from_utf8_lossy(&b).into_owned()),
            ));
        }
        self.append(&Entry::Saved {
            turn: key,
            path: rel,
            existed: blob.is_some(),
            blob,
        })
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        let text = match std::fs::read_to_string(self.log()) {
            Ok(t) => t,
            Err(_) => return Ok(Vec::new()),
        };
        // A line cut by a crash is skipped; everything before it is intact.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Restores the files changed by the most recent turn not yet undone (in this or an earlier
    /// process); returns their paths.
    pub fn undo_last_turn(&mut self) -> Result<Vec<PathBuf>> {
        let entries = self.entries()?;
        let undone: HashSet<&str> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Undone { turn } => Some(turn.as_str()),
                _ => None,
            })
            .collect();
        let Some(last) = entries.iter().rev().find_map(|e| match e {
            Entry::Saved { turn, .. } if !undone.contains(turn.as_str()) => Some(turn.clone()),
            _ => None,
        }) else {
            return Ok(Vec::new());
        };
        let mut restored = Vec::new();
        for e in &entries {
            if let Entry::Saved {
                turn,
                path,
                existed,
                blob,
            } = e
            {
                if turn != &last {
                    continue;
                }
                let target = self.root.join(path);
                if *existed {
                    let b = blob.as_deref().unwrap_or_default();
                    let bytes = std::fs::read(self.dir.join("blobs").join(b))
                        .with_context(|| format!("the saved copy of {path} is missing"))?;
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&target, bytes)?;
                } else if target.exists() {
                    std::fs::remove_file(&target)
                        .with_context(|| format!("cannot remove {path}"))?;
                }
                restored.push(target);
            }
        }
        self.append(&Entry::Undone { turn: last })?;
        Ok(restored)
    }

    /// A unified diff of every file the tools changed in this session.
    pub fn diff_session(&self) -> String {
        let mut out = String::new();
        for (rel, before) in &self.session_files {
            let now = std::fs::read(self.root.join(rel))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let (a, b) = (before.clone().unwrap_or_default(), now.unwrap_or_default());
            if a == b {
                continue;
            }
            let p = diffy::create_patch(&a, &b);
            out.push_str(&format!("--- a/{rel}\n+++ b/{rel}\n"));
            let text = p.to_string();
            // Drop diffy's own header lines, keep the hunks.
            out.push_str(
                &text
                    .lines()
                    .skip_while(|l| l.starts_with("---") || l.starts_with("+++"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_restores_content_and_removes_created_files_across_processes() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        std::fs::write(root.join("a.txt"), "one\n").unwrap();
        let mut c = Checkpoints::open(&root).unwrap();
        c.record(1, &root.join("a.txt")).unwrap();
        std::fs::write(root.join("a.txt"), "two\n").unwrap();
        c.record(2, &root.join("a.txt")).unwrap();
        c.record(2, &root.join("new.txt")).unwrap();
        std::fs::write(root.join("a.txt"), "three\n").unwrap();
        std::fs::write(root.join("new.txt"), "fresh\n").unwrap();
        let diff = c.diff_session();
        assert!(
            diff.contains("-one") && diff.contains("+three") && diff.contains("+fresh"),
            "{diff}"
        );
        // A new process (a new store) undoes the last turn, then the one before.
        let mut c2 = Checkpoints::open(&root).unwrap();
        let r = c2.undo_last_turn().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            std::fs::read_to_string(root.join("a.txt")).unwrap(),
            "two\n"
        );
        assert!(!root.join("new.txt").exists());
        c2.undo_last_turn().unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("a.txt")).unwrap(),
            "one\n"
        );
        assert!(
            c2.undo_last_turn().unwrap().is_empty(),
            "nothing left to undo"
        );
    }
}
