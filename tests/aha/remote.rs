//! The remote engine against a scripted OpenAI-compatible server written here (raw TCP): reasoning
//! in its three shapes, native tool calls, and every failure the engine must survive.

use aha::config::Config;
use aha::engine::remote::RemoteEngine;
use aha::engine::template::ChatMessage;
use aha::engine::{Control, Engine, GenerateRequest};
use aha::protocol::{Event, TurnStats};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the fake server does with one connection.
#[derive(Clone)]
enum Reply {
    /// A plain HTTP answer.
    Status(u16, String),
    /// An SSE body written piece by piece; then close, or hang for `hang` before closing.
    Stream { pieces: Vec<String>, hang: Duration },
}

pub(super) fn sse(chunks: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    v.push("data: [DONE]\n\n".into());
    v
}

pub(super) fn delta(d: Value) -> Value {
    json!({"choices": [{"index": 0, "delta": d, "finish_reason": null}]})
}

pub(super) fn finish(reason: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

fn stream(pieces: Vec<String>) -> Reply {
    Reply::Stream {
        pieces,
        hang: Duration::ZERO,
    }
}

struct Fake {
    url: String,
    hits: Arc<AtomicUsize>,
    bodies: Arc<std::sync::Mutex<Vec<Value>>>,
}

/// Reads one request (headers and a Content-Length body); returns the body.
pub(super) fn read_request(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).unwrap_or(0);
        if n == 0 {
            return buf;
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut b).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&b[..n]);
            }
            return buf[end + 4..].to_vec();
        }
    }
}

/// A server that answers connection i with `replies[i]` (the last one repeats).
fn fake(replies: Vec<Reply>) -> Fake {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (h, bs) = (hits.clone(), bodies.clone());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let i = h.fetch_add(1, Ordering::SeqCst);
            let reply = replies[i.min(replies.len() - 1)].clone();
            let bs = bs.clone();
            std::thread::spawn(move || {
                let body = read_request(&mut s);
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    bs.lock().unwrap().push(v);
                }
                match reply {
                    Reply::Status(code, body) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Reply::Stream { pieces, hang } => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                        );
                        for p in pieces {
                            let _ = s.write_all(p.as_bytes());
                            let _ = s.flush();
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        std::thread::sleep(hang);
                    }
                }
            });
        }
    });
    Fake { url, hits, bodies }
}

fn engine(url: &str, extra: &str) -> RemoteEngine {
    let c = Config::parse(&format!(
        "[engines.t]\nbase_url = \"{url}\"\nmodel = \"test-model\"\n{extra}\n"
    ))
    .unwrap();
    RemoteEngine::new("t", c.remote("t").unwrap()).unwrap()
}

struct Run {
    thinking: String,
    answer: String,
    events: Vec<Event>,
    result: anyhow::Result<TurnStats>,
}

impl Run {
    fn notices(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Notice { message } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }
    fn stats(&self) -> &TurnStats {
        self.result.as_ref().expect("the turn finished")
    }
    fn err(&self) -> String {
        match &self.result {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => format!("{e:#}"),
        }
    }
}

fn run_with(e: &mut RemoteEngine, ctrl: &Control) -> Run {
    let req = GenerateRequest::chat(vec![ChatMessage::user("hi")]);
    let mut events = Vec::new();
    let result = e.generate(&req, ctrl, &mut |ev| events.push(ev));
    let (mut thinking, mut answer) = (String::new(), String::new());
    for ev in &events {
        match ev {
            Event::ThinkingDelta { text, .. } => thinking.push_str(text),
            Event::AnswerDelta { text, .. } => answer.push_str(text),
            _ => {}
        }
    }
    Run {
        thinking,
        answer,
        events,
        result,
    }
}

fn run(e: &mut RemoteEngine) -> Run {
    run_with(e, &Control::default())
}

#[test]
fn reasoning_content_field_with_usage_stats() {
    let f = fake(vec![stream(sse(&[
        delta(json!({"role": "assistant", "content": ""})),
        delta(json!({"reasoning_content": "Let me "})),
        delta(json!({"reasoning_content": "think."})),
        delta(json!({"content": "Paris"})),
        delta(json!({"content": "."})),
        finish("stop"),
        json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 6,
            "completion_tokens_details": {"reasoning_tokens": 4}}}),
    ]))]);
    let mut e = engine(&f.url, "");
    let r = run(&mut e);
    assert_eq!(r.thinking, "Let me think.");
    assert_eq!(r.answer, "Paris.");
    let s = r.stats();
    assert_eq!(
        (s.prompt_tokens, s.thinking_tokens, s.answer_tokens),
        (12, 4, 2)
    );
    assert_eq!(s.finish_reason, aha_protocol::FinishReason::Stop);
    assert!(s.ttft_ms > 0.0);
    assert!(matches!(r.events.last(), Some(Event::TurnFinished { .. })));
    let body = &f.bodies.lock().unwrap()[0];
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["model"], "test-model");
}

