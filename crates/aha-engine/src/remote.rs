//! The remote engine: streams chat completions from an OpenAI-compatible server (vLLM, SGLang,
//! llama.cpp's server, a hosted API, or another `aha serve`) and turns them into the same events
//! as the local engine.
//!
//! The HTTP exchange runs on a helper thread that forwards response lines over a channel; the
//! generation loop waits on that channel in short slices, so cancel, pause and the stall timeout
//! act within a fraction of a second even while the server sends nothing.

use super::reasoning::{split_reasoning, strip_reasoning, ReasoningParser, Segment};
use super::sampler::SamplingParams;
use super::template::ChatMessage;
use super::{Control, Engine, GenerateRequest, Prompt, ThinkMode};
use aha_protocol::trace::LoopDetector;
use aha_protocol::{Event, FinishReason, LoopAction, TopToken, TurnStats};
use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `[engines.NAME]`: an OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, a hosted API).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Up to and including the version, e.g. `http://gpu-node-0:8000/v1`.
    pub base_url: String,
    /// The model id the server knows.
    pub model: String,
    /// The environment variable that holds the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Seconds to wait for a connection.
    pub connect_timeout_s: Option<f64>,
    /// Seconds without any byte from the server before the stream counts as stalled.
    pub stall_timeout_s: Option<f64>,
    /// Retries after 429 and 5xx answers (and refused connections) before giving up.
    pub max_retries: Option<u32>,
    /// Which conversation rules apply: `deepseek`, `vllm`, `sglang`, `llamacpp`, `openai`
    /// (default: guessed from the URL and model name).
    pub provider: Option<String>,
    /// The model reasons before answering (default: guessed from the model name).
    pub reasoning: Option<bool>,
    /// The model's context length in tokens, for the status bar (default: unknown).
    pub context_length: Option<usize>,
}

/// Whose conversation rules and request fields apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// DeepSeek's own API (`api.deepseek.com`).
    DeepSeek,
    /// OpenAI's API: only the standard request fields.
    OpenAi,
    /// vLLM or SGLang: accept `top_k`, `min_p`, `repetition_penalty`.
    Vllm,
    /// llama.cpp's server: `top_k`, `min_p`, `repeat_penalty`.
    LlamaCpp,
    /// Another `aha serve`.
    Aha,
    /// Anything else: only the standard fields.
    Generic,
}

impl Provider {
    /// The provider a config names, or a guess from the URL.
    pub fn resolve(hint: Option<&str>, base_url: &str) -> Result<Self> {
        Ok(match hint.map(str::to_ascii_lowercase).as_deref() {
            Some("deepseek") => Self::DeepSeek,
            Some("openai") => Self::OpenAi,
            Some("vllm") | Some("sglang") => Self::Vllm,
            Some("llamacpp") | Some("llama.cpp") | Some("llama-cpp") => Self::LlamaCpp,
            Some("aha") => Self::Aha,
            Some("generic") => Self::Generic,
            Some(other) => bail!(
                "unknown provider `{other}`: use deepseek, openai, vllm, sglang, llamacpp, aha or generic"
            ),
            None if base_url.contains("deepseek.com") => Self::DeepSeek,
            None if base_url.contains("openai.com") => Self::OpenAi,
            None => Self::Generic,
        })
    }
}

/// Conversation rules: the messages as they go over the wire for `provider`.
///
/// * Reasoning never goes back by default. Earlier assistant turns lose their `<think>` block
///   (R1's own template drops it too, DeepSeek's API rejects `reasoning_content` in ordinary
///   history, and it would only spend the context).
/// * DeepSeek, thinking with tools: while a tool-calling turn is still in progress (assistant
///   messages with `tool_calls` after the last user message), the API needs that turn's
///   reasoning back as `reasoning_content` so the model continues the same line of thought. Once a
///   new user message starts a turn, it is dropped again like all other reasoning.
/// * An assistant message that only calls tools sends `content: null`; `tool_calls[].function.arguments`
///   is a JSON *string* as in OpenAI's API (an object is serialised).
/// * `tool` messages carry their `tool_call_id` (and `name` where known).
pub fn wire_messages(provider: Provider, msgs: &[ChatMessage]) -> Vec<Value> {
    let last_user = msgs
        .iter()
        .rposition(|m| m.role == aha_protocol::Role::User);
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            let mut o = Map::new();
            o.insert("role".into(), json!(m.role));
            if m.role == aha_protocol::Role::Assistant {
                let orphan_close = match (m.content.find("</think>"), m.content.find("<think>")) {
                    (Some(c), Some(o)) => c < o,
                    (Some(_), None) => true,
                    _ => false,
                };
                let (thinking, _) = split_reasoning(&m.content, orphan_close);
                let answer = strip_reasoning(&m.content);
                let in_tool_turn = m.tool_calls.is_some() && last_user.is_none_or(|u| i > u);
                if provider == Provider::DeepSeek && in_tool_turn && !thinking.is_empty() {
                    o.insert("reasoning_content".into(), json!(thinking));
                }
                if answer.is_empty() && m.tool_calls.is_some() {
                    o.insert("content".into(), Value::Null);
                } else {
                    o.insert("content".into(), json!(answer));
                }
                if let Some(tc) = &m.tool_calls {
                    o.insert("tool_calls".into(), wire_tool_calls(tc));
                }
            } else {
                o.insert("content".into(), json!(m.content));
            }
            if let Some(id) = &m.tool_call_id {
                o.insert("tool_call_id".into(), json!(id));
            }
            if let Some(n) = &m.name {
                o.insert("name".into(), json!(n));
            }
            Value::Object(o)
        })
        .collect()
}

/// Tool calls in OpenAI's wire shape: `arguments` as a JSON string, `type: function`.
fn wire_tool_calls(tc: &Value) -> Value {
    let Some(calls) = tc.as_array() else {
        return tc.clone();
    };
    Value::Array(
        calls
            .iter()
            .map(|c| {
                let mut c = c.clone();
                if let Some(o) = c.as_object_mut() {
                    o.entry("type").or_insert_with(|| json!("function"));
                    if let Some(f) = o.get_mut("function").and_then(Value::as_object_mut) {
                        if let Some(a) = f.get("arguments") {
                            if !a.is_string() {
                                let s = a.to_string();
                                f.insert("arguments".into(), json!(s));
                            }
                        }
                    }
                }
                c
            })
            .collect(),
    )
}

