//! The built-in tools as the agent loop sees them ([`super::ToolHost`] over `aha_tools`).

use super::policy::Effect;
use super::ToolHost;
use aha_rag::RagOptions;
use aha_tools::{Registry, ToolContext};
use anyhow::{anyhow, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The registry and the context its tools run in.
pub struct Builtin {
    reg: Registry,
    ctx: ToolContext,
}

/// The built-in tools for a workspace (default search weights).
pub fn builtin(workspace: &Path) -> Result<Box<dyn ToolHost>> {
    builtin_with(workspace, None, RagOptions::default())
}

/// The built-in tools, searching the document index in `index` (default:
/// `<workspace>/.aha/index`) ranked with `rag`. `search_docs` is offered only when that index
/// exists.
pub fn builtin_with(
    workspace: &Path,
    index: Option<PathBuf>,
    rag: RagOptions,
) -> Result<Box<dyn ToolHost>> {
    let mut ctx = ToolContext::new(workspace)?;
    ctx.index_dir = index;
    ctx.rag = rag;
    let mut reg = Registry::builtin();
    if !aha_rag::exists(&aha_tools::docs::index_dir(&ctx)) {
        reg.remove("search_docs");
    }
    Ok(Box::new(Builtin { reg, ctx }))
}

impl ToolHost for Builtin {
    fn specs(&self) -> Vec<aha_protocol::ToolSpec> {
        self.reg.specs()
    }
    fn effect(&self, name: &str) -> Option<Effect> {
        self.reg.get(name).map(|t| t.effect())
    }
    fn preview(&self, name: &str, args: &Value) -> Result<String> {
        self.reg
            .get(name)
            .ok_or_else(|| anyhow!("no tool {name}"))?
            .preview(args, &self.ctx)
    }
    fn run(
        &mut self,
        name: &str,
        args: Value,
        turn: u64,
        cancel: Arc<AtomicBool>,
    ) -> (bool, String) {
        let Some(t) = self.reg.get(name) else {
            return (false, format!("no tool {name}"));
        };
        let mut ctx = self.ctx.clone();
        ctx.turn = turn;
        ctx.cancel = cancel;
        let o = t.run(args, &ctx);
        (o.ok, o.output)
    }
    fn undo(&mut self) -> Result<Vec<PathBuf>> {
        self.ctx
            .checkpoints
            .lock()
            .map_err(|_| anyhow!("the undo store is unavailable"))?
            .undo_last_turn()
    }
    fn diff(&self) -> String {
        self.ctx
            .checkpoints
            .lock()
            .map(|c| c.diff_session())
            .unwrap_or_default()
    }
    fn index_docs(&mut self, paths: &[String]) -> Result<String> {
        let dir = aha_tools::docs::index_dir(&self.ctx);
        let mut ix = aha_rag::DocIndex::open_or_create(
            &dir,
            aha_rag::Analyzer::Both,
            &self.ctx.workspace,
            false,
        )?;
        let roots: Vec<PathBuf> = if paths.is_empty() {
            vec![self.ctx.workspace.clone()]
        } else {
            // Relative paths are the workspace's; anything readable may be indexed.
            paths.iter().map(|p| self.ctx.workspace.join(p)).collect()
        };
        let r = ix.update(&roots, &aha_rag::IndexOptions::default(), &mut |_| {})?;
        let (files, chunks) = ix.stats()?;
        if self.reg.get("search_docs").is_none() {
            self.reg.add(Box::new(aha_tools::docs::SearchDocs));
        }
        let mut m = format!(
            "{}; the index holds {files} files, {chunks} chunks, and the model can now use search_docs",
            r.summary()
        );
        for (p, why) in r.failed.iter().take(10) {
            m.push_str(&format!("\nskipped {p}: {why}"));
        }
        if !r.lossy.is_empty() {
            m.push_str(&format!(
                "\ndecoded lossily (not UTF-8): {}",
                r.lossy.join(", ")
            ));
        }
        Ok(m)
    }
    fn retrieve(&self, query: &str, k: usize) -> Result<Vec<aha_rag::Hit>> {
        let dir = aha_tools::docs::index_dir(&self.ctx);
        if !aha_rag::exists(&dir) {
            anyhow::bail!(
                "no document index at {}; build one with `aha index PATH…`",
                dir.display()
            );
        }
        aha_rag::DocIndex::open(&dir)?.search(query, k, &self.ctx.rag)
    }
    fn document(&self, path: &str) -> Option<String> {
        // Only files inside the workspace, named as the index names them.
        let rel = Path::new(path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return None;
        }
        let full = self.ctx.workspace.join(rel);
        let meta = std::fs::metadata(&full).ok()?;
        if !meta.is_file() || meta.len() > 64 << 20 {
            return None;
        }
        let bytes = std::fs::read(full).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
    fn search_docs(&self, query: &str) -> Result<String> {
        let ix = aha_rag::DocIndex::open(&aha_tools::docs::index_dir(&self.ctx))?;
        let hits = ix.search(query, 8, &self.ctx.rag)?;
        if hits.is_empty() {
            return Ok(format!("no passages match `{query}`"));
        }
        let mut m = String::new();
        for h in hits {
            m.push_str(&format!(
                "{}:{}  {:.2}  {}\n    {}\n",
                h.path, h.line, h.score, h.heading, h.snippet
            ));
        }
        Ok(m.trim_end().to_string())
    }
}
