//! Splits streamed model output into reasoning (`<think>…</think>`) and answer text.
//!
//! Rules, in the order they matter:
//!
//! * **Tags.** `<think>` opens a reasoning block and is recognised only outside one;
//!   `</think>` closes it and is recognised only inside one. Inside a block a further
//!   `<think>` is plain reasoning text; a later `<think>` in the answer opens a new block.
//! * **Stray `</think>`.** Some servers strip the opening tag, and some prompts open
//!   `<think>` without telling the parser. Streaming cannot relabel text that was already
//!   emitted as answer, so the rule is deliberately narrow: a `</think>` seen outside a
//!   block *before any non-whitespace answer text of the current answer run* (the start
//!   of the output, or right after a block closed, including one closed by
//!   [`ReasoningParser::close_thinking`]) is treated as closing an empty implicit block:
//!   it is swallowed, along with the whitespace around it, and [`ReasoningParser::saw_thinking`]
//!   becomes true. Once real answer text has been emitted, `</think>` is answer text.
//!   Callers whose prompt ends with `<think>` should pass `started_in_think = true`.
//! * **Whitespace.** The whitespace run after `<think>` (or at the start when
//!   `started_in_think`) is dropped, and so is the whitespace run before `</think>`:
//!   trailing whitespace inside a block is held back until non-whitespace reasoning
//!   follows (then it is emitted) or the block ends (then it is dropped, also at
//!   [`ReasoningParser::finish`]). The whitespace run at the start of an answer run that
//!   follows reasoning (after `</think>`) is dropped; before any reasoning, leading
//!   whitespace is content (an indented code completion) and is kept. Other answer
//!   whitespace passes through untouched, including whitespace before a later `<think>`.
//! * **Holding back.** A suffix that could still become a recognised tag is held until the
//!   next push resolves it; [`ReasoningParser::finish`] emits an incomplete tag as plain
//!   text of the current kind. An unclosed block stays reasoning.
//!
//! The output is independent of how the text is split into pushes.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// A piece of model output, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Reasoning text (inside `<think>…</think>`).
    Thinking(String),
    /// Answer text (outside any reasoning block).
    Answer(String),
}

impl Segment {
    /// The text of the segment, whatever its kind.
    pub fn text(&self) -> &str {
        match self {
            Segment::Thinking(t) | Segment::Answer(t) => t,
        }
    }

    /// The protocol event for this segment, with the producing token's log-probability,
    /// entropy and alternatives when they are known.
    pub fn into_event(
        self,
        logprob: Option<f32>,
        entropy: Option<f32>,
        top: Vec<aha_protocol::TopToken>,
    ) -> aha_protocol::Event {
        use aha_protocol::Event;
        match self {
            Segment::Thinking(text) => Event::ThinkingDelta {
                text,
                logprob,
                entropy,
                top,
            },
            Segment::Answer(text) => Event::AnswerDelta {
                text,
                logprob,
                entropy,
                top,
            },
        }
    }
}

/// Streaming splitter of reasoning and answer text; see the module docs for the rules.
#[derive(Debug, Clone)]
pub struct ReasoningParser {
    /// Currently inside a reasoning block.
    thinking: bool,
    /// A reasoning block was ever opened (or implied).
    saw: bool,
    /// Nothing but whitespace has been seen in the current reasoning block.
    at_think_start: bool,
    /// Nothing but whitespace (and swallowed stray `</think>`) in the current answer run.
    at_answer_start: bool,
    /// Held-back text: trailing reasoning whitespace and/or a possible partial tag.
    buf: String,
}

impl ReasoningParser {
    /// `started_in_think`: the prompt already opened `<think>` (R1 templates end with "<think>\n"), so output starts inside the reasoning.
    pub fn new(started_in_think: bool) -> Self {
        Self {
            thinking: started_in_think,
            saw: started_in_think,
            at_think_start: true,
            at_answer_start: true,
            buf: String::new(),
        }
    }

