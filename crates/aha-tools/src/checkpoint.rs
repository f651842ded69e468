//! The undo store: before a tool changes a file, its previous content (or its absence) is kept
//! under `<workspace>/.aha/checkpoints/`, so the last turn's changes can be restored — by `/undo`
//! in the workbench or by `aha undo` in a later process — with or without git.
//!
//! The log is read back as instructions ("write these bytes to this path"), and a workspace can
//! arrive with a `.aha` of its own (a cloned repository, an unpacked archive). So `.aha` must be
//! a real folder, not a link; every logged path must be a plain relative path that resolves to
//! itself inside the workspace (no `..`, no links, not inside `.aha`); every saved copy must be
//! named by its own SHA-256; and a turn is checked whole before any file of it is touched.

use super::paths::{self, confine, show, AHA_DIR};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

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

/// A SHA-256 in lowercase hex: the only names a saved copy may have.
fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Checkpoints {
    /// Opens the store of `workspace` (canonical). Nothing is created until a file is recorded.
    pub fn open(workspace: &Path) -> Result<Self> {
        let dir = workspace.join(AHA_DIR).join("checkpoints");
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

    /// Refuses a `.aha` that is a link (the store would land wherever it points) or not a
    /// folder. The opens below re-check without following links; this gives the clear message.
    fn check_aha(&self) -> Result<()> {
        let aha = self.root.join(AHA_DIR);
        match std::fs::symlink_metadata(&aha) {
            Ok(m) if m.is_symlink() => bail!(
                "{AHA_DIR} in the workspace {} is a symbolic link (to {}); aha keeps its undo store there and needs a real folder inside the workspace, so it changes nothing. Remove the link (`rm {}`) and try again",
                self.root.display(),
                std::fs::read_link(&aha)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into()),
                aha.display()
            ),
            Ok(m) if !m.is_dir() => bail!(
                "{} is not a folder; aha keeps its undo store there, so it changes nothing. Move it away and try again",
                aha.display()
            ),
            _ => Ok(()),
        }
    }

    /// The store's folders, created private to the user.
    fn make_dirs(&self) -> Result<()> {
        self.check_aha()?;
        paths::make_dirs(&self.root, &self.dir.join("blobs"), 0o700)
            .with_context(|| format!("cannot create the undo store {}", self.dir.display()))
    }

    fn append(&self, e: &Entry) -> Result<()> {
        self.make_dirs()?;
        let mut f = paths::open_write(&self.root, &self.log(), 0o600, true)?;
        writeln!(f, "{}", serde_json::to_string(e)?)?;
        f.sync_data()?;
        Ok(())
    }

    /// Keeps `path`'s current content before turn `turn` changes it. Refuses (and so stops the
    /// change) when `path` is not a plain file with one link, or the store is unusable.
    pub fn record(&mut self, turn: u64, path: &Path) -> Result<()> {
        let rel = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string();
        let key = format!("{}-{turn}", self.session);
        if self.saved.contains(&(key.clone(), rel.clone())) {
            return Ok(());
        }
        let before = paths::read_if_exists(&self.root, path)?;
        let blob = match &before {
            Some(bytes) => {
                self.make_dirs()?;
                let name = hash(bytes);
                let p = self.dir.join("blobs").join(&name);
                // A copy cut short by a crash is written again.
                let whole = std::fs::symlink_metadata(&p)
                    .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64);
                if !whole {
                    let mut f = paths::open_write(&self.root, &p, 0o600, false)?;
                    f.set_len(0)?;
                    f.write_all(bytes)?;
                }
                Some(name)
            }
            None => None,
        };
        self.append(&Entry::Saved {
            turn: key.clone(),
            path: rel.clone(),
            existed: blob.is_some(),
            blob,
        })?;
        self.saved.insert((key, rel.clone()));
        if !self.session_files.iter().any(|(p, _)| p == &rel) {
            self.session_files.push((
                rel,
                before.map(|b| String::from_utf8_lossy(&b).into_owned()),
            ));
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        self.check_aha()?;
        let Some(bytes) = paths::read_if_exists(&self.root, &self.log())? else {
            return Ok(Vec::new());
        };
        // A line cut by a crash is skipped; everything before it is intact.
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// The file a log line names, if undo may touch it: a plain relative path outside `.aha`
    /// that resolves to itself (no link on the way), and is not a folder, device or hard link.
    fn logged_path(&self, rel: &str) -> Result<PathBuf> {
        let p = Path::new(rel);
        if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            bail!("it is not a plain relative path inside the workspace (no `..`, no leading `/`)");
        }
        if p.starts_with(AHA_DIR) {
            bail!("it is inside aha's own folder {AHA_DIR}");
        }
        let target = self.root.join(p);
        let resolved = confine(&self.root, rel)?;
        if resolved != target {
            bail!(
                "it passes through a symbolic link (it resolves to {}), and undo does not follow links",
                show(&self.root, &resolved)
            );
        }
        if let Ok(m) = std::fs::symlink_metadata(&target) {
            paths::check_metadata(rel, &m)?;
        }
        Ok(target)
    }

    /// The saved copy named `blob`, checked against its name.
    fn saved_copy(&self, blob: Option<&str>) -> Result<Vec<u8>> {
        let Some(b) = blob else {
            bail!("it existed, but no saved copy is named");
        };
        if !is_hash(b) {
            bail!("its saved copy is called `{b}`, which is not a content hash");
        }
        let bytes = paths::read(&self.root, &self.dir.join("blobs").join(b))
            .context("its saved copy cannot be read")?;
        if hash(&bytes) != b {
            bail!("its saved copy does not match its hash {b}");
        }
        Ok(bytes)
    }

    /// Restores the files changed by the most recent turn not yet undone (in this or an earlier
    /// process); returns their paths. The whole turn is checked before anything is restored.
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
        let mut plan: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
        for e in &entries {
            let Entry::Saved {
                turn,
                path,
                existed,
                blob,
            } = e
            else {
                continue;
            };
            if turn != &last {
                continue;
            }
            let checked = self.logged_path(path).and_then(|target| {
                let content = if *existed {
                    Some(self.saved_copy(blob.as_deref())?)
                } else {
                    None
                };
                Ok((target, content))
            });
            match checked {
                Ok(step) => plan.push(step),
                Err(e) => {
                    return Err(anyhow!(
                        "cannot undo: the undo log {} names `{path}`, but {e:#}; nothing was restored. The log may have been tampered with (or the workspace changed since): look at it, or remove it to start afresh",
                        show(&self.root, &self.log())
                    ))
                }
            }
        }
        let mut restored = Vec::new();
        for (target, content) in plan {
            let shown = show(&self.root, &target);
            match content {
                Some(bytes) => paths::write(&self.root, &target, &bytes)
                    .with_context(|| format!("cannot restore {shown}"))?,
                None if std::fs::symlink_metadata(&target).is_ok() => {
                    paths::remove(&self.root, &target)
                        .with_context(|| format!("cannot remove {shown}"))?
                }
                None => {}
            }
            restored.push(target);
        }
        self.append(&Entry::Undone { turn: last })?;
        Ok(restored)
    }

    /// A unified diff of every file the tools changed in this session.
    pub fn diff_session(&self) -> String {
        let mut out = String::new();
        for (rel, before) in &self.session_files {
            let now = paths::read_if_exists(&self.root, &self.root.join(rel))
                .ok()
                .flatten()
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

    fn line(path: &str, blob: Option<&str>) -> String {
        serde_json::to_string(&Entry::Saved {
            turn: "t".into(),
            path: path.into(),
            existed: blob.is_some(),
            blob: blob.map(String::from),
        })
        .unwrap()
    }

    #[test]
    fn a_forged_log_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        let (root, outside) = (base.join("ws"), base.join("outside"));
        std::fs::create_dir_all(root.join(".aha/checkpoints/blobs")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), "keep\n").unwrap();
        let good = hash(b"x\n");
        std::fs::write(root.join(".aha/checkpoints/blobs").join(&good), "x\n").unwrap();
        std::fs::write(root.join(".aha/checkpoints/blobs").join(hash(b"y")), "x\n").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("in")).unwrap();
        std::fs::hard_link(outside.join("victim"), root.join("hl")).unwrap();
        let victim = outside.join("victim").display().to_string();
        let forged = [
            (line("../outside/victim", None), "not a plain relative path"),
            (line(&victim, None), "not a plain relative path"),
            (line("out/new", Some(&good)), "outside the workspace"),
            (line("out/victim", None), "outside the workspace"),
            (
                line("in/new", Some(&good)),
                "passes through a symbolic link",
            ),
            (line("hl", Some(&good)), "hard links"),
            (
                line("a", Some("../../../outside/victim")),
                "not a content hash",
            ),
            (line("a", Some(&hash(b"y"))), "does not match"),
            (line("a", Some(&hash(b"absent"))), "cannot be read"),
            (line(".aha/checkpoints/log.jsonl", None), "aha's own folder"),
        ];
        for (l, why) in forged {
            let log = format!("{}\n{l}\n", line("fine", Some(&good)));
            std::fs::write(root.join(".aha/checkpoints/log.jsonl"), &log).unwrap();
            let e = Checkpoints::open(&root)
                .unwrap()
                .undo_last_turn()
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(why) && e.contains("nothing was restored"),
                "{l}: {e}"
            );
            assert!(!root.join("fine").exists(), "{l}: half a turn was undone");
            assert_eq!(
                std::fs::read_to_string(root.join(".aha/checkpoints/log.jsonl")).unwrap(),
                log
            );
        }
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "keep\n"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    }

    #[test]
    fn the_store_is_a_private_real_folder() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        let (root, outside) = (base.join("ws"), base.join("outside"));
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(root.join("a"), "a\n").unwrap();
        let mut c = Checkpoints::open(&root).unwrap();
        c.record(1, &root.join("a")).unwrap();
        for p in [".aha", ".aha/checkpoints", ".aha/checkpoints/blobs"] {
            let mode = std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{p}");
        }
        // `.aha` a link to a folder outside: nothing is written there, and undo says why.
        std::fs::remove_dir_all(root.join(".aha")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(".aha")).unwrap();
        let mut c = Checkpoints::open(&root).unwrap();
        let e = c.record(1, &root.join("a")).unwrap_err().to_string();
        assert!(e.contains(".aha") && e.contains("symbolic link"), "{e}");
        let e = c.undo_last_turn().unwrap_err().to_string();
        assert!(e.contains(".aha") && e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // `.aha/checkpoints` a link: refused by the walk that follows no link.
        std::fs::remove_file(root.join(".aha")).unwrap();
        std::fs::create_dir(root.join(".aha")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(".aha/checkpoints")).unwrap();
        let e = format!("{:#}", c.record(1, &root.join("a")).unwrap_err());
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }
}
