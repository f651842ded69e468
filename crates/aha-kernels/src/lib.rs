//! aha's CPU compute kernels, apart from the rest of the program so that they build and test
//! alone (also for aarch64 under qemu, where the whole program would take an hour to build):
//!
//! - [`quant`]: GGUF block-quantized weights (Q8_0, Q5_0, Q4_0, Q4_1, Q4_K, Q6_K) times
//!   activations quantized to 8 bits, for decode (one row) and prompt tiles (several rows);
//! - [`attention`]: causal grouped-query attention over a key/value cache, tiled, with online
//!   softmax and the work split across threads by head and by key range.
//!
//! Each has a portable scalar reference and SIMD paths chosen at run time ([`Kernels`]). Every
//! SIMD path computes the same integer sums and the same float steps in the same order as the
//! reference, so all of them give the same bits on every CPU (the tests check it).

pub mod attention;
pub mod quant;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use quant::{matvec, matvec_rows, Format, QuantRow};

use std::sync::OnceLock;

/// A set of SIMD kernels, one per instruction-set level.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Kernels {
    /// x86-64 with AVX-512 VNNI (Ice Lake and later Xeons, Zen 4).
    Avx512Vnni,
    /// x86-64 with AVX-VNNI, the 256-bit VNNI of Alder Lake and later.
    AvxVnni,
    /// x86-64 with AVX2, FMA and F16C (Haswell, Zen 1–3).
    Avx2,
    /// aarch64 with the dot-product extension (`sdot`: Apple M1 and later, Graviton 2+).
    NeonDotprod,
    /// aarch64 NEON (every 64-bit ARM CPU).
    Neon,
    /// Portable Rust, the reference every other set equals.
    Scalar,
}

impl Kernels {
    /// Every set, best first.
    pub const ALL: [Kernels; 6] = [
        Self::Avx512Vnni,
        Self::AvxVnni,
        Self::Avx2,
        Self::NeonDotprod,
        Self::Neon,
        Self::Scalar,
    ];

    /// The name `AHA_KERNELS` and `aha bench --json` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512Vnni => "avx512vnni",
            Self::AvxVnni => "avxvnni",
            Self::Avx2 => "avx2",
            Self::NeonDotprod => "neon-dotprod",
            Self::Neon => "neon",
            Self::Scalar => "scalar",
        }
    }

    /// Parses a [`Kernels::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether this CPU can run the set (detected at run time).
    pub fn available(self) -> bool {
        match self {
            Self::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Self::AvxVnni => Self::Avx2.available() && is_x86_feature_detected!("avxvnni"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => {
                Self::Avx2.available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Self::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Self::NeonDotprod => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best set this CPU can run.
    pub fn best() -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.available())
            .unwrap_or(Self::Scalar)
    }

    /// Every set this CPU can run, best first.
    pub fn all_available() -> Vec<Self> {
        Self::ALL.into_iter().filter(|k| k.available()).collect()
    }
}

static ACTIVE: OnceLock<Kernels> = OnceLock::new();

/// Chooses the kernel set for the rest of the process, once, before the first kernel runs.
/// Errors name what is wrong: a set this CPU lacks, or a different set chosen earlier.
pub fn select(k: Kernels) -> Result<Kernels, String> {
    if !k.available() {
        let have: Vec<&str> = Kernels::all_available().iter().map(|k| k.name()).collect();
        return Err(format!(
            "this CPU cannot run the `{}` kernels; it can run: {}",
            k.name(),
            have.join(", ")
        ));
    }
    let got = *ACTIVE.get_or_init(|| k);
    if got == k {
        Ok(k)
    } else {
        Err(format!(
            "the `{}` kernels are already in use; choose once, before loading a model",
            got.name()
        ))
    }
}

/// The kernel set in use: the one [`select`]ed, else the best this CPU can run.
pub fn active() -> Kernels {
    *ACTIVE.get_or_init(Kernels::best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scalar_is_always_there() {
        for k in Kernels::ALL {
            assert_eq!(Kernels::parse(k.name()), Some(k));
        }
        assert_eq!(Kernels::parse("sse2"), None);
        assert!(Kernels::Scalar.available());
        assert!(Kernels::all_available().contains(&Kernels::best()));
        #[cfg(target_arch = "x86_64")]
        assert!(!Kernels::Neon.available());
    }
}
