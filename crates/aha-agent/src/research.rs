//! Research mode, retrieve first: before a new turn's first generation the documents are searched
//! with the person's message, and the best passages go into that message, each line numbered
//! and each passage labelled with its path, so the model can answer from them and cite
//! `[path:line]` without having to decide to search (which a small model often does not).

use super::ground::{self, Assertion, Chunk, Cite, Lines, Support, Window};
use super::Agent;
use aha_protocol::{Event, Role, Source};
use std::collections::HashMap;

/// What the model is asked after the passages.
const GROUNDED_ASK: &str = "Answer the question below in one short sentence, in the question's \
language, using only these passages. If they do not contain the answer, say that the documents \
do not say.";

/// [`GROUNDED_ASK`] for a question in Korean. Measured with qwen2.5-coder-0.5b, the instruction
/// in English naming the language did better than the same in Korean (11 of 20 Korean questions
/// right against 8 of 20; a small model copies Korean instructions into its answer).
const GROUNDED_ASK_KO: &str = "Answer the question below in Korean, in one short sentence, using \
only these passages. If they do not contain the answer, say that the documents do not say.";

/// The instruction after the passages, in the question's language where there is one.
fn ask_for(query: &str) -> (&'static str, &'static str) {
    let hangul = query
        .chars()
        .any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c));
    if hangul {
        (GROUNDED_ASK_KO, "질문")
    } else {
        (GROUNDED_ASK, "Question")
    }
}

/// Passages asked of the index; the lines that go into the prompt are chosen among theirs.
const RETRIEVE_K: usize = 6;
/// The most prompt tokens the passages may take. Measured with qwen2.5-coder-0.5b: the lines
/// that match the question best (about 600 tokens) answered more questions right than whole
/// passages (1,500), in a quarter of the time (tools/rag_eval/README.md).
const MAX_BUDGET: usize = 600;

/// The passages' token budget for a model with `n_ctx` tokens of context (0: unknown), leaving
/// room for the conversation and the answer.
pub(super) fn budget(n_ctx: usize) -> usize {
    if n_ctx == 0 {
        MAX_BUDGET
    } else {
        MAX_BUDGET.min(n_ctx / 4)
    }
}

/// What research mode knows during a turn to check the answer's citations: the question, the
/// documents' lines, and which lines the model was shown (retrieved) or found (`search_docs`).
#[derive(Default)]
pub(super) struct Grounding {
    question: String,
    files: HashMap<String, Lines>,
    /// `(path, first, last)`: lines the model saw.
    read: Vec<(String, usize, usize)>,
}

impl Grounding {
    fn saw(&self, path: &str, line: usize) -> bool {
        self.read
            .iter()
            .any(|(p, a, b)| p == path && *a <= line + 1 && line <= b + 1)
    }
}

