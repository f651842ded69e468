//! `aha mcp`: serve the document index and the workspace's files to other agents over MCP
//! (stdin/stdout). The server itself is `aha_mcp::server`; this parses the flags.

use crate::rag::RagOptions;
use anyhow::Result;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The workspace whose files read_file and list_dir serve (default: the current directory).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// The index folder search_docs reads (default: .aha/index in the workspace).
    #[arg(long, env = "AHA_INDEX")]
    pub index: Option<PathBuf>,
}

pub fn mcp(a: McpArgs, rag: RagOptions) -> Result<i32> {
    let workspace = match a.workspace {
        Some(w) => w,
        None => std::env::current_dir()?,
    };
    let index = super::docs::index_dir_in(&workspace, &a.index)?;
    // An index given relative to where aha started stays that one whatever the server does.
    let index = std::path::absolute(&index).unwrap_or(index);
    let server = aha_mcp::server::AhaServer::new(aha_mcp::server::ServerOptions {
        workspace,
        index: Some(index),
        rag,
    })?;
    if std::io::stdin().is_terminal() {
        // Someone typed `aha mcp` by hand; stdout belongs to the protocol, so say it on stderr.
        eprintln!(
            "aha mcp: an MCP server for {} (search_docs, read_file, list_dir) on stdin/stdout. \
An MCP client starts it (README.md, \"aha as an MCP server\"); Ctrl-D quits.",
            server.workspace().display()
        );
    }
    tracing::info!(
        workspace = %server.workspace().display(),
        index = %server.index_dir().display(),
        "aha mcp: serving on stdio"
    );
    aha_mcp::server::serve_stdio(server)?;
    Ok(0)
}
