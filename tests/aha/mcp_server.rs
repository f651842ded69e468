//! `aha mcp` through a real MCP client: the official Python SDK (`mcp` on PyPI) starts the
//! binary over stdio, as Codex or Claude Code would, and its `search_docs` hits must be
//! `aha search --json`'s, in English and in Korean; `read_file` reads the workspace and nothing
//! outside it. Without Python, the protocol's start and end are still checked by hand.

use super::common::bin;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Copies the folder `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A workspace `ws/` with the demo corpus (`assets/corpus`, English and Korean) and a few small
/// documents of its own, inside a folder that also holds a file the server must not reach.
fn corpus() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let ws = d.path().join("ws");
    copy_tree(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/corpus")),
        &ws.join("corpus"),
    );
    std::fs::create_dir_all(ws.join("docs")).unwrap();
    std::fs::write(
        ws.join("docs/헌법.md"),
        "# 대한민국 헌법\n\n## 대통령\n\n대통령의 임기는 5년으로 하며, 중임할 수 없다.\n\n## 국회\n\n국회의원의 임기는 4년으로 한다.\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("docs/engine.md"),
        "# Engine\n\nIntro.\n\n## Caching\n\nThe runner keeps running totals of every cached key.\n\n## Truncation\n\nThe KV cache is truncated to the common prefix.\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("notes.txt"),
        "The cache key is the prompt's hash.\n임기 중의 기록.\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("outside.txt"),
        "secret outside the workspace\n",
    )
    .unwrap();
    (d, ws)
}

fn aha(dir: &Path, args: &[&str]) -> String {
    let o = bin()
        .current_dir(dir)
        .env_remove("AHA_INDEX")
        .env_remove("AHA_RAG_BOOST")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "aha {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `aha search --json -k K QUERY`'s hits as `path:line`.
fn cli_hits(ws: &Path, q: &str, k: usize) -> Vec<String> {
    aha(ws, &["search", "--json", "-k", &k.to_string(), q])
        .lines()
        .map(|l| {
            let h: Value = serde_json::from_str(l).unwrap();
            format!("{}:{}", h["path"].as_str().unwrap(), h["line"])
        })
        .collect()
}

/// `aha search --json -k K QUERY`'s scores, as it prints them.
fn cli_scores(ws: &Path, q: &str, k: usize) -> Vec<String> {
    aha(ws, &["search", "--json", "-k", &k.to_string(), q])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["score"].to_string())
        .collect()
}

/// A Python with the `mcp` package, as `common::test_python` finds it.
fn mcp_python() -> Option<PathBuf> {
    super::common::test_python("mcp")
}

/// Runs tests/aha/mcp_client.py against `aha mcp -C ws` with `calls`; None when the SDK cannot
/// be had here (said loudly).
fn client(ws: &Path, calls: Value) -> Option<Value> {
    let Some(py) = mcp_python() else {
        eprintln!("\n!!!!!!!! SKIPPED: the mcp Python SDK cannot be installed here (no python3 venv/pip); run .ci/run !!!!!!!!\n");
        return None;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aha/mcp_client.py");
    let o = std::process::Command::new(py)
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_aha"))
        .arg(ws)
        .arg(calls.to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mcp_client.py: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Some(serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn mcp_server_search_docs_gives_aha_search_hits_to_a_real_mcp_client() {
    let (_d, ws) = corpus();
    aha(&ws, &["index", "--json"]);
    let queries = [
        "KV cache truncation",
        "running totals",
        "대통령의 임기",
        "임기",
        "바이그램 검색",
        "\"search_docs\"",
    ];
    let mut calls: Vec<Value> = queries
        .iter()
        .map(|q| json!({"tool": "search_docs", "arguments": {"query": q, "k": 5}}))
        .collect();
    calls.push(
        json!({"tool": "read_file", "arguments": {"path": "docs/헌법.md", "start": 5, "end": 5}}),
    );
    calls.push(json!({"tool": "read_file", "arguments": {"path": "../outside.txt"}}));
    let outside = ws.parent().unwrap().join("outside.txt");
    calls.push(json!({"tool": "read_file", "arguments": {"path": outside}}));
    calls.push(json!({"tool": "list_dir", "arguments": {"path": "."}}));
    let Some(out) = client(&ws, Value::Array(calls)) else {
        return;
    };

    assert_eq!(out["server"]["name"], "aha", "{out}");
    let instructions = out["server"]["instructions"].as_str().unwrap();
    assert!(instructions.contains("path:line"), "{instructions}");
    let tools = out["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["search_docs", "read_file", "list_dir"]);
    for t in tools {
        assert_eq!(t["read_only"], true, "{t}");
        assert_eq!(t["destructive"], false, "{t}");
    }
    assert!(tools[0]["output_schema"].is_object(), "{}", tools[0]);

    let results = out["results"].as_array().unwrap();
    for (q, r) in queries.iter().zip(results) {
        assert_eq!(r["is_error"], false, "{q}: {r}");
        let want = cli_hits(&ws, q, 5);
        assert!(!want.is_empty(), "{q}: the corpus must answer it");
        let hits = r["structured"]["hits"].as_array().unwrap();
        let got: Vec<String> = hits
            .iter()
            .map(|h| format!("{}:{}", h["path"].as_str().unwrap(), h["line"]))
            .collect();
        assert_eq!(got, want, "{q}: {r}");
        let scores: Vec<String> = hits.iter().map(|h| h["score"].to_string()).collect();
        assert_eq!(scores, cli_scores(&ws, q, 5), "{q}");
        let cited: Vec<&str> = hits
            .iter()
            .map(|h| h["citation"].as_str().unwrap())
            .collect();
        assert_eq!(cited, want, "{q}");
        let text = r["text"].as_str().unwrap();
        for c in &want {
            assert!(text.contains(c.as_str()), "{q}: {c} not in {text}");
        }
    }
    // The Korean word is found inside 임기는 (the analyzer's character pairs), on its line.
    assert!(cli_hits(&ws, "임기", 5).contains(&"docs/헌법.md:5".to_string()));
    // The demo corpus answers in Korean from its Korean pages.
    let ko = cli_hits(&ws, "바이그램 검색", 5);
    assert!(ko[0].starts_with("corpus/ko/"), "{ko:?}");

    let read = &results[queries.len()];
    assert_eq!(read["is_error"], false, "{read}");
    assert!(
        read["text"]
            .as_str()
            .unwrap()
            .contains("    5  대통령의 임기는 5년으로 하며"),
        "{read}"
    );
    for refused in &results[queries.len() + 1..queries.len() + 3] {
        assert_eq!(refused["is_error"], true, "{refused}");
        assert!(
            !refused["text"].as_str().unwrap().contains("secret outside"),
            "{refused}"
        );
    }
    let listed = results[queries.len() + 3]["text"].as_str().unwrap();
    assert!(
        listed.contains("corpus/") && listed.contains("docs/") && listed.contains("notes.txt"),
        "{listed}"
    );
    assert!(!listed.contains(".aha"), "{listed}");
}

#[test]
fn mcp_server_without_an_index_tells_the_client_how_to_build_one() {
    let (_d, ws) = corpus();
    let calls = json!([
        {"tool": "search_docs", "arguments": {"query": "cache"}},
        {"tool": "read_file", "arguments": {"path": "notes.txt"}},
    ]);
    let Some(out) = client(&ws, calls) else {
        return;
    };
    let r = &out["results"][0];
    assert_eq!(r["is_error"], true, "{r}");
    assert!(r["text"].as_str().unwrap().contains("aha index"), "{r}");
    assert_eq!(out["results"][1]["is_error"], false, "{out}");
}

/// Without any SDK: stdout carries only JSON-RPC, stderr stays quiet, and the server exits 0
/// when its client closes stdin, before or after the handshake.
#[test]
fn mcp_server_speaks_only_json_rpc_on_stdout_and_exits_when_stdin_closes() {
    let (_d, ws) = corpus();
    let start = || {
        bin()
            .args(["mcp", "-C"])
            .arg(&ws)
            .env_remove("AHA_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let finish = |mut child: std::process::Child| {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                let o = child.wait_with_output().unwrap();
                return (s, o.stdout, o.stderr);
            }
            if t0.elapsed().as_secs() > 20 {
                let _ = child.kill();
                panic!("aha mcp did not exit after stdin closed");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    // Closed at once: nothing to answer, a clean exit.
    let mut child = start();
    drop(child.stdin.take());
    let (status, out, err) = finish(child);
    assert!(
        status.success(),
        "{status}: {}",
        String::from_utf8_lossy(&err)
    );
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));

    // A handshake and a call by hand, then stdin closes.
    let mut child = start();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let send = |stdin: &mut std::process::ChildStdin, v: Value| {
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    };
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}}}),
    );
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let init: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(init["id"], 1, "{init}");
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "aha", "{init}");
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "read_file", "arguments": {"path": "notes.txt"}}}),
    );
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let call: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(call["id"], 2, "{call}");
    assert_eq!(call["result"]["isError"], false, "{call}");
    drop(stdin);
    let mut child = child;
    child.stdout = Some(stdout.into_inner());
    let (status, rest, err) = finish(child);
    assert!(
        status.success(),
        "{status}: {}",
        String::from_utf8_lossy(&err)
    );
    for l in String::from_utf8_lossy(&rest).lines() {
        serde_json::from_str::<Value>(l)
            .unwrap_or_else(|e| panic!("not JSON-RPC on stdout: {l:?}: {e}"));
    }
    assert!(err.is_empty(), "stderr: {}", String::from_utf8_lossy(&err));
}
