//! `aha` with no subcommand: load the model, start the agent and open the workbench TUI; and the
//! hidden `aha bench-ui` that measures the workbench's drawing.

use super::{firstrun, load_engine, remote_engine, ModelArgs};
use crate::agent::{self, policy::Policy, AgentConfig};
use crate::config::Config;
use crate::engine::registry::{self, DEFAULT_MODEL};
use crate::engine::ThinkMode;
use crate::rag::RagOptions;
use crate::ui;
use anyhow::{bail, Result};
use std::io::IsTerminal;

/// Opens the workbench (`--resume [ID]` / `--resume --last` reopen a session). `file` is the
/// config the CLI loaded (its `[ui]` table already checked); `rag` ranks the agent's searches.
pub fn workbench(
    m: &ModelArgs,
    file: &Config,
    rag: RagOptions,
    resume: Option<Option<String>>,
    last: bool,
) -> Result<i32> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("the workbench needs a terminal: use `aha chat` for a line chat, or `aha run PROMPT` for one answer");
    }
    let cfg = &file.ui;
    let mut args = m.clone();
    if let Some(model) = &cfg.model {
        if args.model == DEFAULT_MODEL && std::env::var_os("AHA_MODEL").is_none() {
            args.model = model.clone();
        }
    }
    // The MCP servers start in the background while the model loads; the first turn waits for
    // one still starting (at most its start timeout), and one that fails is a notice.
    let mcp = aha_mcp::client::McpHub::start(&file.mcp);
    let engine: Box<dyn crate::engine::Engine> = match remote_engine(&args, file)? {
        Some(e) => e,
        None => {
            // First run: offer to pull a missing model, with progress on screen.
            match firstrun::ensure_model(&args.model)? {
                Some(name) => args.model = name,
                None => return Ok(1),
            }
            eprintln!("aha: loading {}…", args.model);
            Box::new(load_engine(&args, file)?)
        }
    };
    let sampling = (cfg.has_sampling() || file.sampling.is_set())
        .then(|| cfg.sampling(file.sampling.apply(engine.default_sampling())));
    let think = cfg.think.unwrap_or(ThinkMode::Auto);
    let workspace = std::env::current_dir()?;
    let host = agent::mcp_host::with_mcp(agent::host::builtin_with(&workspace, None, rag)?, mcp);
    // The workbench always asks for alternatives: the trace explorer's token cursor shows them.
    let mut trace = file.trace.clone();
    trace.top_logprobs = trace.top_logprobs.max(5);
    let acfg = AgentConfig {
        max_tokens: cfg.max_tokens.unwrap_or(4096),
        think,
        think_budget: cfg.think_budget.filter(|b| *b > 0),
        sampling,
        system: cfg.system.clone(),
        policy: Policy::Ask,
        interactive: true,
        compact_at: file.compact_at(),
        trace: trace.clone(),
        ..AgentConfig::default()
    };
    let research = cfg.research.unwrap_or(false);
    let agent = agent::spawn_with_tools(engine, acfg, Some(host));
    if research {
        agent.send(aha_protocol::Op::SetResearch { on: true });
    }
    let r = match resume {
        None if last => Some(ui::ResumeArg::Last),
        None => None,
        Some(Some(id)) => Some(ui::ResumeArg::Id(id)),
        Some(None) => Some(ui::ResumeArg::Last),
    };
    // What `/model` lists: the models on disk now that can run (the UI itself does no I/O for
    // it).
    let downloaded: Vec<String> = registry::KNOWN
        .iter()
        .filter(|m| !m.header_only && m.is_downloaded())
        .map(|m| m.name.to_string())
        .collect();
    let opts = ui::LoopOpts {
        fps: cfg.fps.unwrap_or(30),
        // Tests that the terminal is restored after a panic in the loop.
        panic_after_first_draw: std::env::var_os("AHA_TEST_PANIC").is_some_and(|v| v == "1"),
        stop: None,
    };
    ui::run_tui(agent, cfg, trace, r, downloaded, opts)
}

/// `aha bench-ui`: frame time for 10 and 10,000 messages, and UI-thread CPU while streaming.
pub fn bench_ui(secs: f64, tok_s: u32, frames: usize) -> Result<i32> {
    let mut means = Vec::new();
    println!("frame time, 120x40 terminal, a reply streaming at the bottom ({frames} frames):");
    for n in [10usize, 10_000] {
        let r = ui::bench::frame_times(n, frames, 120, 40)?;
        println!(
            "  {:>6} messages: mean {:.3} ms  p95 {:.3} ms  (first frame {:.1} ms)",
            r.messages, r.mean_ms, r.p95_ms, r.cold_ms
        );
        means.push(r.mean_ms);
    }
    let ratio = means[1] / means[0].max(1e-9);
    println!("  ratio 10,000 / 10: {ratio:.2}x (target <= 1.5x)");
    let c = ui::bench::cpu_load(tok_s, secs, 120, 40)?;
    println!(
        "UI thread while streaming {tok_s} tokens/s: {} tokens in {:.2} s, {} frames, CPU {:.3} s = {:.1}% of one core (target < 10%)",
        c.tokens, c.wall_s, c.frames, c.cpu_s, c.percent
    );
    Ok(if ratio <= 1.5 && c.percent < 10.0 {
        0
    } else {
        1
    })
}
