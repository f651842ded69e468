//! aha: a terminal workbench for local reasoning models.
//!
//! This crate is the `aha` binary's wiring: the command line (`cli`) and the config file
//! (`config`). The work is done by the workspace's crates, re-exported here under their old
//! module names so that tests and scripts reach them through one path; ARCHITECTURE.md says
//! which crate does what and in which direction they may depend on each other.

pub mod cli;
pub mod config;

pub use aha_agent as agent;
pub use aha_engine as engine;
pub use aha_protocol as protocol;
pub use aha_rag as rag;
pub use aha_server as server;
pub use aha_session as session;
pub use aha_tools as tools;
pub use aha_tools::sandbox;
pub use aha_tui as ui;
