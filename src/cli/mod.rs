//! Command-line arguments and the dispatch to each subcommand.

mod bench;
mod bench_cancel;
mod bench_spec;
mod chat;
mod cuda_check;
mod docs;
mod eval;
mod events;
mod export;
mod firstrun;
pub mod logs;
mod mcp;
mod models;
mod run;
mod serve;
mod tui;
mod undo;

use crate::config::Config;
use crate::engine::registry::DEFAULT_MODEL;
use crate::engine::sampler::SamplingParams;
use crate::engine::{device, registry, LocalEngine};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// aha — a terminal workbench for local reasoning models.
#[derive(Debug, Parser)]
#[command(name = "aha", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Reopen a saved session in the workbench: its id (or a unique prefix); without an id, the
    /// most recent one.
    #[arg(long, num_args = 0..=1, value_name = "ID")]
    pub resume: Option<Option<String>>,
    /// With --resume: the most recent session.
    #[arg(long)]
    pub last: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A line-by-line chat (no full-screen UI; works without a terminal).
    Chat,
    /// Measure the workbench's frame time and UI CPU while streaming (no model).
    #[command(hide = true)]
    BenchUi {
        /// Seconds of streaming for the CPU measurement.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Tokens per second the scripted source streams.
        #[arg(long, default_value_t = 200)]
        tok_s: u32,
        /// Frames drawn per transcript length.
        #[arg(long, default_value_t = 200)]
        frames: usize,
    },
    /// Generate a reply to PROMPT: reasoning to stderr, answer to stdout (or JSON events with --json).
    Run(run::RunArgs),
    /// Download a model by name.
    Pull {
        /// A name from `aha models`.
        name: String,
    },
    /// List known models and which are downloaded.
    Models {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Measure prefill and decode speed, like llama-bench.
    Bench(bench::BenchArgs),
    /// Perplexity of a text file (teacher-forced), for comparing engines.
    Perplexity(bench::PplArgs),
    /// Serve the local model over an OpenAI-compatible HTTP API (/v1/chat/completions).
    Serve(serve::ServeArgs),
    /// Index documents for search (incremental; .gitignore respected).
    Index(docs::IndexArgs),
    /// Search the document index: `path:start-end` hits with highlighted snippets.
    Search(docs::SearchArgs),
    /// Serve the document index and the workspace's files to other agents (Codex, Claude Code,
    /// goose) as an MCP server on stdin/stdout: search_docs, read_file, list_dir, all read-only.
    Mcp(mcp::McpArgs),
    /// Measure indexing throughput, query latency on large indexes and indexing memory.
    #[command(name = "bench-index", hide = true)]
    BenchIndex(docs::BenchIndexArgs),
    /// Print the token ids of TEXT.
    Tokenize { text: String },
    /// On a CUDA GPU: check every fused decode kernel against its CPU reference, and with
    /// --paths the model's decode paths (candle, fused, CUDA graph) against each other.
    #[command(name = "cuda-check", hide = true)]
    CudaCheck(cuda_check::CudaCheckArgs),
    /// Write a saved session as Markdown, or with --html as one self-contained HTML page of its
    /// traces (confidence colours, steps, forks, loops, branches side by side).
    Export(export::ExportArgs),
    /// Restore the files the agent's last turn changed (repeat to go further back).
    Undo {
        /// The workspace (default: the current directory).
        #[arg(long)]
        workspace: Option<std::path::PathBuf>,
    },
    /// Measure how often tool calls are well-formed, with and without the constraint.
    #[command(name = "eval-tools")]
    EvalTools(eval::EvalArgs),
    /// Write a random-weight model with real shapes (for tests and for benchmarks where the real
    /// weights cannot be downloaded).
    Synth {
        /// tiny, r1-tiny (R1-7B's vocabulary on a small body), r1-qwen-1.5b or r1-qwen-7b.
        #[arg(long, default_value = "tiny")]
        shape: String,
        /// Take the tokenizer and chat template (every `tokenizer.*` key) from this GGUF file or
        /// known model; only its header is read (`r1-distill-qwen-7b-header` is enough). The
        /// vocabulary size follows it. GGUF output only.
        #[arg(long, value_name = "GGUF|NAME")]
        tokenizer_from: Option<String>,
        /// GGUF: f32, f16, q8_0, q4_0, q4_k. Safetensors folder: st-f32, st-bf16, st-f16.
        #[arg(long, default_value = "q4_k")]
        dtype: String,
        /// Output .gguf file, or folder for safetensors.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// Options that pick and load a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A known model name (`aha models`), a .gguf file, or a safetensors folder.
    #[arg(long, short = 'm', global = true, default_value = DEFAULT_MODEL, env = "AHA_MODEL")]
    pub model: String,
    /// CPU threads (default: all cores).
    #[arg(long, short = 't', global = true)]
    pub threads: Option<usize>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "auto")]
    pub device: String,
    /// A remote engine from the config file (`[engines.NAME]`) instead of the local model
    /// (`aha run` and chat; default: the config's `engine`).
    #[arg(long, global = true, env = "AHA_ENGINE")]
    pub engine: Option<String>,
    /// Speculative decoding on the local engine: `ngram` drafts tokens by looking the latest
    /// ones up in the prompt and the reply (same output, fewer forward passes on text that
    /// repeats), `off` decodes one token per pass. Default: the config's `speculate`, else ngram.
    #[arg(long, global = true, value_name = "off|ngram")]
    pub speculate: Option<crate::engine::local::speculate::Speculate>,
    /// Use at most N tokens of context, fewer than the model's (the agent compacts its
    /// conversation to fit). Default: the config's `ctx`, else the model's.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(256..))]
    pub ctx: Option<u64>,
}