    /// Feed the next decoded piece of text. Returns the segments that are now certain,
    /// merged (adjacent same-kind pieces concatenated, empty ones dropped). Text that could
    /// be the beginning of a tag, and trailing whitespace inside a reasoning block, is held
    /// back until it is resolved.
    pub fn push(&mut self, text: &str) -> Vec<Segment> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        self.process(false, &mut out);
        out
    }

    /// End of generation: flush held-back text (a partial tag that never completed is
    /// emitted as plain text of the current kind; trailing whitespace of an unclosed
    /// reasoning block is dropped). An unclosed block stays open: [`Self::in_thinking`]
    /// keeps reporting it.
    pub fn finish(&mut self) -> Vec<Segment> {
        let mut out = Vec::new();
        self.process(true, &mut out);
        out
    }

    /// Whether the parser is currently inside a reasoning block.
    pub fn in_thinking(&self) -> bool {
        self.thinking
    }

    /// Whether a reasoning block was ever opened (or started in one, or a stray `</think>`
    /// implied one).
    pub fn saw_thinking(&self) -> bool {
        self.saw
    }

    /// Force-close the reasoning (used by the thinking budget): subsequent text is answer.
    /// Returns held-back text flushed as Thinking (a pending partial tag; trailing whitespace
    /// is dropped as for a normal close). Does nothing outside a reasoning block.
    ///
    /// Afterwards tags are recognised as usual: a `</think>` arriving before any answer text
    /// (e.g. the model closing the block itself) is swallowed, and a later `<think>` opens a
    /// new block.
    pub fn close_thinking(&mut self) -> Vec<Segment> {
        let mut out = Vec::new();
        if !self.thinking {
            return out;
        }
        let held = std::mem::take(&mut self.buf);
        let held = if self.at_think_start {
            held.trim_start()
        } else {
            held.as_str()
        };
        push_seg(&mut out, Segment::Thinking(held.trim_end().to_string()));
        self.close_block();
        out
    }

    /// Leave a reasoning block (by tag or by force).
    fn close_block(&mut self) {
        self.thinking = false;
        self.at_answer_start = true;
    }

    /// Consume as much of `buf` as is certain (all of it when `last`).
    fn process(&mut self, last: bool, out: &mut Vec<Segment>) {
        loop {
            if self.thinking {
                if self.at_think_start {
                    drop_leading_ws(&mut self.buf);
                    if self.buf.is_empty() {
                        return;
                    }
                }
                if let Some(idx) = self.buf.find(CLOSE) {
                    let content = self.buf[..idx].trim_end().to_string();
                    self.emit_thinking(out, content);
                    self.buf.drain(..idx + CLOSE.len());
                    self.close_block();
                    continue;
                }
                if last {
                    let content = self.buf.trim_end().to_string();
                    self.buf.clear();
                    self.emit_thinking(out, content);
                    return;
                }
                let tag_at = partial_tag_start(&self.buf, CLOSE).unwrap_or(self.buf.len());
                let split = self.buf[..tag_at].trim_end().len();
                let content: String = self.buf.drain(..split).collect();
                self.emit_thinking(out, content);
                return;
            }

            if self.at_answer_start {
                // After reasoning, the answer's leading blank lines are the template's, not the
                // answer's. Before any reasoning, leading whitespace is content (an indented code
                // completion), so it stays.
                let ws = self.buf.len() - self.buf.trim_start().len();
                // Stray `</think>` before any answer text: close an empty implicit block.
                if self.buf[ws..].starts_with(CLOSE) {
                    self.buf.drain(..ws + CLOSE.len());
                    self.saw = true;
                    continue;
                }
                if !last && CLOSE.starts_with(&self.buf[ws..]) {
                    return;
                }
                if self.saw {
                    drop_leading_ws(&mut self.buf);
                }
                if self.buf.is_empty() {
                    return;
                }
            }
            if let Some(idx) = self.buf.find(OPEN) {
                let content: String = self.buf.drain(..idx).collect();
                self.emit_answer(out, content);
                self.buf.drain(..OPEN.len());
                self.thinking = true;
                self.saw = true;
                self.at_think_start = true;
                continue;
            }
            let split = if last {
                self.buf.len()
            } else {
                partial_tag_start(&self.buf, OPEN).unwrap_or(self.buf.len())
            };
            let content: String = self.buf.drain(..split).collect();
            self.emit_answer(out, content);
            return;
        }
    }

    fn emit_thinking(&mut self, out: &mut Vec<Segment>, text: String) {
        if !text.is_empty() {
            self.at_think_start = false;
        }
        push_seg(out, Segment::Thinking(text));
    }

    fn emit_answer(&mut self, out: &mut Vec<Segment>, text: String) {
        if !text.is_empty() {
            self.at_answer_start = false;
        }
        push_seg(out, Segment::Answer(text));
    }
}

