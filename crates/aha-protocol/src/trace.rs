//! What the reasoning microscope measures in a trace, shared by the engines (which act on it
//! while generating and report it in `turn_finished`) and the workbench (which draws it):
//! the alternatives the model weighed at a token ([`TopToken`]), DeepConf's token and group
//! confidence ([`token_confidence`], [`group_confidence`]), forking tokens ([`fork_threshold`]),
//! a reasoning loop ([`LoopDetector`]) and the settings of all of it ([`TraceOptions`]).

use serde::{Deserialize, Serialize};

/// One of the tokens the model could have written at a position, with its log-probability
/// (natural log, under the distribution the token was drawn from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopToken {
    pub text: String,
    pub logprob: f32,
}

/// What happens when the reasoning repeats itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoopAction {
    /// Nothing is checked.
    Off,
    /// A `reasoning_loop` event says so; generation goes on.
    #[default]
    Warn,
    /// The turn ends (`finish_reason: "loop"`).
    Stop,
    /// The nudge sentence ([`TraceOptions::nudge`]) is written into the reasoning as if the
    /// model had written it, and generation goes on.
    Nudge,
}

impl LoopAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Warn => "warn",
            Self::Stop => "stop",
            Self::Nudge => "nudge",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" => Self::Off,
            "warn" => Self::Warn,
            "stop" => Self::Stop,
            "nudge" => Self::Nudge,
            _ => return None,
        })
    }
}

impl Serialize for LoopAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LoopAction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown loop action `{s}` (expected off, warn, stop or nudge)"
            ))
        })
    }
}

impl std::fmt::Display for LoopAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default nudge: said in the reasoning when it goes in circles.
pub const DEFAULT_NUDGE: &str = "I am going in circles; let me try a different approach.";
/// What budget forcing writes when the model tries to stop thinking too early (s1).
pub const DEFAULT_WAIT: &str = "Wait";

/// The microscope's settings. The engine reads the first five; the rest say how a trace is
/// read (forks, the confidence window). In the config file: the `[trace]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceOptions {
    /// Alternatives reported per sampled token (`top` in the deltas; 0: none).
    pub top_logprobs: usize,
    /// Budget forcing: while the reasoning has fewer tokens than this, an attempt to close it
    /// (or to end the turn) is replaced by [`Self::wait`].
    pub think_min: Option<usize>,
    /// The word budget forcing writes.
    pub wait: String,
    /// What a reasoning loop does.
    pub loops: LoopAction,
    /// The sentence [`LoopAction::Nudge`] writes.
    pub nudge: String,
    /// How many times a sentence (or a stretch of text) must occur to be a loop.
    pub loop_repeats: usize,
    /// Forks are tokens whose entropy is in this top share of the trace's…
    pub fork_share: f32,
    /// …and above this many nats.
    pub fork_min_nats: f32,
    /// Tokens per window of the group confidence.
    pub confidence_window: usize,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            top_logprobs: 0,
            think_min: None,
            wait: DEFAULT_WAIT.into(),
            loops: LoopAction::Warn,
            nudge: DEFAULT_NUDGE.into(),
            loop_repeats: 3,
            fork_share: 0.1,
            fork_min_nats: 1.0,
            confidence_window: 64,
        }
    }
}

/// The most alternatives a token may report.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// How many of the best tokens DeepConf's token confidence averages over.
pub const CONFIDENCE_K: usize = 5;

impl TraceOptions {
    /// Checks the ranges; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(format!(
                "top_logprobs is at most {MAX_TOP_LOGPROBS} (got {})",
                self.top_logprobs
            ));
        }
        if self.loop_repeats < 2 {
            return Err("loop_repeats must be at least 2".into());
        }
        if !(self.fork_share > 0.0 && self.fork_share <= 1.0) {
            return Err(
                "fork_share is a share of the trace's tokens, above 0 and at most 1".into(),
            );
        }
        if self.fork_min_nats.is_nan() || self.fork_min_nats < 0.0 {
            return Err("fork_min_nats must be 0 or more".into());
        }
        if self.confidence_window == 0 {
            return Err("confidence_window must be at least 1".into());
        }
        if self.wait.trim().is_empty() {
            return Err("wait must not be empty".into());
        }
        if self.nudge.trim().is_empty() {
            return Err("nudge must not be empty".into());
        }
        Ok(())
    }
}

