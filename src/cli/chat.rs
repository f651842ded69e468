//! `aha chat`: a line-by-line chat in the terminal, for when there is no full-screen terminal.
//! Each message is a turn of the agent without tools, printed by the shared event printer.

use super::events::{drive_turn, Printer, Shown};
use super::{load_any_engine, ModelArgs};
use crate::agent::{self, AgentConfig};
use crate::engine::{Control, GenerateRequest};
use crate::protocol::Op;
use anyhow::Result;
use std::io::BufRead;
use std::sync::Arc;

/// Runs the interactive chat until end of input or `/quit`.
pub fn chat(m: &ModelArgs, config: &crate::config::Config) -> Result<i32> {
    let engine = load_any_engine(m, config)?;
    // The settings of a plain chat request; the model's recommended sampling.
    let defaults = GenerateRequest::chat(Vec::new());
    let cfg = AgentConfig {
        max_tokens: defaults.max_tokens,
        think: defaults.think,
        think_budget: defaults.think_budget,
        sampling: None,
        interactive: false,
        ..AgentConfig::default()
    };
    let h = agent::spawn(engine, cfg);
    eprintln!(
        "aha · {} · context {} tokens. Type a message; /clear starts over, /quit leaves. Ctrl-C stops a reply.",
        h.info().model,
        h.info().context_length
    );
    let ctrl = Arc::new(Control::default());
    {
        let c = ctrl.clone();
        let _ = ctrlc::set_handler(move || c.cancel());
    }
    let mut printer = Printer::new(false);
    let stdin = std::io::stdin();
    loop {
        eprint!("\n> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(0);
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => return Ok(0),
            "/clear" => {
                h.send(Op::Clear);
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        let end = drive_turn(
            &h,
            line.to_string(),
            &ctrl,
            Shown::OneGeneration,
            &mut printer,
        );
        if let Some(e) = end.error {
            eprintln!("error: {e}");
        }
    }
}
