//! git through git2 on the workspace's repository: status, diff, log, show, blame, branch,
//! commit. Nothing here pushes, forces, resets or discards work. git reads work-tree files by
//! name, so a file with more than one hard link is refused before git reads it, as in the file
//! tools: its content may be a file's outside the workspace.

use super::paths::{self, confine};
use super::{args, cap, schema_of, Effect, Tool, ToolContext, ToolOutput, OUTPUT_CAP};
use anyhow::{bail, Context, Result};
use git2::{DiffFormat, DiffOptions, Repository, StatusOptions};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

fn repo(ctx: &ToolContext) -> Result<Repository> {
    Repository::discover(&ctx.workspace)
        .with_context(|| format!("{} is not inside a git repository", ctx.workspace.display()))
}

/// A workspace path as a path relative to the repository's work tree.
fn repo_path(ctx: &ToolContext, r: &Repository, p: &str) -> Result<String> {
    let abs = confine(&ctx.workspace, p)?;
    let wd = r
        .workdir()
        .and_then(|w| std::fs::canonicalize(w).ok())
        .ok_or_else(|| anyhow::anyhow!("the repository has no work tree"))?;
    Ok(abs
        .strip_prefix(&wd)
        .map_err(|_| anyhow::anyhow!("{p} is not in the repository"))?
        .display()
        .to_string())
}

/// Refuses a work-tree file git would read if it has more than one hard link.
fn check_worktree_file(r: &Repository, rel: &std::path::Path) -> Result<()> {
    let Some(wd) = r.workdir() else {
        return Ok(());
    };
    match std::fs::symlink_metadata(wd.join(rel)) {
        Ok(m) if m.is_file() => paths::check_metadata(&rel.display().to_string(), &m),
        _ => Ok(()),
    }
}

fn out(r: Result<String>) -> ToolOutput {
    match r {
        Ok(s) => ToolOutput::ok(cap(&s, OUTPUT_CAP)),
        Err(e) => ToolOutput::err(format!("{e:#}")),
    }
}

fn diff_text(d: &git2::Diff) -> Result<String> {
    let mut s = String::new();
    d.print(DiffFormat::Patch, |_, _, l| {
        match l.origin() {
            '+' | '-' | ' ' => s.push(l.origin()),
            _ => {}
        }
        s.push_str(&String::from_utf8_lossy(l.content()));
        true
    })?;
    Ok(s)
}

macro_rules! tool {
    ($ty:ident, $name:literal, $desc:literal, $args:ty, $effect:expr) => {
        pub struct $ty;
        impl Tool for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn description(&self) -> &'static str {
                $desc
            }
            fn schema(&self) -> Value {
                schema_of::<$args>()
            }
            fn effect(&self) -> Effect {
                $effect
            }
            fn preview(&self, a: &Value, ctx: &ToolContext) -> Result<String> {
                let a: $args = args(self.name(), a)?;
                a.preview(ctx)
            }
            fn run(&self, a: Value, ctx: &ToolContext) -> ToolOutput {
                out(args::<$args>(self.name(), &a).and_then(|a| a.run(ctx)))
            }
        }
    };
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {}

impl StatusArgs {
    fn preview(&self, _: &ToolContext) -> Result<String> {
        Ok("git status".into())
    }
    fn run(&self, ctx: &ToolContext) -> Result<String> {
        let r = repo(ctx)?;
        let head = match r.head() {
            Ok(h) => h.shorthand().unwrap_or("(detached)").to_string(),
            Err(_) => "(no commits yet)".into(),
        };
        let detached = r.head_detached().unwrap_or(false);
        let mut o = StatusOptions::new();
        o.include_untracked(true).recurse_untracked_dirs(true);
        let st = r.statuses(Some(&mut o))?;
        let mut lines = Vec::new();
        for e in st.iter() {
            let s = e.status();
            if e.path().is_some_and(|p| p.starts_with(".aha/")) {
                continue;
            }
            let code = if s.is_wt_new() {
                "untracked"
            } else if s.is_index_new() {
                "added (staged)"
            } else if s.is_index_modified() {
                "modified (staged)"
            } else if s.is_wt_modified() {
                "modified"
            } else if s.is_wt_deleted() || s.is_index_deleted() {
                "deleted"
            } else if s.is_conflicted() {
                "conflicted"
            } else {
                "changed"
            };
            lines.push(format!("{code}: {}", e.path().unwrap_or("?")));
        }
        Ok(format!(
            "branch {head}{}\n{}",
            if detached { " (detached HEAD)" } else { "" },
            if lines.is_empty() {
                "working tree clean".to_string()
            } else {
                lines.join("\n")
            }
        ))
    }
}
tool!(
    GitStatus,
    "git_status",
    "Show the branch and which files are modified, staged or untracked.",
    StatusArgs,
    Effect::ReadOnly
);

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffArgs {
    /// Only this file or folder.
    #[serde(default)]
    pub path: Option<String>,
    /// The staged changes (index vs HEAD) instead of the unstaged ones.
    #[serde(default)]
    pub staged: Option<bool>,
}

