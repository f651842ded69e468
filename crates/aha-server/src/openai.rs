//! The OpenAI chat-completions wire format as `aha serve` speaks it: the request type (strict about
//! unknown fields), the error shape, and the translation of engine events into content,
//! `reasoning_content` and `tool_calls` (Qwen/Hermes `<tool_call>{json}</tool_call>` text).

use aha_engine::template::ChatMessage;
use aha_protocol::{Event, TurnStats};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 invalid_request_error.
    pub fn bad_request(message: impl Into<String>, param: Option<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }
    /// Any status with a message.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }
    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A message's content: text, or a list of parts of which the text ones are used.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(p) => p
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One incoming message (lenient: clients send extra per-message fields).
#[derive(Debug, Clone, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Value>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// `POST /v1/chat/completions`. Unknown fields are rejected by name; the optional OpenAI fields
/// clients commonly send are accepted (and ignored where aha has no equivalent).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// vLLM's way to switch reasoning: `{"enable_thinking": false}`.
    pub chat_template_kwargs: Option<Value>,
    pub n: Option<u32>,
    pub user: Option<String>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    pub logit_bias: Option<Value>,
    pub response_format: Option<Value>,
    pub reasoning_effort: Option<String>,
    pub metadata: Option<Value>,
    pub store: Option<bool>,
    pub service_tier: Option<String>,
}

/// Parses a request body; errors name the offending field.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    serde_json::from_slice::<ChatRequest>(body).map_err(|e| {
        let msg = e.to_string();
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or_default().to_string();
            return ApiError::bad_request(
                format!("unknown field `{field}` in the request body"),
                Some(field),
            );
        }
        if let Some((field, why)) = bad_field(body) {
            return ApiError::bad_request(format!("invalid `{field}`: {why}"), Some(field));
        }
        ApiError::bad_request(format!("malformed request body: {msg}"), None)
    })
}

/// serde reports a value of the wrong type by line and column only; this finds the top-level
/// field that holds it, by decoding each field alone. Only runs on a request already refused.
fn bad_field(body: &[u8]) -> Option<(String, String)> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    fields.into_iter().find_map(|(k, v)| {
        let mut alone = serde_json::Map::new();
        if k != "messages" {
            alone.insert("messages".into(), json!([]));
        }
        alone.insert(k.clone(), v);
        serde_json::from_value::<ChatRequest>(Value::Object(alone))
            .err()
            .map(|e| (k, e.to_string()))
    })
}

impl ChatRequest {
    /// OpenAI's range for the penalties aha accepts but does not apply: a client sending more is
    /// told, as OpenAI would tell it, rather than silently given something else.
    pub fn check_penalties(&self) -> Result<(), ApiError> {
        for (field, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && (-2.0..=2.0).contains(v))) {
                return Err(ApiError::bad_request(
                    format!("{field} {v} is out of range: it must be a number from -2 to 2"),
                    Some(field.into()),
                ));
            }
        }
        Ok(())
    }

    /// The conversation as the engine takes it.
    pub fn chat_messages(&self) -> Vec<ChatMessage> {
        self.messages
            .iter()
            .map(|m| ChatMessage {
                role: aha_protocol::Role::parse(&m.role),
                content: m.content.as_ref().map(Content::text).unwrap_or_default(),
                tool_calls: m.tool_calls.as_ref().map(tool_calls_for_template),
                name: m.name.clone(),
                tool_call_id: m.tool_call_id.clone(),
            })
            .collect()
    }

    /// Stop strings, empty ones dropped.
    pub fn stops(&self) -> Vec<String> {
        match &self.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }

    /// The tools to offer, after `tool_choice` (`none` offers none; a named function offers only it).
    pub fn offered_tools(&self) -> Option<Vec<Value>> {
        let tools = self.tools.clone().filter(|t| !t.is_empty())?;
        match &self.tool_choice {
            Some(Value::String(s)) if s == "none" => None,
            Some(Value::Object(o)) => {
                let want = o.get("function").and_then(|f| f["name"].as_str())?;
                let one: Vec<Value> = tools
                    .into_iter()
                    .filter(|t| t["function"]["name"].as_str() == Some(want))
                    .collect();
                (!one.is_empty()).then_some(one)
            }
            _ => Some(tools),
        }
    }
}

