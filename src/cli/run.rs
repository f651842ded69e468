//! `aha run`: one generation from the command line, as text or as JSON events.

use super::events::{drive_turn, print_json, Printer, Shown};
use super::{load_engine, remote_engine, ModelArgs, SamplingArgs};
use crate::engine::template::ChatMessage;
use crate::engine::{Control, Engine, GenerateRequest, Prompt, ThinkMode};
use crate::protocol::Event;
use anyhow::Result;
use clap::Args;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The prompt (a user message, or exact text with --raw). `-` reads standard input.
    pub prompt: String,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Close the reasoning after N thinking tokens and let the model answer.
    #[arg(long)]
    pub think_budget: Option<usize>,
    /// Budget forcing: while the reasoning has fewer than N tokens, an attempt to close it is
    /// replaced by "Wait" ([trace] wait) and the model goes on thinking.
    #[arg(long, value_name = "N")]
    pub think_min: Option<usize>,
    /// Report the N best tokens at each position with their log-probabilities (`top` in the
    /// --json deltas; at most 20).
    #[arg(long, value_name = "N")]
    pub top_logprobs: Option<usize>,
    /// What a loop in the reasoning does: off, warn (a reasoning_loop event), stop (the turn
    /// ends) or nudge (a sentence such as "I am going in circles…" is written into the
    /// reasoning). Default: [trace] loops, else warn.
    #[arg(long, value_name = "MODE", value_parser = parse_loops)]
    pub loops: Option<crate::protocol::LoopAction>,
    /// Make the model reason first inside <think>, even if it is not a reasoning model.
    #[arg(long, conflicts_with = "no_think")]
    pub think: bool,
    /// Ask a reasoning model to answer without reasoning.
    #[arg(long)]
    pub no_think: bool,
    /// Print one JSON event per line on stdout. Without --agent, the events of the one
    /// generation: no turn_started, and a generation that fails ends with its error (no
    /// turn_finished after it). With --agent, every event of the turn, turn_started first.
    #[arg(long)]
    pub json: bool,
    /// Pass the prompt as exact text, without the chat template (completion mode).
    #[arg(long)]
    pub raw: bool,
    /// Print the rendered prompt (after the chat template) to stderr before generating.
    #[arg(long)]
    pub show_prompt: bool,
    /// Run as an agent: the model may call tools (files, git, run_code, search_docs) in the
    /// current directory's workspace until it answers.
    #[arg(long)]
    pub agent: bool,
    /// With --agent: read-only, ask (anything that would ask is denied: nobody is there to
    /// approve), auto-edit or full-auto.
    #[arg(long, default_value = "ask", requires = "agent")]
    pub approve: String,
    /// With --agent: most generations per turn (each tool round is one).
    #[arg(long, default_value_t = 8, requires = "agent")]
    pub max_steps: usize,
    /// With --agent: do not constrain tool calls to the tools' JSON schemas.
    #[arg(long, requires = "agent")]
    pub no_constrain: bool,
    /// Forbid tool-call text: the reply must open as prose (what the agent does when a model keeps
    /// calling instead of answering; also works with --raw, to see what a model answers then)
    #[arg(long, hide = true)]
    pub no_tool_calls: bool,
    /// With --agent: let a model that repeats itself run on (to measure what insisting on an
    /// answer changes; tools/agent_eval.py)
    #[arg(long, hide = true, requires = "agent")]
    pub no_insist: bool,
    /// With --agent: the workspace root (default: the current directory).
    #[arg(long, requires = "agent")]
    pub workspace: Option<std::path::PathBuf>,
    /// With --agent: answer as a researcher over the indexed documents (prompts/researcher.md:
    /// search first, cite every claim as [path:line], say when the documents do not cover it).
    #[arg(long, requires = "agent")]
    pub research: bool,
    /// With --research: do not search before the first generation; the model searches with its
    /// tools if it chooses to (to measure what retrieving first changes; tools/rag_eval).
    #[arg(long, hide = true, requires = "research")]
    pub no_retrieve_first: bool,
    /// With --agent: after the answer, send TEXT as the next message of the same conversation
    /// (repeatable; a scripted session, e.g. to watch the conversation compact under --ctx).
    #[arg(long, value_name = "TEXT", requires = "agent")]
    pub then: Vec<String>,
    /// With --agent: the document index `search_docs` uses (default: WORKSPACE/.aha/index).
    #[arg(long, env = "AHA_INDEX")]
    pub index: Option<std::path::PathBuf>,
}