/// Options that shape sampling.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// 0 = greedy. Default: 0.6 for reasoning models, 0.7 otherwise.
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Default: 0.95.
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// 0 = off.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// 0 = off.
    #[arg(long, allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// 1 = off.
    #[arg(long, allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,
    /// Random seed: the same seed and settings give the same output. Default: 42.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// Overrides `base` with what was given.
    pub fn apply(&self, mut base: SamplingParams) -> SamplingParams {
        if let Some(t) = self.temperature {
            base.temperature = t;
        }
        if let Some(p) = self.top_p {
            base.top_p = p;
        }
        if let Some(k) = self.top_k {
            base.top_k = k;
        }
        if let Some(m) = self.min_p {
            base.min_p = m;
        }
        if let Some(r) = self.repeat_penalty {
            base.repeat_penalty = r;
        }
        if let Some(s) = self.seed {
            base.seed = s;
        }
        base
    }
}

/// Sets the CPU thread count before any pool starts (candle and rayon read RAYON_NUM_THREADS).
pub fn set_threads(threads: Option<usize>) {
    let n = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global();
}

/// Resolves and loads the model named by `args` (pulling a known model on first use), with the
/// prompt cache on disk that `aha run`, the workbench and `aha serve` share
/// ([`attach_prompt_cache`]).
pub fn load_engine(args: &ModelArgs, cfg: &Config) -> Result<LocalEngine> {
    let (mut engine, path) = load_model(args, cfg)?;
    attach_prompt_cache(&mut engine, &path, cfg);
    Ok(engine)
}

/// [`load_engine`] without the prompt cache: every prompt is computed in full (`aha bench`
/// measures that).
pub fn load_engine_cold(args: &ModelArgs, cfg: &Config) -> Result<LocalEngine> {
    Ok(load_model(args, cfg)?.0)
}

/// Gives `engine` (loaded from `model`) the prompt cache in `<data dir>/cache/`, unless the
/// config or `AHA_PROMPT_CACHE=off` turn it off. A cache that cannot be opened only warns.
fn attach_prompt_cache(engine: &mut LocalEngine, model: &std::path::Path, cfg: &Config) {
    let switch = std::env::var("AHA_PROMPT_CACHE").ok();
    let Some(limit) = cfg.prompt_cache_bytes(switch.as_deref()) else {
        return;
    };
    let dir = crate::session::data_dir().join("cache");
    match crate::engine::local::prompt_cache::PromptCache::open(&dir, limit, model) {
        Ok(c) => engine.set_prompt_cache(Some(c)),
        Err(e) => tracing::warn!("the prompt cache is off: {e}"),
    }
}

/// The model `args` name, loaded, and the path it was loaded from.
fn load_model(args: &ModelArgs, cfg: &Config) -> Result<(LocalEngine, std::path::PathBuf)> {
    // The engine's `AHA_*` knobs, read once for the device and the model.
    let opts = crate::engine::options::EngineOptions::from_env();
    let dev = device::select_with(&args.device, &opts)?;
    let mut name = args.model.clone();
    if name == DEFAULT_MODEL && std::env::var_os("AHA_MODEL").is_none() {
        // The config's default model applies when neither --model nor $AHA_MODEL chose one.
        if let Some(m) = &cfg.model {
            name = m.clone();
        }
    }
    let r = registry::resolve(&name, true)?;
    let mut engine = LocalEngine::load_with(&r.path, &r.name, &dev, &opts).map_err(|e| {
        match registry::find(&r.name).filter(|m| m.header_only) {
            Some(m) => e.context(format!(
                "`{}` is only the header of a model (its tokenizer and chat template, for tests and `aha synth --tokenizer-from`): it has no weights to run",
                m.name
            )),
            None => e,
        }
    })?;
    engine.set_speculate(args.speculate.or(cfg.speculate).unwrap_or_default());
    if let Some(n) = cfg.ctx(args.ctx.map(|n| n as usize)) {
        crate::engine::Engine::limit_context(&mut engine, n);
    }
    Ok((engine, r.path))
}

/// The remote engine `args` select (`--engine NAME`, else the config's `engine`), if any.
pub fn remote_engine(
    args: &ModelArgs,
    cfg: &Config,
) -> Result<Option<Box<dyn crate::engine::Engine>>> {
    match args.engine.as_deref().or(cfg.engine.as_deref()) {
        Some(name) if name != "local" => {
            let r = cfg.remote(name)?;
            let mut e = crate::engine::remote::RemoteEngine::new(name, r)?;
            if let Some(n) = cfg.ctx(args.ctx.map(|n| n as usize)) {
                crate::engine::Engine::limit_context(&mut e, n);
            }
            Ok(Some(Box::new(e)))
        }
        _ => Ok(None),
    }
}

