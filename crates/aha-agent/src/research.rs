//! Research mode, retrieve first: before a new turn's first generation the documents are searched
//! with the person's message, and the best passages go into that message, each line numbered
//! and each passage labelled with its path, so the model can answer from them and cite
//! `[path:line]` without having to decide to search (which a small model often does not).

use super::Agent;
use aha_protocol::{Event, Role, Source};

/// What the model is asked after the passages.
const GROUNDED_ASK: &str = "Answer the question below in one short sentence, in the question's \
language, using only these passages. If they do not contain the answer, say that the documents \
do not say.";

/// [`GROUNDED_ASK`] for a question in Korean: a small model follows an instruction in the
/// question's language better.
const GROUNDED_ASK_KO: &str = "아래 질문에 위 자료만 사용해 한국어 한 문장으로 답하세요. 자료에 \
답이 없으면 문서에 나와 있지 않다고 답하세요.";

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

/// Passages asked of the index.
const RETRIEVE_K: usize = 6;
/// The most prompt tokens the passages may take.
const MAX_BUDGET: usize = 1500;

/// Tokens a text is assumed to take: a byte count over three errs on the large side for English
/// (about four bytes a token) and fits Korean (three-byte characters, about one a token).
fn tokens_of(text: &str) -> usize {
    text.len().div_ceil(3)
}

/// The passages' token budget for a model with `n_ctx` tokens of context (0: unknown), leaving
/// room for the conversation and the answer.
pub(super) fn budget(n_ctx: usize) -> usize {
    if n_ctx == 0 {
        MAX_BUDGET
    } else {
        MAX_BUDGET.min(n_ctx / 4)
    }
}

/// The passages of `hits` that fit in `budget` tokens, best first, as prompt text; with the
/// sources kept and the tokens used.
pub(super) fn passages(hits: &[aha_rag::Hit], budget: usize) -> (String, Vec<Source>, usize) {
    let mut text = String::from("Passages from the documents, each line numbered:\n");
    let mut used = tokens_of(&text);
    let mut kept = Vec::new();
    for h in hits {
        let mut p = format!(
            "\n--- {} (lines {}-{}) ---\n",
            h.path, h.start_line, h.end_line
        );
        for (i, line) in h.text.lines().enumerate() {
            p.push_str(&format!("{}: {line}\n", h.start_line + i));
        }
        let t = tokens_of(&p);
        if used + t > budget {
            continue;
        }
        used += t;
        text.push_str(&p);
        kept.push(Source {
            path: h.path.clone(),
            line: h.line,
            start_line: h.start_line,
            end_line: h.end_line,
            heading: h.heading.clone(),
        });
    }
    (text, kept, used)
}

/// The tools research mode offers: finding and reading documents. A small model given the
/// whole set tends to reach for `run_code` or `git` instead of answering from the passages.
pub(super) const RESEARCH_TOOLS: [&str; 2] = ["search_docs", "read_file"];

impl Agent {
    /// The tools offered this turn: all of the host's, or in research mode only
    /// [`RESEARCH_TOOLS`].
    pub(super) fn offered_specs(&self) -> Vec<aha_protocol::ToolSpec> {
        let specs = self.tools.as_ref().map(|t| t.specs()).unwrap_or_default();
        if !self.cfg.research {
            return specs;
        }
        specs
            .into_iter()
            .filter(|s| RESEARCH_TOOLS.contains(&s.name.as_str()))
            .collect()
    }

    /// Research mode, at the start of a new turn: retrieves passages for the latest user message
    /// and appends them to it, then emits `retrieval`. Without an index it says so and the turn
    /// goes on as a plain one. Returns whether passages went in.
    pub(super) fn retrieve_first(&mut self) -> bool {
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
        let (text, hits, tokens) = passages(&hits, budget(self.engine.context_length()));
        let found = !hits.is_empty();
        if found {
            if let Some(m) = self.messages.last_mut() {
                // The question after the passages: a small model answers what it read last.
                let (ask, label) = ask_for(&query);
                m.content = format!("{text}\n{ask}\n\n{label}: {query}");
            }
        }
        self.emit(Event::Retrieval {
            query,
            hits,
            tokens,
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(path: &str, start: usize, text: &str) -> aha_rag::Hit {
        aha_rag::Hit {
            path: path.into(),
            start_line: start,
            end_line: start + text.lines().count() - 1,
            line: start + 1,
            score: 1.0,
            heading: "H".into(),
            snippet: String::new(),
            text: text.into(),
        }
    }

    #[test]
    fn passages_are_numbered_labelled_and_kept_within_the_budget() {
        let hits = [
            hit(
                "ko/constitution.txt",
                70,
                "제70조\n대통령의 임기는 5년으로 하며, 중임할 수 없다.",
            ),
            hit("big.md", 1, &"x".repeat(6000)),
            hit("en/paris.md", 3, "Paris is the capital of France."),
        ];
        let (text, kept, used) = passages(&hits, 400);
        assert!(text.contains(
            "--- ko/constitution.txt (lines 70-71) ---\n70: 제70조\n71: 대통령의 임기는 5년"
        ));
        assert!(text.contains("3: Paris is the capital of France."));
        assert!(
            !text.contains("xxxx"),
            "a passage over the budget is left out"
        );
        assert_eq!(
            kept.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
            ["ko/constitution.txt", "en/paris.md"]
        );
        assert_eq!(kept[0].line, 71);
        assert!(used <= 400 && used >= tokens_of(&text) - 1);
        let (_, none, _) = passages(&hits[1..2], 100);
        assert!(none.is_empty());
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
        assert!(*tokens > 10);
        let seen = b.seen.lock().unwrap();
        let sent = user_text(&seen[0]);
        assert!(sent.starts_with("Passages from the documents"), "{sent}");
        assert!(
            sent.ends_with("do not say.\n\nQuestion: What is the capital of France?"),
            "{sent}"
        );
        assert!(sent.contains(
            "--- geo.md (lines 3-4) ---\n3: # France\n4: Paris is the capital of France."
        ));
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
