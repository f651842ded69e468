//! Prompt-lookup (n-gram) speculative decoding: drafts for the local engine's decode loop.
//!
//! After each token, the last few tokens are looked up earlier in the prompt and the text so far;
//! when they occurred before, the tokens that followed them then are proposed as the next ones.
//! [`super::engine::LocalEngine`] feeds the token and its draft through the model in one forward
//! call ([`super::model::ForwardOpts::rowwise`]: each row gives the bits a one-token step gives)
//! and keeps the drafted tokens the turn itself chooses from those rows. The turn samples every
//! position exactly as plain decoding does, one random draw per token, so the reply is the same
//! token for token, greedy or sampled with a seed; a draft only saves forward passes.
//!
//! For a sampled turn this is the standard acceptance rule for a draft that puts all its
//! probability on one token x: x is kept with probability p(x) (the turn drew x), and otherwise
//! the token comes from p without x (the turn drew something else), so the distribution of the
//! output is unchanged.

use std::str::FromStr;

/// Whether the local engine drafts tokens (`--speculate`, the config's `speculate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speculate {
    /// One token per forward pass.
    Off,
    /// Drafts by prompt lookup ([`NgramDrafter`]).
    #[default]
    Ngram,
}

impl Speculate {
    /// The name the command line and the config use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Ngram => "ngram",
        }
    }
}

impl FromStr for Speculate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "ngram" => Ok(Self::Ngram),
            other => Err(format!(
                "unknown speculation mode {other:?}; use `off` or `ngram`"
            )),
        }
    }
}

impl std::fmt::Display for Speculate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest n-gram looked up.
pub const MAX_NGRAM: usize = 4;
/// The shortest: a single repeated token predicts too little to pay for a wider forward call.
pub const MIN_NGRAM: usize = 2;
/// The most tokens drafted at once.
pub const MAX_DRAFT: usize = 6;
/// How far back a lookup searches (tokens); older text is not searched.
const WINDOW: usize = 8192;

/// Drafts by prompt lookup, with a draft length that adapts to how much of the last drafts the
/// model kept: it grows after a draft was kept whole and shrinks to what was kept otherwise, so
/// text that does not repeat costs few wasted rows.
#[derive(Debug, Clone)]
pub struct NgramDrafter {
    /// The most tokens to draft now.
    len: usize,
    /// The ceiling of `len`.
    max: usize,
}

impl NgramDrafter {
    /// A drafter that proposes at most `max` tokens at once.
    pub fn new(max: usize) -> Self {
        Self {
            len: max.min(2),
            max,
        }
    }

    /// The tokens that followed the latest earlier occurrence of the longest suffix of `history`
    /// (from [`MAX_NGRAM`] down to [`MIN_NGRAM`] tokens) that occurred before, at most `room`
    /// of them and at most the current draft length. Empty when nothing matches.
    pub fn draft(&self, history: &[u32], room: usize) -> Vec<u32> {
        let want = self.len.min(room);
        if want == 0 {
            return Vec::new();
        }
        let start = history.len().saturating_sub(WINDOW);
        let hist = &history[start..];
        for n in (MIN_NGRAM..=MAX_NGRAM).rev() {
            if hist.len() <= n {
                continue;
            }
            let tail = &hist[hist.len() - n..];
            // The latest match that has at least one token after it, not the tail itself.
            let found = (0..hist.len() - n).rev().find(|&i| &hist[i..i + n] == tail);
            if let Some(i) = found {
                let from = i + n;
                let to = (from + want).min(hist.len());
                return hist[from..to].to_vec();
            }
        }
        Vec::new()
    }

    /// After a verification: `kept` of `drafted` tokens were kept.
    pub fn update(&mut self, drafted: usize, kept: usize) {
        if drafted == 0 {
            return;
        }
        self.len = if kept == drafted {
            (self.len + 2).min(self.max)
        } else {
            (kept + 1).clamp(1, self.max)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_what_followed_the_latest_match_of_the_longest_ngram() {
        let mut d = NgramDrafter::new(6);
        d.len = 6;
        // `1 2 3` occurred twice: the later one (followed by 7 8) wins over the earlier (4 5).
        let h = [1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 0, 0, 1, 2, 3];
        assert_eq!(d.draft(&h, 10), vec![7, 8, 0, 0, 1, 2]);
        assert_eq!(d.draft(&h, 3), vec![7, 8, 0], "room caps the draft");
        // No 3- or 4-gram of the tail occurred before; the 2-gram `6 2` did, twice.
        let h = [6, 2, 11, 12, 5, 6, 2, 13, 9, 6, 2];
        assert_eq!(d.draft(&h, 2), vec![13, 9]);
        // Only one token in common: nothing (a 1-gram is not looked up).
        assert!(d.draft(&[1, 2, 3, 4, 5, 3], 4).is_empty());
        assert!(d.draft(&[], 4).is_empty());
        assert!(d.draft(&[1, 2, 1, 2], 0).is_empty());
    }

    #[test]
    fn the_longest_suffix_is_tried_first() {
        let mut d = NgramDrafter::new(6);
        d.len = 1;
        // The 2-gram `8 9` last occurred before 1; the 3-gram `7 8 9` before 2.
        let h = [7, 8, 9, 2, 0, 8, 9, 1, 0, 7, 8, 9];
        assert_eq!(d.draft(&h, 1), vec![2]);
    }

    #[test]
    fn the_draft_length_follows_what_was_kept() {
        let mut d = NgramDrafter::new(6);
        assert_eq!(d.len, 2);
        d.update(2, 2);
        assert_eq!(d.len, 4);
        d.update(4, 4);
        d.update(6, 6);
        assert_eq!(d.len, 6, "never past the ceiling");
        d.update(6, 1);
        assert_eq!(d.len, 2);
        d.update(2, 0);
        assert_eq!(d.len, 1, "never below one");
        d.update(0, 0);
        assert_eq!(d.len, 1, "no draft, no change");
    }

    #[test]
    fn modes_parse_by_name() {
        assert_eq!("off".parse::<Speculate>(), Ok(Speculate::Off));
        assert_eq!("ngram".parse::<Speculate>(), Ok(Speculate::Ngram));
        assert!("eagle"
            .parse::<Speculate>()
            .unwrap_err()
            .contains("`off` or `ngram`"));
        assert_eq!(Speculate::Ngram.to_string(), "ngram");
    }
}
