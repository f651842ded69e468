//! The TOML config file (`$AHA_CONFIG` or `~/.config/aha/config.toml`): default model and engine,
//! sampling defaults, and named remote engines. Unknown keys are errors that name the key.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use aha_engine::remote::RemoteConfig;
pub use aha_protocol::sampling::SamplingConfig;

/// The whole config file. Every field is optional; a missing file is the default config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The default local model (a registry name, a .gguf file or a safetensors folder).
    pub model: Option<String>,
    /// The default engine: the name of an `[engines.NAME]` table (absent: the local engine).
    pub engine: Option<String>,
    /// Sampling defaults over the model's own.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Remote OpenAI-compatible engines by name.
    #[serde(default)]
    pub engines: BTreeMap<String, RemoteConfig>,
    /// The terminal UI's settings (parsed by the UI).
    #[serde(default)]
    pub ui: toml::Table,
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
        Ok(c)
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
theme = "dark"
"#,
        )
        .unwrap();
        assert_eq!(c.engine.as_deref(), Some("cluster"));
        let e = c.remote("cluster").unwrap();
        assert_eq!(e.headers["X-Team"], "lab");
        assert_eq!(e.max_retries, Some(2));
        assert!(c.ui.contains_key("theme"));
        assert!(c.remote("nope").is_err());
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
}
