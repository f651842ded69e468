//! Integration tests through the public interface and the real binary, grouped by topic.

mod agent_real;
mod attacker;
mod cli;
mod common;
mod compact;
mod constrain;
mod engine_real;
mod engine_synth;
mod escape;
mod export_html;
mod mcp_client;
mod mcp_server;
mod microscope;
mod prompt_cache;
mod proptests;
mod pull;
mod r1_header;
mod rag;
mod remote;
mod run_json;
mod sandbox;
mod serve;
mod tokenizer;
mod tui;