/// DeepConf's token confidence: the mean negative log-probability of the best `k` tokens at a
/// position (high when the model's mass sits on one token, since the others are then unlikely).
/// `None` without alternatives.
pub fn token_confidence(top: &[f32]) -> Option<f32> {
    if top.is_empty() {
        return None;
    }
    Some(-top.iter().sum::<f32>() / top.len() as f32)
}

/// Group confidence: the mean token confidence over a sliding window of `window` tokens ending
/// at each position (shorter at the start). Positions without a confidence are skipped.
pub fn group_confidence(conf: &[Option<f32>], window: usize) -> Vec<f32> {
    let window = window.max(1);
    let mut out = Vec::with_capacity(conf.len());
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (i, c) in conf.iter().enumerate() {
        if let Some(c) = c {
            sum += *c as f64;
            n += 1;
        }
        if i >= window {
            if let Some(old) = conf[i - window] {
                sum -= old as f64;
                n -= 1;
            }
        }
        if n > 0 {
            out.push((sum / n as f64) as f32);
        } else if let Some(&last) = out.last() {
            out.push(last);
        }
    }
    out
}

/// The lowest group confidence of a trace, over full windows where the trace has one (the
/// whole trace where it is shorter). `None` without confidences.
pub fn min_group_confidence(conf: &[Option<f32>], window: usize) -> Option<f32> {
    let g = group_confidence(conf, window);
    let skip = if g.len() > window {
        window - 1
    } else {
        g.len().saturating_sub(1)
    };
    g.into_iter().skip(skip).reduce(f32::min)
}

/// The entropy from which a token is a fork: the `share` quantile from the top of the trace's
/// entropies, and never below `min_nats`. `None` when the trace has no entropies.
pub fn fork_threshold(entropies: &[f32], share: f32, min_nats: f32) -> Option<f32> {
    if entropies.is_empty() {
        return None;
    }
    let mut e = entropies.to_vec();
    e.sort_by(|a, b| b.total_cmp(a));
    let k = ((e.len() as f32 * share).ceil() as usize).clamp(1, e.len());
    Some(e[k - 1].max(min_nats))
}

/// Whether a token of this entropy is a fork under `threshold` (from [`fork_threshold`]).
pub fn is_fork(entropy: Option<f32>, threshold: Option<f32>) -> bool {
    matches!((entropy, threshold), (Some(e), Some(t)) if e >= t && e > 0.0)
}

/// Positions of the forks among `entropies` (tokens without one are never forks).
pub fn forks(entropies: &[Option<f32>], share: f32, min_nats: f32) -> Vec<usize> {
    let known: Vec<f32> = entropies.iter().flatten().copied().collect();
    let t = fork_threshold(&known, share, min_nats);
    entropies
        .iter()
        .enumerate()
        .filter(|(_, e)| is_fork(**e, t))
        .map(|(i, _)| i)
        .collect()
}

/// A loop the [`LoopDetector`] found: `text` (a sentence, or a stretch of text repeated back to
/// back) has occurred `count` times.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopHit {
    pub count: usize,
    pub text: String,
}

/// Watches reasoning text as it streams for a repeated sentence, or a stretch of text that
/// repeats back to back. Each loop is reported once, when it reaches `repeats`, and again at
/// every further repeat.
#[derive(Debug, Clone)]
pub struct LoopDetector {
    repeats: usize,
    /// The text of the current sentence, so far.
    sentence: String,
    /// Normalized sentences seen, with their counts.
    seen: std::collections::HashMap<String, usize>,
    /// The latest text, for back-to-back repeats without sentence ends.
    tail: String,
    /// The period of the back-to-back repeat reported last, and how many times it was seen.
    periodic: Option<(usize, usize)>,
}

/// Sentences shorter than this (normalized, in characters) are never loops on their own: "Wait."
/// and "So 5 + 3 = 8." occur many times in sound reasoning.
const MIN_SENTENCE_CHARS: usize = 24;
/// Back-to-back repeats are looked for with periods of this many bytes.
const PERIOD: std::ops::RangeInclusive<usize> = 24..=400;

fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '?' | '!' | '\n' | '。' | '？' | '！')
}