#[test]
fn reasoning_field_is_reasoning_too() {
    let f = fake(vec![stream(sse(&[
        delta(json!({"reasoning": "hmm"})),
        delta(json!({"content": "4"})),
        finish("stop"),
    ]))]);
    let r = run(&mut engine(&f.url, ""));
    assert_eq!((r.thinking.as_str(), r.answer.as_str()), ("hmm", "4"));
    // Without usage, tokens are counted from the deltas.
    assert_eq!((r.stats().thinking_tokens, r.stats().answer_tokens), (1, 1));
}

#[test]
fn inline_think_tags_split_across_deltas() {
    let f = fake(vec![stream(sse(&[
        delta(json!({"content": "<thi"})),
        delta(json!({"content": "nk>\nstep one"})),
        delta(json!({"content": "</th"})),
        delta(json!({"content": "ink>\n\nDone"})),
        finish("stop"),
    ]))]);
    let r = run(&mut engine(&f.url, ""));
    assert_eq!(
        (r.thinking.as_str(), r.answer.as_str()),
        ("step one", "Done")
    );
}

#[test]
fn inline_reasoning_without_opening_tag() {
    // R1 servers whose template already opened <think> stream only the closing tag.
    let body = sse(&[
        delta(json!({"content": "step "})),
        delta(json!({"content": "one</think>\n\n"})),
        delta(json!({"content": "Done"})),
        finish("stop"),
    ]);
    let f = fake(vec![stream(body)]);
    let r = run(&mut engine(&f.url, "reasoning = true"));
    assert_eq!(
        (r.thinking.as_str(), r.answer.as_str()),
        ("step one", "Done")
    );
    // The model id alone is enough to expect it.
    let c = Config::parse(&format!(
        "[engines.r1]\nbase_url = \"{}\"\nmodel = \"deepseek-ai/DeepSeek-R1\"\n",
        f.url
    ))
    .unwrap();
    let mut e = RemoteEngine::new("r1", c.remote("r1").unwrap()).unwrap();
    assert!(e.is_reasoning());
    let r = run(&mut e);
    assert_eq!(
        (r.thinking.as_str(), r.answer.as_str()),
        ("step one", "Done")
    );
}

#[test]
fn native_tool_calls_are_assembled_by_index() {
    let f = fake(vec![stream(sse(&[
        delta(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        ),
        delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]})),
        delta(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "search", "arguments": "{oops"}}]}),
        ),
        delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})),
        finish("tool_calls"),
    ]))]);
    let r = run(&mut engine(&f.url, ""));
    let calls: Vec<(String, String, Value)> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ToolCall {
                id,
                name,
                arguments,
            } => Some((id.clone(), name.clone(), arguments.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            (
                "call_a".into(),
                "get_weather".into(),
                json!({"city": "Paris"})
            ),
            ("call_b".into(), "search".into(), json!("{oops")),
        ]
    );
    assert_eq!(r.stats().finish_reason, aha_protocol::FinishReason::Stop);
}