impl DiffArgs {
    fn preview(&self, _: &ToolContext) -> Result<String> {
        Ok("git diff".into())
    }
    fn run(&self, ctx: &ToolContext) -> Result<String> {
        let r = repo(ctx)?;
        let mut o = DiffOptions::new();
        if let Some(p) = &self.path {
            o.pathspec(repo_path(ctx, &r, p)?);
        }
        let d = if self.staged.unwrap_or(false) {
            let head = r.head().ok().and_then(|h| h.peel_to_tree().ok());
            r.diff_tree_to_index(head.as_ref(), None, Some(&mut o))?
        } else {
            let d = r.diff_index_to_workdir(None, Some(&mut o))?;
            for delta in d.deltas() {
                if let Some(p) = delta.new_file().path() {
                    check_worktree_file(&r, p)?;
                }
            }
            d
        };
        let t = diff_text(&d)?;
        Ok(if t.is_empty() { "no changes".into() } else { t })
    }
}
tool!(
    GitDiff,
    "git_diff",
    "Show unstaged changes (or staged ones with staged=true), optionally for one path.",
    DiffArgs,
    Effect::ReadOnly
);

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogArgs {
    /// How many commits, newest first.
    pub n: usize,
    /// Only commits that touch this path.
    #[serde(default)]
    pub path: Option<String>,
}

impl LogArgs {
    fn preview(&self, _: &ToolContext) -> Result<String> {
        Ok(format!("git log -n {}", self.n))
    }
    fn run(&self, ctx: &ToolContext) -> Result<String> {
        let r = repo(ctx)?;
        let mut walk = r.revwalk()?;
        if walk.push_head().is_err() {
            return Ok("the repository has no commits yet".into());
        }
        let filter = match &self.path {
            Some(p) => Some(repo_path(ctx, &r, p)?),
            None => None,
        };
        let mut total = 0usize;
        let mut lines = Vec::new();
        for oid in walk {
            let c = r.find_commit(oid?)?;
            if let Some(p) = &filter {
                let tree = c.tree()?;
                let parent = c.parent(0).ok().and_then(|p| p.tree().ok());
                let mut o = DiffOptions::new();
                o.pathspec(p);
                let d = r.diff_tree_to_tree(parent.as_ref(), Some(&tree), Some(&mut o))?;
                if d.deltas().len() == 0 {
                    continue;
                }
            }
            total += 1;
            if lines.len() < self.n.max(1) {
                let when = chrono_like(c.time().seconds());
                lines.push(format!(
                    "{} {} {} — {}",
                    &c.id().to_string()[..10],
                    when,
                    c.author().name().unwrap_or("?"),
                    c.summary().unwrap_or("")
                ));
            }
        }
        Ok(format!(
            "{} commit(s) in total{}; showing {}:\n{}",
            total,
            filter.map(|p| format!(" touching {p}")).unwrap_or_default(),
            lines.len(),
            lines.join("\n")
        ))
    }
}
tool!(
    GitLog,
    "git_log",
    "List recent commits (newest first), with the total number of commits.",
    LogArgs,
    Effect::ReadOnly
);

/// `YYYY-MM-DD` from Unix seconds (civil calendar, UTC).
fn chrono_like(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{:02}-{:02}", if m <= 2 { y + 1 } else { y }, m, d)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShowArgs {
    /// A revision: a hash, a branch, HEAD, HEAD~1…
    pub rev: String,
}

