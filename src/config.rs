//! The TOML config file (`$AHA_CONFIG` or `~/.config/aha/config.toml`): default model and engine,
//! sampling defaults, named remote engines, the MCP servers (`[mcp.servers.NAME]`) and the
//! workbench's `[ui]` table. This is the one
//! loader: the CLI loads the file once at start-up and passes `&Config` to the subcommands.
//! Unknown keys anywhere, `[ui]` included, are errors that name the key.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use aha_engine::remote::RemoteConfig;
pub use aha_mcp::client::McpConfig;
pub use aha_protocol::sampling::SamplingConfig;
pub use aha_tui::config::UiConfig;

/// The whole config file. Every field is optional; a missing file is the default config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The default local model (a registry name, a .gguf file or a safetensors folder).
    pub model: Option<String>,
    /// The default engine: the name of an `[engines.NAME]` table (absent: the local engine).
    pub engine: Option<String>,
    /// Whether the local engine drafts tokens by prompt lookup (`off` or `ngram`; `--speculate`
    /// overrides it).
    pub speculate: Option<crate::engine::local::speculate::Speculate>,
    /// Sampling defaults over the model's own.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Remote OpenAI-compatible engines by name.
    #[serde(default)]
    pub engines: BTreeMap<String, RemoteConfig>,
    /// The workbench's settings (`[ui]`), checked by [`UiConfig::validate`] when parsed.
    #[serde(default)]
    pub ui: UiConfig,
    /// The most megabytes the prompt cache on disk (`<data dir>/cache/`) may hold; 0 turns it
    /// off. Absent: [`aha_engine::local::prompt_cache::DEFAULT_LIMIT_MB`].
    pub prompt_cache_mb: Option<u64>,
    /// Use at most this many tokens of context (less than the model's); `--ctx` overrides it.
    pub ctx: Option<usize>,
    /// Compact the agent's conversation when its prompt passes this share of the context
    /// (default 0.8; 0 only by hand, with `/compact`).
    pub compact_at: Option<f32>,
    /// The MCP servers whose tools the agent is offered (`[mcp.servers.NAME]`), checked by
    /// [`McpConfig::validate`] when parsed.
    #[serde(default)]
    pub mcp: McpConfig,
    /// The reasoning microscope (`[trace]`): alternatives per token, budget forcing, loops,
    /// forks and the confidence window.
    #[serde(default)]
    pub trace: aha_protocol::TraceOptions,
}