/// Whether a model id looks like a reasoning model (used when the config does not say).
pub fn looks_like_reasoning(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    ["r1", "reasoner", "qwq", "think"]
        .iter()
        .any(|k| m.contains(k))
}

/// An OpenAI-compatible server, as an [`Engine`].
pub struct RemoteEngine {
    /// The engine's name in the config.
    pub name: String,
    cfg: RemoteConfig,
    base_url: String,
    provider: Provider,
    reasoning: bool,
    connect_timeout: Duration,
    stall_timeout: Duration,
    max_retries: u32,
}

impl std::fmt::Debug for RemoteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEngine")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("model", &self.cfg.model)
            .finish()
    }
}

/// Why one attempt failed before the stream began.
struct Failure {
    message: String,
    retryable: bool,
    retry_after: Option<f64>,
}

/// What the HTTP thread reports.
enum Msg {
    /// The server accepted the request; lines follow.
    Connected,
    Line(String),
    /// The body ended (cleanly or not: `Some` holds the read error).
    End(Option<String>),
    Failed(Failure),
}

impl RemoteEngine {
    /// An engine for the configured server `name`. The API key is read from its environment
    /// variable on each request, so it can be set after start.
    pub fn new(name: &str, cfg: &RemoteConfig) -> Result<Self> {
        let provider = Provider::resolve(cfg.provider.as_deref(), &cfg.base_url)?;
        let secs = |v: Option<f64>, d: f64| Duration::from_secs_f64(v.unwrap_or(d).max(0.01));
        Ok(Self {
            name: name.to_string(),
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            provider,
            reasoning: cfg
                .reasoning
                .unwrap_or_else(|| looks_like_reasoning(&cfg.model)),
            connect_timeout: secs(cfg.connect_timeout_s, 10.0),
            stall_timeout: secs(cfg.stall_timeout_s, 60.0),
            max_retries: cfg.max_retries.unwrap_or(3),
            cfg: cfg.clone(),
        })
    }

    /// Which conversation rules apply.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The JSON body of a streaming chat completion request.
    pub fn request_body(&self, req: &GenerateRequest) -> Result<Value> {
        let msgs = match &req.prompt {
            Prompt::Chat(m) => m,
            Prompt::Raw(_) | Prompt::Tokens(_) => {
                bail!("a remote engine takes chat prompts only (no --raw or token prompts)")
            }
        };
        if req.assistant_prefix.is_some() {
            bail!("branching a trace needs the local engine: a remote server cannot continue a partial assistant turn");
        }
        let mut msgs = msgs.clone();
        // aha serve applies the reasoning instruction itself (told through chat_template_kwargs).
        if req.think == ThinkMode::On && !self.reasoning && self.provider != Provider::Aha {
            // In the latest user message, so the server's prefix cache keeps the rest.
            super::add_think_prompt(&mut msgs);
        }
        let s = &req.sampling;
        let mut b = json!({
            "model": self.cfg.model,
            "messages": wire_messages(self.provider, &msgs),
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": req.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
        });
        let o = b.as_object_mut().expect("a JSON object literal");
        match self.provider {
            Provider::Vllm | Provider::Aha | Provider::LlamaCpp => {
                if s.top_k > 0 {
                    o.insert("top_k".into(), json!(s.top_k));
                }
                if s.min_p > 0.0 {
                    o.insert("min_p".into(), json!(s.min_p));
                }
                if s.repeat_penalty != 1.0 {
                    let key = if self.provider == Provider::LlamaCpp {
                        "repeat_penalty"
                    } else {
                        "repetition_penalty"
                    };
                    o.insert(key.into(), json!(s.repeat_penalty));
                }
            }
            Provider::DeepSeek | Provider::OpenAi | Provider::Generic => {}
        }
        if matches!(self.provider, Provider::Vllm | Provider::Aha) && req.think != ThinkMode::Auto {
            // vLLM and SGLang pass these to the chat template (Qwen3 and aha read `enable_thinking`).
            o.insert(
                "chat_template_kwargs".into(),
                json!({"enable_thinking": req.think == ThinkMode::On}),
            );
        }
        if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
            o.insert("tools".into(), json!(tools));
            if req.no_tool_calls {
                o.insert("tool_choice".into(), json!("none"));
            }
        }
        let n = req.trace.top_logprobs;
        if n > 0
            && matches!(
                self.provider,
                Provider::Vllm | Provider::Aha | Provider::LlamaCpp
            )
        {
            // OpenAI's per-token log-probabilities, from the servers people run themselves;
            // hosted reasoning models (DeepSeek's reasoner, OpenAI's o-series) refuse the
            // request outright, and the workbench always asks.
            let o = b.as_object_mut().expect("a JSON object literal");
            o.insert("logprobs".into(), json!(true));
            o.insert("top_logprobs".into(), json!(n));
        }
        Ok(b)
    }

    /// Starts one attempt on a helper thread.
    fn start(&self, body: String) -> mpsc::Receiver<Msg> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(1024);
        let url = format!("{}/chat/completions", self.base_url);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(self.connect_timeout)
            // The loop enforces the stall timeout; this only lets an abandoned thread end.
            .timeout_read(self.stall_timeout + Duration::from_secs(5))
            .build();
        let mut r = agent
            .post(&url)
            .set("Content-Type", "application/json")
            .set("Accept", "text/event-stream");
        for (k, v) in &self.cfg.headers {
            r = r.set(k, v);
        }
        if let Some(var) = &self.cfg.api_key_env {
            if let Ok(key) = std::env::var(var) {
                r = r.set("Authorization", &format!("Bearer {key}"));
            }
        }
        let ctx = ErrorContext {
            url: self.base_url.clone(),
            model: self.cfg.model.clone(),
            key_env: self.cfg.api_key_env.clone(),
        };
        std::thread::spawn(move || match r.send_string(&body) {
            Ok(resp) => {
                if tx.send(Msg::Connected).is_err() {
                    return;
                }
                let rd = std::io::BufReader::new(resp.into_reader());
                read_lines(rd, |m| tx.send(m).is_ok());
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed(ctx.classify(e)));
            }
        });
        rx
    }
}

/// What an error message needs to say where to look.
struct ErrorContext {
    url: String,
    model: String,
    key_env: Option<String>,
}

