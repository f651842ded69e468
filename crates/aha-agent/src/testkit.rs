//! Thread-free doubles for the agent's tests: a scripted engine, scripted tools, and an [`Agent`]
//! built in place whose ops are handled on the test's own thread, so each step of a turn can be
//! checked event by event.

use super::*;
use aha_engine::{GenerateRequest, Prompt};
use serde_json::json;
use std::sync::Mutex;

/// An engine that plays the next scripted reply on each generation. A reply is its answer text,
/// optionally `reasoning|answer`; `PANIC` panics, `ERR` fails before any stats, `LATE_ERR`
/// reports stats and then fails. Answers stream in pieces of up to 7 characters.
pub(super) struct Script {
    pub replies: VecDeque<String>,
    pub seen: Arc<Mutex<Vec<GenerateRequest>>>,
    pub reasoning: bool,
    /// The context length it reports.
    pub ctx: usize,
}

impl Engine for Script {
    fn model_name(&self) -> String {
        "script".into()
    }
    fn device(&self) -> String {
        "none".into()
    }
    fn context_length(&self) -> usize {
        self.ctx
    }
    fn is_reasoning(&self) -> bool {
        self.reasoning
    }
    fn default_sampling(&self) -> SamplingParams {
        SamplingParams::greedy()
    }
    fn generate(
        &mut self,
        req: &GenerateRequest,
        _ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> anyhow::Result<TurnStats> {
        self.seen.lock().unwrap().push(req.clone());
        let reply = self.replies.pop_front().unwrap_or_else(|| "done".into());
        match reply.as_str() {
            "PANIC" => panic!("index out of bounds: the len is 3 but the index is 7"),
            "ERR" => anyhow::bail!("the server went away"),
            _ => {}
        }
        let (reasoning, answer) = reply.split_once('|').unwrap_or(("", &reply));
        if !reasoning.is_empty() {
            emit(Event::ThinkingDelta {
                text: reasoning.into(),
                logprob: None,
                entropy: None,
                top: Vec::new(),
            });
        }
        let chars: Vec<char> = answer.chars().collect();
        for piece in chars.chunks(7) {
            emit(Event::AnswerDelta {
                text: piece.iter().collect(),
                logprob: None,
                entropy: None,
                top: Vec::new(),
            });
        }
        let stats = TurnStats {
            answer_tokens: chars.len(),
            thinking_tokens: reasoning.len(),
            prompt_tokens: self.seen.lock().unwrap().len() * 10,
            decode_tok_s: 1.5,
            finish_reason: aha_protocol::FinishReason::Stop,
            ..Default::default()
        };
        emit(Event::TurnFinished {
            stats: stats.clone(),
            tokens: vec![chars.len() as u32],
        });
        if reply == "LATE_ERR" {
            anyhow::bail!("failed after the stats");
        }
        Ok(stats)
    }
}

/// Tools that record what ran: `echo` (reads), `write` (edits), `exec` (runs code). Arguments
/// steer them: `out` is echo's output (`fill` repeated `times` times, if given), `panic` panics, `cancel` cancels the turn from inside the
/// tool, `fail` fails the call, `bad_preview` fails the preview.
pub(super) struct Tools {
    pub ran: Arc<Mutex<Vec<String>>>,
}

impl ToolHost for Tools {
    fn specs(&self) -> Vec<aha_protocol::ToolSpec> {
        ["echo", "write", "exec"]
            .iter()
            .map(|n| {
                aha_protocol::ToolSpec::new(
                    *n,
                    format!("Does {n}. More."),
                    json!({"type": "object"}),
                )
            })
            .collect()
    }
    fn effect(&self, name: &str) -> Option<Effect> {
        match name {
            "echo" => Some(Effect::ReadOnly),
            "write" => Some(Effect::Edit),
            "exec" => Some(Effect::Execute),
            _ => None,
        }
    }
    fn preview(&self, name: &str, args: &Value) -> anyhow::Result<String> {
        if args["bad_preview"] == true {
            anyhow::bail!("no such file");
        }
        Ok(format!("{name} {args}"))
    }
    fn run(
        &mut self,
        name: &str,
        args: Value,
        turn: u64,
        cancel: Arc<AtomicBool>,
    ) -> (bool, String) {
        self.ran
            .lock()
            .unwrap()
            .push(format!("{name} {args} turn {turn}"));
        if args["panic"] == true {
            panic!("assertion failed: buf.len() >= 8");
        }
        if args["cancel"] == true {
            cancel.store(true, Ordering::SeqCst);
            return (false, "cancelled".into());
        }
        if args["fail"] == true {
            return (false, format!("{name} failed"));
        }
        if let (Some(fill), Some(times)) = (args["fill"].as_str(), args["times"].as_u64()) {
            return (true, fill.repeat(times as usize));
        }
        match args["out"].as_str() {
            Some(out) => (true, out.to_string()),
            None => (true, format!("{name} output")),
        }
    }
    fn undo(&mut self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(vec![PathBuf::from("a.txt"), PathBuf::from("b.txt")])
    }
    fn diff(&self) -> String {
        String::new()
    }
    fn search_docs(&self, query: &str) -> anyhow::Result<String> {
        Ok(format!("hits for {query}"))
    }
    /// `geo.md`, the document [`Self::retrieve`] finds.
    fn document(&self, path: &str) -> Option<String> {
        (path == "geo.md").then(|| {
            "Places\n\n# France\nParis is the capital of France.\nIt has 2,100,000 people.\n"
                .to_string()
        })
    }
    /// One passage for a query about a capital, none otherwise.
    fn retrieve(&self, query: &str, _k: usize) -> anyhow::Result<Vec<aha_rag::Hit>> {
        Ok(if query.contains("capital") {
            vec![aha_rag::Hit {
                path: "geo.md".into(),
                start_line: 3,
                end_line: 4,
                line: 4,
                score: 2.0,
                heading: "France".into(),
                snippet: String::new(),
                text: "# France\nParis is the capital of France.".into(),
            }]
        } else {
            Vec::new()
        })
    }
}

/// An agent driven on the test's thread: `handle` an op, then `take` the events it sent.
pub(super) struct Bench {
    pub agent: Agent,
    pub events: Receiver<Event>,
    /// Ops waiting for the agent (approvals a turn will read).
    pub ops: Sender<Op>,
    pub seen: Arc<Mutex<Vec<GenerateRequest>>>,
    pub ran: Arc<Mutex<Vec<String>>>,
}

/// A bench whose engine plays `replies`, with the scripted tools when `tools`.
pub(super) fn bench(replies: &[&str], cfg: AgentConfig, tools: bool) -> Bench {
    bench_with(replies, cfg, tools, false)
}

/// As [`bench`], with an engine that says whether it is a reasoning model.
pub(super) fn bench_with(
    replies: &[&str],
    cfg: AgentConfig,
    tools: bool,
    reasoning: bool,
) -> Bench {
    build(replies, cfg, tools, reasoning, 4096)
}

fn build(replies: &[&str], cfg: AgentConfig, tools: bool, reasoning: bool, ctx: usize) -> Bench {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let engine = Script {
        replies: replies.iter().map(|s| s.to_string()).collect(),
        seen: seen.clone(),
        reasoning,
        ctx,
    };
    let (op_tx, op_rx) = mpsc::channel();
    let (ev_tx, ev_rx) = mpsc::channel();
    let host: Option<Box<dyn ToolHost>> = tools.then(|| Box::new(Tools { ran: ran.clone() }) as _);
    let agent = Agent::new(
        Box::new(engine),
        cfg,
        Arc::new(Control::default()),
        ev_tx,
        op_rx,
        host,
    );
    Bench {
        agent,
        events: ev_rx,
        ops: op_tx,
        seen,
        ran,
    }
}

/// As [`bench`] with the scripted tools, and an engine whose context holds `ctx` tokens.
pub(super) fn bench_ctx(replies: &[&str], cfg: AgentConfig, ctx: usize) -> Bench {
    build(replies, cfg, true, false, ctx)
}

impl Bench {
    /// Handles `op` on this thread and returns the events it sent.
    pub fn handle(&mut self, op: Op) -> Vec<Event> {
        self.agent.handle(op);
        self.take()
    }