/// Append `seg` to `out`, merging with a same-kind predecessor and dropping it if empty.
fn push_seg(out: &mut Vec<Segment>, seg: Segment) {
    if seg.text().is_empty() {
        return;
    }
    match (out.last_mut(), seg) {
        (Some(Segment::Thinking(a)), Segment::Thinking(b))
        | (Some(Segment::Answer(a)), Segment::Answer(b)) => a.push_str(&b),
        (_, seg) => out.push(seg),
    }
}

/// Remove the leading whitespace run of `buf` in place.
fn drop_leading_ws(buf: &mut String) {
    let ws = buf.len() - buf.trim_start().len();
    buf.drain(..ws);
}

/// Start of the longest proper prefix of `tag` that `buf` ends with, if any.
fn partial_tag_start(buf: &str, tag: &str) -> Option<usize> {
    (1..tag.len())
        .rev()
        .find(|&k| buf.ends_with(&tag[..k]))
        .map(|k| buf.len() - k)
}

/// Split a complete text in one go (convenience over push+finish), returning (thinking, answer).
pub fn split_reasoning(text: &str, started_in_think: bool) -> (String, String) {
    let mut parser = ReasoningParser::new(started_in_think);
    let mut segs = parser.push(text);
    segs.extend(parser.finish());
    let (mut thinking, mut answer) = (String::new(), String::new());
    for s in segs {
        match s {
            Segment::Thinking(t) => thinking.push_str(&t),
            Segment::Answer(t) => answer.push_str(&t),
        }
    }
    (thinking, answer)
}