impl ErrorContext {
    fn classify(&self, e: ureq::Error) -> Failure {
        let url = &self.url;
        match e {
            ureq::Error::Status(code, resp) => {
                let retry_after = resp
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<f64>().ok());
                let body = resp.into_string().unwrap_or_default();
                let detail = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v["error"]["message"]
                            .as_str()
                            .or(v["error"].as_str())
                            .or(v["message"].as_str())
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| body.chars().take(300).collect());
                let message = match code {
                    401 | 403 => match &self.key_env {
                        Some(var) if std::env::var_os(var).is_some() => format!(
                            "{url} refused the API key in ${var} (HTTP {code}): {detail}"
                        ),
                        Some(var) => format!(
                            "{url} needs an API key (HTTP {code}): set the environment variable ${var}"
                        ),
                        None => format!(
                            "{url} needs an API key (HTTP {code}): set api_key_env in this engine's config and put the key in that environment variable"
                        ),
                    },
                    404 => format!(
                        "{url} has no model `{}` or no /chat/completions (HTTP 404): {detail}",
                        self.model
                    ),
                    _ => format!("{url} answered HTTP {code}: {detail}"),
                };
                Failure {
                    message,
                    retryable: code == 429 || code >= 500,
                    retry_after,
                }
            }
            ureq::Error::Transport(t) => {
                let text = t.to_string();
                let lower = text.to_ascii_lowercase();
                let message = match t.kind() {
                    ureq::ErrorKind::Dns => {
                        format!("cannot resolve the host of {url} (DNS): {text}")
                    }
                    _ if lower.contains("certificate")
                        || lower.contains("tls")
                        || lower.contains("handshake") =>
                    {
                        format!(
                            "TLS error talking to {url}: {text} (check http vs https and the server's certificate)"
                        )
                    }
                    ureq::ErrorKind::ConnectionFailed if lower.contains("timed out") => {
                        format!("connecting to {url} timed out: {text}")
                    }
                    ureq::ErrorKind::ConnectionFailed => format!(
                        "cannot connect to {url}: {text} (is the server running and the port right?)"
                    ),
                    _ => format!("request to {url} failed: {text}"),
                };
                Failure {
                    message,
                    retryable: false,
                    retry_after: None,
                }
            }
        }
    }
}

/// Bounded exponential backoff with jitter: 0.5 s, 1 s, 2 s … capped at 8 s, each scaled by a
/// random factor in [0.5, 1.0) so many clients do not retry in step; a server's Retry-After wins
/// (up to 30 s).
pub fn backoff(attempt: u32, retry_after: Option<f64>) -> Duration {
    if let Some(s) = retry_after {
        return Duration::from_secs_f64(s.clamp(0.0, 30.0));
    }
    let base = (0.5 * 2f64.powi(attempt.min(10) as i32)).min(8.0);
    let jitter = 0.5 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64(base * jitter)
}

/// Sleeps up to `d`, waking early on cancel. Returns false when cancelled.
fn sleep_unless_cancelled(d: Duration, ctrl: &Control) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if ctrl.cancelled() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    !ctrl.cancelled()
}

/// One native tool call, put together from its deltas.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Turns streamed `delta` objects into events.
struct StreamState {
    parser: ReasoningParser,
    /// Content held while it may still be a leading `<think>` (reasoning models start inside).
    lead: Option<String>,
    native_reasoning: bool,
    calls: Vec<PartialCall>,
    thinking_deltas: usize,
    answer_deltas: usize,
    finish: Option<String>,
    usage: Option<Value>,
    malformed: usize,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    emitted: bool,
    /// The log-probability and alternatives of the last token of the chunk being read (OpenAI's
    /// `logprobs`), for the first event that chunk makes.
    chunk_lp: Option<(f32, Vec<TopToken>)>,
    /// Watches the reasoning for loops (`trace.loops`; absent when off) and what to do.
    loops: Option<(LoopDetector, LoopAction)>,
    /// A loop ended the stream (`loops = stop`).
    looped: bool,
}