/// Whether a unit of text that repeats back to back holds a whole sentence long enough for the
/// sentence count to report. The unit may start mid-sentence, so it is read twice over.
fn holds_long_sentence(unit: &str) -> bool {
    let twice = format!("{unit}{unit}");
    let mut parts = twice.split(is_sentence_end);
    parts.next();
    parts.next_back();
    parts.any(|p| {
        p.trim_matches(|c: char| !c.is_alphanumeric())
            .chars()
            .count()
            >= MIN_SENTENCE_CHARS
    })
}

impl LoopDetector {
    pub fn new(repeats: usize) -> Self {
        Self {
            repeats: repeats.max(2),
            sentence: String::new(),
            seen: Default::default(),
            tail: String::new(),
            periodic: None,
        }
    }

    /// Forgets what it has seen (after a nudge, so the loop must start again to count).
    pub fn reset(&mut self) {
        *self = Self::new(self.repeats);
    }

    /// Feeds a piece of reasoning; returns a loop that reached (or passed) the threshold with it.
    pub fn push(&mut self, piece: &str) -> Option<LoopHit> {
        let mut hit = None;
        for c in piece.chars() {
            self.sentence.push(c);
            if is_sentence_end(c) {
                let s = std::mem::take(&mut self.sentence);
                if let Some(h) = self.sentence_done(&s) {
                    hit = Some(h);
                }
            }
        }
        self.tail.push_str(piece);
        if self.tail.len() > 3 * PERIOD.end() + 64 {
            let mut cut = self.tail.len() - 3 * PERIOD.end();
            while !self.tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.tail.drain(..cut);
        }
        if hit.is_none() {
            hit = self.back_to_back();
        }
        hit
    }

    fn sentence_done(&mut self, s: &str) -> Option<LoopHit> {
        let norm: String = s
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        if norm.chars().count() < MIN_SENTENCE_CHARS {
            return None;
        }
        let n = self.seen.entry(norm).or_insert(0);
        *n += 1;
        (*n >= self.repeats).then(|| LoopHit {
            count: *n,
            text: s.trim().to_string(),
        })
    }