impl Config {
    /// Where the config file is: `$AHA_CONFIG`, else `~/.config/aha/config.toml`.
    pub fn path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("AHA_CONFIG") {
            return Some(PathBuf::from(p));
        }
        dirs::config_dir().map(|d| d.join("aha").join("config.toml"))
    }

    /// Loads the config file; a missing file gives the defaults (unless `$AHA_CONFIG` names it).
    pub fn load() -> Result<Self> {
        let Some(path) = Self::path() else {
            return Ok(Self::default());
        };
        if !path.exists() {
            if std::env::var_os("AHA_CONFIG").is_some() {
                bail!("AHA_CONFIG names {}, which does not exist", path.display());
            }
            return Ok(Self::default());
        }
        Self::load_from(&path)
    }

    /// Loads and checks one file.
    pub fn load_from(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config {}", path.display()))
    }

    /// Parses config text; errors name the offending key.
    pub fn parse(text: &str) -> Result<Self> {
        let c: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        for (name, e) in &c.engines {
            if !(e.base_url.starts_with("http://") || e.base_url.starts_with("https://")) {
                bail!("engines.{name}.base_url must start with http:// or https://");
            }
        }
        c.ui.validate()?;
        if c.ctx.is_some_and(|n| n < 256) {
            bail!("ctx must be at least 256 tokens");
        }
        if c.compact_at.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            bail!("compact_at is a share of the context, from 0 (only by hand) to 1");
        }
        c.mcp.validate()?;
        c.trace
            .validate()
            .map_err(|e| anyhow::anyhow!("[trace] {e}"))?;
        Ok(c)
    }

    /// The prompt cache's size limit in bytes, or `None` when it is off: `prompt_cache_mb = 0`,
    /// or `prompt_cache` (the value of `AHA_PROMPT_CACHE`) `off`, `0` or `false`.
    pub fn prompt_cache_bytes(&self, prompt_cache: Option<&str>) -> Option<u64> {
        if prompt_cache.is_some_and(|v| matches!(v.trim(), "off" | "0" | "false")) {
            return None;
        }
        let mb = self
            .prompt_cache_mb
            .unwrap_or(aha_engine::local::prompt_cache::DEFAULT_LIMIT_MB);
        (mb > 0).then(|| mb.saturating_mul(1 << 20))
    }

    /// The context to use: `--ctx`, else the config's `ctx`.
    pub fn ctx(&self, flag: Option<usize>) -> Option<usize> {
        flag.or(self.ctx)
    }

    /// The share of the context at which the agent compacts (`compact_at`, default 0.8).
    pub fn compact_at(&self) -> f32 {
        self.compact_at.unwrap_or(0.8)
    }

    /// The remote engine called `name`, or an error listing the configured ones.
    pub fn remote(&self, name: &str) -> Result<&RemoteConfig> {
        self.engines.get(name).with_context(|| {
            let known: Vec<&str> = self.engines.keys().map(String::as_str).collect();
            let where_ = Self::path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the config file".into());
            if known.is_empty() {
                format!("no engine `{name}`: add an [engines.{name}] table to {where_}")
            } else {
                format!(
                    "no engine `{name}` in {where_}; configured: {}",
                    known.join(", ")
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(
            r#"
model = "r1-distill-qwen-7b"
engine = "cluster"
[sampling]
temperature = 0.6
top_p = 0.95
[engines.cluster]
base_url = "http://gpu0:8000/v1"
model = "deepseek-ai/DeepSeek-R1"
api_key_env = "CLUSTER_KEY"
headers = { "X-Team" = "lab" }
stall_timeout_s = 30
max_retries = 2
provider = "vllm"
[ui]
fps = 20
"#,
        )
        .unwrap();
        assert_eq!(c.engine.as_deref(), Some("cluster"));
        let e = c.remote("cluster").unwrap();
        assert_eq!(e.headers["X-Team"], "lab");
        assert_eq!(e.max_retries, Some(2));
        assert_eq!(c.ui.fps, Some(20));
        assert!(c.remote("nope").is_err());
    }

    #[test]
    fn the_prompt_cache_limit_comes_from_the_file_and_the_switch() {
        let d = Config::parse("").unwrap();
        assert_eq!(d.prompt_cache_bytes(None), Some(2048 << 20));
        assert_eq!(d.prompt_cache_bytes(Some("on")), Some(2048 << 20));
        for off in ["off", "0", "false", " off "] {
            assert_eq!(d.prompt_cache_bytes(Some(off)), None, "{off}");
        }
        let c = Config::parse("ctx = 2048\ncompact_at = 0.5\n").unwrap();
        assert_eq!(
            (c.ctx(None), c.ctx(Some(4096)), c.compact_at()),
            (Some(2048), Some(4096), 0.5)
        );
        assert_eq!(Config::default().compact_at(), 0.8);
        let e = Config::parse("ctx = 100\n").unwrap_err().to_string();
        assert!(e.contains("at least 256"), "{e}");
        let e = Config::parse("compact_at = 80\n").unwrap_err().to_string();
        assert!(e.contains("share of the context"), "{e}");
        let c = Config::parse("prompt_cache_mb = 10\n").unwrap();
        assert_eq!(c.prompt_cache_bytes(None), Some(10 << 20));
        let c = Config::parse("prompt_cache_mb = 0\n").unwrap();
        assert_eq!(c.prompt_cache_bytes(None), None);
        assert!(Config::parse("prompt_cache_mb = -1\n").is_err());
    }

    #[test]
    fn a_typo_names_the_key() {
        let e =
            Config::parse("[engines.x]\nbase_url = \"http://a\"\nmodel = \"m\"\napi_key = \"k\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("api_key"), "{e}");
        let e = Config::parse("temprature = 1\n").unwrap_err().to_string();
        assert!(e.contains("temprature"), "{e}");
    }

    #[test]
    fn reads_the_ui_section_next_to_the_others() {
        let c = Config::parse(
            r##"
            model = "r1-distill-qwen-7b"
            engine = "local"
            [sampling]
            top_p = 0.9
            [ui]
            model = "smollm2-135m"
            think = "on"
            think_budget = 256
            [ui.sampling]
            temperature = 0.2
            [ui.colors]
            user = "#00ff00"
            heat = ["green", "yellow", "208", "red"]
            [ui.keys]
            fold = "f2"
            "##,
        )
        .unwrap();
        let ui = &c.ui;
        assert_eq!(ui.model.as_deref(), Some("smollm2-135m"));
        assert_eq!(ui.think, Some(crate::engine::ThinkMode::On));
        assert_eq!(ui.think_budget, Some(256));
        assert_eq!(ui.keymap().unwrap().fold.to_string(), "F2");
        assert_eq!(
            ui.theme().unwrap().user,
            ratatui::style::Color::Rgb(0, 255, 0)
        );
        use aha_protocol::sampling::SamplingParams;
        assert_eq!(ui.sampling(SamplingParams::greedy()).temperature, 0.2);
        assert!(ui.has_sampling());
        assert_eq!(c.sampling.top_p, Some(0.9));
        assert_eq!(Config::parse("").unwrap().ui, UiConfig::default());
        assert_eq!(Config::parse("[ui]\n").unwrap().ui, UiConfig::default());
    }

    #[test]
    fn the_loader_refuses_a_bad_ui_key_or_value_naming_it() {
        let err = |text: &str| format!("{:#}", Config::parse(text).unwrap_err());
        // An unknown key in [ui] and in its sub-tables.
        let e = err("[ui]\nthemee = 1\n");
        assert!(e.contains("themee"), "{e}");
        let e = err("[ui.colors]\nusr = \"red\"\n");
        assert!(e.contains("usr"), "{e}");
        // A value serde accepts but the UI cannot use.
        let e = err("[ui.colors]\nuser = \"mauve\"\n");
        assert!(e.contains("[ui.colors] user = \"mauve\""), "{e}");
        let e = err("[ui.colors]\nheat = [\"red\"]\n");
        assert!(e.contains("heat"), "{e}");
        let e = err("[ui.keys]\nfold = \"hyper-x\"\n");
        assert!(e.contains("fold"), "{e}");
        let e = err("[ui]\nthink = \"maybe\"\n");
        assert!(e.contains("auto, on or off"), "{e}");
        // A wrong type names the key too.
        let e = err("[ui]\nfps = \"fast\"\n");
        assert!(e.contains("fps"), "{e}");
        // The file as a whole is still checked: a bad [ui] fails it even with good other tables.
        let e = err("model = \"m\"\n[ui]\nthink = \"maybe\"\n");
        assert!(e.contains("think"), "{e}");
    }

    #[test]
    fn mcp_servers_are_read_and_checked() {
        let c = Config::parse(
            "[mcp.servers.fs]\ncommand = \"mcp-fs\"\nargs = [\"/tmp\"]\ntrust = \"read-only\"\n",
        )
        .unwrap();
        assert_eq!(c.mcp.servers["fs"].args, ["/tmp"]);
        let e = format!(
            "{:#}",
            Config::parse("[mcp.servers.fs]\nurl = \"mcp.example\"\n").unwrap_err()
        );
        assert!(e.contains("mcp.servers.fs.url must start with"), "{e}");
        let e = format!(
            "{:#}",
            Config::parse("[mcp.servers.fs]\ncommand = \"x\"\nenable = false\n").unwrap_err()
        );
        assert!(e.contains("enable"), "{e}");
    }
}
