//! `search_docs`: the document index (`aha index`) as a tool, with the same hits as
//! `aha search --json`.

use super::{args, schema_of, Effect, Tool, ToolContext, ToolOutput};
use aha_rag::{self as rag, DocIndex};
use anyhow::Result;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchDocsArgs {
    /// Words to look for; "quoted words" must appear together.
    pub query: String,
    /// How many passages to return (default 5, at most 20).
    pub k: Option<usize>,
}

pub struct SearchDocs;

/// Passages `search_docs` returns when the call does not say.
pub const DEFAULT_K: usize = 5;
/// The most passages one call returns (more would crowd a model's context).
pub const MAX_K: usize = 20;

/// The index a context searches: its own, else `<workspace>/.aha/index`.
pub fn index_dir(ctx: &ToolContext) -> PathBuf {
    ctx.index_dir
        .clone()
        .unwrap_or_else(|| rag::default_dir(&ctx.workspace))
}

/// The hits a `search_docs` call returns: `k` (default [`DEFAULT_K`], at most [`MAX_K`]) from
/// the context's index, ranked with its options. Shared by the tool and `aha mcp`, so both rank
/// and cap alike.
pub fn search(a: &SearchDocsArgs, ctx: &ToolContext) -> Result<Vec<rag::Hit>> {
    let ix = DocIndex::open(&index_dir(ctx))?;
    ix.search(&a.query, a.k.unwrap_or(DEFAULT_K).clamp(1, MAX_K), &ctx.rag)
}

impl Tool for SearchDocs {
    fn name(&self) -> &'static str {
        "search_docs"
    }
    fn description(&self) -> &'static str {
        "Search the indexed documents of the workspace. Returns passages as JSON lines with path, start_line, end_line, line (where the match is), score, heading and snippet (matches marked **like this**). Cite them as [path:line]; read_file shows more of a passage."
    }
    fn schema(&self) -> Value {
        schema_of::<SearchDocsArgs>()
    }
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn preview(&self, a: &Value, _: &ToolContext) -> Result<String> {
        let a: SearchDocsArgs = args(self.name(), a)?;
        Ok(format!("search documents for {:?}", a.query))
    }
    fn run(&self, a: Value, ctx: &ToolContext) -> ToolOutput {
        let r = (|| -> Result<String> {
            let a: SearchDocsArgs = args(self.name(), &a)?;
            let hits = search(&a, ctx)?;
            if hits.is_empty() {
                return Ok(format!(
                    "no passages match {:?}; try other words (or the corpus does not cover it)",
                    a.query
                ));
            }
            let mut out = String::new();
            for h in hits {
                out.push_str(&serde_json::to_string(&h)?);
                out.push('\n');
            }
            Ok(out)
        })();
        match r {
            Ok(s) => ToolOutput {
                ok: true,
                output: s,
            },
            Err(e) => ToolOutput::err(format!("{e:#}")),
        }
    }
}