impl ShowArgs {
    fn preview(&self, _: &ToolContext) -> Result<String> {
        Ok(format!("git show {}", self.rev))
    }
    fn run(&self, ctx: &ToolContext) -> Result<String> {
        let r = repo(ctx)?;
        let obj = r
            .revparse_single(&self.rev)
            .with_context(|| format!("no revision `{}`", self.rev))?;
        let c = obj.peel_to_commit()?;
        let tree = c.tree()?;
        let parent = c.parent(0).ok().and_then(|p| p.tree().ok());
        let d = r.diff_tree_to_tree(parent.as_ref(), Some(&tree), None)?;
        // A merge names its parents; its diff is against the first one (as `git show -m` would
        // show first).
        let merge = if c.parent_count() > 1 {
            let ps: Vec<String> = c
                .parent_ids()
                .map(|p| p.to_string()[..10].to_string())
                .collect();
            format!("\nMerge: {} (diff against the first parent)", ps.join(" "))
        } else {
            String::new()
        };
        Ok(format!(
            "commit {}{merge}\nAuthor: {} <{}>\nDate: {}\n\n{}\n\n{}",
            c.id(),
            c.author().name().unwrap_or("?"),
            c.author().email().unwrap_or("?"),
            chrono_like(c.time().seconds()),
            c.message().unwrap_or("").trim(),
            diff_text(&d)?
        ))
    }
}
tool!(
    GitShow,
    "git_show",
    "Show one commit: its message and its diff.",
    ShowArgs,
    Effect::ReadOnly
);

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlameArgs {
    /// File path.
    pub path: String,
    /// First line (1-based).
    #[serde(default)]
    pub start: Option<usize>,
    /// Last line (inclusive).
    #[serde(default)]
    pub end: Option<usize>,
}

