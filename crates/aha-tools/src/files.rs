//! Workspace files: list, read (with line numbers), write and patch (both show a diff first and
//! keep the old content for undo). Every path goes through `paths`: confined to the workspace,
//! opened without following links, hard-linked files refused, and `.aha` never written.

use super::paths::{self, confine, confine_writable, show};
use super::{args, cap, schema_of, Effect, Tool, ToolContext, ToolOutput, OUTPUT_CAP};
use anyhow::{bail, Context, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDirArgs {
    /// Directory relative to the workspace root ("." for the root).
    pub path: String,
}

pub struct ListDir;

impl Tool for ListDir {
    fn name(&self) -> &'static str {
        "list_dir"
    }
    fn description(&self) -> &'static str {
        "List the entries of a directory in the workspace (directories end with /)."
    }
    fn schema(&self) -> Value {
        schema_of::<ListDirArgs>()
    }
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn preview(&self, a: &Value, _: &ToolContext) -> Result<String> {
        let a: ListDirArgs = args(self.name(), a)?;
        Ok(format!("list {}", a.path))
    }
    fn run(&self, a: Value, ctx: &ToolContext) -> ToolOutput {
        let r = (|| -> Result<String> {
            let a: ListDirArgs = args(self.name(), &a)?;
            let p = confine(&ctx.workspace, &a.path)?;
            if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                // Models often pass a file here; say what it is and what to call instead.
                let bytes = paths::read(&ctx.workspace, &p)?;
                let lines = line_count(&bytes);
                bail!(
                    "{} is a file ({lines} lines, {} bytes), not a directory: read it with read_file",
                    a.path,
                    bytes.len()
                );
            }
            let mut names: Vec<String> = paths::list(&ctx.workspace, &p)?
                .into_iter()
                .filter(|(n, _)| n != paths::AHA_DIR && n != ".git")
                .map(|(n, dir)| if dir { n + "/" } else { n })
                .collect();
            names.sort();
            Ok(format!(
                "{} ({} entries):\n{}",
                show(&ctx.workspace, &p),
                names.len(),
                names.join("\n")
            ))
        })();
        result(r)
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileArgs {
    /// File path relative to the workspace root.
    pub path: String,
    /// First line to show (1-based).
    #[serde(default)]
    pub start: Option<usize>,
    /// Last line to show (inclusive).
    #[serde(default)]
    pub end: Option<usize>,
}

pub struct ReadFile;

impl Tool for ReadFile {
    fn name(&self) -> &'static str {
        "read_file"
    }
    fn description(&self) -> &'static str {
        "Read a text file in the workspace, with line numbers; optionally only lines start..end."
    }
    fn schema(&self) -> Value {
        schema_of::<ReadFileArgs>()
    }
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn preview(&self, a: &Value, _: &ToolContext) -> Result<String> {
        let a: ReadFileArgs = args(self.name(), a)?;
        Ok(format!("read {}", a.path))
    }
    fn run(&self, a: Value, ctx: &ToolContext) -> ToolOutput {
        let r = (|| -> Result<String> {
            let a: ReadFileArgs = args(self.name(), &a)?;
            let p = confine(&ctx.workspace, &a.path)?;
            let bytes = paths::read(&ctx.workspace, &p)?;
            if bytes.iter().take(8192).any(|&b| b == 0) {
                bail!("{} is a binary file ({} bytes)", a.path, bytes.len());
            }
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = a.start.unwrap_or(1).max(1);
            let end = a.end.unwrap_or(lines.len()).min(lines.len());
            if start > end && !lines.is_empty() {
                bail!(
                    "lines {start}..{end} are outside the file ({} lines)",
                    lines.len()
                );
            }
            let body: Vec<String> = lines
                .iter()
                .enumerate()
                .skip(start - 1)
                .take(end + 1 - start.min(end + 1))
                .map(|(i, l)| format!("{:>5}  {l}", i + 1))
                .collect();
            Ok(cap(
                &format!(
                    "{} (lines {start}-{end} of {}):\n{}",
                    show(&ctx.workspace, &p),
                    lines.len(),
                    body.join("\n")
                ),
                OUTPUT_CAP,
            ))
        })();
        result(r)
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    /// File path relative to the workspace root (created with its folders if missing).
    pub path: String,
    /// The whole new content of the file.
    pub content: String,
}

pub struct WriteFile;

/// A unified diff from `before` to `after` for `rel`.
pub fn unified(rel: &str, before: &str, after: &str) -> String {
    let p = diffy::create_patch(before, after).to_string();
    let hunks: Vec<&str> = p
        .lines()
        .skip_while(|l| l.starts_with("---") || l.starts_with("+++"))
        .collect();
    format!("--- a/{rel}\n+++ b/{rel}\n{}\n", hunks.join("\n"))
}

