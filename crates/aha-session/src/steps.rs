//! Splits a reasoning trace into steps: paragraphs, and discourse turns such as "Wait", "But",
//! "Alternatively", "Let me check", "Hmm" at the start of a sentence, in English, Korean
//! (잠깐, 아니, 다시 보면, 그런데…) and Chinese (等等, 不对, 嗯, 或者…; sentences end at
//! full-width stops too). Steps that take back what came before ("Wait", "Actually", "Hold
//! on", "But wait", "Hmm, no", 잠깐, 아니, 等等, 不对…) are marked as self-corrections.

use crate::transcript::Tok;

/// Discourse markers that open a step, with whether they signal a self-correction. Longer
/// markers come first so "But wait" wins over "But".
const MARKERS: &[(&str, bool)] = &[
    ("But wait", true),
    ("Hmm, wait", true),
    ("Hmm, no", true),
    ("Hmm, that's not", true),
    ("Hold on", true),
    ("Wait", true),
    ("Actually", true),
    ("Oops", true),
    ("No,", true),
    ("Let me check", false),
    ("Let me verify", false),
    ("Let me double-check", false),
    ("Let me re-check", false),
    ("Alternatively", false),
    ("Hmm", false),
    ("But", false),
    // Korean: "wait", "no", "looking again", "thinking again" take back; "but", "then",
    // "let me check", "or", "hmm" open a step.
    ("잠깐만", true),
    ("잠깐", true),
    ("아니다", true),
    ("아니야", true),
    ("아니", true),
    ("다시 보면", true),
    ("다시 생각해 보면", true),
    ("다시 생각해보면", true),
    ("틀렸", true),
    ("그런데", false),
    ("하지만", false),
    ("그러면", false),
    ("확인해 보면", false),
    ("확인해보면", false),
    ("또는", false),
    ("아니면", false),
    ("음", false),
    // Chinese: "wait", "not right", "no", "that's wrong" take back; "hmm", "or",
    // "but", "let me check" open a step.
    ("等一下", true),
    ("等等", true),
    ("不对", true),
    ("不，", true),
    ("错了", true),
    ("嗯，不对", true),
    ("嗯", false),
    ("或者", false),
    ("但是", false),
    ("不过", false),
    ("让我检查", false),
    ("让我验证", false),
    ("让我再", false),
];

/// Han characters: Chinese has no spaces between words, so a marker in Han script needs no
/// word boundary after it.
fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

/// Sentence ends, Western and full-width.
fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '?' | '!' | '。' | '？' | '！')
}

/// One step of a trace, as byte ranges of the text and token ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Byte range in the reasoning text.
    pub start: usize,
    pub end: usize,
    /// Token range (into the reply's reasoning tokens).
    pub tok_start: usize,
    pub tok_end: usize,
    /// The discourse marker that opened the step, if any.
    pub marker: Option<&'static str>,
    /// The step takes back or doubts what came before.
    pub correction: bool,
}

impl Step {
    /// Tokens in the step.
    pub fn tokens(&self) -> usize {
        self.tok_end - self.tok_start
    }
}

/// The marker at `text[at..]`, when one starts there and ends at a word boundary.
fn marker_at(text: &str, at: usize) -> Option<(&'static str, bool)> {
    let rest = &text[at..];
    MARKERS.iter().copied().find(|(m, _)| {
        rest.starts_with(m)
            && (m.ends_with(',')
                || m.ends_with('，')
                || m.chars().last().is_some_and(is_han)
                || rest[m.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_alphanumeric() && c != '\''))
    })
}