fn parse_loops(s: &str) -> Result<crate::protocol::LoopAction, String> {
    crate::protocol::LoopAction::parse(s)
        .ok_or_else(|| format!("`{s}`: use off, warn, stop or nudge"))
}

/// The engine `aha run` uses.
enum Loaded {
    Local(Box<crate::engine::LocalEngine>),
    Remote(Box<dyn Engine>),
}

/// Runs `aha run`.
pub fn run(
    m: &ModelArgs,
    a: RunArgs,
    cfg: &crate::config::Config,
    rag: crate::rag::RagOptions,
) -> Result<i32> {
    // Out-of-range sampling flags are refused before a model loads, naming the flag.
    use crate::engine::sampler::{validate_max_tokens, SamplingParams};
    if let Err(e) = validate_max_tokens(a.max_tokens)
        .and_then(|()| a.sampling.apply(SamplingParams::default()).validate())
    {
        anyhow::bail!(
            "{}",
            e.message_for(&format!("--{}", e.field.replace('_', "-")))
        );
    }
    let mut trace = cfg.trace.clone();
    if let Some(n) = a.top_logprobs {
        trace.top_logprobs = n;
    }
    if a.think_min.is_some() {
        trace.think_min = a.think_min;
    }
    if let Some(l) = a.loops {
        trace.loops = l;
    }
    if let Err(e) = trace.validate() {
        anyhow::bail!("{e}");
    }
    let prompt_text = if a.prompt == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        a.prompt.clone()
    };
    // The MCP servers start in the background while the model loads.
    let mcp = if a.agent {
        aha_mcp::client::McpHub::start(&cfg.mcp)
    } else {
        None
    };
    // The local engine stays concrete so --show-prompt can render its template.
    let loaded = remote_engine(m, cfg).and_then(|r| match r {
        Some(r) => Ok(Loaded::Remote(r)),
        None => load_engine(m, cfg).map(|l| Loaded::Local(Box::new(l))),
    });
    let loaded = match loaded {
        Ok(e) => e,
        Err(e) if a.json => {
            print_json(&Event::Error {
                message: format!("{e:#}"),
            });
            return Ok(1);
        }
        Err(e) => return Err(e),
    };
    // Without --agent, the text the agent is sent (the request below is what it will ask).
    let text = prompt_text.clone();
    let prompt = if a.raw {
        Prompt::Raw(prompt_text)
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::system(s.clone()));
        }
        msgs.push(ChatMessage::user(prompt_text));
        Prompt::Chat(msgs)
    };
    let req = GenerateRequest {
        prompt,
        // Model defaults, then the config's [sampling], then the flags.
        sampling: a.sampling.apply(cfg.sampling.apply(match &loaded {
            Loaded::Local(l) => l.default_sampling(),
            Loaded::Remote(r) => r.default_sampling(),
        })),
        max_tokens: a.max_tokens,
        think: if a.think {
            ThinkMode::On
        } else if a.no_think {
            ThinkMode::Off
        } else {
            ThinkMode::Auto
        },
        think_budget: a.think_budget,
        ignore_eos: false,
        tools: None,
        assistant_prefix: None,
        constrain_tools: true,
        no_tool_calls: a.no_tool_calls,
        trace,
    };
    // The flags were checked above; what is left to go wrong came from the config file.
    if let Err(e) = req.sampling.validate() {
        anyhow::bail!("{} ([sampling] {} in the config file)", e, e.field);
    }
    if a.show_prompt {
        match &loaded {
            Loaded::Local(l) => {
                let p = l.prepare(&req)?;
                eprintln!(
                    "--- prompt ({} tokens) ---\n{}\n---",
                    p.tokens.len(),
                    p.text
                );
            }
            Loaded::Remote(_) => eprintln!(
                "(--show-prompt needs the local engine: a remote server renders its own template)"
            ),
        }
    }
    let ctrl = Arc::new(Control::default());
    {
        let c = ctrl.clone();
        let hits = std::sync::atomic::AtomicUsize::new(0);
        // First Ctrl-C stops the generation (stats still print); a second one exits at once.
        let _ = ctrlc::set_handler(move || {
            if hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                std::process::exit(130);
            }
            c.cancel();
        });
    }
    let mut printer = Printer::new(a.json);
    let engine: Box<dyn Engine> = match loaded {
        Loaded::Local(l) => l,
        Loaded::Remote(r) => r,
    };
    if a.agent {
        let setup = AgentSetup {
            rag,
            compact_at: cfg.compact_at(),
            mcp,
        };
        return run_agent(engine, &a, req, &ctrl, printer, setup);
    }
    // One generation: the agent without tools, asked exactly what the request above says.
    let cfg = crate::agent::AgentConfig {
        max_tokens: req.max_tokens,
        think: req.think,
        think_budget: req.think_budget,
        sampling: Some(req.sampling),
        system: a.system.clone(),
        interactive: false,
        raw: a.raw,
        no_tool_calls: a.no_tool_calls,
        trace: req.trace.clone(),
        ..Default::default()
    };
    let h = crate::agent::spawn(engine, cfg);
    let end = drive_turn(&h, text, &ctrl, Shown::OneGeneration, &mut printer);
    match end.error {
        Some(_) if a.json => Ok(1),
        Some(e) => Err(anyhow::anyhow!(e)),
        None if end.cancelled() => Ok(130),
        None => Ok(0),
    }
}

