//! Choosing the next token from logits: temperature, top-k, top-p, min-p, repetition penalty, seed,
//! and the ranges those settings must lie in (`SamplingParams::validate`, shared by `aha run`'s
//! flags and `aha serve`'s requests so both refuse the same values with the same words).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use aha_protocol::sampling::{
    validate_max_tokens, InvalidSampling, SamplingConfig, SamplingParams,
};

/// A chosen token, with the log-probability the model gave it and the entropy of the distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// Natural log of the token's probability under the (temperature-scaled) distribution.
    pub logprob: f32,
    /// Entropy in nats of that distribution, before top-k/top-p/min-p truncation.
    pub entropy: f32,
}

/// A stateful sampler (its random stream advances per token).
#[derive(Debug)]
pub struct Sampler {
    pub params: SamplingParams,
    rng: StdRng,
    /// How many of the best tokens [`Sampler::top`] reports after each sample (0: none).
    report_top: usize,
    top: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self {
            params,
            rng,
            report_top: 0,
            top: Vec::new(),
        }
    }

    /// Also keeps the best `k` tokens of each distribution, for [`Sampler::top`].
    pub fn with_top(mut self, k: usize) -> Self {
        self.report_top = k;
        self
    }

    /// The best tokens of the latest distribution with their log-probabilities (the same
    /// scale as [`Sampled::logprob`]), best first; ties go to the lower id. Empty unless
    /// [`Sampler::with_top`] asked for them.
    pub fn top(&self) -> &[(u32, f32)] {
        &self.top
    }

    /// Picks the next token from `logits`, given the tokens so far (for the repetition penalty).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Sampled {
        let p = &self.params;
        if p.repeat_penalty != 1.0 && p.repeat_penalty > 0.0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &history[start..] {
                if seen.insert(t) {
                    if let Some(l) = logits.get_mut(t as usize) {
                        *l = if *l > 0.0 {
                            *l / p.repeat_penalty
                        } else {
                            *l * p.repeat_penalty
                        };
                    }
                }
            }
        }
        let t = if p.temperature > 0.0 {
            p.temperature
        } else {
            1.0
        };
        // Log-softmax of the scaled logits, for the reported log-probabilities and entropy.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for l in logits.iter() {
            sum += (((l - max) / t) as f64).exp();
        }
        let lse = max as f64 / t as f64 + sum.ln();
        let logp = |l: f32| (l as f64 / t as f64 - lse) as f32;
        let mut entropy = 0.0f64;
        for l in logits.iter() {
            let lp = logp(*l) as f64;
            if lp.is_finite() {
                entropy -= lp.exp() * lp;
            }
        }
        self.top.clear();
        if self.report_top > 0 {
            best_k(logits, self.report_top, &mut self.top);
            for e in self.top.iter_mut() {
                e.1 = logp(e.1);
            }
        }
        let token = if p.temperature <= 0.0 {
            argmax(logits)
        } else {
            self.draw(logits, t)
        };
        Sampled {
            token,
            logprob: logp(logits[token as usize]),
            entropy: entropy as f32,
        }
    }

    fn draw(&mut self, logits: &[f32], t: f32) -> u32 {
        let p = &self.params;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| (i as u32, *l / t))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|(_, l)| (l - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        for q in probs.iter_mut() {
            *q /= total;
        }
        let mut keep = probs.len();
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            keep = probs.iter().take_while(|q| **q >= floor).count().max(1);
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, q) in probs.iter().enumerate().take(keep) {
                acc += q;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let mass: f32 = probs[..keep].iter().sum();
        let mut r = self.rng.gen::<f32>() * mass;
        for (i, q) in probs[..keep].iter().enumerate() {
            r -= q;
            if r <= 0.0 {
                return cand[i].0;
            }
        }
        cand[keep - 1].0
    }
}

