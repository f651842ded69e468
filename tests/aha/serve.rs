//! `aha serve` end to end: the real binary with the real `qwen2.5-coder-0.5b`, driven by aha's own
//! remote engine, raw HTTP, and the official OpenAI Python SDK (tests/aha/openai_sdk.py).

use super::common::{bin, heavy, model};
use aha::config::Config;
use aha::engine::remote::RemoteEngine;
use aha::engine::sampler::SamplingParams;
use aha::engine::template::ChatMessage;
use aha::engine::{Control, Engine, GenerateRequest, ThinkMode};
use aha::protocol::Event;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `aha serve`, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub(crate) fn start(extra: &[&str]) -> Server {
        // Pulled once; served by its registry name, which is the model id clients use.
        model("qwen2.5-coder-0.5b");
        let mut cmd = bin();
        cmd.args([
            "serve",
            "--port",
            "0",
            "--threads",
            "2",
            "-m",
            "qwen2.5-coder-0.5b",
        ])
        .args(extra);
        let (child, port, log) = super::common::spawn_serve(cmd);
        Server { child, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn health(&self) -> Value {
        let (code, body) = raw(self.port, "GET", "/health", "", "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the body.
fn raw(port: u16, method: &str, path: &str, body: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

fn remote_for(s: &Server) -> RemoteEngine {
    let c = Config::parse(&format!(
        "[engines.local]\nbase_url = \"{}\"\nmodel = \"qwen2.5-coder-0.5b\"\nprovider = \"aha\"\nstall_timeout_s = 120\n",
        s.url()
    ))
    .unwrap();
    RemoteEngine::new("local", c.remote("local").unwrap()).unwrap()
}

#[test]
fn remote_engine_round_trip_through_aha_serve() {
    let _g = heavy();
    let s = Server::start(&[]);
    let mut e = remote_for(&s);
    let ask = |e: &mut RemoteEngine, think: ThinkMode, max: usize| {
        let mut req = GenerateRequest::chat(vec![ChatMessage::new(
            aha::protocol::Role::User,
            "What is the capital of France? Answer in one word.",
        )]);
        req.sampling = SamplingParams::greedy();
        req.max_tokens = max;
        req.think = think;
        let (mut thinking, mut answer) = (String::new(), String::new());
        let stats = e
            .generate(&req, &Control::default(), &mut |ev| match ev {
                Event::ThinkingDelta { text, .. } => thinking.push_str(&text),
                Event::AnswerDelta { text, .. } => answer.push_str(&text),
                _ => {}
            })
            .unwrap();
        (thinking, answer, stats)
    };
    let (thinking, answer, stats) = ask(&mut e, ThinkMode::Auto, 16);
    assert!(answer.contains("Paris"), "{answer:?}");
    assert!(thinking.is_empty());
    assert!(
        stats.prompt_tokens > 0 && stats.answer_tokens > 0,
        "{stats:?}"
    );
    assert!(stats.ttft_ms > 0.0, "{stats:?}");
    // Reasoning forced on: aha serve opens <think> and sends it back as reasoning_content.
    let (thinking, _, stats) = ask(&mut e, ThinkMode::On, 40);
    assert!(!thinking.trim().is_empty(), "no reasoning_content arrived");
    assert!(stats.thinking_tokens > 0, "{stats:?}");
}

#[test]
fn http_errors_and_client_disconnect() {
    let _g = heavy();
    let s = Server::start(&["--max-body", "100000"]);
    let (code, body) = raw(s.port, "POST", "/v1/chat/completions", "{not json", "");
    assert_eq!(code, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (code, body) = raw(
        s.port,
        "POST",
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"frobnicate":true}"#,
        "",
    );
    assert_eq!(code, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["param"], "frobnicate", "{body}");
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(200_000)
    );
    let (code, body) = raw(s.port, "POST", "/v1/chat/completions", &big, "");
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");

    // A streaming client that goes away cancels its generation.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let req = r#"{"messages":[{"role":"user","content":"Write a very long story about a dragon."}],"stream":true,"max_tokens":1000}"#;
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{req}",
        req.len()
    )
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while seen.matches("\"content\"").count() < 4 {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(c);
    let t = Instant::now();
    loop {
        let h = s.health();
        if h["cancelled"] == 1 && h["running"] == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not cancelled: {h} {}",
            s.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "client disconnect → job cancelled within {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert!(s.log.lock().unwrap().contains("cancelled"));
}

/// A Python with the `openai` package, as `common::test_python` finds it.
fn sdk_python() -> Option<PathBuf> {
    super::common::test_python("openai")
}

fn sdk(s: &Server, mode: &str) -> Option<Value> {
    let Some(py) = sdk_python() else {
        eprintln!("\n!!!!!!!! SKIPPED: the openai Python SDK cannot be installed here (no python3 venv/pip); run .ci/run !!!!!!!!\n");
        return None;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aha/openai_sdk.py");
    let out = std::process::Command::new(py)
        .args([script, &s.url(), "qwen2.5-coder-0.5b", mode])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openai SDK {mode} failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.log.lock().unwrap()
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("openai SDK {mode}: {v}");
    Some(v)
}

#[test]
fn openai_sdk_completions_tools_and_errors() {
    let _g = heavy();
    let s = Server::start(&["--max-body", "1000000"]);
    sdk(&s, "basic");
}

#[test]
fn openai_sdk_api_key_and_full_queue() {
    let _g = heavy();
    let s = Server::start(&["--api-key", "sekrit", "--queue", "1"]);
    // /health stays open for load balancers; /v1 needs the key.
    assert_eq!(raw(s.port, "GET", "/health", "", "").0, 200);
    assert_eq!(raw(s.port, "GET", "/v1/models", "", "").0, 401);
    assert_eq!(
        raw(
            s.port,
            "GET",
            "/v1/models",
            "",
            "Authorization: Bearer sekrit\r\n"
        )
        .0,
        200
    );
    if sdk(&s, "auth").is_some() {
        sdk(&s, "queue");
    }
}

#[test]
fn sixteen_concurrent_streams_each_get_their_own_tokens() {
    let _g = heavy();
    let s = Server::start(&[]);
    if let Some(v) = sdk(&s, "load") {
        assert_eq!(v["clients"], 16);
    }
    let h = s.health();
    assert_eq!(h["completed"], 16, "{h}");
}