#[test]
fn refused_connection_says_so() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = Instant::now();
    let r = run(&mut engine(&format!("http://127.0.0.1:{port}/v1"), ""));
    let e = r.err();
    assert!(e.contains("cannot connect"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn unknown_host_is_a_dns_error() {
    let r = run(&mut engine("http://no-such-host.invalid/v1", ""));
    let e = r.err();
    assert!(e.contains("resolve") || e.contains("DNS"), "{e}");
}

#[test]
fn unauthorized_names_the_key_variable() {
    let f = fake(vec![Reply::Status(
        401,
        r#"{"error":{"message":"Invalid API key"}}"#.into(),
    )]);
    let r = run(&mut engine(&f.url, "api_key_env = \"AHA_TEST_UNSET_KEY\""));
    let e = r.err();
    assert!(
        e.contains("$AHA_TEST_UNSET_KEY") && e.contains("401"),
        "{e}"
    );
    assert_eq!(f.hits.load(Ordering::SeqCst), 1, "401 is not retried");
}

#[test]
fn unknown_model_is_a_404_naming_it() {
    let f = fake(vec![Reply::Status(
        404,
        r#"{"error":{"message":"The model `test-model` does not exist."}}"#.into(),
    )]);
    let e = run(&mut engine(&f.url, "")).err();
    assert!(e.contains("test-model") && e.contains("404"), "{e}");
}

#[test]
fn rate_limit_is_retried_then_succeeds() {
    let f = fake(vec![
        Reply::Status(429, r#"{"error":{"message":"slow down"}}"#.into()),
        stream(sse(&[delta(json!({"content": "ok"})), finish("stop")])),
    ]);
    let r = run(&mut engine(&f.url, "max_retries = 3"));
    assert_eq!(r.answer, "ok");
    let n = r.notices();
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(
        n[0].contains("429") && n[0].contains("retry 1 of 3"),
        "{n:?}"
    );
    assert_eq!(f.hits.load(Ordering::SeqCst), 2);
}

#[test]
fn server_errors_exhaust_bounded_retries() {
    let f = fake(vec![Reply::Status(503, "overloaded".into())]);
    let t = Instant::now();
    let r = run(&mut engine(&f.url, "max_retries = 2"));
    let e = r.err();
    assert!(
        e.contains("503") && e.contains("gave up after 2 retries"),
        "{e}"
    );
    assert_eq!(r.notices().len(), 2);
    assert_eq!(f.hits.load(Ordering::SeqCst), 3);
    // 0.5 s and 1 s at most, with jitter.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn a_stalled_stream_times_out_keeping_what_arrived() {
    let f = fake(vec![Reply::Stream {
        pieces: vec![format!(
            "data: {}\n\n",
            delta(json!({"content": "partial"}))
        )],
        hang: Duration::from_secs(10),
    }]);
    let t = Instant::now();
    let r = run(&mut engine(&f.url, "stall_timeout_s = 0.5"));
    assert_eq!(r.answer, "partial");
    assert_eq!(
        r.stats().finish_reason,
        aha_protocol::FinishReason::Incomplete
    );
    assert!(r.notices().iter().any(|n| n.contains("stalled")));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn a_cut_stream_keeps_what_arrived() {
    let mut pieces = sse(&[
        delta(json!({"content": "Hel"})),
        delta(json!({"content": "lo"})),
    ]);
    pieces.pop(); // no [DONE]: the connection just closes
    pieces.push("data: {\"choices\":[{\"delta\":{\"content\":\"tr".into());
    let f = fake(vec![stream(pieces)]);
    let r = run(&mut engine(&f.url, ""));
    assert_eq!(r.answer, "Hello");
    assert_eq!(
        r.stats().finish_reason,
        aha_protocol::FinishReason::Incomplete
    );
    assert!(r.notices().iter().any(|n| n.contains("incomplete")));
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let pieces = vec![
        format!("data: {}\n\n", delta(json!({"content": "a"}))),
        "this is not sse\n\n".into(),
        "data: {broken json\n\n".into(),
        ": a comment is fine\n\n".into(),
        format!("data: {}\n\n", delta(json!({"content": "b"}))),
        format!("data: {}\n\n", finish("stop")),
        "data: [DONE]\n\n".into(),
    ];
    let f = fake(vec![stream(pieces)]);
    let r = run(&mut engine(&f.url, ""));
    assert_eq!(r.answer, "ab");
    assert_eq!(r.stats().finish_reason, aha_protocol::FinishReason::Stop);
    let n = r.notices();
    assert!(n.iter().any(|n| n.contains("skipped 2 malformed")), "{n:?}");
}

#[test]
fn cancel_interrupts_a_silent_server_promptly() {
    let f = fake(vec![Reply::Stream {
        pieces: vec![],
        hang: Duration::from_secs(20),
    }]);
    let mut e = engine(&f.url, "stall_timeout_s = 60");
    let ctrl = Arc::new(Control::default());
    let c = ctrl.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c.cancel();
    });
    let t = Instant::now();
    let r = run_with(&mut e, &ctrl);
    assert_eq!(
        r.stats().finish_reason,
        aha_protocol::FinishReason::Cancelled
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

/// A config file in `dir` that names the fake server `fake`, after `head`.
fn config_file(dir: &std::path::Path, f: &Fake, head: &str) -> std::path::PathBuf {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "{head}[engines.fake]\nbase_url = \"{}\"\nmodel = \"test-model\"\n",
            f.url
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn aha_run_engine_flag_uses_the_configured_server() {
    let f = fake(vec![stream(sse(&[
        delta(json!({"reasoning_content": "thinking"})),
        delta(json!({"content": "answer"})),
        finish("stop"),
    ]))]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &f, "[sampling]\ntemperature = 0.25\n");
    let out = super::common::bin()
        .args(["run", "--engine", "fake", "--json", "hi"])
        .env("AHA_CONFIG", &cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let types: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].to_string())
        .collect();
    assert_eq!(
        types,
        [
            "\"thinking_delta\"",
            "\"answer_delta\"",
            "\"turn_finished\""
        ]
    );
    // The config's [sampling] reached the server.
    assert_eq!(f.bodies.lock().unwrap()[0]["temperature"], 0.25);
    // A typo in the config file is an error that names the key.
    std::fs::write(
        &cfg,
        "[engines.fake]\nbase_url = \"http://x\"\nmodle = \"m\"\n",
    )
    .unwrap();
    let out = super::common::bin()
        .args(["run", "--engine", "fake", "hi"])
        .env("AHA_CONFIG", &cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("modle"), "{err}");
}

#[test]
fn forbidding_tool_calls_sends_tool_choice_none() {
    let e = engine("http://127.0.0.1:9", "");
    let mut req = GenerateRequest::chat(vec![ChatMessage::user("hi")]);
    req.tools = Some(vec![
        json!({"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}),
    ]);
    let body = e.request_body(&req).unwrap();
    assert_eq!(body["tools"][0]["function"]["name"], "w");
    assert!(body.get("tool_choice").is_none());
    req.no_tool_calls = true;
    let body = e.request_body(&req).unwrap();
    assert_eq!(body["tool_choice"], "none", "{body}");
}

#[test]
fn alternatives_are_asked_only_of_self_hosted_servers() {
    let mut req = GenerateRequest::chat(vec![ChatMessage::user("hi")]);
    req.trace.top_logprobs = 5;
    for (provider, asked) in [
        ("vllm", true),
        ("sglang", true),
        ("llamacpp", true),
        ("aha", true),
        ("openai", false),
        ("deepseek", false),
        ("generic", false),
    ] {
        let e = engine("http://127.0.0.1:9", &format!("provider = \"{provider}\""));
        let body = e.request_body(&req).unwrap();
        assert_eq!(body.get("logprobs").is_some(), asked, "{provider}: {body}");
        if asked {
            assert_eq!(body["top_logprobs"], 5);
        }
    }
    // Not asked for: never sent.
    let plain = GenerateRequest::chat(vec![ChatMessage::user("hi")]);
    let e = engine("http://127.0.0.1:9", "provider = \"vllm\"");
    assert!(e.request_body(&plain).unwrap().get("logprobs").is_none());
}

/// A remote server's native `tool_calls` are run like calls written in the text: the tool runs
/// in the workspace, its card and result are shown, and the next request carries the call and
/// its result in the wire format (the assistant's `tool_calls`, a `tool` message with the same
/// id), so the server can answer from it.
#[test]
fn native_tool_calls_from_a_remote_engine_are_run_and_answered() {
    let f = fake(vec![
        stream(sse(&[
            delta(
                json!({"tool_calls": [{"index": 0, "id": "srv_1", "type": "function",
                "function": {"name": "read_file", "arguments": "{\"path\": \"notes.txt\"}"}}]}),
            ),
            finish("tool_calls"),
        ])),
        stream(sse(&[
            delta(json!({"content": "The notes say: remember the milk."})),
            finish("stop"),
        ])),
    ]);
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("notes.txt"), "remember the milk\n").unwrap();
    let cfg = config_file(ws.path(), &f, "");
    let out = super::common::bin()
        .args(["run", "--agent", "--engine", "fake", "--json"])
        .args(["--approve", "read-only", "--workspace"])
        .arg(ws.path())
        .arg("What do my notes say?")
        .env("AHA_CONFIG", &cfg)
        .current_dir(ws.path())
        .output()
        .unwrap();
    let ev = super::attacker::events(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{ev:?}\n{stderr}");
    let call = ev
        .iter()
        .find(|e| e["type"] == "tool_call")
        .unwrap_or_else(|| panic!("no tool_call: {ev:?}"));
    assert_eq!(call["name"], "read_file");
    assert_eq!(call["arguments"]["path"], "notes.txt");
    let result = ev.iter().find(|e| e["type"] == "tool_result").unwrap();
    assert_eq!(result["ok"], true, "{result}");
    assert!(result["output"]
        .as_str()
        .unwrap()
        .contains("remember the milk"));
    let answer: String = ev
        .iter()
        .filter(|e| e["type"] == "answer_delta")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(answer, "The notes say: remember the milk.");
    assert_eq!(ev.iter().filter(|e| e["type"] == "tool_call").count(), 1);
    // The second request gives the server its call and the result, tied by one id.
    let bodies = f.bodies.lock().unwrap();
    assert_eq!(bodies.len(), 2);
    let msgs = bodies[1]["messages"].as_array().unwrap();
    let asst = msgs
        .iter()
        .find(|m| m["role"] == "assistant")
        .expect("the assistant's call");
    let tc = &asst["tool_calls"][0];
    assert_eq!(tc["function"]["name"], "read_file");
    let args: Value = serde_json::from_str(tc["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["path"], "notes.txt");
    let tool = msgs
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("the result");
    assert_eq!(tool["tool_call_id"], tc["id"]);
    assert!(tool["content"]
        .as_str()
        .unwrap()
        .contains("remember the milk"));
}
