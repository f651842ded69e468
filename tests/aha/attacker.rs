//! The attacker: a scripted OpenAI-compatible server on 127.0.0.1 that replays assistant replies
//! (usually `<tool_call>` text), so a test drives the real agent (`aha run --agent --engine
//! attacker`) into any tool call in seconds, with no model. Each request gets the next reply of
//! the script; once the script is spent, every further request gets "done.".

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A running scripted server and the config file that names it as the engine `attacker`.
pub struct Attacker {
    /// The request bodies received so far (the messages the agent sent).
    pub requests: Arc<Mutex<Vec<Value>>>,
    /// A config file naming this server as the engine `attacker`.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

/// A tool call as Qwen/Hermes write it.
pub fn call(name: &str, arguments: Value) -> String {
    format!(
        "<tool_call>\n{}\n</tool_call>",
        json!({"name": name, "arguments": arguments})
    )
}

fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut b = [0u8; 8192];
    loop {
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut b).ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&b[..n]);
            }
            return Some(buf[end + 4..].to_vec());
        }
    }
}

fn answer(s: &mut TcpStream, reply: &str) {
    let chunk = |d: Value, fin: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "x", "object": "chat.completion.chunk", "model": "attacker",
                   "choices": [{"index": 0, "delta": d, "finish_reason": fin}]})
        )
    };
    let mut body = chunk(json!({"role": "assistant", "content": reply}), Value::Null);
    body.push_str(&chunk(json!({}), json!("stop")));
    body.push_str("data: [DONE]\n\n");
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Attacker {
    /// Starts a server that answers the agent's requests with `script`, one reply each.
    pub fn start(script: Vec<String>) -> Attacker {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/v1", l.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let (seen, script) = (seen.clone(), script.clone());
                std::thread::spawn(move || {
                    let Some(body) = read_request(&mut s) else {
                        return;
                    };
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock().unwrap().push(v);
                    let next = script.lock().unwrap().pop_front();
                    answer(&mut s, next.as_deref().unwrap_or("done."));
                });
            }
        });
        // Readable by every user: a test may run aha as an unprivileged user.
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[engines.attacker]\nbase_url = \"{base_url}\"\nmodel = \"attacker\"\nprovider = \"openai\"\nreasoning = false\nmax_retries = 0\n"
            ),
        )
        .unwrap();
        Attacker {
            requests,
            config,
            _dir: dir,
        }
    }

    /// `aha run --agent --engine attacker --json` in `workspace`, with this server's config and a
    /// data folder of its own; extra arguments (e.g. `--approve full-auto`) go before the prompt.
    pub fn agent(&self, workspace: &Path, extra: &[&str]) -> std::process::Output {
        let data = workspace.join("..").join(format!(
            "aha-data-{}",
            workspace.file_name().unwrap().to_string_lossy()
        ));
        super::common::bin()
            .args(["run", "--agent", "--engine", "attacker", "--json"])
            .arg("--workspace")
            .arg(workspace)
            .args(extra)
            .arg("do it")
            .env("AHA_CONFIG", &self.config)
            .env("AHA_DATA_DIR", data)
            .env("AHA_SANDBOX_EXE", env!("CARGO_BIN_EXE_aha"))
            .output()
            .unwrap()
    }
}

/// The JSON events of an `aha run --json` output.
pub fn events(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `tool_result` events' (ok, output) pairs.
pub fn results(out: &std::process::Output) -> Vec<(bool, String)> {
    events(out)
        .iter()
        .filter(|e| e["type"] == "tool_result")
        .map(|e| {
            (
                e["ok"].as_bool().unwrap_or(false),
                e["output"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}