/// Templates (Qwen's among them) expect `arguments` as an object, OpenAI sends a string.
fn tool_calls_for_template(tc: &Value) -> Value {
    let mut tc = tc.clone();
    if let Some(calls) = tc.as_array_mut() {
        for c in calls {
            if let Some(f) = c.get_mut("function").and_then(Value::as_object_mut) {
                if let Some(Value::String(s)) = f.get("arguments") {
                    if let Ok(v) = serde_json::from_str::<Value>(s) {
                        f.insert("arguments".into(), v);
                    }
                }
            }
        }
    }
    tc
}

/// Longest suffix of `buf` that is a proper prefix of `tag` (where a match could still begin).
fn partial_suffix(buf: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .filter(|&k| tag.is_char_boundary(k))
        .find(|&k| buf.ends_with(&tag[..k]))
        .unwrap_or(0)
}

/// Cuts the answer at the first stop string, holding back text that could begin one.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    buf: String,
    /// A stop string was found: nothing more passes.
    pub hit: bool,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            ..Self::default()
        }
    }

    /// Text that may be released now.
    pub fn push(&mut self, text: &str) -> String {
        if self.hit {
            return String::new();
        }
        if self.stops.is_empty() {
            return text.to_string();
        }
        self.buf.push_str(text);
        if let Some(pos) = self.stops.iter().filter_map(|s| self.buf.find(s)).min() {
            self.hit = true;
            let out = self.buf[..pos].to_string();
            self.buf.clear();
            return out;
        }
        let hold = self
            .stops
            .iter()
            .map(|s| partial_suffix(&self.buf, s))
            .max()
            .unwrap_or(0);
        let cut = self.buf.len() - hold;
        let out = self.buf[..cut].to_string();
        self.buf.drain(..cut);
        out
    }

    /// What was held back, at the end.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.buf)
    }
}

const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

/// Parses the inside of a Qwen/Hermes `<tool_call>` block: `{"name": …, "arguments": {…}}`.
pub fn parse_tool_call(body: &str) -> Option<(String, Value)> {
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    let name = v["name"].as_str()?.to_string();
    let args = match v.get("arguments").or_else(|| v.get("parameters")) {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        Some(a) => a.clone(),
        None => json!({}),
    };
    Some((name, args))
}

/// Small models often write a call as bare JSON (or fenced JSON) without the `<tool_call>` tags.
/// The whole answer counts as calls only if it is nothing but such objects naming offered tools.
pub fn parse_bare_calls(text: &str, names: &[String]) -> Option<Vec<(String, Value)>> {
    let mut t = text.trim();
    if let Some(rest) = t.strip_prefix("```") {
        t = rest
            .trim_start_matches("json")
            .trim_end()
            .strip_suffix("```")?
            .trim();
    }
    let mut calls = Vec::new();
    for v in serde_json::Deserializer::from_str(t).into_iter::<Value>() {
        let v = v.ok()?;
        let (name, args) = parse_tool_call(&v.to_string())?;
        if !names.contains(&name) || (v.get("arguments").is_none() && v.get("parameters").is_none())
        {
            return None;
        }
        calls.push((name, args));
    }
    (!calls.is_empty()).then_some(calls)
}

/// Separates `<tool_call>` blocks from answer text as it streams.
#[derive(Debug, Default)]
pub struct ToolCallFilter {
    buf: String,
    inside: bool,
}

/// What the filter releases: plain text, or a parsed call.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Call(String, Value),
}

