//! Sampling settings and the ranges they must lie in (`SamplingParams::validate`, shared by
//! `aha run`'s flags and `aha serve`'s requests so both refuse the same values with the same
//! words), and the overrides a config file puts over a model's recommended settings.

use serde::{Deserialize, Serialize};

/// Sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means off.
    pub top_k: usize,
    /// 1.0 means off.
    pub top_p: f32,
    /// 0.0 means off.
    pub min_p: f32,
    /// 1.0 means off.
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 42,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (for tests and comparisons).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            ..Self::default()
        }
    }

    /// DeepSeek's recommendation for R1 models.
    pub fn r1() -> Self {
        Self {
            temperature: 0.6,
            top_p: 0.95,
            top_k: 0,
            ..Self::default()
        }
    }
}

/// A sampling setting outside the range the sampler can use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} {value} is out of range: it must be {expected}")]
pub struct InvalidSampling {
    /// The setting as `SamplingParams` names it (`temperature`, `top_p`, `repeat_penalty`, …), or
    /// `max_tokens`; callers turn it into their own spelling (a flag, a JSON field).
    pub field: &'static str,
    /// The value as given.
    pub value: String,
    /// The allowed range, in words.
    pub expected: &'static str,
}

impl InvalidSampling {
    /// The same error with the setting spelt as the caller spells it (`--top-p`, `repetition_penalty`).
    pub fn message_for(&self, name: &str) -> String {
        format!(
            "{name} {} is out of range: it must be {}",
            self.value, self.expected
        )
    }
}

impl SamplingParams {
    /// Checks every setting. Values outside these ranges either mean nothing (a negative
    /// temperature, a top-p of 0 keeps no token) or turn the distribution into NaNs and infinities
    /// (a non-finite temperature or penalty), so they are refused rather than clamped.
    pub fn validate(&self) -> Result<(), InvalidSampling> {
        let bad = |field, value: f32, expected| InvalidSampling {
            field,
            value: value.to_string(),
            expected,
        };
        let t = self.temperature;
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            return Err(bad("temperature", t, "a number from 0 to 2 (0 = greedy)"));
        }
        let p = self.top_p;
        if !(p.is_finite() && p > 0.0 && p <= 1.0) {
            return Err(bad("top_p", p, "a number above 0 and at most 1 (1 = off)"));
        }
        let m = self.min_p;
        if !(m.is_finite() && (0.0..=1.0).contains(&m)) {
            return Err(bad("min_p", m, "a number from 0 to 1 (0 = off)"));
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(bad(
                "repeat_penalty",
                r,
                "a finite number above 0 (1 = off)",
            ));
        }
        Ok(())
    }
}

/// Checks a limit on generated tokens: 0 would ask for a reply that cannot have any text.
pub fn validate_max_tokens(n: usize) -> Result<(), InvalidSampling> {
    if n == 0 {
        return Err(InvalidSampling {
            field: "max_tokens",
            value: n.to_string(),
            expected: "at least 1",
        });
    }
    Ok(())
}

/// `[sampling]` (and `[ui.sampling]`): overrides of the model's recommended settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<usize>,
    pub seed: Option<u64>,
}

impl SamplingConfig {
    /// Whether any value is set.
    pub fn is_set(&self) -> bool {
        self.temperature.is_some()
            || self.top_p.is_some()
            || self.top_k.is_some()
            || self.min_p.is_some()
            || self.repeat_penalty.is_some()
            || self.repeat_last_n.is_some()
            || self.seed.is_some()
    }

    /// `base` with the configured values put over it.
    pub fn apply(&self, mut base: SamplingParams) -> SamplingParams {
        if let Some(v) = self.temperature {
            base.temperature = v;
        }
        if let Some(v) = self.top_p {
            base.top_p = v;
        }
        if let Some(v) = self.top_k {
            base.top_k = v;
        }
        if let Some(v) = self.min_p {
            base.min_p = v;
        }
        if let Some(v) = self.repeat_penalty {
            base.repeat_penalty = v;
        }
        if let Some(v) = self.repeat_last_n {
            base.repeat_last_n = v;
        }
        if let Some(v) = self.seed {
            base.seed = v;
        }
        base
    }
}
