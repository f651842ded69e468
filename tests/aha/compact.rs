//! Conversations that outgrow the context, with the real qwen2.5-coder-0.5b: under `--ctx 2048`
//! an agent session that reads large files fills the context within a few turns, the agent
//! compacts it (old results cut, old turns summarized), every turn finishes, and a fact from the
//! first turn is still there to answer from at the end.

use super::common::{bin, heavy, model};
use serde_json::Value;
use std::path::Path;

/// A workspace of `n` files of about 5 KB each; file k's first line names its colour.
pub fn large_files(n: usize) -> tempfile::TempDir {
    const COLOURS: [&str; 6] = ["amber", "cobalt", "crimson", "jade", "ochre", "violet"];
    let ws = tempfile::tempdir().unwrap();
    for k in 0..n {
        let mut s = format!("colour: {}\n", COLOURS[k % COLOURS.len()]);
        for i in 0..100 {
            s.push_str(&format!(
                "row {i} of part {k}: the quick brown fox jumps over the lazy dog {}\n",
                i * 7 + k
            ));
        }
        std::fs::write(ws.path().join(format!("part_{k:02}.txt")), s).unwrap();
    }
    ws
}

/// Runs one scripted session: `first`, then each of `then`, as turns of one conversation, with
/// the prompt cache on disk in a folder of its own (`data`).
pub fn session(
    ws: &Path,
    data: &Path,
    ctx: usize,
    seed: u64,
    first: &str,
    then: &[String],
) -> Vec<Value> {
    let mut cmd = bin();
    cmd.env_remove("AHA_PROMPT_CACHE").env("AHA_DATA_DIR", data);
    cmd.args(["run", "--agent", "--json", "--approve", "read-only"])
        .args(["--ctx", &ctx.to_string(), "--seed", &seed.to_string()])
        .args(["--max-tokens", "200", "--max-steps", "3"])
        .arg("--workspace")
        .arg(ws)
        .arg("-m")
        .arg(model("qwen2.5-coder-0.5b"))
        .arg(first)
        .current_dir(ws);
    if seed == 0 {
        cmd.args(["--temperature", "0"]);
    }
    for t in then {
        cmd.arg("--then").arg(t);
    }
    let out = cmd.output().unwrap();
    let events = super::attacker::events(&out);
    assert!(
        !events.is_empty(),
        "no events; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    events
}

/// The answer text of each turn, in order.
pub fn answers(events: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for e in events {
        match e["type"].as_str() {
            Some("turn_started") => out.push(String::new()),
            Some("answer_delta") => {
                if let (Some(last), Some(t)) = (out.last_mut(), e["text"].as_str()) {
                    last.push_str(t)
                }
            }
            _ => {}
        }
    }
    out
}

pub const FACT: &str = "The project codename is KESTREL-7.";
pub const ASK: &str =
    "What is the project codename I told you at the start? Answer with the codename only.";

/// The session of the issue: 30 rounds, each asking about one of ten large files (the first
/// also states the fact), then the question about the first turn's fact.
pub fn thirty_rounds() -> (String, Vec<String>) {
    let ask = |k: usize| {
        format!(
            "What colour does part_{:02}.txt name on its first line?",
            k % 10
        )
    };
    let first = format!("{FACT} {}", ask(0));
    let mut then: Vec<String> = (1..30).map(ask).collect();
    then.push(ASK.into());
    (first, then)
}

#[test]
fn a_thirty_round_session_reading_large_files_compacts_and_every_turn_finishes() {
    let _g = heavy();
    let ws = large_files(10);
    let (first, then) = thirty_rounds();
    let data = tempfile::tempdir().unwrap();
    let ev = session(ws.path(), data.path(), 2048, 0, &first, &then);
    let finished: Vec<&Value> = ev.iter().filter(|e| e["type"] == "turn_finished").collect();
    assert_eq!(finished.len(), then.len() + 1, "every turn finishes");
    let errors: Vec<&Value> = ev.iter().filter(|e| e["type"] == "error").collect();
    assert!(errors.is_empty(), "no context errors: {errors:#?}");
    for f in &finished {
        assert_ne!(f["stats"]["finish_reason"], "context", "{f}");
        assert!(f["stats"]["prompt_tokens"].as_u64() < Some(2048), "{f}");
    }
    let reads = ev
        .iter()
        .filter(|e| e["type"] == "tool_result" && e["ok"] == true)
        .count();
    assert!(reads >= 1, "a file was read");
    let compacted: Vec<&Value> = ev.iter().filter(|e| e["type"] == "compacted").collect();
    assert!(
        compacted
            .iter()
            .any(|c| c["summarized_turns"].as_u64() >= Some(1)),
        "old turns were summarized: {compacted:#?}"
    );
    for c in &compacted {
        assert!(c["after"].as_u64() < c["before"].as_u64(), "{c}");
        assert_eq!(c["context"], 2048);
    }
    let last = answers(&ev).pop().unwrap_or_default();
    assert!(
        last.contains("KESTREL-7"),
        "the first turn's fact survived compaction: {last:?}"
    );
    // The prompt cache survives compaction: in a turn whose earlier turns were just summarized
    // (and which called no tool), the system prompt and the tools (~1,300 tokens) come from the
    // cache on disk, although the summary's own generation took the engine's memory.
    let mut checked = 0;
    for turn in ev.split(|e| e["type"] == "turn_started").skip(1) {
        let summarized = turn
            .iter()
            .any(|e| e["type"] == "compacted" && e["summarized_turns"].as_u64() >= Some(1));
        let called = turn.iter().any(|e| e["type"] == "tool_call");
        let Some(f) = turn.iter().find(|e| e["type"] == "turn_finished") else {
            continue;
        };
        if summarized && !called {
            let (prompt, prefilled) = (
                &f["stats"]["prompt_tokens"],
                &f["stats"]["prefilled_tokens"],
            );
            assert!(
                prefilled.as_u64() < Some(prompt.as_u64().unwrap_or(0) / 2),
                "prefilled {prefilled} of {prompt} after a summary"
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "a turn after a summary was checked");
}

/// An OpenAI-compatible server that answers by what it is asked: a summary when asked to
/// summarize, an answer after a tool result, and otherwise a native call reading the file the
/// question names. Every request body is kept.
fn reading_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use super::remote::{delta, finish, read_request, sse};
    use serde_json::json;
    use std::io::Write;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let bs = bodies.clone();
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(mut s) = conn else { continue };
            let body: Value = serde_json::from_slice(&read_request(&mut s)).unwrap_or_default();
            let last = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .cloned()
                .unwrap_or_default();
            let text = last["content"].as_str().unwrap_or_default().to_string();
            bs.lock().unwrap().push(body);
            let chunks = if text.contains("<conversation>") {
                vec![
                    delta(
                        json!({"content": "- the project codename is KESTREL-7\n- the files were read"}),
                    ),
                    finish("stop"),
                ]
            } else if last["role"] == "tool" {
                vec![
                    delta(json!({"content": "Its first line names a colour."})),
                    finish("stop"),
                ]
            } else {
                let file = text
                    .split_whitespace()
                    .find(|w| w.starts_with("part_"))
                    .unwrap_or("part_00.txt")
                    .to_string();
                vec![
                    delta(
                        json!({"tool_calls": [{"index": 0, "id": format!("srv_{n}"), "type": "function",
                        "function": {"name": "read_file", "arguments": json!({"path": file}).to_string()}}]}),
                    ),
                    finish("tool_calls"),
                ]
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            );
            for p in sse(&chunks) {
                let _ = s.write_all(p.as_bytes());
            }
        }
    });
    (url, bodies)
}