/// The last token's log-probability and alternatives in a chunk's `logprobs` object (its
/// `content`, or the `reasoning_content` that aha serve adds).
fn last_logprob(lp: &Value) -> Option<(f32, Vec<TopToken>)> {
    let entry = ["content", "reasoning_content"]
        .iter()
        .filter_map(|k| lp[k].as_array().and_then(|a| a.last()))
        .next()?;
    let logprob = entry["logprob"].as_f64()? as f32;
    let top = entry["top_logprobs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some(TopToken {
                        text: t["token"].as_str()?.to_string(),
                        logprob: t["logprob"].as_f64()? as f32,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some((logprob, top))
}

impl StreamState {
    fn new(reasoning_model: bool) -> Self {
        Self {
            parser: ReasoningParser::new(reasoning_model),
            lead: reasoning_model.then(String::new),
            native_reasoning: false,
            calls: Vec::new(),
            thinking_deltas: 0,
            answer_deltas: 0,
            finish: None,
            usage: None,
            malformed: 0,
            first_at: None,
            last_at: None,
            emitted: false,
            chunk_lp: None,
            loops: None,
            looped: false,
        }
    }

    /// Watches the reasoning for loops as `trace` says.
    fn with_loops(mut self, trace: &aha_protocol::TraceOptions) -> Self {
        self.loops = (trace.loops != LoopAction::Off)
            .then(|| (LoopDetector::new(trace.loop_repeats), trace.loops));
        self
    }

    /// Feeds reasoning text to the loop detector. A server's stream cannot take text written
    /// into it, so a nudge is only a warning here; `stop` ends the stream.
    fn watch_loops(&mut self, thought: &str, emit: &mut dyn FnMut(Event)) {
        let Some((det, want)) = self.loops.as_mut() else {
            return;
        };
        let Some(hit) = det.push(thought) else {
            return;
        };
        let action = match want {
            LoopAction::Stop => {
                self.looped = true;
                LoopAction::Stop
            }
            _ => LoopAction::Warn,
        };
        emit(Event::ReasoningLoop {
            count: hit.count,
            text: hit.text,
            action,
        });
    }

    fn emit_segments(&mut self, segs: Vec<Segment>, emit: &mut dyn FnMut(Event)) {
        for s in segs {
            self.emitted = true;
            let (lp, top) = self.chunk_lp.take().unzip();
            let thought = match &s {
                Segment::Thinking(t) => Some(t.clone()),
                Segment::Answer(_) => None,
            };
            emit(s.into_event(lp, None, top.unwrap_or_default()));
            if let Some(t) = thought {
                self.watch_loops(&t, emit);
            }
        }
    }

    fn touch(&mut self) {
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
    }

    /// Content text: through the `<think>` parser, after settling a leading tag.
    fn content(&mut self, text: &str, emit: &mut dyn FnMut(Event)) {
        let text = match self.lead.as_mut() {
            Some(lead) => {
                lead.push_str(text);
                let t = lead.trim_start();
                if t.len() < "<think>".len() && "<think>".starts_with(t) {
                    return; // could still be the opening tag
                }
                let rest = t.strip_prefix("<think>").unwrap_or(t).to_string();
                self.lead = None;
                rest
            }
            None => text.to_string(),
        };
        let segs = self.parser.push(&text);
        self.emit_segments(segs, emit);
    }

    /// Reasoning from a `reasoning_content` / `reasoning` field.
    fn reasoning(&mut self, text: &str, emit: &mut dyn FnMut(Event)) {
        if !self.native_reasoning {
            self.native_reasoning = true;
            // The server separates reasoning itself, so content is answer from here on.
            if self.parser.in_thinking() {
                let held = self.lead.take().unwrap_or_default();
                let mut segs = self.parser.push(&held);
                segs.extend(self.parser.close_thinking());
                self.emit_segments(segs, emit);
            }
            self.lead = None;
        }
        if !text.is_empty() {
            self.emitted = true;
            let (logprob, top) = self.chunk_lp.take().unzip();
            emit(Event::ThinkingDelta {
                text: text.to_string(),
                logprob,
                entropy: None,
                top: top.unwrap_or_default(),
            });
            self.watch_loops(text, emit);
        }
    }

    /// One decoded SSE `data:` payload.
    fn chunk(&mut self, v: &Value, emit: &mut dyn FnMut(Event)) -> Result<()> {
        if let Some(err) = v.get("error") {
            let msg = err["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string());
            bail!("the server reported an error mid-stream: {msg}");
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = v["choices"].get(0) else {
            return Ok(());
        };
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
        self.chunk_lp = last_logprob(&choice["logprobs"]);
        let d = &choice["delta"];
        let r = d["reasoning_content"]
            .as_str()
            .or_else(|| d["reasoning"].as_str());
        if let Some(r) = r.filter(|r| !r.is_empty()) {
            self.touch();
            self.thinking_deltas += 1;
            self.reasoning(r, emit);
        }
        if let Some(c) = d["content"].as_str().filter(|c| !c.is_empty()) {
            self.touch();
            if self.parser.in_thinking() {
                self.thinking_deltas += 1;
            } else {
                self.answer_deltas += 1;
            }
            self.content(c, emit);
        }
        if let Some(tcs) = d["tool_calls"].as_array() {
            self.touch();
            for tc in tcs {
                let i = tc["index"].as_u64().unwrap_or(self.calls.len() as u64) as usize;
                if i > 64 {
                    continue;
                }
                while self.calls.len() <= i {
                    self.calls.push(PartialCall::default());
                }
                let c = &mut self.calls[i];
                if let Some(id) = tc["id"].as_str() {
                    c.id = id.to_string();
                }
                if let Some(n) = tc["function"]["name"].as_str() {
                    c.name.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    c.arguments.push_str(a);
                }
            }
        }
        Ok(())
    }

    /// Flushes held text and reports the tool calls.
    fn finish(&mut self, emit: &mut dyn FnMut(Event)) {
        if let Some(lead) = self.lead.take() {
            let segs = self.parser.push(&lead);
            self.emit_segments(segs, emit);
        }
        let segs = self.parser.finish();
        self.emit_segments(segs, emit);
        for (i, c) in std::mem::take(&mut self.calls).into_iter().enumerate() {
            if c.name.is_empty() && c.arguments.is_empty() {
                continue;
            }
            let arguments = if c.arguments.trim().is_empty() {
                json!({})
            } else {
                // Unparsable arguments stay a string: the agent reports them to the model.
                serde_json::from_str(&c.arguments).unwrap_or(Value::String(c.arguments))
            };
            self.emitted = true;
            emit(Event::ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{i}")
                } else {
                    c.id
                },
                name: c.name,
                arguments,
            });
        }
    }

    /// Token counts and speeds from the server's usage (or counted deltas).
    fn stats(&self, t0: Instant) -> TurnStats {
        let u = self.usage.as_ref();
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).map(|x| x as usize);
        let prompt = n(u.map(|u| &u["prompt_tokens"])).unwrap_or(0);
        let cached = n(u.map(|u| &u["prompt_tokens_details"]["cached_tokens"])).unwrap_or(0);
        let completion = n(u.map(|u| &u["completion_tokens"]));
        let reasoning = n(u.map(|u| &u["completion_tokens_details"]["reasoning_tokens"]));
        let (thinking, answer) = match (completion, reasoning) {
            (Some(c), Some(r)) => (r, c.saturating_sub(r)),
            (Some(c), None) => {
                let t = self.thinking_deltas.min(c);
                (t, c - t)
            }
            _ => (self.thinking_deltas, self.answer_deltas),
        };
        let mut s = TurnStats {
            prompt_tokens: prompt,
            prefilled_tokens: prompt.saturating_sub(cached),
            thinking_tokens: thinking,
            answer_tokens: answer,
            ..TurnStats::default()
        };
        if let Some(f) = self.first_at {
            let ttft = f.duration_since(t0).as_secs_f64();
            s.ttft_ms = ttft * 1000.0;
            s.prefill_tok_s = s.prefilled_tokens as f64 / ttft.max(1e-9);
            let generated = thinking + answer;
            if let Some(l) = self.last_at {
                let dt = l.duration_since(f).as_secs_f64();
                if generated > 1 && dt > 0.0 {
                    s.decode_tok_s = (generated - 1) as f64 / dt;
                }
            }
        }
        s
    }
}

/// Splits one SSE line; `Some(data)` for a `data:` line, `None` for others. Counts lines that are
/// not SSE at all.
fn sse_field(line: &str) -> std::result::Result<Option<&str>, ()> {
    if line.is_empty() || line.starts_with(':') {
        return Ok(None);
    }
    let (field, value) = match line.split_once(':') {
        Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
        None => (line, ""),
    };
    match field {
        "data" => Ok(Some(value)),
        "event" | "id" | "retry" => Ok(None),
        _ => Err(()),
    }
}