/// A file's lines as the index counts them (split on `\n` only).
fn split_lines(text: &str) -> Lines {
    text.split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

/// The prompt text for `windows`: grouped by file, best window first, lines without numbers
/// (a small model given numbered lines answers with a number) and runs apart marked `...`.
pub(super) fn passages_text(windows: &[Window], files: &HashMap<String, Lines>) -> String {
    let mut order: Vec<&str> = Vec::new();
    for w in windows {
        if !order.contains(&w.path.as_str()) {
            order.push(&w.path);
        }
    }
    let mut text = String::from("Passages from the documents:\n");
    for path in order {
        text.push_str(&format!("\n--- {path} ---\n"));
        let mut runs: Vec<&Window> = windows.iter().filter(|w| w.path == path).collect();
        runs.sort_by_key(|w| w.start);
        for (k, w) in runs.iter().enumerate() {
            if k > 0 {
                text.push_str("...\n");
            }
            for i in w.start..=w.end {
                text.push_str(files[path][i - 1].trim());
                text.push('\n');
            }
        }
    }
    text
}

/// The most characters of a cited line a `citation` event quotes.
const QUOTE_CHARS: usize = 240;

/// The tools research mode offers: finding and reading documents. A small model given the
/// whole set tends to reach for `run_code` or `git` instead of answering from the passages.
pub(super) const RESEARCH_TOOLS: [&str; 2] = ["search_docs", "read_file"];

impl Agent {
    /// The tools offered this turn: all of the host's, or in research mode only
    /// [`RESEARCH_TOOLS`].
    pub(super) fn offered_specs(&self) -> Vec<aha_protocol::ToolSpec> {
        let specs = self.tools.as_ref().map(|t| t.specs()).unwrap_or_default();
        // Listing MCP tools may have news: a server that did not start, a simplified schema.
        self.tool_notices();
        if !self.cfg.research {
            return specs;
        }
        specs
            .into_iter()
            .filter(|s| RESEARCH_TOOLS.contains(&s.name.as_str()))
            .collect()
    }

    /// A document's lines, read once per turn.
    fn doc_lines(&mut self, path: &str) -> Option<&Lines> {
        if !self.grounding.files.contains_key(path) {
            let text = self.tools.as_ref()?.document(path)?;
            self.grounding
                .files
                .insert(path.to_string(), split_lines(&text));
        }
        self.grounding.files.get(path)
    }

    /// Research mode, at the start of a new turn: retrieves passages for the latest user message,
    /// puts the lines of them that match it best into it, then emits `retrieval`. Without an
    /// index it says so and the turn goes on as a plain one. Returns whether passages went in.
    pub(super) fn retrieve_first(&mut self) -> bool {
        self.grounding = Grounding::default();
        if !self.cfg.research {
            return false;
        }
        let Some(query) = self
            .messages
            .last()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.clone())
        else {
            return false;
        };
        self.grounding.question = query.clone();
        if self.cfg.no_retrieve_first {
            return false;
        }
        let Some(tools) = self.tools.as_ref() else {
            return false;
        };
        let hits = match tools.retrieve(&query, RETRIEVE_K) {
            Ok(h) => h,
            Err(e) => {
                self.emit(Event::Notice {
                    message: format!("research mode: nothing retrieved ({e:#})"),
                });
                return false;
            }
        };
        let mut chunks = Vec::new();
        for h in &hits {
            if self.doc_lines(&h.path).is_none() {
                // The file is gone or unreadable: the passage as the index holds it.
                let mut lines = vec![String::new(); h.start_line.saturating_sub(1)];
                lines.extend(split_lines(&h.text));
                self.grounding.files.insert(h.path.clone(), lines);
            }
            let end = h.end_line.min(self.grounding.files[&h.path].len());
            chunks.push(Chunk {
                path: h.path.clone(),
                start: h.start_line.max(1),
                end,
            });
        }
        let windows = ground::select(
            &query,
            &chunks,
            &self.grounding.files,
            budget(self.engine.context_length()),
        );
        let text = passages_text(&windows, &self.grounding.files);
        let tokens = if windows.is_empty() {
            0
        } else {
            ground::tokens_of(&text)
        };
        let heading = |w: &Window| {
            hits.iter()
                .find(|h| h.path == w.path && h.start_line <= w.best && w.best <= h.end_line)
                .map(|h| h.heading.clone())
                .unwrap_or_default()
        };
        let sources: Vec<Source> = windows
            .iter()
            .map(|w| Source {
                path: w.path.clone(),
                line: w.best,
                start_line: w.start,
                end_line: w.end,
                heading: heading(w),
            })
            .collect();
        self.grounding.read = windows
            .iter()
            .map(|w| (w.path.clone(), w.start, w.end))
            .collect();
        let found = !windows.is_empty();
        if found {
            if let Some(m) = self.messages.last_mut() {
                // The question after the passages: a small model answers what it read last.
                let (ask, label) = ask_for(&query);
                m.content = format!("{text}\n{ask}\n\n{label}: {query}");
            }
        }
        self.emit(Event::Retrieval {
            query,
            hits: sources,
            tokens,
        });
        found
    }

    /// Research mode: the passages a `search_docs` call returned count as read, for the citation
    /// check.
    pub(super) fn note_search(&mut self, name: &str, ok: bool, output: &str) {
        if !self.cfg.research || name != "search_docs" || !ok {
            return;
        }
        for line in output.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(path), Some(a), Some(b)) = (
                v["path"].as_str(),
                v["start_line"].as_u64(),
                v["end_line"].as_u64(),
            ) else {
                continue;
            };
            if self.doc_lines(path).is_some() {
                self.grounding
                    .read
                    .push((path.to_string(), a as usize, b as usize));
            }
        }
    }

    /// Checks one citation of a claim: the file came from the index this turn, the line was in a
    /// passage the model saw, and the line (with one either side) states the claim.
    fn check_cite(&mut self, a: &Assertion, cite: &Cite) -> (bool, String) {
        let known = self.grounding.files.contains_key(&cite.path);
        let Some(lines) = self.doc_lines(&cite.path) else {
            return (
                false,
                format!("{} is not a document of the index", cite.path),
            );
        };
        if cite.line == 0 {
            return (false, "the citation names no line".to_string());
        }
        if cite.line > lines.len() {
            return (false, format!("{} has {} lines", cite.path, lines.len()));
        }
        let text = ground::around(lines, cite.line);
        if !known {
            return (
                false,
                format!("{} was not retrieved or searched this turn", cite.path),
            );
        }
        if !self.grounding.saw(&cite.path, cite.line) {
            return (
                false,
                format!(
                    "line {} is outside the passages retrieved or searched",
                    cite.line
                ),
            );
        }
        match a.supported_by(&text) {
            Support::Yes(why) => (true, why),
            Support::No(why) => (false, why),
        }
    }

    /// What line `line` of a document says, for a person to see beside the citation (at most
    /// [`QUOTE_CHARS`] characters, control characters dropped). Only lines the model was shown
    /// or found are quoted: a citation of any other file in the workspace quotes nothing.
    fn quote(&self, path: &str, line: usize) -> String {
        if !self.grounding.saw(path, line) {
            return String::new();
        }
        let Some(text) = self
            .grounding
            .files
            .get(path)
            .and_then(|l| l.get(line.checked_sub(1)?))
        else {
            return String::new();
        };
        let text: String = text.trim().chars().filter(|c| !c.is_control()).collect();
        if text.chars().count() > QUOTE_CHARS {
            let cut: String = text.chars().take(QUOTE_CHARS).collect();
            format!("{cut}…")
        } else {
            text
        }
    }

    /// The line among the passages the model saw that states the claim best, if one does.
    fn attribute(&self, a: &Assertion) -> Option<(String, usize, String)> {
        let mut best: Option<(usize, String, usize, String)> = None;
        for (path, lo, hi) in &self.grounding.read {
            let Some(lines) = self.grounding.files.get(path) else {
                continue;
            };
            for i in *lo..=(*hi).min(lines.len()) {
                if lines[i - 1].trim().is_empty() {
                    continue;
                }
                // The line itself must hold some of the claim; its neighbours may complete it.
                let own = a.overlap(&lines[i - 1]);
                if own == 0 || best.as_ref().is_some_and(|b| b.0 >= own) {
                    continue;
                }
                if let Support::Yes(why) = a.supported_by(&ground::around(lines, i)) {
                    best = Some((own, path.clone(), i, why));
                }
            }
        }
        best.map(|(_, p, i, why)| (p, i, why))
    }

    /// Research mode, after the answer: checks every citation it wrote, finds a line for each
    /// claim left without one that checks out, flags numbers that no cited passage states, and
    /// emits `citation` events and an `answer_check`.
    pub(super) fn check_answer(&mut self, answer: &str) {
        if !self.cfg.research || self.grounding.question.is_empty() {
            return;
        }
        let question = self.grounding.question.clone();
        let mut checked = 0;
        let mut supported = 0;
        let mut cited = String::new();
        let claims = ground::claims(answer);
        let said: Vec<&str> = claims.iter().map(|c| c.text.as_str()).collect();
        for claim in &claims {
            if ground::abstains(&claim.text) {
                continue;
            }
            checked += 1;
            let a = Assertion::new(&question, &claim.text);
            let mut ok_any = false;
            for cite in &claim.cites {
                let (ok, reason) = self.check_cite(&a, cite);
                if ok {
                    ok_any = true;
                    if let Some(l) = self.grounding.files.get(&cite.path) {
                        cited.push_str(&ground::around(l, cite.line));
                        cited.push('\n');
                    }
                }
                let quote = self.quote(&cite.path, cite.line);
                self.emit(Event::Citation {
                    path: cite.path.clone(),
                    line: cite.line,
                    ok,
                    reason,
                    attached: false,
                    claim: claim.text.clone(),
                    quote,
                });
            }
            if !ok_any {
                if let Some((path, line, reason)) = self.attribute(&a) {
                    ok_any = true;
                    cited.push_str(&ground::around(&self.grounding.files[&path], line));
                    cited.push('\n');
                    let quote = self.quote(&path, line);
                    self.emit(Event::Citation {
                        path,
                        line,
                        ok: true,
                        reason,
                        attached: true,
                        claim: claim.text.clone(),
                        quote,
                    });
                }
            }
            supported += usize::from(ok_any);
        }
        // Numbers the answer states (outside its citations) that neither the question nor a
        // cited passage holds.
        let asked = ground::numbers(&question);
        let have = ground::numbers(&cited);
        let mut unsupported_numbers: Vec<String> = ground::numbers(&said.join(" "))
            .into_iter()
            .filter(|n| !asked.contains(n) && !have.contains(n))
            .collect();
        unsupported_numbers.sort();
        unsupported_numbers.dedup();
        self.emit(Event::AnswerCheck {
            supported: checked > 0 && supported == checked,
            abstained: checked == 0,
            claims: checked,
            supported_claims: supported,
            unsupported_numbers,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_are_grouped_by_file_best_first_without_line_numbers() {
        let files = HashMap::from([
            (
                "a.md".to_string(),
                split_lines("one\ntwo\nthree\nfour\nfive"),
            ),
            ("b.md".to_string(), split_lines("x\ny")),
        ]);
        let w = |path: &str, start, end, best, score| Window {
            path: path.into(),
            start,
            end,
            best,
            score,
        };
        let text = passages_text(
            &[
                w("b.md", 2, 2, 2, 3.0),
                w("a.md", 4, 5, 4, 2.0),
                w("a.md", 1, 2, 1, 1.0),
            ],
            &files,
        );
        assert_eq!(
            text,
            "Passages from the documents:\n\n--- b.md ---\ny\n\n--- a.md ---\none\ntwo\n...\nfour\nfive\n"
        );
    }

    fn events_of(answer: &str, question: &str) -> Vec<Event> {
        use crate::testkit::bench;
        let cfg = crate::AgentConfig {
            research: true,
            ..Default::default()
        };
        let mut b = bench(&[answer], cfg, true);
        b.handle(aha_protocol::Op::UserMessage {
            text: question.into(),
            turn_id: None,
        })
    }

    fn citations(ev: &[Event]) -> Vec<(String, usize, bool, bool)> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Citation {
                    path,
                    line,
                    ok,
                    attached,
                    ..
                } => Some((path.clone(), *line, *ok, *attached)),
                _ => None,
            })
            .collect()
    }

    fn verdict(ev: &[Event]) -> (bool, bool, Vec<String>) {
        ev.iter()
            .find_map(|e| match e {
                Event::AnswerCheck {
                    supported,
                    abstained,
                    unsupported_numbers,
                    ..
                } => Some((*supported, *abstained, unsupported_numbers.clone())),
                _ => None,
            })
            .expect("an answer_check")
    }

    #[test]
    fn a_citation_that_states_the_claim_checks_out() {
        let ev = events_of("Paris [geo.md:4].", "What is the capital of France?");
        assert_eq!(citations(&ev), [("geo.md".into(), 4, true, false)]);
        assert!(ev.iter().any(|e| matches!(e,
            Event::Citation { quote, claim, .. }
                if quote == "Paris is the capital of France." && claim == "Paris.")));
        assert_eq!(verdict(&ev), (true, false, vec![]));
        // The checks come after the answer and before the turn ends.
        let answer = ev
            .iter()
            .rposition(|e| matches!(e, Event::AnswerDelta { .. }))
            .unwrap();
        let cite = ev
            .iter()
            .position(|e| matches!(e, Event::Citation { .. }))
            .unwrap();
        let done = ev
            .iter()
            .position(|e| matches!(e, Event::TurnFinished { .. }))
            .unwrap();
        assert!(answer < cite && cite < done);
    }

    #[test]
    fn wrong_citations_fail_with_a_reason_and_aha_finds_the_line() {
        let ev = events_of(
            "Paris [geo.md:1] [notes.md:3] [geo.md:99].",
            "What is the capital of France?",
        );
        let reasons: Vec<String> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Citation {
                    ok: false, reason, ..
                } => Some(reason.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "line 1 is outside the passages retrieved or searched",
                "notes.md is not a document of the index",
                "geo.md has 6 lines",
            ]
        );
        let c = citations(&ev);
        assert_eq!(c.last().unwrap(), &("geo.md".to_string(), 4, true, true));
        let quotes: Vec<&str> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Citation { quote, .. } => Some(quote.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            quotes,
            ["", "", "", "Paris is the capital of France."],
            "only lines the model saw are quoted"
        );
        assert!(verdict(&ev).0);
    }

    #[test]
    fn an_answer_no_passage_states_is_flagged_and_an_abstention_is_recognised() {
        let ev = events_of(
            "Paris has 3,000,000 people.",
            "How many people live in the capital of France?",
        );
        assert!(citations(&ev).is_empty(), "{ev:?}");
        assert_eq!(verdict(&ev), (false, false, vec!["3000000".to_string()]));
        let ev = events_of(
            "Paris has 2,100,000 people.",
            "How many people live in the capital of France?",
        );
        assert_eq!(citations(&ev), [("geo.md".into(), 5, true, true)]);
        assert_eq!(verdict(&ev), (true, false, vec![]));
        let ev = events_of(
            "The documents do not say.",
            "What is the capital of France?",
        );
        assert!(citations(&ev).is_empty());
        assert_eq!(verdict(&ev), (false, true, vec![]));
    }

    fn user_text(req: &aha_engine::GenerateRequest) -> String {
        let aha_engine::Prompt::Chat(m) = &req.prompt else {
            panic!("not a chat")
        };
        m.last().map(|m| m.content.clone()).unwrap_or_default()
    }

    #[test]
    fn research_mode_retrieves_before_the_first_generation_and_answers_from_it() {
        use crate::testkit::bench;
        let cfg = crate::AgentConfig {
            research: true,
            ..Default::default()
        };
        let mut b = bench(&["Paris [geo.md:4]"], cfg, true);
        let ev = b.handle(aha_protocol::Op::UserMessage {
            text: "What is the capital of France?".into(),
            turn_id: None,
        });
        let at = |f: &dyn Fn(&Event) -> bool| ev.iter().position(f).unwrap();
        let started = at(&|e| matches!(e, Event::TurnStarted { .. }));
        let retrieval = at(&|e| matches!(e, Event::Retrieval { .. }));
        assert!(started < retrieval, "{ev:?}");
        let Event::Retrieval {
            query,
            hits,
            tokens,
        } = &ev[retrieval]
        else {
            unreachable!()
        };
        assert_eq!(query, "What is the capital of France?");
        assert_eq!(
            (hits.len(), hits[0].path.as_str(), hits[0].line),
            (1, "geo.md", 4)
        );
        assert_eq!((hits[0].start_line, hits[0].end_line), (3, 5));
        assert!(*tokens > 10);
        let seen = b.seen.lock().unwrap();
        let sent = user_text(&seen[0]);
        assert!(
            sent.starts_with(
                "Passages from the documents:\n\n--- geo.md ---\n# France\nParis is the capital of France.\nIt has 2,100,000 people.\n"
            ),
            "{sent}"
        );
        assert!(
            sent.ends_with("do not say.\n\nQuestion: What is the capital of France?"),
            "{sent}"
        );
        assert!(
            seen[0].tools.is_none(),
            "no tools: the turn answers from the passages"
        );
    }

    #[test]
    fn without_passages_or_outside_research_mode_nothing_changes() {
        use crate::testkit::bench;
        let research = crate::AgentConfig {
            research: true,
            ..Default::default()
        };
        let mut b = bench(&["I do not know."], research, true);
        let ev = b.handle(aha_protocol::Op::UserMessage {
            text: "Who won?".into(),
            turn_id: None,
        });
        assert!(ev
            .iter()
            .any(|e| matches!(e, Event::Retrieval { hits, .. } if hits.is_empty())));
        let seen = b.seen.lock().unwrap();
        assert_eq!(user_text(&seen[0]), "Who won?");
        // Nothing found: the research tools are offered (the scripted host has none of them).
        assert!(seen[0].tools.is_none());
        drop(seen);

        let mut b = bench(&["Paris."], crate::AgentConfig::default(), true);
        let ev = b.handle(aha_protocol::Op::UserMessage {
            text: "What is the capital of France?".into(),
            turn_id: None,
        });
        assert!(!ev.iter().any(|e| matches!(e, Event::Retrieval { .. })));
        let seen = b.seen.lock().unwrap();
        assert_eq!(user_text(&seen[0]), "What is the capital of France?");
        assert_eq!(
            seen[0].tools.as_ref().map(Vec::len),
            Some(3),
            "every tool offered"
        );
    }

    #[test]
    fn research_mode_turns_on_and_off_for_the_next_turns() {
        use crate::testkit::bench;
        let cfg = crate::AgentConfig {
            system: Some("Be brief.".into()),
            ..Default::default()
        };
        let mut b = bench(&["Paris.", "Paris."], cfg, true);
        let ev = b.handle(aha_protocol::Op::SetResearch { on: true });
        assert!(ev.iter().any(
            |e| matches!(e, Event::Notice { message } if message.starts_with("research mode on"))
        ));
        let ev = b.handle(aha_protocol::Op::UserMessage {
            text: "What is the capital of France?".into(),
            turn_id: None,
        });
        assert!(ev.iter().any(|e| matches!(e, Event::Retrieval { .. })));
        assert!(ev.iter().any(|e| matches!(e, Event::AnswerCheck { .. })));
        b.handle(aha_protocol::Op::SetResearch { on: false });
        let ev = b.handle(aha_protocol::Op::UserMessage {
            text: "What is the capital of France?".into(),
            turn_id: None,
        });
        assert!(!ev
            .iter()
            .any(|e| matches!(e, Event::Retrieval { .. } | Event::AnswerCheck { .. })));
        // The system message: the researcher's instructions before the configured prompt while
        // research mode is on (no tools in the grounded turn), the configured one after it.
        let system = |r: &aha_engine::GenerateRequest| {
            let aha_engine::Prompt::Chat(m) = &r.prompt else {
                panic!("not a chat")
            };
            (m[0].role == Role::System).then(|| m[0].content.clone())
        };
        let researcher = crate::RESEARCHER_PROMPT.trim();
        let agent = crate::AGENT_PROMPT.trim();
        let seen = b.seen.lock().unwrap();
        assert_eq!(system(&seen[0]), Some(format!("{researcher}\n\nBe brief.")));
        assert_eq!(system(&seen[1]), Some(format!("{agent}\n\nBe brief.")));
    }

    #[test]
    fn the_instruction_follows_the_questions_language() {
        assert_eq!(ask_for("대통령의 임기는 몇 년인가?").1, "질문");
        assert_eq!(ask_for("What is the capital?").1, "Question");
    }

    #[test]
    fn the_budget_leaves_room_in_small_contexts() {
        assert_eq!(budget(0), MAX_BUDGET);
        assert_eq!(budget(32768), MAX_BUDGET);
        assert_eq!(budget(2048), 512);
    }
}