/// The same thirty rounds on a remote engine, where the agent can only estimate tokens (3,072
/// of context: the estimate puts the tools' schemas alone near 1,800): every round reads a whole
/// 7 KB file (about 2,400 tokens by the estimate), and no request the server gets is larger than
/// `--ctx` allows.
#[test]
fn thirty_rounds_on_a_remote_engine_never_send_more_than_the_context() {
    let ws = large_files(10);
    let (url, bodies) = reading_server();
    let cfg = ws.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("[engines.fake]\nbase_url = \"{url}\"\nmodel = \"m\"\n"),
    )
    .unwrap();
    let (first, then) = thirty_rounds();
    let mut cmd = bin();
    cmd.args([
        "run", "--agent", "--json", "--engine", "fake", "--ctx", "3072",
    ])
    .args(["--approve", "read-only", "--workspace"])
    .arg(ws.path())
    .arg(&first)
    .env("AHA_CONFIG", &cfg)
    .current_dir(ws.path());
    for t in &then {
        cmd.arg("--then").arg(t);
    }
    let out = cmd.output().unwrap();
    let ev = super::attacker::events(&out);
    let finished = ev.iter().filter(|e| e["type"] == "turn_finished").count();
    assert_eq!(finished, 31, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ev.iter().all(|e| e["type"] != "error"), "{ev:#?}");
    let reads = ev
        .iter()
        .filter(|e| e["type"] == "tool_result" && e["ok"] == true)
        .count();
    assert_eq!(
        reads, 31,
        "every round read its file (the server reads one for the last question too)"
    );
    let compacted: Vec<&Value> = ev.iter().filter(|e| e["type"] == "compacted").collect();
    let summarized: u64 = compacted
        .iter()
        .filter_map(|c| c["summarized_turns"].as_u64())
        .sum();
    assert!(summarized >= 25, "old turns were summarized: {summarized}");
    // What went over the wire, counted as the agent estimates a remote prompt (a token per 3
    // bytes of ASCII, 4 a message): no request is over the context.
    let bodies = bodies.lock().unwrap();
    assert!(
        bodies.len() > 60,
        "calls, answers and summaries: {}",
        bodies.len()
    );
    let tokens = |s: &str| s.len().div_ceil(3);
    for b in bodies.iter() {
        let msgs = b["messages"].as_array().unwrap();
        let n: usize = msgs
            .iter()
            .map(|m| {
                4 + tokens(m["content"].as_str().unwrap_or_default())
                    + m.get("tool_calls").map_or(0, |c| tokens(&c.to_string()))
            })
            .sum::<usize>()
            + b["tools"]
                .as_array()
                .map_or(0, |t| t.iter().map(|t| tokens(&t.to_string())).sum());
        assert!(n < 3072, "a request of about {n} tokens");
    }
    // The last question still has the fact, from the summary and the user's own words.
    let last = bodies.last().unwrap()["messages"].to_string();
    assert!(last.contains("KESTREL-7"), "{last}");
    assert!(last.contains(ASK), "the latest message is never cut");
}