/// What `aha run --agent` needs besides the request: how to rank documents, when to compact,
/// and the MCP servers (started while the model loaded).
struct AgentSetup {
    rag: crate::rag::RagOptions,
    compact_at: f32,
    mcp: Option<aha_mcp::client::McpHub>,
}

/// `aha run --agent`: the same request through the agent loop, with tools, headless.
fn run_agent(
    engine: Box<dyn Engine>,
    a: &RunArgs,
    req: GenerateRequest,
    ctrl: &Control,
    mut printer: Printer,
    setup: AgentSetup,
) -> Result<i32> {
    use crate::agent::{self, policy::Policy, AgentConfig};
    let policy = Policy::parse(&a.approve).ok_or_else(|| {
        anyhow::anyhow!(
            "--approve {}: use read-only, ask, auto-edit or full-auto",
            a.approve
        )
    })?;
    let Prompt::Chat(mut msgs) = req.prompt else {
        anyhow::bail!("--agent works on a conversation; drop --raw");
    };
    let workspace = match &a.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir()?,
    };
    let host = agent::mcp_host::with_mcp(
        agent::host::builtin_with(&workspace, a.index.clone(), setup.rag)?,
        setup.mcp,
    );
    let text = msgs.pop().map(|m| m.content).unwrap_or_default();
    let cfg = AgentConfig {
        max_tokens: req.max_tokens,
        think: req.think,
        think_budget: req.think_budget,
        sampling: Some(req.sampling),
        system: a.system.clone(),
        policy,
        interactive: false,
        max_steps: a.max_steps,
        constrain_tools: !a.no_constrain,
        insist: !a.no_insist,
        raw: false,
        no_tool_calls: a.no_tool_calls,
        research: a.research,
        no_retrieve_first: a.no_retrieve_first,
        compact_at: setup.compact_at,
        trace: req.trace.clone(),
    };
    let h = agent::spawn_with_tools(engine, cfg, Some(host));
    let mut end = drive_turn(&h, text, ctrl, Shown::All, &mut printer);
    for next in &a.then {
        if end.cancelled() || end.error.is_some() {
            break;
        }
        end = drive_turn(&h, next.clone(), ctrl, Shown::All, &mut printer);
    }
    Ok(if end.cancelled() {
        130
    } else if end.error.is_some() {
        1
    } else {
        0
    })
}