    /// A stretch at the end of the text that occurs `repeats` times back to back.
    fn back_to_back(&mut self) -> Option<LoopHit> {
        let t = self.tail.as_bytes();
        for p in PERIOD {
            if t.len() < self.repeats * p {
                break;
            }
            let end = t.len();
            let unit = &t[end - p..];
            let all = (1..self.repeats).all(|k| &t[end - (k + 1) * p..end - k * p] == unit);
            if !all || unit.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if holds_long_sentence(&String::from_utf8_lossy(unit)) {
                // Whole sentences repeating: the sentence count reports it.
                return None;
            }
            // Count how far back it goes.
            let mut count = self.repeats;
            while end >= (count + 1) * p && &t[end - (count + 1) * p..end - count * p] == unit {
                count += 1;
            }
            match self.periodic {
                Some((q, c)) if q == p && c >= count => return None,
                _ => {}
            }
            self.periodic = Some((p, count));
            let text = String::from_utf8_lossy(unit).trim().to_string();
            return Some(LoopHit { count, text });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentence_said_three_times_is_a_loop_once_it_is_said_the_third_time() {
        let mut d = LoopDetector::new(3);
        let s = "But we know the bat costs 1.00 more than the ball. ";
        assert_eq!(d.push("So the ball costs x. "), None);
        assert_eq!(d.push(s), None);
        assert_eq!(d.push("Let me compute x + (x + 1.00) = 1.10. "), None);
        assert_eq!(d.push(s), None);
        // Streamed in small pieces, as tokens come.
        let mut hit = None;
        for piece in [
            "But we know",
            " the bat costs 1",
            ".00 more than the",
            " ball.",
            " ",
        ] {
            hit = hit.or(d.push(piece));
        }
        let hit = hit.expect("the third time is a loop");
        assert_eq!(hit.count, 3);
        assert!(hit.text.contains("bat costs"), "{}", hit.text);
        // Once more: reported again, with the new count.
        assert_eq!(d.push(s).map(|h| h.count), Some(4));
    }

    #[test]
    fn short_sentences_and_different_sentences_are_not_loops() {
        let mut d = LoopDetector::new(3);
        for _ in 0..5 {
            assert_eq!(d.push("Wait. "), None);
            assert_eq!(d.push("So 5 + 3 = 8. "), None);
        }
        for i in 0..10 {
            assert_eq!(
                d.push(&format!(
                    "Now the {i}th term of the sequence is {}. ",
                    i * i
                )),
                None
            );
        }
    }

    #[test]
    fn text_repeated_back_to_back_without_sentence_ends_is_a_loop() {
        let mut d = LoopDetector::new(3);
        let unit = "그런데 x는 3이고 y는 4이므로 다시 계산하면 ";
        let mut hit = None;
        for _ in 0..3 {
            for c in unit.chars() {
                hit = hit.or(d.push(&c.to_string()));
            }
        }
        let hit = hit.expect("three back-to-back repeats");
        assert_eq!(hit.count, 3);
        assert!(hit.text.contains("다시 계산하면"), "{}", hit.text);
    }

    #[test]
    fn chinese_sentences_end_at_full_width_stops() {
        let mut d = LoopDetector::new(3);
        let s = "等等，我们已经知道球拍比球贵一块钱，所以球的价格是零点零五元。";
        assert_eq!(d.push(s), None);
        assert_eq!(d.push("不对，让我再算一遍这个方程的解是多少。"), None);
        assert_eq!(d.push(s), None);
        assert_eq!(d.push(s).map(|h| h.count), Some(3));
    }

    #[test]
    fn reset_forgets_the_loop() {
        let mut d = LoopDetector::new(2);
        let s = "The answer must be seven because seven is prime. ";
        d.push(s);
        d.reset();
        assert_eq!(d.push(s), None);
        assert!(d.push(s).is_some());
    }

    #[test]
    fn token_and_group_confidence_follow_deepconf() {
        // Mass on one token: the other alternatives are unlikely, so the mean -logprob is high.
        let sure = token_confidence(&[-0.01, -6.0, -7.0, -8.0, -9.0]).unwrap();
        let unsure = token_confidence(&[-1.5, -1.6, -1.7, -1.8, -1.9]).unwrap();
        assert!(sure > unsure, "{sure} {unsure}");
        assert!((unsure - 1.7).abs() < 1e-6);
        assert_eq!(token_confidence(&[]), None);
        let conf = [Some(4.0), Some(2.0), None, Some(6.0), Some(1.0)];
        let g = group_confidence(&conf, 2);
        assert_eq!(g, vec![4.0, 3.0, 2.0, 6.0, 3.5]);
        assert_eq!(min_group_confidence(&conf, 2), Some(2.0));
        // A trace shorter than the window: its one group is the whole trace.
        assert_eq!(min_group_confidence(&[Some(1.0), Some(3.0)], 64), Some(2.0));
        assert_eq!(min_group_confidence(&[None], 4), None);
    }

    #[test]
    fn forks_are_the_top_share_above_the_floor() {
        let e: Vec<Option<f32>> = (0..20).map(|i| Some(i as f32 * 0.1)).collect();
        // Top 10% of 20 is 2 tokens: 1.9 and 1.8, both above 1 nat.
        assert_eq!(forks(&e, 0.1, 1.0), vec![18, 19]);
        // The floor wins when the top share is below it.
        assert_eq!(forks(&e, 0.5, 1.5), vec![15, 16, 17, 18, 19]);
        // A confident trace has no forks.
        let flat: Vec<Option<f32>> = vec![Some(0.2); 30];
        assert!(forks(&flat, 0.1, 1.0).is_empty());
        assert!(forks(&[None, None], 0.1, 1.0).is_empty());
    }

    #[test]
    fn options_check_their_ranges_and_read_from_toml_names() {
        assert!(TraceOptions::default().validate().is_ok());
        let bad = TraceOptions {
            top_logprobs: 99,
            ..TraceOptions::default()
        };
        assert!(bad.validate().unwrap_err().contains("top_logprobs"));
        let o: TraceOptions =
            serde_json::from_str(r#"{"loops":"nudge","think_min":64,"top_logprobs":5}"#).unwrap();
        assert_eq!(o.loops, LoopAction::Nudge);
        assert_eq!(o.think_min, Some(64));
        assert_eq!(o.wait, "Wait");
        let e = serde_json::from_str::<TraceOptions>(r#"{"loops":"shout"}"#).unwrap_err();
        assert!(e.to_string().contains("off, warn, stop or nudge"), "{e}");
    }
}