/// Records `p`'s old content for undo (which also refuses a file the tools may not touch), then
/// writes it.
fn write_with_checkpoint(ctx: &ToolContext, p: &Path, content: &str) -> Result<()> {
    ctx.checkpoints
        .lock()
        .map_err(|_| anyhow::anyhow!("the undo store is unavailable"))?
        .record(ctx.turn, p)?;
    paths::write(&ctx.workspace, p, content.as_bytes())
}

impl Tool for WriteFile {
    fn name(&self) -> &'static str {
        "write_file"
    }
    fn description(&self) -> &'static str {
        "Create or overwrite a file in the workspace with the given content."
    }
    fn schema(&self) -> Value {
        schema_of::<WriteFileArgs>()
    }
    fn effect(&self) -> Effect {
        Effect::Edit
    }
    fn preview(&self, a: &Value, ctx: &ToolContext) -> Result<String> {
        let a: WriteFileArgs = args(self.name(), a)?;
        let p = confine_writable(&ctx.workspace, &a.path)?;
        let before = paths::read_if_exists(&ctx.workspace, &p)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(unified(&show(&ctx.workspace, &p), &before, &a.content))
    }
    fn run(&self, a: Value, ctx: &ToolContext) -> ToolOutput {
        let r = (|| -> Result<String> {
            let a: WriteFileArgs = args(self.name(), &a)?;
            let p = confine_writable(&ctx.workspace, &a.path)?;
            let existed = std::fs::symlink_metadata(&p).is_ok();
            write_with_checkpoint(ctx, &p, &a.content)?;
            Ok(format!(
                "{} {} ({} bytes, {} lines)",
                if existed { "wrote" } else { "created" },
                show(&ctx.workspace, &p),
                a.content.len(),
                a.content.lines().count()
            ))
        })();
        result(r)
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyPatchArgs {
    /// A unified diff (`--- a/path`, `+++ b/path`, `@@` hunks); several files allowed.
    pub unified_diff: String,
}

pub struct ApplyPatch;

/// One file's part of a multi-file diff: (old path, new path, the file's diff text).
fn split_files(diff: &str) -> Vec<(String, String, String)> {
    let strip = |s: &str| -> String {
        let s = s.split('\t').next().unwrap_or(s).trim();
        s.strip_prefix("a/")
            .or_else(|| s.strip_prefix("b/"))
            .unwrap_or(s)
            .to_string()
    };
    let mut out = Vec::new();
    let lines: Vec<&str> = diff.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].starts_with("--- ") && i + 1 < lines.len() && lines[i + 1].starts_with("+++ ") {
            let old = strip(&lines[i][4..]);
            let new = strip(&lines[i + 1][4..]);
            let mut j = i + 2;
            while j < lines.len()
                && !(lines[j].starts_with("--- ")
                    && j + 1 < lines.len()
                    && lines[j + 1].starts_with("+++ "))
            {
                j += 1;
            }
            let mut text = lines[i..j].join("\n");
            text.push('\n');
            out.push((old, new, text));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// What applying the diff would write: (path, new content or None to delete).
fn plan(ctx: &ToolContext, diff: &str) -> Result<Vec<(PathBuf, Option<String>)>> {
    let files = split_files(diff);
    if files.is_empty() {
        bail!("no file headers found: a unified diff needs `--- a/PATH` and `+++ b/PATH` lines before its @@ hunks");
    }
    let mut out = Vec::new();
    for (old, new, text) in files {
        let target = if new == "/dev/null" { &old } else { &new };
        let p = confine_writable(&ctx.workspace, target)?;
        let before = if old == "/dev/null" {
            String::new()
        } else {
            let bytes = paths::read(&ctx.workspace, &confine(&ctx.workspace, &old)?)
                .with_context(|| format!("cannot read {old} to patch it"))?;
            String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{old} is not UTF-8 text; it cannot be patched"))?
        };
        let patch = diffy::Patch::from_str(&text)
            .map_err(|e| anyhow::anyhow!("the diff for {target} cannot be parsed: {e}"))?;
        let after = diffy::apply(&before, &patch).map_err(|e| {
            anyhow::anyhow!("the diff does not apply cleanly to {target}: {e}; read the file again and make the context lines match it exactly")
        })?;
        out.push((p, (new != "/dev/null").then_some(after)));
    }
    Ok(out)
}

impl Tool for ApplyPatch {
    fn name(&self) -> &'static str {
        "apply_patch"
    }
    fn description(&self) -> &'static str {
        "Apply a unified diff to files in the workspace. Rejected with the reason if it does not apply cleanly."
    }
    fn schema(&self) -> Value {
        schema_of::<ApplyPatchArgs>()
    }
    fn effect(&self) -> Effect {
        Effect::Edit
    }
    fn preview(&self, a: &Value, ctx: &ToolContext) -> Result<String> {
        let a: ApplyPatchArgs = args(self.name(), a)?;
        plan(ctx, &a.unified_diff)?;
        Ok(a.unified_diff)
    }
    fn run(&self, a: Value, ctx: &ToolContext) -> ToolOutput {
        let r = (|| -> Result<String> {
            let a: ApplyPatchArgs = args(self.name(), &a)?;
            let changes = plan(ctx, &a.unified_diff)?;
            let mut done = Vec::new();
            for (p, content) in changes {
                match content {
                    Some(c) => write_with_checkpoint(ctx, &p, &c)?,
                    None => {
                        ctx.checkpoints
                            .lock()
                            .map_err(|_| anyhow::anyhow!("the undo store is unavailable"))?
                            .record(ctx.turn, &p)?;
                        paths::remove(&ctx.workspace, &p)?;
                    }
                }
                done.push(show(&ctx.workspace, &p));
            }
            Ok(format!("patched {}", done.join(", ")))
        })();
        result(r)
    }
}

