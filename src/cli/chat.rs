//! `aha chat`: a line-by-line chat in the terminal, for when there is no full-screen terminal.

use super::{load_any_engine, run::print_stats, ModelArgs};
use crate::engine::template::ChatMessage;
use crate::engine::{Control, GenerateRequest, Prompt};
use crate::protocol::Event;
use anyhow::Result;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

/// Runs the interactive chat until end of input or `/quit`.
pub fn chat(m: &ModelArgs, cfg: &crate::config::Config) -> Result<i32> {
    let mut engine = load_any_engine(m, cfg)?;
    eprintln!(
        "aha · {} · context {} tokens. Type a message; /clear starts over, /quit leaves. Ctrl-C stops a reply.",
        engine.model_name(),
        engine.context_length()
    );
    let ctrl = Arc::new(Control::default());
    {
        let c = ctrl.clone();
        let _ = ctrlc::set_handler(move || c.cancel());
    }
    let dim = std::io::stderr().is_terminal();
    let mut history: Vec<ChatMessage> = Vec::new();
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
                history.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(line));
        ctrl.cancel
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let mut req = GenerateRequest::chat(history.clone());
        req.sampling = engine.default_sampling();
        req.prompt = Prompt::Chat(history.clone());
        let mut answer = String::new();
        let mut thinking = false;
        let r = engine.generate(&req, &ctrl, &mut |e| match e {
            Event::ThinkingDelta { text, .. } => {
                if dim && !thinking {
                    eprint!("\x1b[2m");
                }
                thinking = true;
                eprint!("{text}");
            }
            Event::AnswerDelta { text, .. } => {
                if thinking {
                    eprintln!("{}", if dim { "\x1b[0m" } else { "" });
                    thinking = false;
                }
                print!("{text}");
                let _ = std::io::stdout().flush();
                answer.push_str(&text);
            }
            Event::TurnFinished { stats, .. } => {
                if thinking && dim {
                    eprint!("\x1b[0m");
                }
                println!();
                print_stats(&stats);
            }
            _ => {}
        });
        if let Err(e) = r {
            eprintln!("error: {e:#}");
            history.pop();
            continue;
        }
        history.push(ChatMessage::assistant(answer));
    }
}