impl ToolCallFilter {
    /// Feeds answer text.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            if !self.inside {
                if let Some(i) = self.buf.find(CALL_OPEN) {
                    out.push(Piece::Text(self.buf[..i].to_string()));
                    self.buf.drain(..i + CALL_OPEN.len());
                    self.inside = true;
                    continue;
                }
                let cut = self.buf.len() - partial_suffix(&self.buf, CALL_OPEN);
                out.push(Piece::Text(self.buf[..cut].to_string()));
                self.buf.drain(..cut);
                break;
            }
            let Some(i) = self.buf.find(CALL_CLOSE) else {
                break;
            };
            let body = self.buf[..i].to_string();
            self.buf.drain(..i + CALL_CLOSE.len());
            self.inside = false;
            out.push(match parse_tool_call(&body) {
                Some((n, a)) => Piece::Call(n, a),
                None => Piece::Text(format!("{CALL_OPEN}{body}{CALL_CLOSE}")),
            });
        }
        out.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
        out
    }

    /// End of the answer: an unclosed call is parsed if it can be, else returned as text.
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.buf);
        let p = if self.inside {
            self.inside = false;
            match parse_tool_call(&rest) {
                Some((n, a)) => Piece::Call(n, a),
                None => Piece::Text(format!("{CALL_OPEN}{rest}")),
            }
        } else {
            Piece::Text(rest)
        };
        match p {
            Piece::Text(t) if t.is_empty() => vec![],
            p => vec![p],
        }
    }
}

/// One piece of a reply as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Reasoning(String),
    Content(String),
    /// An OpenAI tool call object (with `index`).
    ToolCall(Value),
}

/// Turns engine events into reply pieces: stop strings, tool-call extraction, finish reason.
#[derive(Debug)]
pub struct Translator {
    stop: StopFilter,
    tools: Option<ToolCallFilter>,
    /// Offered tool names (for bare JSON calls).
    names: Vec<String>,
    /// The answer so far while it may be a bare JSON call (it began with `{` or a fence).
    bare: Option<String>,
    /// Whether answer text has been released (a bare call can only be the whole answer).
    released: bool,
    calls: usize,
    /// Stats of the finished turn.
    pub stats: Option<TurnStats>,
    /// An error the engine returned.
    pub error: Option<String>,
    /// `logprobs: true`: each token's log-probability (and its alternatives) is collected.
    logprobs: bool,
    /// Collected and not yet sent: entries of the answer and of the reasoning.
    lp_content: Vec<Value>,
    lp_reasoning: Vec<Value>,
}

/// OpenAI's log-probability entry of one token: its text, log-probability, UTF-8 bytes and
/// the best alternatives.
fn logprob_entry(text: &str, logprob: Option<f32>, top: &[aha_protocol::TopToken]) -> Value {
    let alt: Vec<Value> = top
        .iter()
        .map(|t| json!({"token": t.text, "logprob": t.logprob, "bytes": t.text.as_bytes()}))
        .collect();
    json!({
        "token": text,
        // A token written on the model's behalf (a forced close) has none: OpenAI's floor.
        "logprob": logprob.unwrap_or(-9999.0),
        "bytes": text.as_bytes(),
        "top_logprobs": alt,
    })
}

impl Translator {
    /// `tools`: the offered tools, whose calls are extracted from the text.
    pub fn new(stops: Vec<String>, tools: Option<&[Value]>) -> Self {
        let names = tools
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
            .collect();
        Self {
            logprobs: false,
            lp_content: Vec::new(),
            lp_reasoning: Vec::new(),
            stop: StopFilter::new(stops),
            tools: tools.map(|_| ToolCallFilter::default()),
            names,
            bare: None,
            released: false,
            calls: 0,
            stats: None,
            error: None,
        }
    }

    /// Whether a stop string ended the answer (the engine should be cancelled).
    pub fn stopped(&self) -> bool {
        self.stop.hit
    }