/// Remove every `<think>…</think>` block (and an unclosed trailing one) from an assistant message, trimming leading whitespace left behind — used to strip earlier turns' reasoning from chat history.
///
/// Unlike the streaming parser this sees the whole message, so it also handles a message
/// whose opening tag was stripped: if a `</think>` occurs before any `<think>`, everything
/// before it is treated as reasoning and removed.
pub fn strip_reasoning(text: &str) -> String {
    let orphan_close = match (text.find(CLOSE), text.find(OPEN)) {
        (Some(c), Some(o)) => c < o,
        (Some(_), None) => true,
        _ => false,
    };
    split_reasoning(text, orphan_close)
        .1
        .trim_start()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(s: &str) -> Segment {
        Segment::Thinking(s.to_string())
    }
    fn an(s: &str) -> Segment {
        Segment::Answer(s.to_string())
    }

    /// Merge a list of segments as `push_seg` does.
    fn merged(segs: Vec<Segment>) -> Vec<Segment> {
        let mut out = Vec::new();
        for s in segs {
            push_seg(&mut out, s);
        }
        out
    }

    /// Feed `pieces` one by one, then finish; all segments, merged.
    fn run(pieces: &[&str], started: bool) -> Vec<Segment> {
        let mut p = ReasoningParser::new(started);
        let mut all = Vec::new();
        for piece in pieces {
            all.extend(p.push(piece));
        }
        all.extend(p.finish());
        merged(all)
    }

    fn char_bounds(s: &str) -> Vec<usize> {
        s.char_indices().map(|(i, _)| i).chain([s.len()]).collect()
    }

    /// Check `text` against `expected` for one push, char-by-char pushes, every single
    /// split point and every pair of split points.
    fn check_all_splits(text: &str, started: bool, expected: &[Segment]) {
        assert_eq!(run(&[text], started), expected, "whole: {text:?}");
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(&refs, started), expected, "char by char: {text:?}");
        let bounds = char_bounds(text);
        for (n, &i) in bounds.iter().enumerate() {
            assert_eq!(
                run(&[&text[..i], &text[i..]], started),
                expected,
                "split at {i}: {text:?}"
            );
            for &j in &bounds[n..] {
                assert_eq!(
                    run(&[&text[..i], &text[i..j], &text[j..]], started),
                    expected,
                    "split at {i},{j}: {text:?}"
                );
            }
        }
    }

    #[test]
    fn r1_output_with_tags() {
        check_all_splits(
            "<think>\nLet me think.\nOK.\n</think>\n\nThe answer is 4.",
            false,
            &[th("Let me think.\nOK."), an("The answer is 4.")],
        );
    }

    #[test]
    fn prompt_already_in_think() {
        check_all_splits(
            "Hmm, 2+2.\n\nIt is 4.\n</think>\n\n**4**",
            true,
            &[th("Hmm, 2+2.\n\nIt is 4."), an("**4**")],
        );
        let mut p = ReasoningParser::new(true);
        assert!(p.in_thinking());
        assert!(p.saw_thinking());
        assert_eq!(p.push("\nabc"), vec![th("abc")]);
        assert_eq!(p.push("</think>"), vec![]);
        assert!(!p.in_thinking());
        assert_eq!(p.push("\n\nx"), vec![an("x")]);
    }

    #[test]
    fn empty_block() {
        check_all_splits("<think>\n\n</think>\n\nHello", false, &[an("Hello")]);
        check_all_splits("<think></think>Hello", false, &[an("Hello")]);
        check_all_splits("\n\n</think>\n\nHello", true, &[an("Hello")]);
        check_all_splits("<think>\n\n</think>\n\n", false, &[]);
        let mut p = ReasoningParser::new(false);
        assert_eq!(p.push("<think>\n\n</think>\n\n"), vec![]);
        assert!(p.saw_thinking());
        assert!(!p.in_thinking());
    }

    #[test]
    fn unclosed_block() {
        check_all_splits("<think>\nstill going\n\n", false, &[th("still going")]);
        check_all_splits("still going </thi", true, &[th("still going </thi")]);
        let mut p = ReasoningParser::new(false);
        assert_eq!(p.push("Hi <think>abc\n"), vec![an("Hi "), th("abc")]);
        assert_eq!(p.finish(), vec![]);
        assert!(p.in_thinking(), "an unclosed block stays reasoning");
    }

    #[test]
    fn never_thinks() {
        check_all_splits(
            "Just an answer.\nWith lines.\n",
            false,
            &[an("Just an answer.\nWith lines.\n")],
        );
        let mut p = ReasoningParser::new(false);
        assert_eq!(p.push("abc"), vec![an("abc")]);
        assert!(!p.saw_thinking());
        assert!(!p.in_thinking());
    }

    #[test]
    fn whitespace_handling() {
        // Leading answer whitespace is dropped; inner and trailing answer whitespace kept.
        // Before any reasoning, leading whitespace is content (indented completions keep it).
        check_all_splits("\n\n  a \n b\n\n", false, &[an("\n\n  a \n b\n\n")]);
        // Whitespace inside reasoning is kept, trailing is held back then dropped.
        let mut p = ReasoningParser::new(true);
        assert_eq!(p.push("\n a\n"), vec![th("a")]);
        assert_eq!(p.push("\n"), vec![]);
        assert_eq!(p.push("b "), vec![th("\n\nb")]);
        assert_eq!(p.push("\n</think>"), vec![]);
        assert_eq!(p.push("\n\n"), vec![]);
        assert_eq!(p.push("c"), vec![an("c")]);
        // Whitespace in the answer before a later block stays in the answer.
        check_all_splits(
            "A.\n\n<think>\nmore\n</think>\n\nB.",
            false,
            &[an("A.\n\n"), th("more"), an("B.")],
        );
        // Unicode whitespace and text.
        check_all_splits(
            "<think>\u{3000}é\u{a0}</think>\u{2003}ü",
            false,
            &[th("é"), an("ü")],
        );
    }

    #[test]
    fn multiple_blocks() {
        check_all_splits(
            "<think>a</think>b<think>\nc\n</think>\nd",
            false,
            &[th("a"), an("b"), th("c"), an("d")],
        );
        check_all_splits(
            "a</think>b<think>c</think>d",
            true,
            &[th("a"), an("b"), th("c"), an("d")],
        );
    }

    #[test]
    fn nested_open_is_text_and_close_outside_is_text() {
        check_all_splits(
            "<think>x <think> y</think>z </think>",
            false,
            &[th("x <think> y"), an("z </think>")],
        );
    }

    #[test]
    fn stray_close_at_start() {
        // Opening tag stripped by a server, empty reasoning: swallowed.
        check_all_splits("\n</think>\n\nAnswer", false, &[an("Answer")]);
        let mut p = ReasoningParser::new(false);
        assert_eq!(p.push(" </think>"), vec![]);
        assert!(p.saw_thinking());
        assert!(!p.in_thinking());
        assert_eq!(p.push(" x</think>"), vec![an("x</think>")]);
        // After a block closed, a duplicate close is swallowed too.
        check_all_splits("<think>a</think>\n</think>\nb", false, &[th("a"), an("b")]);
        // Once answer text was emitted, `</think>` is answer text (no relabelling).
        check_all_splits(
            "reasoning\n</think>\n\nanswer",
            false,
            &[an("reasoning\n</think>\n\nanswer")],
        );
        // A partial stray close at the end is plain answer text.
        check_all_splits("</thi", false, &[an("</thi")]);
    }

    #[test]
    fn lone_angle_bracket_is_not_a_tag() {
        check_all_splits("a < b and c<d", false, &[an("a < b and c<d")]);
        check_all_splits("<", false, &[an("<")]);
        check_all_splits("x <", false, &[an("x <")]);
        check_all_splits("<think>a < b</think>c", false, &[th("a < b"), an("c")]);
        check_all_splits("a </ b <", true, &[th("a </ b <")]);
        let mut p = ReasoningParser::new(false);
        assert_eq!(p.push("a <"), vec![an("a ")]);
        assert_eq!(p.push(" b"), vec![an("< b")]);
    }

    #[test]
    fn thinking_tag_is_not_our_tag() {
        check_all_splits(
            "<thinking>x</thinking>",
            false,
            &[an("<thinking>x</thinking>")],
        );
        check_all_splits(
            "<think>a</thinking>b</think>c",
            false,
            &[th("a</thinking>b"), an("c")],
        );
        check_all_splits("<thin>k", false, &[an("<thin>k")]);
    }

    #[test]
    fn held_back_partial_tag() {
        let mut p = ReasoningParser::new(false);
        assert_eq!(p.push("Hi <thi"), vec![an("Hi ")]);
        assert_eq!(p.push("nk>\nx"), vec![th("x")]);
        assert!(p.in_thinking());
        assert_eq!(p.push("\n</"), vec![]);
        assert_eq!(p.push("think"), vec![]);
        assert_eq!(p.push(">"), vec![]);
        assert!(!p.in_thinking());
        assert_eq!(p.push("y"), vec![an("y")]);
        let mut p = ReasoningParser::new(false);
        assert_eq!(p.push("<think"), vec![]);
        assert_eq!(p.finish(), vec![an("<think")]);
    }

    #[test]
    fn close_thinking_forces_answer() {
        let mut p = ReasoningParser::new(true);
        assert_eq!(p.push("abc\n</th"), vec![th("abc")]);
        assert_eq!(p.close_thinking(), vec![th("\n</th")]);
        assert!(!p.in_thinking());
        assert!(p.saw_thinking());
        assert_eq!(p.push("\nanswer"), vec![an("answer")]);
        assert_eq!(p.finish(), vec![]);

        // Trailing whitespace is dropped; the engine's forced "\n</think>\n\n" is swallowed.
        let mut p = ReasoningParser::new(true);
        assert_eq!(p.push("abc \n"), vec![th("abc")]);
        assert_eq!(p.close_thinking(), vec![]);
        assert_eq!(p.push("\n</think>\n\n"), vec![]);
        assert_eq!(p.push("ok"), vec![an("ok")]);

        // Outside a block it does nothing.
        let mut p = ReasoningParser::new(false);
        assert_eq!(p.push("a <thi"), vec![an("a ")]);
        assert_eq!(p.close_thinking(), vec![]);
        assert_eq!(p.push("nk>b"), vec![th("b")]);
        assert!(p.in_thinking());

        // Nothing held at the start of a block.
        let mut p = ReasoningParser::new(true);
        assert_eq!(p.push("\n\n"), vec![]);
        assert_eq!(p.close_thinking(), vec![]);
    }

    #[test]
    fn split_reasoning_whole_text() {
        assert_eq!(
            split_reasoning("<think>\nr\n</think>\n\na", false),
            ("r".to_string(), "a".to_string())
        );
        assert_eq!(
            split_reasoning("r</think>a", true),
            ("r".to_string(), "a".to_string())
        );
        assert_eq!(
            split_reasoning("plain", false),
            (String::new(), "plain".to_string())
        );
    }

    #[test]
    fn strip_reasoning_removes_blocks() {
        assert_eq!(strip_reasoning("<think>\nr\n</think>\n\nAnswer"), "Answer");
        assert_eq!(strip_reasoning("A\n<think>x</think>\nB"), "A\nB");
        assert_eq!(strip_reasoning("A <think>unclosed"), "A ");
        assert_eq!(strip_reasoning("<think>unclosed"), "");
        assert_eq!(strip_reasoning("plain answer"), "plain answer");
        assert_eq!(strip_reasoning("  lead"), "lead");
        // Opening tag stripped: everything up to the first `</think>` is reasoning.
        assert_eq!(strip_reasoning("reasoning\n</think>\n\nAnswer"), "Answer");
        assert_eq!(strip_reasoning("r</think>a<think>s</think>b"), "ab");
        assert_eq!(
            strip_reasoning("<think>a</think>b </think> c"),
            "b </think> c"
        );
        assert_eq!(
            strip_reasoning("x <thinking>y</thinking>"),
            "x <thinking>y</thinking>"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn piece() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "<think>",
                "</think>",
                "<think>",
                "</think>",
                "<",
                "</",
                "<thi",
                "</thin",
                "think",
                ">",
                "<thinking>",
                "word",
                "é",
                "🙂",
                " ",
                "\n",
                "\n\n",
                "\t",
                "\u{3000}",
                "a b",
                "x\n",
            ])
        }

        fn text_and_splits() -> impl Strategy<Value = (String, Vec<usize>)> {
            prop::collection::vec(piece(), 0..24).prop_flat_map(|pieces| {
                let text: String = pieces.concat();
                let n = text.chars().count();
                (Just(text), prop::collection::vec(0..=n, 0..8))
            })
        }

        fn concat_kinds(segs: &[Segment]) -> (String, String) {
            let (mut t, mut a) = (String::new(), String::new());
            for s in segs {
                match s {
                    Segment::Thinking(x) => t.push_str(x),
                    Segment::Answer(x) => a.push_str(x),
                }
            }
            (t, a)
        }

        proptest::proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn split_points_do_not_matter(
                (text, mut cuts) in text_and_splits(),
                started in any::<bool>(),
            ) {
                let bounds = char_bounds(&text);
                cuts.sort_unstable();
                let mut pieces = Vec::new();
                let mut prev = 0;
                for c in cuts {
                    let at = bounds[c];
                    pieces.push(&text[prev..at]);
                    prev = at;
                }
                pieces.push(&text[prev..]);

                let whole = run(&[&text], started);
                let split = run(&pieces, started);
                prop_assert_eq!(concat_kinds(&split), concat_kinds(&whole));
                prop_assert_eq!(&split, &whole);
                prop_assert_eq!(concat_kinds(&whole), split_reasoning(&text, started));
                // Every returned batch is merged and has no empty segments.
                let mut p = ReasoningParser::new(started);
                for piece in &pieces {
                    let batch = p.push(piece);
                    prop_assert_eq!(merged(batch.clone()), batch);
                }
            }
        }
    }
}