/// Reads response lines as the HTTP thread forwards them, until the end, an error (invalid UTF-8
/// cuts the stream) or `send` refusing more.
fn read_lines(mut rd: impl BufRead, mut send: impl FnMut(Msg) -> bool) {
    let mut line = String::new();
    loop {
        line.clear();
        match rd.read_line(&mut line) {
            Ok(0) => {
                send(Msg::End(None));
                return;
            }
            Ok(_) => {
                let l = line.trim_end_matches(['\r', '\n']).to_string();
                if !send(Msg::Line(l)) {
                    return;
                }
            }
            Err(e) => {
                send(Msg::End(Some(e.to_string())));
                return;
            }
        }
    }
}

/// Gathers SSE lines into events (`data:` lines joined until a blank line) and hands each
/// complete one to the [`StreamState`].
#[derive(Default)]
struct SseEvents {
    data: String,
    done: bool,
}

impl SseEvents {
    fn line(
        &mut self,
        st: &mut StreamState,
        line: &str,
        emit: &mut dyn FnMut(Event),
    ) -> Result<()> {
        if line.is_empty() {
            return dispatch(st, &mut self.data, &mut self.done, emit);
        }
        match sse_field(line) {
            Ok(Some(d)) => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(d);
            }
            Ok(None) => {}
            Err(()) => st.malformed += 1,
        }
        Ok(())
    }

    /// The stream ended: an event without its closing blank line still counts.
    fn end(&mut self, st: &mut StreamState, emit: &mut dyn FnMut(Event)) -> Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        dispatch(st, &mut self.data, &mut self.done, emit)
    }
}

/// What [`decode_sse`] made of a response body.
#[derive(Debug)]
pub struct SseDecoded {
    /// The events, in order, as `generate` emits them (without its notices and `TurnFinished`).
    pub events: Vec<Event>,
    /// `[DONE]` arrived.
    pub done: bool,
    /// Lines that were not SSE, and `data:` payloads that were not JSON.
    pub malformed: usize,
    /// Why the stream ended early: cut (not UTF-8) or an error the server sent mid-stream.
    pub error: Option<String>,
}

/// The remote engine's SSE reader without the network: the response body arrives in `reads`
/// (each one read as the socket would return it), goes through the same line reader, event
/// assembly and delta decoding as [`RemoteEngine::generate`]. For fuzzing and property tests.
pub fn decode_sse<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
    reasoning_model: bool,
) -> SseDecoded {
    /// Hands out one piece per `read` call, as a socket returns segments.
    struct Pieces<'a, I> {
        rest: I,
        cur: &'a [u8],
    }
    impl<'a, I: Iterator<Item = &'a [u8]>> std::io::Read for Pieces<'a, I> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            while self.cur.is_empty() {
                match self.rest.next() {
                    Some(p) => self.cur = p,
                    None => return Ok(0),
                }
            }
            let n = buf.len().min(self.cur.len());
            buf[..n].copy_from_slice(&self.cur[..n]);
            self.cur = &self.cur[n..];
            Ok(n)
        }
    }
    let mut msgs = Vec::new();
    let rd = std::io::BufReader::new(Pieces {
        rest: reads.into_iter(),
        cur: &[],
    });
    read_lines(rd, |m| {
        msgs.push(m);
        true
    });
    let mut st = StreamState::new(reasoning_model);
    let mut sse = SseEvents::default();
    let mut events = Vec::new();
    let mut emit = |e: Event| events.push(e);
    let mut error = None;
    for m in msgs {
        let r = match m {
            Msg::Line(l) => sse.line(&mut st, &l, &mut emit),
            Msg::End(cut) => {
                let r = sse.end(&mut st, &mut emit);
                if !sse.done {
                    error = cut.map(|e| format!("the stream was cut: {e}"));
                }
                r
            }
            Msg::Connected | Msg::Failed(_) => Ok(()),
        };
        if let Err(e) = r {
            error = Some(e.to_string());
            break;
        }
        if sse.done {
            break;
        }
    }
    st.finish(&mut emit);
    SseDecoded {
        events,
        done: sse.done,
        malformed: st.malformed,
        error,
    }
}

impl Engine for RemoteEngine {
    fn model_name(&self) -> String {
        self.cfg.model.clone()
    }
    fn device(&self) -> String {
        format!("remote {}", self.base_url)
    }
    fn context_length(&self) -> usize {
        self.cfg.context_length.unwrap_or(0)
    }
    fn limit_context(&mut self, n: usize) {
        // The server's own limit is unknown unless configured: `--ctx` sets it.
        let n = n.max(2);
        self.cfg.context_length = Some(self.cfg.context_length.map_or(n, |c| c.min(n)));
    }
    fn is_reasoning(&self) -> bool {
        self.reasoning
    }
    fn default_sampling(&self) -> SamplingParams {
        if self.reasoning {
            SamplingParams::r1()
        } else {
            SamplingParams::default()
        }
    }