    fn answer(&mut self, text: String, out: &mut Vec<Out>) {
        if text.is_empty() {
            return;
        }
        let Some(f) = self.tools.as_mut() else {
            out.push(Out::Content(text));
            return;
        };
        let text = if self.released {
            text
        } else {
            // Hold the answer while it may be a bare JSON call.
            let held = self.bare.get_or_insert_with(String::new);
            held.push_str(&text);
            let t = held.trim_start();
            if t.is_empty() || t.starts_with('{') || t.starts_with("```") {
                return;
            }
            self.released = true;
            self.bare.take().unwrap_or_default()
        };
        let pieces = f.push(&text);
        self.pieces(pieces, out)
    }

    /// End of the answer: a held bare call, or the held text through the tag filter.
    fn flush_answer(&mut self, out: &mut Vec<Out>) {
        if let Some(held) = self.bare.take() {
            if let Some(calls) = parse_bare_calls(&held, &self.names) {
                let pieces = calls.into_iter().map(|(n, a)| Piece::Call(n, a)).collect();
                self.pieces(pieces, out);
            } else if let Some(f) = self.tools.as_mut() {
                let pieces = f.push(&held);
                self.pieces(pieces, out);
            }
        }
        if let Some(f) = self.tools.as_mut() {
            let pieces = f.finish();
            self.pieces(pieces, out);
        }
    }

    fn pieces(&mut self, pieces: Vec<Piece>, out: &mut Vec<Out>) {
        for p in pieces {
            match p {
                Piece::Text(t) => out.push(Out::Content(t)),
                Piece::Call(name, args) => {
                    out.push(Out::ToolCall(json!({
                        "index": self.calls,
                        "id": format!("call_{}", random_id(24)),
                        "type": "function",
                        "function": {"name": name, "arguments": args.to_string()},
                    })));
                    self.calls += 1;
                }
            }
        }
    }

    /// Whether log-probabilities are collected.
    pub fn logprobs(&self) -> bool {
        self.logprobs
    }

    /// Collects each token's log-probability (`logprobs: true` in the request).
    pub fn with_logprobs(mut self, on: bool) -> Self {
        self.logprobs = on;
        self
    }

    /// The log-probabilities collected since the last call, as OpenAI's `logprobs` object
    /// (`content`, and aha's `reasoning_content` for the reasoning's tokens); `None` when
    /// there are none, or they were not asked for.
    pub fn take_logprobs(&mut self) -> Option<Value> {
        if self.lp_content.is_empty() && self.lp_reasoning.is_empty() {
            return None;
        }
        let mut v = json!({"content": std::mem::take(&mut self.lp_content)});
        if !self.lp_reasoning.is_empty() {
            v["reasoning_content"] = json!(std::mem::take(&mut self.lp_reasoning));
        }
        Some(v)
    }

    /// One engine event.
    pub fn event(&mut self, e: Event) -> Vec<Out> {
        let mut out = Vec::new();
        if self.logprobs && !self.stop.hit {
            match &e {
                Event::ThinkingDelta {
                    text, logprob, top, ..
                } => self.lp_reasoning.push(logprob_entry(text, *logprob, top)),
                Event::AnswerDelta {
                    text, logprob, top, ..
                } => self.lp_content.push(logprob_entry(text, *logprob, top)),
                _ => {}
            }
        }
        match e {
            Event::ThinkingDelta { text, .. } if !self.stop.hit => out.push(Out::Reasoning(text)),
            Event::AnswerDelta { text, .. } => {
                let t = self.stop.push(&text);
                self.answer(t, &mut out);
            }
            Event::TurnFinished { stats, .. } => {
                let t = self.stop.finish();
                self.answer(t, &mut out);
                self.flush_answer(&mut out);
                self.stats = Some(stats);
            }
            Event::Error { message } => self.error = Some(message),
            _ => {}
        }
        out
    }