fn result(r: Result<String>) -> ToolOutput {
    match r {
        Ok(s) => ToolOutput::ok(s),
        Err(e) => ToolOutput::err(format!("{e:#}")),
    }
}

/// Lines in a text, counting a last line without its newline.
fn line_count(b: &[u8]) -> usize {
    let n = b.iter().filter(|&&c| c == b'\n').count();
    n + usize::from(b.last().is_some_and(|&c| c != b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> (tempfile::TempDir, ToolContext) {
        let d = tempfile::tempdir().unwrap();
        let c = ToolContext::new(d.path()).unwrap();
        (d, c)
    }

    #[test]
    fn read_write_list_and_undo() {
        let (_d, c) = ctx();
        std::fs::write(c.workspace.join("a.txt"), "one\ntwo\nthree\n").unwrap();
        let r = ReadFile.run(json!({"path": "a.txt", "start": 2, "end": 3}), &c);
        assert!(
            r.ok && r.output.contains("    2  two") && !r.output.contains("one"),
            "{}",
            r.output
        );
        let pv = WriteFile
            .preview(
                &json!({"path": "a.txt", "content": "one\nTWO\nthree\n"}),
                &c,
            )
            .unwrap();
        assert!(pv.contains("-two") && pv.contains("+TWO"), "{pv}");
        let w = WriteFile.run(json!({"path": "d/new.txt", "content": "x\n"}), &c);
        assert!(w.ok && w.output.starts_with("created"), "{}", w.output);
        let l = ListDir.run(json!({"path": "."}), &c);
        assert!(
            l.output.contains("a.txt") && l.output.contains("d/") && !l.output.contains(".aha"),
            "{}",
            l.output
        );
        // A file given to list_dir: what it is, and the tool to use instead.
        let l = ListDir.run(json!({"path": "a.txt"}), &c);
        assert!(
            !l.ok
                && l.output.contains("a.txt is a file (3 lines")
                && l.output.contains("read_file"),
            "{}",
            l.output
        );
        c.checkpoints.lock().unwrap().undo_last_turn().unwrap();
        assert!(!c.workspace.join("d/new.txt").exists());
        let bad = ReadFile.run(json!({"path": "../etc/passwd"}), &c);
        assert!(!bad.ok && bad.output.contains("outside the workspace"));
        let bad = WriteFile.run(json!({"path": "a.txt"}), &c);
        assert!(
            !bad.ok && bad.output.contains("missing field `content`"),
            "{}",
            bad.output
        );
    }

    #[test]
    fn patches_apply_or_say_why_not() {
        let (_d, c) = ctx();
        std::fs::write(c.workspace.join("a.txt"), "alpha\nbeta\ngamma\n").unwrap();
        let good = "--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n alpha\n-beta\n+BETA\n gamma\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n";
        let r = ApplyPatch.run(json!({"unified_diff": good}), &c);
        assert!(r.ok, "{}", r.output);
        assert_eq!(
            std::fs::read_to_string(c.workspace.join("a.txt")).unwrap(),
            "alpha\nBETA\ngamma\n"
        );
        assert_eq!(
            std::fs::read_to_string(c.workspace.join("new.txt")).unwrap(),
            "hello\n"
        );
        let stale = "--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n alpha\n-beta\n+BETA\n gamma\n";
        let r = ApplyPatch.run(json!({"unified_diff": stale}), &c);
        assert!(
            !r.ok && r.output.contains("does not apply cleanly"),
            "{}",
            r.output
        );
        assert!(ApplyPatch
            .preview(&json!({"unified_diff": stale}), &c)
            .is_err());
        let r = ApplyPatch.run(json!({"unified_diff": "just text"}), &c);
        assert!(!r.ok && r.output.contains("no file headers"));
        let r = ApplyPatch.run(
            json!({"unified_diff": "--- a/../x\n+++ b/../x\n@@ -0,0 +1 @@\n+x\n"}),
            &c,
        );
        assert!(!r.ok && r.output.contains("outside"), "{}", r.output);
    }
}