impl BlameArgs {
    fn preview(&self, _: &ToolContext) -> Result<String> {
        Ok(format!("git blame {}", self.path))
    }
    fn run(&self, ctx: &ToolContext) -> Result<String> {
        let r = repo(ctx)?;
        let rel = repo_path(ctx, &r, &self.path)?;
        let blame = r.blame_file(std::path::Path::new(&rel), None)?;
        let head = r.head()?.peel_to_commit()?;
        let blob = head
            .tree()?
            .get_path(std::path::Path::new(&rel))?
            .to_object(&r)?
            .peel_to_blob()?;
        let text = String::from_utf8_lossy(blob.content()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let start = self.start.unwrap_or(1).max(1);
        let end = self.end.unwrap_or(lines.len()).min(lines.len());
        if start > end {
            bail!(
                "lines {start}..{end} are outside {rel} ({} lines)",
                lines.len()
            );
        }
        let mut outl = Vec::new();
        for n in start..=end {
            let who = blame
                .get_line(n)
                .map(|h| {
                    format!(
                        "{} {}",
                        &h.final_commit_id().to_string()[..8],
                        h.final_signature().name().unwrap_or("?")
                    )
                })
                .unwrap_or_else(|| "(uncommitted)".into());
            outl.push(format!("{n:>5} {who}: {}", lines[n - 1]));
        }
        Ok(outl.join("\n"))
    }
}
tool!(
    GitBlame,
    "git_blame",
    "Show which commit and author last changed each line of a file.",
    BlameArgs,
    Effect::ReadOnly
);

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchArgs {
    /// Branch name.
    pub name: String,
    /// Also switch to it (refused if that would overwrite uncommitted changes).
    #[serde(default)]
    pub switch: Option<bool>,
}

impl BranchArgs {
    fn preview(&self, _: &ToolContext) -> Result<String> {
        Ok(format!(
            "git branch {}{}",
            self.name,
            if self.switch.unwrap_or(false) {
                " && git switch"
            } else {
                ""
            }
        ))
    }
    fn run(&self, ctx: &ToolContext) -> Result<String> {
        let r = repo(ctx)?;
        let created = match r.find_branch(&self.name, git2::BranchType::Local) {
            Ok(_) => false,
            Err(_) => {
                let head = r
                    .head()
                    .context("cannot branch: the repository has no commits yet")?
                    .peel_to_commit()?;
                r.branch(&self.name, &head, false)?;
                true
            }
        };
        if self.switch.unwrap_or(false) {
            let target = r
                .revparse_single(&format!("refs/heads/{}", self.name))?
                .peel_to_tree()?;
            // A safe checkout fails instead of overwriting changes.
            let mut co = git2::build::CheckoutBuilder::new();
            co.safe();
            r.checkout_tree(target.as_object(), Some(&mut co))
                .context("switching would overwrite uncommitted changes; commit them first")?;
            r.set_head(&format!("refs/heads/{}", self.name))?;
        }
        Ok(format!(
            "{} branch {}{}",
            if created { "created" } else { "existing" },
            self.name,
            if self.switch.unwrap_or(false) {
                ", switched to it"
            } else {
                ""
            }
        ))
    }
}
tool!(
    GitBranch,
    "git_branch",
    "Create a branch from HEAD, and optionally switch to it.",
    BranchArgs,
    Effect::Edit
);

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitArgs {
    /// The commit message.
    pub message: String,
    /// Files to add before committing (default: commit what is staged).
    #[serde(default)]
    pub paths: Option<Vec<String>>,
}

impl CommitArgs {
    fn preview(&self, ctx: &ToolContext) -> Result<String> {
        let r = repo(ctx)?;
        let files = match &self.paths {
            Some(ps) => ps.join(", "),
            None => "the staged changes".into(),
        };
        drop(r);
        Ok(format!("git commit {files} -m {:?}", self.message))
    }
    fn run(&self, ctx: &ToolContext) -> Result<String> {
        if self.message.trim().is_empty() {
            bail!("the commit message is empty");
        }
        let r = repo(ctx)?;
        let mut idx = r.index()?;
        for p in self.paths.iter().flatten() {
            let rel = repo_path(ctx, &r, p)?;
            check_worktree_file(&r, std::path::Path::new(&rel))?;
            if r.workdir().is_some_and(|w| w.join(&rel).exists()) {
                idx.add_path(std::path::Path::new(&rel))?;
            } else {
                idx.remove_path(std::path::Path::new(&rel))?;
            }
        }
        idx.write()?;
        let tree = r.find_tree(idx.write_tree()?)?;
        let parent = r.head().ok().and_then(|h| h.peel_to_commit().ok());
        if parent.as_ref().is_some_and(|p| p.tree_id() == tree.id()) {
            bail!("nothing to commit: stage files or name them in `paths`");
        }
        let sig = r
            .signature()
            .or_else(|_| git2::Signature::now("aha", "aha@localhost"))?;
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = r.commit(Some("HEAD"), &sig, &sig, &self.message, &tree, &parents)?;
        Ok(format!("committed {}", &id.to_string()[..10]))
    }
}
tool!(
    GitCommit,
    "git_commit",
    "Commit staged changes (or the given paths) with a message.",
    CommitArgs,
    Effect::Commit
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn commit(r: &Repository, file: &str, body: &[u8], msg: &str) -> git2::Oid {
        let wd = r.workdir().unwrap().to_path_buf();
        std::fs::write(wd.join(file), body).unwrap();
        let mut idx = r.index().unwrap();
        idx.add_path(Path::new(file)).unwrap();
        idx.write().unwrap();
        let tree = r.find_tree(idx.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("T", "t@x").unwrap();
        let parents: Vec<git2::Commit> = r
            .head()
            .ok()
            .map(|h| h.peel_to_commit().unwrap())
            .into_iter()
            .collect();
        let p: Vec<&git2::Commit> = parents.iter().collect();
        r.commit(Some("HEAD"), &sig, &sig, msg, &tree, &p).unwrap()
    }

    #[test]
    fn git_tools_on_a_real_repository() {
        let d = tempfile::tempdir().unwrap();
        let c = ToolContext::new(d.path()).unwrap();
        let r = Repository::init(&c.workspace).unwrap();
        // An empty repository.
        assert!(GitLog
            .run(json!({"n": 5}), &c)
            .output
            .contains("no commits yet"));
        assert!(GitStatus
            .run(json!({}), &c)
            .output
            .contains("no commits yet"));
        let first = commit(&r, "a.txt", b"one\n", "first");
        commit(&r, "a.txt", b"one\ntwo\n", "second");
        commit(&r, "bin.dat", &[0, 159, 146, 150], "binary");
        let log = GitLog.run(json!({"n": 2}), &c);
        assert!(
            log.output.contains("3 commit(s) in total") && log.output.contains("binary"),
            "{}",
            log.output
        );
        assert!(GitLog
            .run(json!({"n": 9, "path": "a.txt"}), &c)
            .output
            .contains("2 commit(s) in total"));
        std::fs::write(c.workspace.join("a.txt"), "one\nTWO\n").unwrap();
        std::fs::write(c.workspace.join("u.txt"), "new\n").unwrap();
        let st = GitStatus.run(json!({}), &c).output;
        assert!(
            st.contains("modified: a.txt") && st.contains("untracked: u.txt"),
            "{st}"
        );
        let df = GitDiff.run(json!({"path": "a.txt"}), &c).output;
        assert!(df.contains("-two") && df.contains("+TWO"), "{df}");
        assert_eq!(
            GitDiff.run(json!({"staged": true}), &c).output,
            "no changes"
        );
        let sh = GitShow.run(json!({"rev": "HEAD~1"}), &c).output;
        assert!(sh.contains("second") && sh.contains("+two"), "{sh}");
        let bl = GitBlame.run(json!({"path": "a.txt", "start": 2, "end": 2}), &c);
        assert!(
            bl.ok && bl.output.contains("two") && !bl.output.contains("one"),
            "{}",
            bl.output
        );
        // Switching with a dirty tree that the switch would overwrite is refused.
        GitBranch.run(json!({"name": "old"}), &c);
        r.set_head_detached(first).unwrap();
        let st = GitStatus.run(json!({}), &c).output;
        assert!(st.contains("detached"), "{st}");
        r.set_head("refs/heads/master")
            .or_else(|_| r.set_head("refs/heads/main"))
            .unwrap();
        let br = GitBranch.run(json!({"name": "feature", "switch": true}), &c);
        assert!(br.ok, "{}", br.output);
        assert_eq!(
            std::fs::read_to_string(c.workspace.join("a.txt")).unwrap(),
            "one\nTWO\n",
            "work kept"
        );
        let cm = GitCommit.run(
            json!({"message": "change", "paths": ["a.txt", "u.txt"]}),
            &c,
        );
        assert!(cm.ok, "{}", cm.output);
        assert!(GitLog
            .run(json!({"n": 1}), &c)
            .output
            .contains("4 commit(s)"));
        assert!(
            !GitCommit.run(json!({"message": "again"}), &c).ok,
            "nothing to commit"
        );
        // A merge of `feature` into `old` (made with git2 as a person's git would).
        let feature = r.head().unwrap().peel_to_commit().unwrap();
        r.set_head("refs/heads/old").unwrap();
        r.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .unwrap();
        let side = commit(&r, "side.txt", b"side\n", "side work");
        let side = r.find_commit(side).unwrap();
        let mut idx = r.merge_commits(&side, &feature, None).unwrap();
        assert!(!idx.has_conflicts());
        let tree = r.find_tree(idx.write_tree_to(&r).unwrap()).unwrap();
        let sig = git2::Signature::now("T", "t@x").unwrap();
        r.commit(
            Some("HEAD"),
            &sig,
            &sig,
            "merge feature",
            &tree,
            &[&side, &feature],
        )
        .unwrap();
        r.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .unwrap();
        let log = GitLog.run(json!({"n": 10}), &c).output;
        assert!(
            log.contains("6 commit(s) in total") && log.contains("merge feature"),
            "{log}"
        );
        let sh = GitShow.run(json!({"rev": "HEAD"}), &c).output;
        assert!(
            sh.contains("Merge: ") && sh.contains("merge feature"),
            "{sh}"
        );
        assert!(
            sh.contains("+TWO"),
            "the diff against the first parent: {sh}"
        );
        assert!(!GitShow.run(json!({"rev": "nope"}), &c).ok);
        assert_eq!(GitCommit.effect(), Effect::Commit);
    }
}