    /// OpenAI's finish reason.
    pub fn finish_reason(&self) -> &'static str {
        if self.calls > 0 {
            return "tool_calls";
        }
        if self.stop.hit {
            return "stop";
        }
        match self.stats.as_ref().map(|s| s.finish_reason.as_str()) {
            Some("length") | Some("context") => "length",
            _ => "stop",
        }
    }

    /// OpenAI's usage object.
    pub fn usage(&self) -> Value {
        let s = self.stats.clone().unwrap_or_default();
        let completion = s.thinking_tokens + s.answer_tokens;
        json!({
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": s.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": s.prompt_tokens.saturating_sub(s.prefilled_tokens)},
            "completion_tokens_details": {"reasoning_tokens": s.thinking_tokens},
        })
    }
}

/// A random alphanumeric id.
pub fn random_id(n: usize) -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named_and_common_ones_accepted() {
        let e = parse_request(br#"{"model":"m","messages":[],"temprature":1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temprature"));
        assert!(e.message.contains("temprature"));
        let ok = parse_request(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"n":1,"user":"u","presence_penalty":0,"stream_options":{"include_usage":true},"stop":"x"}"#,
        )
        .unwrap();
        assert_eq!(ok.chat_messages()[0].content, "hi");
        assert_eq!(ok.stops(), vec!["x"]);
        assert!(parse_request(b"{not json").is_err());
        let e = parse_request(br#"{"messages":[{"role":"user","content":"hi"}],"top_k":-1}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_k"), "{}", e.message);
        assert!(e.message.contains("top_k"), "{}", e.message);
        let e = parse_request(br#"{"messages":[{"role":"user"}],"stream":"yes"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stream"), "{}", e.message);
        let e = parse_request(br#"{"messages":"hi"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"), "{}", e.message);
    }

    #[test]
    fn tool_calls_are_cut_out_of_streamed_text() {
        let mut f = ToolCallFilter::default();
        let text = "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let mut pieces = Vec::new();
        for ch in text.chars() {
            pieces.extend(f.push(&ch.to_string()));
        }
        pieces.extend(f.finish());
        let text: String = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Sure.\n");
        assert!(pieces.contains(&Piece::Call("get_weather".into(), json!({"city": "Paris"}))));
    }

    #[test]
    fn bare_json_calls_need_an_offered_name() {
        let names = vec!["get_weather".to_string()];
        let t = "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```";
        assert_eq!(
            parse_bare_calls(t, &names),
            Some(vec![("get_weather".into(), json!({"city": "Paris"}))])
        );
        assert!(parse_bare_calls("{\"name\": \"other\", \"arguments\": {}}", &names).is_none());
        assert!(parse_bare_calls("{\"a\": 1}", &names).is_none());
        let tools = vec![json!({"type": "function", "function": {"name": "get_weather"}})];
        let mut tr = Translator::new(vec![], Some(&tools));
        let mut out = tr.event(Event::AnswerDelta {
            text: "{\"name\": \"get_weather\", ".into(),
            logprob: None,
            entropy: None,
            top: Vec::new(),
        });
        assert!(out.is_empty());
        out.extend(tr.event(Event::AnswerDelta {
            text: "\"arguments\": {\"city\": \"Paris\"}}".into(),
            logprob: None,
            entropy: None,
            top: Vec::new(),
        }));
        out.extend(tr.event(Event::TurnFinished {
            stats: TurnStats::default(),
            tokens: vec![],
        }));
        assert!(matches!(&out[..], [Out::ToolCall(_)]), "{out:?}");
        assert_eq!(tr.finish_reason(), "tool_calls");
    }

    #[test]
    fn stop_strings_cut_across_deltas() {
        let mut s = StopFilter::new(vec!["END".into()]);
        let mut out = s.push("abc E");
        out += &s.push("ND more");
        assert_eq!(out, "abc ");
        assert!(s.hit);
        let mut s = StopFilter::new(vec!["END".into()]);
        let mut out = s.push("abc E");
        out += &s.push("x");
        out += &s.finish();
        assert_eq!(out, "abc Ex");
    }
}