    fn generate(
        &mut self,
        req: &GenerateRequest,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<TurnStats> {
        let body = serde_json::to_string(&self.request_body(req)?)?;
        let t0 = Instant::now();
        let mut st =
            StreamState::new(self.reasoning && req.think != ThinkMode::Off).with_loops(&req.trace);
        let Some(rx) = self.connect(&body, ctrl, emit)? else {
            return Ok(cancelled_turn(&mut st, t0, emit));
        };
        let incomplete = match read_stream(&rx, ctrl, self.stall_timeout, &mut st, emit)? {
            Streamed::Cancelled => return Ok(cancelled_turn(&mut st, t0, emit)),
            Streamed::Looped => {
                return Ok(ended_turn(&mut st, t0, FinishReason::Loop, emit));
            }
            Streamed::Done => None,
            Streamed::Incomplete(why) => Some(why),
        };
        self.finish_turn(&mut st, incomplete, t0, emit)
    }
}

/// How often the generation loop looks at cancel, pause and the stall clock while waiting.
const POLL: Duration = Duration::from_millis(50);

impl RemoteEngine {
    /// Sends the request, retrying 429/5xx answers with backoff (a notice per retry). `None` when
    /// cancelled meanwhile; the receiver then carries the response lines.
    fn connect(
        &self,
        body: &str,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Option<mpsc::Receiver<Msg>>> {
        let mut attempt = 0u32;
        loop {
            let rx = self.start(body.to_string());
            let Some(first) = first_message(&rx, ctrl, self.stall_timeout, &self.base_url)? else {
                return Ok(None);
            };
            match first {
                Msg::Connected => return Ok(Some(rx)),
                Msg::Failed(f) if f.retryable && attempt < self.max_retries => {
                    let d = backoff(attempt, f.retry_after);
                    attempt += 1;
                    emit(Event::Notice {
                        message: format!(
                            "{}; retrying in {:.1} s (retry {attempt} of {})",
                            f.message,
                            d.as_secs_f64(),
                            self.max_retries
                        ),
                    });
                    if !sleep_unless_cancelled(d, ctrl) {
                        return Ok(None);
                    }
                }
                Msg::Failed(f) if f.retryable && attempt > 0 => {
                    bail!("{} (gave up after {attempt} retries)", f.message)
                }
                Msg::Failed(f) => bail!("{}", f.message),
                Msg::Line(_) | Msg::End(_) => bail!("the HTTP thread answered out of order"),
            }
        }
    }

    /// Ends the turn after the stream: flushes `st`, reports skipped lines and settles the finish
    /// reason. A stream that broke off before any output is an error; one that broke off later
    /// keeps what arrived as `incomplete`.
    fn finish_turn(
        &self,
        st: &mut StreamState,
        incomplete: Option<String>,
        t0: Instant,
        emit: &mut dyn FnMut(Event),
    ) -> Result<TurnStats> {
        st.finish(emit);
        if st.malformed > 0 {
            emit(Event::Notice {
                message: format!("skipped {} malformed SSE line(s)", st.malformed),
            });
        }
        let mut stats = st.stats(t0);
        stats.finish_reason = match incomplete {
            Some(why) => {
                if !st.emitted {
                    bail!("{why} before any output arrived from {}", self.base_url);
                }
                emit(Event::Notice {
                    message: format!("{why}; keeping what arrived (turn incomplete)"),
                });
                FinishReason::Incomplete
            }
            None => finish_reason(st.finish.as_deref()),
        };
        emit(Event::TurnFinished {
            stats: stats.clone(),
            tokens: vec![],
        });
        Ok(stats)
    }
}

/// The server's finish reason as the turn reports it: ending on tool calls (or with no reason)
/// is `stop`; anything else (`length`, `content_filter`…) passes through.
fn finish_reason(server: Option<&str>) -> FinishReason {
    match server {
        Some("tool_calls") | Some("function_call") | None => FinishReason::Stop,
        Some(f) => FinishReason::from_name(f),
    }
}

/// Ends a cancelled turn: flushes what arrived and emits `TurnFinished` (`cancelled`).
fn cancelled_turn(st: &mut StreamState, t0: Instant, emit: &mut dyn FnMut(Event)) -> TurnStats {
    ended_turn(st, t0, FinishReason::Cancelled, emit)
}

/// Ends a turn cut short on aha's side: flushes what arrived and emits `TurnFinished` with
/// `reason`.
fn ended_turn(
    st: &mut StreamState,
    t0: Instant,
    reason: FinishReason,
    emit: &mut dyn FnMut(Event),
) -> TurnStats {
    st.finish(emit);
    let mut s = st.stats(t0);
    s.finish_reason = reason;
    emit(Event::TurnFinished {
        stats: s.clone(),
        tokens: vec![],
    });
    s
}

/// Waits for the HTTP thread's first message (connected, or why not), minding cancel and the
/// stall timeout, whose clock a pause holds. `None` when cancelled.
fn first_message(
    rx: &mpsc::Receiver<Msg>,
    ctrl: &Control,
    stall_timeout: Duration,
    base_url: &str,
) -> Result<Option<Msg>> {
    let mut waited = Instant::now();
    loop {
        if ctrl.cancelled() {
            return Ok(None);
        }
        match rx.recv_timeout(POLL) {
            Ok(m) => return Ok(Some(m)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if ctrl.is_paused() {
                    waited = Instant::now();
                } else if waited.elapsed() > stall_timeout {
                    bail!(
                        "{} accepted the connection but sent no answer for {:.0} s (stall_timeout_s)",
                        base_url,
                        stall_timeout.as_secs_f64()
                    );
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the HTTP thread for {} ended unexpectedly", base_url)
            }
        }
    }
}

/// How the response stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Streamed {
    /// `[DONE]` arrived.
    Done,
    /// It stalled, was cut, or ended without `[DONE]`: why.
    Incomplete(String),
    Cancelled,
    /// The reasoning went in circles and the loop setting is `stop`.
    Looped,
}

/// Reads the response lines until the stream ends: SSE lines are gathered into events and
/// decoded by `st`, which emits them. A pause is waited out (the stall clock restarts after it).
fn read_stream(
    rx: &mpsc::Receiver<Msg>,
    ctrl: &Control,
    stall_timeout: Duration,
    st: &mut StreamState,
    emit: &mut dyn FnMut(Event),
) -> Result<Streamed> {
    let mut sse = SseEvents::default();
    let mut last_byte = Instant::now();
    while !sse.done {
        if ctrl.wait_while_paused(emit) {
            last_byte = Instant::now();
        }
        if ctrl.cancelled() {
            return Ok(Streamed::Cancelled);
        }
        let msg = match rx.recv_timeout(POLL) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if last_byte.elapsed() > stall_timeout {
                    return Ok(Streamed::Incomplete(format!(
                        "the stream stalled: no data for {:.0} s (stall_timeout_s)",
                        stall_timeout.as_secs_f64()
                    )));
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Msg::End(Some("lost".into())),
        };
        last_byte = Instant::now();
        match msg {
            Msg::Line(l) => {
                sse.line(st, &l, emit)?;
                if st.looped {
                    return Ok(Streamed::Looped);
                }
            }
            Msg::End(err) => {
                sse.end(st, emit)?;
                if sse.done {
                    break;
                }
                return Ok(Streamed::Incomplete(match err {
                    Some(e) => format!("the stream was cut: {e}"),
                    None => "the stream ended before [DONE]".to_string(),
                }));
            }
            Msg::Connected | Msg::Failed(_) => continue,
        }
    }
    Ok(Streamed::Done)
}

/// Handles one complete SSE event's data.
fn dispatch(
    st: &mut StreamState,
    data: &mut String,
    done: &mut bool,
    emit: &mut dyn FnMut(Event),
) -> Result<()> {
    let d = std::mem::take(data);
    let d = d.trim();
    if d.is_empty() {
        return Ok(());
    }
    if d == "[DONE]" {
        *done = true;
        return Ok(());
    }
    match serde_json::from_str::<Value>(d) {
        Ok(v) => st.chunk(&v, emit),
        Err(_) => {
            // Servers that forget the blank line between events: try each line alone.
            for l in d.lines().filter(|l| !l.trim().is_empty()) {
                let l = l.trim();
                if l == "[DONE]" {
                    *done = true;
                } else if let Ok(v) = serde_json::from_str::<Value>(l) {
                    st.chunk(&v, emit)?;
                } else {
                    st.malformed += 1;
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_drops_reasoning_except_deepseek_tool_turns() {
        let mut call = ChatMessage::assistant("<think>need weather</think>");
        call.tool_calls =
            Some(json!([{"id":"c1","function":{"name":"w","arguments":{"city":"Paris"}}}]));
        let mut result = ChatMessage::tool("sunny");
        result.tool_call_id = Some("c1".into());
        let msgs = vec![
            ChatMessage::user("hi"),
            ChatMessage::assistant("<think>greet</think>\n\nHello"),
            ChatMessage::user("weather?"),
            call,
            result,
        ];
        let v = wire_messages(Provider::Vllm, &msgs);
        assert_eq!(v[1]["content"], "Hello");
        assert!(v[3].get("reasoning_content").is_none());
        assert_eq!(v[3]["content"], Value::Null);
        assert_eq!(
            v[3]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(v[4]["tool_call_id"], "c1");
        let v = wire_messages(Provider::DeepSeek, &msgs);
        assert_eq!(v[3]["reasoning_content"], "need weather");
        assert!(v[1].get("reasoning_content").is_none());
    }

    #[test]
    fn sse_fields() {
        assert_eq!(sse_field("data: {}"), Ok(Some("{}")));
        assert_eq!(sse_field("data:{}"), Ok(Some("{}")));
        assert_eq!(sse_field(": keep-alive"), Ok(None));
        assert_eq!(sse_field("event: x"), Ok(None));
        assert_eq!(sse_field("garbage"), Err(()));
    }

    #[test]
    fn backoff_is_bounded() {
        for a in 0..20 {
            assert!(backoff(a, None) <= Duration::from_secs(8));
        }
        assert_eq!(backoff(0, Some(2.0)), Duration::from_secs(2));
    }

    /// A channel holding `msgs` as the HTTP thread would have sent them, its sender dropped (as
    /// when the thread ends).
    fn channel(msgs: Vec<Msg>) -> mpsc::Receiver<Msg> {
        let (tx, rx) = mpsc::channel();
        for m in msgs {
            tx.send(m).unwrap();
        }
        rx
    }

    fn lines(ls: &[&str]) -> Vec<Msg> {
        ls.iter().map(|l| Msg::Line(l.to_string())).collect()
    }

    fn answer(events: &[Event]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                Event::AnswerDelta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Everything shown, reasoning and answer.
    fn shown(events: &[Event]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                Event::AnswerDelta { text, .. } | Event::ThinkingDelta { text, .. } => {
                    Some(text.as_str())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn finish_reasons_are_normalised() {
        assert_eq!(finish_reason(None).as_str(), "stop");
        assert_eq!(finish_reason(Some("stop")).as_str(), "stop");
        assert_eq!(finish_reason(Some("tool_calls")).as_str(), "stop");
        assert_eq!(finish_reason(Some("function_call")).as_str(), "stop");
        assert_eq!(finish_reason(Some("length")).as_str(), "length");
        assert_eq!(
            finish_reason(Some("content_filter")).as_str(),
            "content_filter"
        );
    }

    #[test]
    fn sse_lines_gather_into_events() {
        let mut st = StreamState::new(false);
        let mut sse = SseEvents::default();
        let mut events = Vec::new();
        let mut emit = |e: Event| events.push(e);
        let chunk = |t: &str| format!("data: {}", json!({"choices": [{"delta": {"content": t}}]}));
        for l in [
            ": keep-alive".to_string(),
            chunk("Hel"),
            String::new(),
            "event: message".to_string(),
            // One event's data over two lines is joined before it is decoded.
            "data: {\"choices\": [{\"delta\":".to_string(),
            "data: {\"content\": \"lo\"}, \"finish_reason\": \"length\"}]}".to_string(),
            String::new(),
            "nonsense".to_string(),
            "data: [DONE]".to_string(),
        ] {
            sse.line(&mut st, &l, &mut emit).unwrap();
        }
        assert!(!sse.done, "an event counts at its blank line");
        sse.end(&mut st, &mut emit).unwrap();
        assert!(sse.done, "…or at the end of the stream");
        st.finish(&mut emit);
        assert_eq!(answer(&events), "Hello");
        assert_eq!(st.malformed, 1);
        assert_eq!(st.finish.as_deref(), Some("length"));
    }

    #[test]
    fn sse_error_mid_stream_is_an_error() {
        let mut st = StreamState::new(false);
        let mut sse = SseEvents::default();
        sse.line(
            &mut st,
            "data: {\"error\": {\"message\": \"overloaded\"}}",
            &mut |_| {},
        )
        .unwrap();
        let e = sse.line(&mut st, "", &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("overloaded"), "{e}");
    }

    #[test]
    fn stream_reading_ends_done_cut_or_cancelled() {
        let ctrl = Control::default();
        let stall = Duration::from_secs(60);
        let run = |msgs: Vec<Msg>, ctrl: &Control| {
            let mut st = StreamState::new(true);
            let mut events = Vec::new();
            let r = read_stream(&channel(msgs), ctrl, stall, &mut st, &mut |e| {
                events.push(e)
            });
            st.finish(&mut |e| events.push(e));
            (r.unwrap(), events)
        };
        let body = |t: &str| format!("data: {}", json!({"choices": [{"delta": {"content": t}}]}));
        let (end, events) = run(
            lines(&[
                &body("<think>hm</think>Yes"),
                "",
                "data: [DONE]",
                "",
                "data: ignored",
            ]),
            &ctrl,
        );
        assert_eq!(end, Streamed::Done);
        assert_eq!(answer(&events), "Yes");
        assert!(matches!(&events[0], Event::ThinkingDelta { text, .. } if text == "hm"));

        let mut cut = lines(&[&body("Ye"), ""]);
        cut.push(Msg::End(Some("invalid UTF-8".into())));
        let (end, events) = run(cut, &ctrl);
        assert_eq!(
            end,
            Streamed::Incomplete("the stream was cut: invalid UTF-8".into())
        );
        assert_eq!(shown(&events), "Ye");

        let mut no_done = lines(&[&body("Y")]);
        no_done.push(Msg::End(None));
        let (end, events) = run(no_done, &ctrl);
        assert_eq!(
            end,
            Streamed::Incomplete("the stream ended before [DONE]".into())
        );
        assert_eq!(
            shown(&events),
            "Y",
            "an event without its blank line still counts"
        );

        // The HTTP thread went away without saying so.
        let (end, _) = run(lines(&[&body("Y")]), &ctrl);
        assert_eq!(end, Streamed::Incomplete("the stream was cut: lost".into()));

        ctrl.cancel();
        let (end, events) = run(lines(&[&body("never")]), &ctrl);
        assert_eq!(end, Streamed::Cancelled);
        assert!(events.is_empty());
    }

    #[test]
    fn first_message_waits_for_the_http_thread() {
        let ctrl = Control::default();
        let stall = Duration::from_secs(60);
        let m = first_message(&channel(vec![Msg::Connected]), &ctrl, stall, "http://x").unwrap();
        assert!(matches!(m, Some(Msg::Connected)));
        let e = first_message(&channel(vec![]), &ctrl, stall, "http://x")
            .err()
            .expect("an error");
        assert!(e.to_string().contains("ended unexpectedly"), "{e}");
        let (_tx, rx) = mpsc::channel::<Msg>();
        let e = first_message(&rx, &ctrl, Duration::ZERO, "http://x")
            .err()
            .expect("an error");
        assert!(e.to_string().contains("sent no answer"), "{e}");
        ctrl.cancel();
        let m = first_message(&channel(vec![Msg::Connected]), &ctrl, stall, "http://x").unwrap();
        assert!(m.is_none());
    }

    #[test]
    fn openai_logprobs_become_the_deltas_logprob_and_alternatives() {
        let mut st = StreamState::new(false);
        let mut events = Vec::new();
        let entry = |t: &str, lp: f64| json!({"token": t, "logprob": lp, "bytes": t.as_bytes()});
        st.chunk(
            &json!({"choices": [{"delta": {"content": "Hi"}, "logprobs": {"content": [{
                "token": "Hi", "logprob": -0.25, "bytes": [72, 105],
                "top_logprobs": [entry("Hi", -0.25), entry("Hello", -1.5)]}]}}]}),
            &mut |e| events.push(e),
        )
        .unwrap();
        // aha serve's own field for the reasoning's tokens, with a server-side reasoning split.
        st.chunk(
            &json!({"choices": [{"delta": {"reasoning_content": "hm"}, "logprobs": {"content": [],
                "reasoning_content": [{"token": "hm", "logprob": -2.0, "top_logprobs": []}]}}]}),
            &mut |e| events.push(e),
        )
        .unwrap();
        st.chunk(
            &json!({"choices": [{"delta": {"content": "!"}, "logprobs": null}]}),
            &mut |e| events.push(e),
        )
        .unwrap();
        let Event::AnswerDelta { logprob, top, .. } = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(*logprob, Some(-0.25));
        let names: Vec<&str> = top.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(names, ["Hi", "Hello"]);
        assert!(matches!(&events[1], Event::ThinkingDelta { logprob: Some(l), .. } if *l == -2.0));
        assert!(
            matches!(&events[2], Event::AnswerDelta { logprob: None, top, .. } if top.is_empty())
        );
    }

    #[test]
    fn a_loop_in_a_servers_reasoning_is_flagged_or_ends_the_stream() {
        let sentence = "But we know the bat costs 1.00 more than the ball. ";
        let chunk = |t: &str| {
            format!(
                "data: {}",
                json!({"choices": [{"delta": {"reasoning_content": t}}]})
            )
        };
        // Each SSE event ends at a blank line.
        let stream: Vec<String> = (0..5)
            .flat_map(|_| [chunk(sentence), String::new()])
            .collect();
        let refs: Vec<&str> = stream.iter().map(String::as_str).collect();
        let read = |action: LoopAction| {
            let trace = aha_protocol::TraceOptions {
                loops: action,
                ..Default::default()
            };
            let mut st = StreamState::new(true).with_loops(&trace);
            let mut events = Vec::new();
            let mut msgs = lines(&refs);
            msgs.push(Msg::Line("data: [DONE]".into()));
            msgs.push(Msg::Line(String::new()));
            let end = read_stream(
                &channel(msgs),
                &Control::default(),
                Duration::from_secs(60),
                &mut st,
                &mut |e| events.push(e),
            )
            .unwrap();
            let loops: Vec<(usize, LoopAction)> = events
                .iter()
                .filter_map(|e| match e {
                    Event::ReasoningLoop { count, action, .. } => Some((*count, *action)),
                    _ => None,
                })
                .collect();
            (end, loops)
        };
        assert_eq!(
            read(LoopAction::Warn),
            (
                Streamed::Done,
                vec![
                    (3, LoopAction::Warn),
                    (4, LoopAction::Warn),
                    (5, LoopAction::Warn)
                ]
            )
        );
        assert_eq!(
            read(LoopAction::Stop),
            (Streamed::Looped, vec![(3, LoopAction::Stop)])
        );
        // A stream cannot take a nudge: it is flagged as a warning.
        assert_eq!(read(LoopAction::Nudge).1[0], (3, LoopAction::Warn));
        assert!(read(LoopAction::Off).1.is_empty());
    }

    #[test]
    fn a_cancelled_turn_keeps_what_arrived() {
        let mut st = StreamState::new(false);
        let mut events = Vec::new();
        st.chunk(
            &json!({"choices": [{"delta": {"content": "Hi"}}]}),
            &mut |e| events.push(e),
        )
        .unwrap();
        let s = cancelled_turn(&mut st, Instant::now(), &mut |e| events.push(e));
        assert_eq!(s.finish_reason, aha_protocol::FinishReason::Cancelled);
        assert_eq!(s.answer_tokens, 1);
        assert_eq!(answer(&events), "Hi");
        assert!(
            matches!(events.last(), Some(Event::TurnFinished { tokens, .. }) if tokens.is_empty())
        );
    }
}