/// Byte offsets where steps start (always 0 first), with each step's marker.
pub fn boundaries(text: &str) -> Vec<(usize, Option<(&'static str, bool)>)> {
    let mut out: Vec<(usize, Option<(&'static str, bool)>)> = Vec::new();
    let first = text.len() - text.trim_start().len();
    out.push((0, marker_at(text, first)));
    // Walk sentence starts: the first non-space after a paragraph break, or after `.?!` + space.
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut newlines = 0usize;
    let mut sentence_end = false;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\n' => {
                newlines += 1;
                sentence_end = true;
            }
            b' ' | b'\t' | b'\r' => {}
            _ => {
                if i >= first && i > 0 && (newlines >= 2 || sentence_end) {
                    let m = marker_at(text, i);
                    if newlines >= 2 || m.is_some() {
                        if let Some(last) = out.last_mut() {
                            if last.0 == 0 && text[..i].trim().is_empty() {
                                // Leading whitespace only: this is still the first step.
                                last.1 = m;
                                newlines = 0;
                                sentence_end = false;
                                i += 1;
                                continue;
                            }
                        }
                        out.push((i, m));
                    }
                }
                newlines = 0;
                let c = text[i..].chars().next().unwrap_or(' ');
                sentence_end = ends_sentence(c);
                // Skip the rest of a multi-byte character.
                i += c.len_utf8();
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The steps of a trace given as tokens. A token belongs to the step that holds its first
/// non-space character.
pub fn steps(tokens: &[Tok]) -> Vec<Step> {
    let text: String = tokens.iter().map(|t| t.text.as_str()).collect();
    let bounds = boundaries(&text);
    let mut steps: Vec<Step> = bounds
        .iter()
        .enumerate()
        .map(|(k, &(start, m))| Step {
            start,
            end: bounds.get(k + 1).map_or(text.len(), |b| b.0),
            tok_start: 0,
            tok_end: 0,
            marker: m.map(|m| m.0),
            correction: m.is_some_and(|m| m.1),
        })
        .collect();
    let mut off = 0usize;
    let mut cur = 0usize;
    let mut first_tok = vec![usize::MAX; steps.len()];
    for (ti, t) in tokens.iter().enumerate() {
        let lead = t.text.len() - t.text.trim_start().len();
        let anchor = if lead == t.text.len() {
            off
        } else {
            off + lead
        };
        while cur + 1 < steps.len() && steps[cur + 1].start <= anchor {
            cur += 1;
        }
        if first_tok[cur] == usize::MAX {
            first_tok[cur] = ti;
        }
        off += t.text.len();
    }
    // Token ranges: each step runs to the next step's first token.
    let mut next = tokens.len();
    for k in (0..steps.len()).rev() {
        let s = if first_tok[k] == usize::MAX {
            next
        } else {
            first_tok[k]
        };
        steps[k].tok_start = s;
        steps[k].tok_end = next;
        next = s;
    }
    if let Some(s) = steps.first_mut() {
        s.tok_start = 0;
    }
    steps.retain(|s| s.tok_end > s.tok_start || s.end > s.start);
    steps
}

/// Per-step figures for the trace explorer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    /// Milliseconds the step took to generate.
    pub ms: u64,
    /// Mean probability of its sampled tokens (0–1), when known.
    pub confidence: Option<f32>,
    /// Mean entropy (nats), when known.
    pub entropy: Option<f32>,
}

/// Figures of one step.
pub fn stats(tokens: &[Tok], s: &Step, turn_start_ms: u64) -> StepStats {
    let toks = &tokens[s.tok_start.min(tokens.len())..s.tok_end.min(tokens.len())];
    let last = toks.last().map_or(0, |t| t.t_ms);
    let prev = s
        .tok_start
        .checked_sub(1)
        .and_then(|i| tokens.get(i))
        .map(|t| t.t_ms);
    // A branch inherits tokens stamped with the parent's times: new steps count from the
    // branch's start, inherited ones keep their original durations.
    let before = if last >= turn_start_ms {
        prev.unwrap_or(turn_start_ms).max(turn_start_ms)
    } else {
        prev.unwrap_or_else(|| toks.first().map_or(0, |t| t.t_ms))
    };
    let ms = last.saturating_sub(before);
    let mean = |f: &dyn Fn(&Tok) -> Option<f32>| {
        let v: Vec<f32> = toks.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
    };
    StepStats {
        ms,
        confidence: mean(&|t: &Tok| t.logprob.map(f32::exp)),
        entropy: mean(&|t: &Tok| t.entropy),
    }
}

/// Self-corrections in a trace.
pub fn corrections(tokens: &[Tok]) -> usize {
    let text: String = tokens.iter().map(|t| t.text.as_str()).collect();
    boundaries(&text)
        .iter()
        .filter(|b| b.1.is_some_and(|m| m.1))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(words: &[&str]) -> Vec<Tok> {
        words
            .iter()
            .enumerate()
            .map(|(i, w)| Tok {
                text: w.to_string(),
                logprob: Some(-(i as f32) * 0.1),
                entropy: Some(0.5),
                top: Vec::new(),
                t_ms: (i as u64 + 1) * 50,
                inherited: false,
            })
            .collect()
    }

    fn starts(text: &str) -> Vec<(String, Option<&'static str>)> {
        let b = boundaries(text);
        b.iter()
            .enumerate()
            .map(|(k, (s, m))| {
                let e = b.get(k + 1).map_or(text.len(), |n| n.0);
                (text[*s..e].trim().to_string(), m.map(|m| m.0))
            })
            .collect()
    }

    #[test]
    fn paragraphs_are_steps() {
        let s = starts("First idea.\n\nSecond idea.\nstill second.\n\n\nThird.");
        assert_eq!(
            s,
            [
                ("First idea.".into(), None),
                ("Second idea.\nstill second.".into(), None),
                ("Third.".into(), None)
            ]
        );
    }

    #[test]
    fn discourse_turns_open_steps_and_corrections_are_marked() {
        let t = "So x = 4. Wait, that is wrong. But then y is 2? Alternatively we add. \
                 Let me check: 2+2=4. Hmm, fine. Actually no. Butter is not a marker. Waiting isn't either.";
        let s = starts(t);
        let markers: Vec<_> = s.iter().map(|x| x.1).collect();
        assert_eq!(
            markers,
            [
                None,
                Some("Wait"),
                Some("But"),
                Some("Alternatively"),
                Some("Let me check"),
                Some("Hmm"),
                Some("Actually"),
            ]
        );
        assert!(s[6].0.ends_with("Waiting isn't either."));
        let b = boundaries(t);
        let corr: Vec<bool> = b.iter().map(|x| x.1.is_some_and(|m| m.1)).collect();
        assert_eq!(corr, [false, true, false, false, false, false, true]);
        assert_eq!(starts("Hmm, no. But wait, 3.")[0].1, Some("Hmm, no"));
        assert_eq!(starts("Ok. But wait, 3.")[1].1, Some("But wait"));
        assert_eq!(starts("Wait.\n\nmid-sentence wait is text")[1].1, None);
    }

    #[test]
    fn a_marker_inside_a_sentence_is_not_a_step() {
        assert_eq!(starts("I will Wait for it and But no.").len(), 1);
        assert_eq!(starts("").len(), 1);
        assert_eq!(starts("\n\nWait, leading space").len(), 1);
        assert_eq!(starts("\n\nWait, leading space")[0].1, Some("Wait"));
    }

    #[test]
    fn tokens_go_to_the_step_of_their_first_letter() {
        let t = toks(&[
            "Let", " x", "=1.", "\n\n", "Wait", ",", " no", ".", " But", " ok",
        ]);
        let s = steps(&t);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].tok_start, s[0].tok_end),
            (0, 4),
            "the break stays with step 0"
        );
        assert_eq!((s[1].tok_start, s[1].tok_end), (4, 8));
        assert!(s[1].correction && s[1].marker == Some("Wait"));
        assert_eq!(
            (s[2].tok_start, s[2].tok_end),
            (8, 10),
            "\" But\" opens step 2"
        );
        assert_eq!(corrections(&t), 1);
        let st = stats(&t, &s[1], 0);
        assert_eq!(st.ms, 200);
        let c = st.confidence.unwrap();
        assert!(
            (c - ((-0.4f32).exp() + (-0.5f32).exp() + (-0.6f32).exp() + (-0.7f32).exp()) / 4.0)
                .abs()
                < 1e-5
        );
    }

    #[test]
    fn multibyte_text_segments_without_panicking() {
        let s = starts("생각해 보자.\n\n잠깐, 다시. Wait, 한국어 é.");
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].1, Some("Wait"));
    }

    #[test]
    fn korean_reasoning_splits_at_its_own_markers() {
        // As the distills reason when asked in Korean.
        let text = "먼저 17에 24를 곱해 보자. 17×20은 340이고 17×4는 68이다. 그래서 408이다. \
                    잠깐, 다시 확인해 보자. 아니, 24×17도 408이 맞다. 그런데 단위는 없다. \
                    다시 보면 답은 408이다. 아니라고 할 이유는 없다.";
        let got = starts(text);
        let markers: Vec<Option<&str>> = got.iter().map(|g| g.1).collect();
        assert_eq!(
            markers,
            [
                None,
                Some("잠깐"),
                Some("아니"),
                Some("그런데"),
                Some("다시 보면")
            ],
            "{got:?}"
        );
        // "아니라고" is not "아니": a marker ends at a word boundary in Hangul.
        assert!(got.last().unwrap().0.ends_with("아니라고 할 이유는 없다."));
        assert_eq!(corrections(&toks(&[text])), 3, "잠깐, 아니, 다시 보면");
    }

    #[test]
    fn chinese_reasoning_splits_after_full_width_stops() {
        let text = "首先，我需要计算17乘以24。17乘以20是340，17乘以4是68。所以总数是408。\
                    等等，让我再检查一下。不对，我应该先算24乘以10。嗯，24乘以10是240。\
                    或者我可以用另一种方法来估算。";
        let got = starts(text);
        let markers: Vec<Option<&str>> = got.iter().map(|g| g.1).collect();
        assert_eq!(
            markers,
            [None, Some("等等"), Some("不对"), Some("嗯"), Some("或者")],
            "{got:?}"
        );
        assert_eq!(got[1].0, "等等，让我再检查一下。");
        assert_eq!(corrections(&toks(&[text])), 2, "等等, 不对");
        // Token ranges follow the text: a token holding a step's start opens that step.
        let st = steps(&toks(&[
            "首先，我需要计算。",
            "等等，",
            "再算。",
            "或者",
            "估算。",
        ]));
        let ranges: Vec<(usize, usize)> = st.iter().map(|s| (s.tok_start, s.tok_end)).collect();
        assert_eq!(ranges, [(0, 1), (1, 3), (3, 5)]);
        assert!(st[1].correction && !st[2].correction);
    }
}
