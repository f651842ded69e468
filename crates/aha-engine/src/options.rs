//! The local engine's knobs, gathered in one typed value that is passed down at load time.
//!
//! Each knob can be overridden by an environment variable; [`EngineOptions::from_env`] is the
//! one place that reads them (`AHA_NUMERICS`, `AHA_KERNELS`, `AHA_GEMM_MIN_ROWS`, `AHA_DUMP`,
//! `AHA_CUDA_EVENTS`, `AHA_CUDA_DECODE`).

use aha_kernels::Kernels;
use std::path::PathBuf;

/// Rows of input at or above which a quantized weight is dequantized and multiplied with a real
/// GEMM instead of one quantized mat-vec per row (candle's CPU path), which makes prefill cost
/// about as much as that many decode steps.
pub const DEFAULT_GEMM_MIN_ROWS: usize = 8;

/// How the forward pass rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Numerics {
    /// aha's own kernels and candle's ops, rounding as they do.
    #[default]
    Default,
    /// As llama.cpp's CPU backend (ggml) rounds everywhere: f16 cache and attention accumulator,
    /// its `expf` in SwiGLU, 8-bit activations in prefill too (`AHA_NUMERICS=ggml`).
    Ggml,
}

impl Numerics {
    /// `AHA_NUMERICS`: `ggml` chooses [`Numerics::Ggml`]; any other value, the default.
    pub fn parse(s: &str) -> Self {
        if s == "ggml" {
            Self::Ggml
        } else {
            Self::Default
        }
    }
}

/// How a CUDA device runs a decode step (one new token), as `AHA_CUDA_DECODE` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CudaDecode {
    /// aha's fused kernels (crates/aha-cuda), the whole step captured once as a CUDA graph and
    /// replayed per token (`graph`, the default).
    #[default]
    Graph,
    /// The fused kernels launched one by one, without a graph (`fused`, for comparison).
    Fused,
    /// candle's operations, as prefill runs them (`candle`).
    Candle,
}

impl CudaDecode {
    pub const NAMES: [&'static str; 3] = ["graph", "fused", "candle"];

    /// Parses an `AHA_CUDA_DECODE` value; `None` for an unknown one.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "" | "graph" => Some(Self::Graph),
            "fused" => Some(Self::Fused),
            "candle" => Some(Self::Candle),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Graph => "graph",
            Self::Fused => "fused",
            Self::Candle => "candle",
        }
    }
}

/// Which kernels multiply quantized weights on the CPU, as `AHA_KERNELS` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// The best set this CPU runs (unset, empty or `auto`).
    Auto,
    /// candle's own kernels (`candle`, for comparisons).
    Candle,
    /// One of aha's sets, by name; it runs even where candle's kernels would be faster.
    Named(Kernels),
}

impl KernelChoice {
    /// Parses an `AHA_KERNELS` value (surrounding spaces ignored). A name that is no kernel set
    /// is an error that lists the choices. Whether this CPU can run the set is checked when the
    /// set is selected ([`crate::local::qkernels::choose`]).
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("auto") => Ok(Self::Auto),
            Some("candle") => Ok(Self::Candle),
            Some(name) => Kernels::parse(name).map(Self::Named).ok_or_else(|| {
                let names: Vec<&str> = Kernels::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "AHA_KERNELS={name} is not a kernel set: use one of {}, candle",
                    names.join(", ")
                )
            }),
        }
    }
}

/// The local engine's knobs. [`Default`] is what runs when no override is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// How the forward pass rounds (`AHA_NUMERICS`).
    pub numerics: Numerics,
    /// The CPU kernel set as named (`AHA_KERNELS`; `None`: the best this CPU runs). Parsed by
    /// [`EngineOptions::kernel_choice`] when a model is loaded on the CPU, so a bad name fails
    /// that load and nothing else.
    pub kernels: Option<String>,
    /// Rows at or above which quantized weights are dequantized for a real GEMM in prefill
    /// (`AHA_GEMM_MIN_ROWS`; an unreadable value keeps the default).
    pub gemm_min_rows: usize,
    /// Where each forward call's activations are written, as llama.cpp names them, for op-by-op
    /// comparisons (`AHA_DUMP=DIR`; `None`: nothing is written).
    pub dump: Option<PathBuf>,
    /// Keep cudarc's per-buffer event tracking on CUDA devices (`AHA_CUDA_EVENTS=1`), for
    /// comparison; aha turns it off since all of a device's work runs on one stream.
    pub cuda_events: bool,
    /// How a CUDA device decodes (`AHA_CUDA_DECODE`; an unknown value is refused when a model is
    /// loaded on a GPU, by [`EngineOptions::cuda_decode`]).
    pub cuda_decode: Option<String>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            numerics: Numerics::Default,
            kernels: None,
            gemm_min_rows: DEFAULT_GEMM_MIN_ROWS,
            dump: None,
            cuda_events: false,
            cuda_decode: None,
        }
    }
}