/// The engine `args` select: a configured remote engine or the local model. `aha bench`,
/// `perplexity` and `serve` use [`load_engine`] (local only).
pub fn load_any_engine(args: &ModelArgs, cfg: &Config) -> Result<Box<dyn crate::engine::Engine>> {
    match remote_engine(args, cfg)? {
        Some(e) => Ok(e),
        None => Ok(Box::new(load_engine(args, cfg)?)),
    }
}

/// Runs the parsed command line; returns the process exit code. The config file is loaded
/// here, once, for the subcommands that use it (the others run even when it is broken), and
/// environment knobs are read here and passed down.
pub fn dispatch(cli: Cli) -> Result<i32> {
    set_threads(cli.model.threads);
    let m = &cli.model;
    let rag = crate::rag::RagOptions::from_env;
    match cli.command {
        None => tui::workbench(m, &Config::load()?, rag(), cli.resume, cli.last),
        Some(Command::Chat) => chat::chat(m, &Config::load()?),
        Some(Command::BenchUi {
            secs,
            tok_s,
            frames,
        }) => tui::bench_ui(secs, tok_s, frames),
        Some(Command::Run(a)) => match Config::load() {
            Ok(cfg) => run::run(m, a, &cfg, rag()),
            // `aha run --json` reports a failure before generation as an error event.
            Err(e) if a.json => {
                let e = crate::protocol::Event::Error {
                    message: format!("{e:#}"),
                };
                println!("{}", serde_json::to_string(&e)?);
                Ok(1)
            }
            Err(e) => Err(e),
        },
        Some(Command::Pull { name }) => models::pull(&name),
        Some(Command::Models { json }) => models::list(json),
        Some(Command::Bench(a)) => bench::bench(m, a, &Config::load()?),
        Some(Command::Perplexity(a)) => bench::perplexity(m, a, &Config::load()?),
        Some(Command::Serve(a)) => serve::serve(m, a, &Config::load()?),
        Some(Command::Index(a)) => docs::index(a),
        Some(Command::Search(a)) => docs::search(a, &rag()),
        Some(Command::BenchIndex(a)) => docs::bench_index(a, &rag()),
        Some(Command::Mcp(a)) => mcp::mcp(a, rag()),
        Some(Command::Synth {
            shape,
            dtype,
            out,
            tokenizer_from,
        }) => synth(&shape, &dtype, &out, tokenizer_from.as_deref()),
        Some(Command::EvalTools(a)) => eval::eval_tools(m, a, &Config::load()?),
        Some(Command::Undo { workspace }) => undo::undo(workspace),
        Some(Command::Export(a)) => export::export(a, &Config::load()?),
        Some(Command::CudaCheck(a)) => cuda_check::cuda_check(m, a, &Config::load()?),
        Some(Command::Tokenize { text }) => {
            let r = registry::resolve(&m.model, true)?;
            let tok = crate::engine::tokenizer::for_model_path(&r.path)?;
            println!("{}", serde_json::to_string(&tok.encode(&text)?)?);
            Ok(0)
        }
    }
}

fn synth(
    shape: &str,
    dtype: &str,
    out: &std::path::Path,
    tokenizer_from: Option<&str>,
) -> Result<i32> {
    use crate::engine::local::synth::SynthSpec;
    use candle_core::quantized::GgmlDType;
    let mut spec = match shape {
        "tiny" => SynthSpec::tiny(),
        "r1-tiny" => SynthSpec::r1_tiny(),
        "r1-qwen-1.5b" => SynthSpec::r1_qwen_1_5b(),
        "r1-qwen-7b" => SynthSpec::r1_qwen_7b(),
        _ => {
            anyhow::bail!("unknown shape `{shape}`: use tiny, r1-tiny, r1-qwen-1.5b or r1-qwen-7b")
        }
    };
    if let Some(src) = tokenizer_from {
        let r = registry::resolve(src, true)?;
        let g = crate::engine::local::load::GgufFile::open_header(&r.path)?;
        spec = spec.with_tokenizer_from(&g)?;
    }
    match dtype {
        "st-f32" => spec.write_safetensors_as(out, candle_core::DType::F32)?,
        "st-bf16" => spec.write_safetensors_as(out, candle_core::DType::BF16)?,
        "st-f16" => spec.write_safetensors_as(out, candle_core::DType::F16)?,
        _ => {
            let dt = match dtype {
                "f32" => GgmlDType::F32,
                "f16" => GgmlDType::F16,
                "q8_0" => GgmlDType::Q8_0,
                "q4_0" => GgmlDType::Q4_0,
                "q4_k" => GgmlDType::Q4K,
                _ => anyhow::bail!("unknown dtype `{dtype}`: use f32, f16, q8_0, q4_0, q4_k, st-f32, st-bf16 or st-f16"),
            };
            spec.write_gguf(out, dt)?
        }
    }
    eprintln!("wrote {}", out.display());
    Ok(0)
}
