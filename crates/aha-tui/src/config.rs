//! The `[ui]` section of aha's config file: default model, thinking and sampling for the
//! workbench, colours and key bindings. The file is found, read and checked by the one config
//! loader (`aha::config::Config`), which parses this table into [`UiConfig`] and runs
//! [`UiConfig::validate`]; unknown keys are errors that name the key, not silent defaults.
//! Its tests are with the loader (`src/config.rs`), on input the loader accepts.

use super::keymap::Keymap;
use super::theme::{parse_color, Theme};
use aha_protocol::sampling::SamplingParams;
use anyhow::{anyhow, Result};
use serde::Deserialize;

/// The workbench's settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Model to open when `--model` is not given.
    pub model: Option<String>,
    /// Thinking mode at start: auto, on or off.
    pub think: Option<aha_protocol::ThinkMode>,
    /// Thinking budget in tokens at start (0 = none).
    pub think_budget: Option<usize>,
    /// Tokens per reply (reasoning and answer together).
    pub max_tokens: Option<usize>,
    /// Most frames drawn per second while output streams.
    pub fps: Option<u32>,
    /// A system prompt.
    pub system: Option<String>,
    /// Start in research mode (`/research on`): answers from the indexed documents, with
    /// citations checked.
    pub research: Option<bool>,
    /// Sampling overrides (unset = the model's recommended value), over the file's `[sampling]`.
    pub sampling: aha_protocol::sampling::SamplingConfig,
    pub colors: ColorConfig,
    pub keys: KeysConfig,
}

/// Colours: names (`cyan`, `darkgray`), `#rrggbb` or 0–255.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColorConfig {
    pub user: Option<String>,
    pub reasoning: Option<String>,
    pub accent: Option<String>,
    pub error: Option<String>,
    pub ok: Option<String>,
    pub dim: Option<String>,
    pub code: Option<String>,
    pub status_bg: Option<String>,
    pub status_fg: Option<String>,
    /// Four colours from most to least confident.
    pub heat: Option<Vec<String>>,
}

/// Key bindings by name (see the help overlay): `fold = "ctrl-o"`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    pub fold: Option<String>,
    pub trace: Option<String>,
    pub help: Option<String>,
    pub pause: Option<String>,
    pub focus_prev: Option<String>,
    pub focus_next: Option<String>,
    pub trace_pause: Option<String>,
    pub step: Option<String>,
    pub stop: Option<String>,
    pub branch: Option<String>,
    pub entropy: Option<String>,
    pub compare: Option<String>,
    pub budget: Option<String>,
}

impl UiConfig {
    /// Checks what serde cannot: the colours and the key bindings. The
    /// config loader (`aha::config::Config::parse`) runs it, so a bad value is refused when the
    /// file is read, naming the key.
    pub fn validate(&self) -> Result<()> {
        self.theme()?;
        self.keymap()?;
        Ok(())
    }

    /// The theme with the configured colours.
    pub fn theme(&self) -> Result<Theme> {
        let mut th = Theme::default();
        let c = &self.colors;
        let set =
            |slot: &mut ratatui::style::Color, name: &str, v: &Option<String>| -> Result<()> {
                if let Some(v) = v {
                    *slot = parse_color(v).ok_or_else(|| {
                        anyhow!("[ui.colors] {name} = \"{v}\": not a colour name, #rrggbb or 0-255")
                    })?;
                }
                Ok(())
            };
        set(&mut th.user, "user", &c.user)?;
        set(&mut th.reasoning, "reasoning", &c.reasoning)?;
        set(&mut th.accent, "accent", &c.accent)?;
        set(&mut th.error, "error", &c.error)?;
        set(&mut th.ok, "ok", &c.ok)?;
        set(&mut th.dim, "dim", &c.dim)?;
        set(&mut th.code, "code", &c.code)?;
        set(&mut th.status_bg, "status_bg", &c.status_bg)?;
        set(&mut th.status_fg, "status_fg", &c.status_fg)?;
        if let Some(h) = &c.heat {
            if h.len() != 4 {
                return Err(anyhow!(
                    "[ui.colors] heat: give four colours, most confident first"
                ));
            }
            for (i, v) in h.iter().enumerate() {
                set(&mut th.heat[i], "heat", &Some(v.clone()))?;
            }
        }
        Ok(th)
    }

    /// The key bindings with the configured changes.
    pub fn keymap(&self) -> Result<Keymap> {
        let mut m = Keymap::default();
        let k = &self.keys;
        for (name, v) in [
            ("fold", &k.fold),
            ("trace", &k.trace),
            ("help", &k.help),
            ("pause", &k.pause),
            ("focus_prev", &k.focus_prev),
            ("focus_next", &k.focus_next),
            ("trace_pause", &k.trace_pause),
            ("step", &k.step),
            ("stop", &k.stop),
            ("branch", &k.branch),
            ("entropy", &k.entropy),
            ("compare", &k.compare),
            ("budget", &k.budget),
        ] {
            if let Some(v) = v {
                m.set(name, v).map_err(|e| anyhow!(e))?;
            }
        }
        Ok(m)
    }

    /// The configured sampling over the model's defaults.
    pub fn sampling(&self, base: SamplingParams) -> SamplingParams {
        self.sampling.apply(base)
    }

    /// Whether any sampling value is set.
    pub fn has_sampling(&self) -> bool {
        self.sampling.is_set()
    }
}