impl EngineOptions {
    /// The defaults with the environment's overrides: the one place aha reads them.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The defaults with the overrides `var` gives (`var(NAME)`: the variable's value, if set).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        Self {
            numerics: var("AHA_NUMERICS").map_or(d.numerics, |s| Numerics::parse(&s)),
            kernels: var("AHA_KERNELS"),
            gemm_min_rows: var("AHA_GEMM_MIN_ROWS")
                .and_then(|s| s.parse().ok())
                .unwrap_or(d.gemm_min_rows),
            dump: var("AHA_DUMP").map(PathBuf::from),
            cuda_events: var("AHA_CUDA_EVENTS").as_deref() == Some("1"),
            cuda_decode: var("AHA_CUDA_DECODE"),
        }
    }

    /// [`EngineOptions::cuda_decode`], parsed; an unknown name is an error that lists the
    /// choices.
    pub fn cuda_decode(&self) -> Result<CudaDecode, String> {
        match self.cuda_decode.as_deref() {
            None => Ok(CudaDecode::default()),
            Some(s) => CudaDecode::parse(s).ok_or_else(|| {
                format!(
                    "AHA_CUDA_DECODE={s} is not a decode path: use one of {}",
                    CudaDecode::NAMES.join(", ")
                )
            }),
        }
    }

    /// [`EngineOptions::kernels`], parsed.
    pub fn kernel_choice(&self) -> Result<KernelChoice, String> {
        KernelChoice::parse(self.kernels.as_deref())
    }

    /// Whether the forward pass rounds as llama.cpp does.
    pub fn ggml_numerics(&self) -> bool {
        self.numerics == Numerics::Ggml
    }

    /// Rows at or above which a quantized weight is multiplied by a dequantized GEMM in
    /// prefill; `None` with llama.cpp's numerics, which never do that (how rows are multiplied
    /// changes its rounding).
    pub fn prefill_gemm_min_rows(&self) -> Option<usize> {
        (!self.ggml_numerics()).then_some(self.gemm_min_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> EngineOptions {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EngineOptions::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn no_variables_give_the_defaults() {
        let o = with(&[]);
        assert_eq!(o, EngineOptions::default());
        assert_eq!(o.gemm_min_rows, 8);
        assert_eq!(o.kernel_choice(), Ok(KernelChoice::Auto));
        assert_eq!(o.prefill_gemm_min_rows(), Some(8));
    }

    #[test]
    fn numerics_is_ggml_only_for_exactly_ggml() {
        assert_eq!(with(&[("AHA_NUMERICS", "ggml")]).numerics, Numerics::Ggml);
        for other in ["", "GGML", " ggml", "default", "llama"] {
            assert_eq!(
                with(&[("AHA_NUMERICS", other)]).numerics,
                Numerics::Default,
                "{other:?}"
            );
        }
        let o = with(&[("AHA_NUMERICS", "ggml"), ("AHA_GEMM_MIN_ROWS", "2")]);
        assert!(o.ggml_numerics());
        assert_eq!(o.prefill_gemm_min_rows(), None);
    }

    #[test]
    fn gemm_min_rows_reads_a_number_and_keeps_the_default_otherwise() {
        assert_eq!(with(&[("AHA_GEMM_MIN_ROWS", "32")]).gemm_min_rows, 32);
        assert_eq!(with(&[("AHA_GEMM_MIN_ROWS", "0")]).gemm_min_rows, 0);
        for bad in ["", "x", "-1", "8.5", " 8"] {
            assert_eq!(
                with(&[("AHA_GEMM_MIN_ROWS", bad)]).gemm_min_rows,
                DEFAULT_GEMM_MIN_ROWS,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn dump_is_a_directory_when_set() {
        assert_eq!(
            with(&[("AHA_DUMP", "/tmp/d")]).dump,
            Some(PathBuf::from("/tmp/d"))
        );
        assert_eq!(with(&[]).dump, None);
    }

    #[test]
    fn cuda_decode_names_its_choices() {
        assert_eq!(with(&[]).cuda_decode(), Ok(CudaDecode::Graph));
        for (v, want) in [
            ("graph", CudaDecode::Graph),
            ("fused", CudaDecode::Fused),
            (" candle ", CudaDecode::Candle),
        ] {
            assert_eq!(with(&[("AHA_CUDA_DECODE", v)]).cuda_decode(), Ok(want));
        }
        let e = with(&[("AHA_CUDA_DECODE", "fast")])
            .cuda_decode()
            .unwrap_err();
        assert_eq!(
            e,
            "AHA_CUDA_DECODE=fast is not a decode path: use one of graph, fused, candle"
        );
    }

    #[test]
    fn cuda_events_only_for_one() {
        assert!(with(&[("AHA_CUDA_EVENTS", "1")]).cuda_events);
        for other in ["0", "", "true", "yes"] {
            assert!(
                !with(&[("AHA_CUDA_EVENTS", other)]).cuda_events,
                "{other:?}"
            );
        }
    }

    #[test]
    fn kernels_parse_names_auto_and_candle() {
        let choice = |v: &str| with(&[("AHA_KERNELS", v)]).kernel_choice();
        for auto in ["", "auto", "  ", " auto "] {
            assert_eq!(choice(auto), Ok(KernelChoice::Auto), "{auto:?}");
        }
        assert_eq!(choice("candle"), Ok(KernelChoice::Candle));
        for k in Kernels::ALL {
            assert_eq!(choice(k.name()), Ok(KernelChoice::Named(k)));
        }
        assert_eq!(choice(" scalar "), Ok(KernelChoice::Named(Kernels::Scalar)));
    }

    #[test]
    fn an_unknown_kernel_set_is_refused_with_the_choices() {
        let err = with(&[("AHA_KERNELS", " sse ")])
            .kernel_choice()
            .unwrap_err();
        assert_eq!(
            err,
            "AHA_KERNELS=sse is not a kernel set: use one of avx512vnni, avxvnni, avx2, \
             neon-dotprod, neon, scalar, candle"
        );
    }
}