    /// The events sent so far and not yet taken.
    pub fn take(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }
}

/// A `<tool_call>` for `name` with JSON `args`.
pub(super) fn call(name: &str, args: &str) -> String {
    format!("<tool_call>{{\"name\": \"{name}\", \"arguments\": {args}}}</tool_call>")
}

/// One line per event, as JSON, with the tool's run time zeroed (it is the clock's, not ours).
pub(super) fn event_lines(events: &[Event]) -> String {
    let mut out = String::new();
    for e in events {
        let mut e = e.clone();
        if let Event::ToolResult { duration_ms, .. } = &mut e {
            *duration_ms = 0;
        }
        out.push_str(&serde_json::to_string(&e).unwrap());
        out.push('\n');
    }
    out
}

/// What the engine was asked, one block per generation, with the long fixed prompts named.
pub(super) fn request_lines(seen: &[GenerateRequest]) -> String {
    let agent = serde_json::to_string(AGENT_PROMPT.trim()).unwrap();
    let now = serde_json::to_string(ANSWER_NOW_PROMPT.trim()).unwrap();
    let agent = &agent[1..agent.len() - 1];
    let now = &now[1..now.len() - 1];
    let mut out = String::new();
    for r in seen {
        out.push_str(&format!(
            "request: max_tokens {} think {:?} budget {:?} tools {:?} constrain {} no_calls {} prefix {:?} sampling {:?}\n",
            r.max_tokens,
            r.think,
            r.think_budget,
            r.tools.as_ref().map(Vec::len),
            r.constrain_tools,
            r.no_tool_calls,
            r.assistant_prefix,
            r.sampling,
        ));
        let Prompt::Chat(m) = &r.prompt else {
            panic!("the agent sends chats")
        };
        for m in m {
            let line = serde_json::to_string(m).unwrap();
            out.push_str("  ");
            out.push_str(
                &line
                    .replace(agent, "<AGENT_PROMPT>")
                    .replace(now, "<ANSWER_NOW>"),
            );
            out.push('\n');
        }
    }
    out
}
