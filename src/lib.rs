//! aha: a terminal workbench for local reasoning models.
//!
//! `protocol` holds the events that cross from the engine/agent to their consumers; `engine` runs
//! models; `agent` runs turns; `ui` is the workbench TUI; `session` keeps conversations; `cli` is
//! the command line.

pub mod agent;
pub mod cli;
pub mod config;
pub mod engine;
pub mod protocol;
pub mod rag;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod tools;
pub mod ui;