/// The `k` largest finite values of `v` with their indices, largest first (lower index first on
/// ties), into `out`: one pass that keeps a small sorted list.
pub fn best_k(v: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    out.clear();
    if k == 0 {
        return;
    }
    for (i, &x) in v.iter().enumerate() {
        if !x.is_finite() || (out.len() == k && x <= out[k - 1].1) {
            continue;
        }
        let at = out.partition_point(|e| e.1 >= x);
        if out.len() == k {
            out.pop();
        }
        out.insert(at, (i as u32, x));
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect()
    }

    #[test]
    fn greedy_picks_max_and_reports_logprob_and_entropy() {
        let mut s = Sampler::new(SamplingParams::greedy());
        let mut l = vec![1.0, 3.0, 2.0];
        let r = s.sample(&mut l, &[]);
        assert_eq!(r.token, 1);
        let z: f32 = [1.0f32, 3.0, 2.0].iter().map(|x| x.exp()).sum();
        assert!((r.logprob - (3.0 - z.ln())).abs() < 1e-5);
        let mut u = vec![0.0; 4];
        let r = s.sample(&mut u, &[]);
        assert!((r.entropy - 4f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn top_tokens_are_the_best_of_the_softmax_best_first() {
        let mut s = Sampler::new(SamplingParams::greedy()).with_top(3);
        let raw = vec![0.5, 3.0, f32::NEG_INFINITY, 2.0, 3.0, -1.0];
        let mut l = raw.clone();
        let r = s.sample(&mut l, &[]);
        let z: f32 = raw.iter().filter(|x| x.is_finite()).map(|x| x.exp()).sum();
        let ids: Vec<u32> = s.top().iter().map(|e| e.0).collect();
        assert_eq!(ids, vec![1, 4, 3], "ties go to the lower id");
        for (id, lp) in s.top() {
            assert!((lp.exp() - raw[*id as usize].exp() / z).abs() < 1e-6);
        }
        assert_eq!(s.top()[0], (r.token, r.logprob));
        // Fewer finite values than asked for: only those.
        let mut masked = vec![f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY];
        s.sample(&mut masked, &[]);
        assert_eq!(s.top().len(), 1);
        // Not asked for: nothing kept.
        let mut plain = Sampler::new(SamplingParams::greedy());
        plain.sample(&mut raw.clone(), &[]);
        assert!(plain.top().is_empty());
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed,
                ..SamplingParams::default()
            });
            (0..64)
                .map(|_| s.sample(&mut logits(), &[]).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_limits() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..SamplingParams::default()
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&mut [0.0, 5.0, 4.9], &[]).token, 1);
        }
        // One token holds ~all the mass: top-p 0.5 keeps only it.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            ..SamplingParams::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 10.0, 0.0, 0.0], &[]).token, 1);
        }
        // min-p removes tokens far below the best.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..SamplingParams::default()
        });
        for _ in 0..50 {
            let t = s.sample(&mut [3.0, 3.0, -5.0, -5.0], &[]).token;
            assert!(t < 2);
        }
    }

    #[test]
    fn validate_refuses_out_of_range_values_and_accepts_the_edges() {
        let with = |f: fn(&mut SamplingParams)| {
            let mut p = SamplingParams::default();
            f(&mut p);
            p.validate().map_err(|e| e.field)
        };
        assert_eq!(with(|p| p.temperature = -1.0), Err("temperature"));
        assert_eq!(with(|p| p.temperature = f32::INFINITY), Err("temperature"));
        assert_eq!(with(|p| p.temperature = f32::NAN), Err("temperature"));
        assert_eq!(with(|p| p.temperature = 2.01), Err("temperature"));
        assert_eq!(with(|p| p.top_p = 0.0), Err("top_p"));
        assert_eq!(with(|p| p.top_p = -1.0), Err("top_p"));
        assert_eq!(with(|p| p.top_p = 1.5), Err("top_p"));
        assert_eq!(with(|p| p.min_p = -0.1), Err("min_p"));
        assert_eq!(with(|p| p.min_p = 1.1), Err("min_p"));
        assert_eq!(with(|p| p.repeat_penalty = 0.0), Err("repeat_penalty"));
        assert_eq!(
            with(|p| p.repeat_penalty = f32::INFINITY),
            Err("repeat_penalty")
        );
        for ok in [
            SamplingParams::default(),
            SamplingParams::greedy(),
            SamplingParams::r1(),
            SamplingParams {
                temperature: 2.0,
                top_p: 1e-6,
                min_p: 1.0,
                top_k: 0,
                repeat_penalty: 100.0,
                ..SamplingParams::default()
            },
        ] {
            assert_eq!(ok.validate(), Ok(()), "{ok:?}");
        }
        assert!(validate_max_tokens(0).is_err());
        assert!(validate_max_tokens(1).is_ok());
        let e = SamplingParams {
            top_p: 1.5,
            ..SamplingParams::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.message_for("--top-p"),
            "--top-p 1.5 is out of range: it must be a number above 0 and at most 1 (1 = off)"
        );
    }

    #[test]
    fn repetition_penalty_discourages_seen_tokens() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&mut [1.0, 1.5], &[1]).token, 0);
    }
}
