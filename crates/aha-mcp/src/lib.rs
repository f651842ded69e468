//! aha and the Model Context Protocol (on `rmcp`, the official Rust SDK): a client that runs
//! the MCP servers a user configures and offers their tools to the agent, and `aha mcp`, aha's
//! own server that offers document search and read-only workspace files to other agents.

pub mod client;
pub mod server;
