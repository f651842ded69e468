//! `aha serve`: flags for the OpenAI-compatible server over the local engine.

use super::{load_engine, ModelArgs};
use crate::config::Config;
use crate::server::{serve as run_server, ServeOptions};
use anyhow::Result;
use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind (127.0.0.1 keeps it on this machine).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 requests.
    #[arg(long, env = "AHA_API_KEY")]
    pub api_key: Option<String>,
    /// Requests accepted at once, the running one included; more get HTTP 503.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Largest request body in bytes; larger ones get HTTP 413.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body: usize,
    /// Make the model reason first in every request (reasoning_content even for non-reasoning models).
    #[arg(long)]
    pub think: bool,
    /// max_tokens when a request gives none.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Connections open at once. At the cap, the connection idle longest (still sending its
    /// request, or between requests) is closed to make room; when all are busy, HTTP 503.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers (and the most a kept-alive connection
    /// may idle between requests).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Seconds a client has to send a request's body once its headers are in; then HTTP 408.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,
}

/// Runs `aha serve` until interrupted.
pub fn serve(m: &ModelArgs, a: ServeArgs, cfg: &Config) -> Result<i32> {
    let engine = load_engine(m, cfg)?;
    run_server(
        engine,
        ServeOptions {
            host: a.host,
            port: a.port,
            api_key: a.api_key.filter(|k| !k.is_empty()),
            queue: a.queue.max(1),
            max_body: a.max_body,
            think: a.think,
            max_tokens: a.max_tokens,
            max_connections: a.max_connections as usize,
            header_timeout: Duration::from_secs(a.header_timeout),
            body_timeout: Duration::from_secs(a.body_timeout),
        },
    )?;
    Ok(0)
}
