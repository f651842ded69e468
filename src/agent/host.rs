//! The built-in tools as the agent loop sees them ([`super::ToolHost`] over `crate::tools`).

use super::policy::Effect;
use super::ToolHost;
use crate::tools::{Registry, ToolContext};
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

/// The built-in tools for a workspace.
pub fn builtin(workspace: &Path) -> Result<Box<dyn ToolHost>> {
    builtin_with_index(workspace, None)
}

/// The built-in tools, searching the document index in `index` (default:
/// `<workspace>/.aha/index`). `search_docs` is offered only when that index exists.
pub fn builtin_with_index(workspace: &Path, index: Option<PathBuf>) -> Result<Box<dyn ToolHost>> {
    let mut ctx = ToolContext::new(workspace)?;
    ctx.index_dir = index;
    let mut reg = Registry::builtin();
    if !crate::rag::exists(&crate::tools::docs::index_dir(&ctx)) {
        reg.remove("search_docs");
    }
    Ok(Box::new(Builtin { reg, ctx }))
}

impl ToolHost for Builtin {
    fn specs(&self) -> Vec<Value> {
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
}
