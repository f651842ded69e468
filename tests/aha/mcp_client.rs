//! The MCP client against real servers, through the binary (`aha run --agent --json`):
//! `@modelcontextprotocol/server-filesystem` and `server-everything` from npm over stdio, and a
//! small Python server written with the `mcp` package (`mcp_http_server.py`) over streamable
//! HTTP and over stdio, whose tools crash the server, hang, or have a schema the constrained
//! decoder cannot compile. The scripted engine (`attacker.rs`) drives the agent into exact calls
//! without a model; one test lets qwen2.5-coder-0.5b make the call itself, constrained.
//!
//! The servers come from `.ci/run`: `AHA_TEST_MCP_NPM` names the npm folder, `AHA_TEST_PYTHON` a
//! Python with `mcp`. Without them the tests install both under ~/.cache themselves, and skip
//! (saying so loudly) only where npm or pip is missing.

use super::attacker::{call, events, Attacker};
use super::common::{bin, heavy, model};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NPM_PACKAGES: [&str; 2] = [
    "@modelcontextprotocol/server-filesystem",
    "@modelcontextprotocol/server-everything",
];

/// The entry script of an installed npm server package.
fn npm_server(dir: &Path, package: &str) -> PathBuf {
    dir.join("node_modules")
        .join(package)
        .join("dist")
        .join("index.js")
}

/// The folder the npm servers are installed in: $AHA_TEST_MCP_NPM (set by .ci/run), else
/// ~/.cache/aha-mcp-npm, installed there with npm when missing. None only without npm.
fn npm_dir() -> Option<PathBuf> {
    let ready = |d: &Path| NPM_PACKAGES.iter().all(|p| npm_server(d, p).is_file());
    if let Some(d) = std::env::var_os("AHA_TEST_MCP_NPM").map(PathBuf::from) {
        assert!(
            ready(&d),
            "AHA_TEST_MCP_NPM={} lacks {NPM_PACKAGES:?}",
            d.display()
        );
        return Some(d);
    }
    let d = dirs::cache_dir()?.join("aha-mcp-npm");
    if !ready(&d) {
        let _ = std::fs::create_dir_all(&d);
        let ok = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&d)
            .args(NPM_PACKAGES)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
    }
    ready(&d).then_some(d)
}

/// A Python with the `mcp` package (and uvicorn, which it brings), as `common::test_python` finds it.
fn mcp_python() -> Option<PathBuf> {
    super::common::test_python("mcp, uvicorn")
}

fn skipped(what: &str) {
    eprintln!("\n!!!!!!!! SKIPPED: {what} cannot be installed here; run .ci/run !!!!!!!!\n");
}

const PY_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aha/mcp_http_server.py");

/// The Python test server over streamable HTTP, killed on drop.
struct PyServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl PyServer {
    fn start(py: &Path) -> PyServer {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let child = Command::new(py)
            .arg(PY_SERVER)
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().to_string();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the Python MCP server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        PyServer {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
            _dir: dir,
        }
    }

    /// Whether the server process is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds `tables` (`[mcp.servers.…]`) to the attacker's config file.
fn add_config(a: &Attacker, tables: &str) {
    let mut text = std::fs::read_to_string(&a.config).unwrap();
    text.push_str(tables);
    std::fs::write(&a.config, text).unwrap();
}

/// A TOML string.
fn q(s: impl AsRef<str>) -> String {
    Value::from(s.as_ref()).to_string()
}

fn of_type<'a>(ev: &'a [Value], t: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["type"] == t).collect()
}

fn notices(ev: &[Value]) -> Vec<String> {
    of_type(ev, "notice")
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// The tool_result events as (ok, output).
fn results(ev: &[Value]) -> Vec<(bool, String)> {
    of_type(ev, "tool_result")
        .iter()
        .map(|e| {
            (
                e["ok"].as_bool().unwrap_or(false),
                e["output"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn finished(out: &std::process::Output, ev: &[Value]) {
    assert!(
        ev.last().is_some_and(|e| e["type"] == "turn_finished"),
        "the turn did not finish; stderr: {}\nevents: {ev:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{ev:#?}");
}

/// The tools the agent offered the engine in its first request, by name.
fn offered(a: &Attacker) -> Vec<(String, Value)> {
    let reqs = a.requests.lock().unwrap();
    reqs[0]["tools"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["function"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        t["function"]["parameters"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn mcp_client_lists_and_calls_the_npm_servers_and_a_missing_one_is_a_notice() {
    let Some(npm) = npm_dir() else {
        return skipped("the npm MCP servers");
    };
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().canonicalize().unwrap();
    std::fs::write(root_path.join("notes.txt"), "the secret word is pelican\n").unwrap();
    let notes = root_path.join("notes.txt").to_string_lossy().to_string();
    let a = Attacker::start(vec![
        call("fs__read_text_file", json!({"path": notes})),
        call("everything__get-sum", json!({"a": 2, "b": 40})),
        call(
            "fs__write_file",
            json!({"path": root_path.join("x.txt"), "content": "no"}),
        ),
        "The word is pelican and the sum is 42.".into(),
    ]);
    add_config(
        &a,
        &format!(
            "[mcp.servers.fs]\ncommand = \"node\"\nargs = [{}, {}]\n\
             [mcp.servers.everything]\ncommand = \"node\"\nargs = [{}, \"stdio\"]\n\
             [mcp.servers.ghost]\ncommand = \"/nonexistent/mcp-ghost\"\n\
             [mcp.servers.off]\ncommand = \"/nonexistent/mcp-off\"\nenabled = false\n",
            q(npm_server(&npm, NPM_PACKAGES[0]).to_string_lossy()),
            q(root_path.to_string_lossy()),
            q(npm_server(&npm, NPM_PACKAGES[1]).to_string_lossy()),
        ),
    );
    let ws = tempfile::tempdir().unwrap();
    let out = a.agent(ws.path(), &[]);
    let ev = events(&out);
    finished(&out, &ev);

    // Listing: both servers' tools, named SERVER__tool, with their schemas; the built-in tools
    // stay; nothing of the disabled or the missing server.
    let tools = offered(&a);
    let names: Vec<&str> = tools.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "read_file",
        "fs__read_text_file",
        "fs__list_allowed_directories",
        "fs__write_file",
        "everything__echo",
        "everything__get-sum",
    ] {
        assert!(names.contains(&want), "{want} not offered: {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("off__") || n.starts_with("ghost__")),
        "{names:?}"
    );
    let echo = &tools
        .iter()
        .find(|(n, _)| n == "everything__echo")
        .unwrap()
        .1;
    assert_eq!(echo["properties"]["message"]["type"], "string", "{echo}");

    // The missing server is a notice that names it and says why; the others work.
    let n = notices(&ev);
    assert!(
        n.iter()
            .any(|m| m.starts_with("MCP server `ghost` failed to start")
                && m.contains("no such program")),
        "{n:?}"
    );
    let r = results(&ev);
    assert_eq!(r.len(), 3, "{ev:#?}");
    assert!(r[0].0 && r[0].1.contains("pelican"), "{r:?}");
    assert!(r[1].0 && r[1].1.contains("42"), "{r:?}");
    // write_file is not read-only: under `ask`, headless, it is refused, and nothing is written.
    assert!(
        !r[2].0 && r[2].1.contains("needs a person's approval"),
        "{r:?}"
    );
    assert!(!root_path.join("x.txt").exists());
}

#[test]
fn mcp_client_real_model_calls_an_mcp_tool_constrained() {
    let Some(npm) = npm_dir() else {
        return skipped("the npm MCP servers");
    };
    let _g = heavy();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mcp.servers.everything]\ncommand = \"node\"\nargs = [{}, \"stdio\"]\n",
            q(npm_server(&npm, NPM_PACKAGES[1]).to_string_lossy())
        ),
    )
    .unwrap();
    let ws = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["run", "--agent", "--json", "--temperature", "0"])
        .args(["--max-tokens", "300", "--max-steps", "3"])
        .arg("--workspace")
        .arg(ws.path())
        .arg("-m")
        .arg(model("qwen2.5-coder-0.5b"))
        .arg("Call the tool everything__echo with the message \"hello from aha\".")
        .env("AHA_CONFIG", &cfg)
        .current_dir(ws.path())
        .output()
        .unwrap();
    let ev = events(&out);
    finished(&out, &ev);
    let calls = of_type(&ev, "tool_call");
    let echo = calls
        .iter()
        .find(|c| c["name"] == "everything__echo")
        .unwrap_or_else(|| panic!("no everything__echo call: {ev:#?}"));
    assert!(
        echo["arguments"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hello")),
        "{echo}"
    );
    let res = of_type(&ev, "tool_result")
        .into_iter()
        .find(|r| r["id"] == echo["id"])
        .expect("a result for the call");
    assert_eq!(res["ok"], true, "{res}");
    assert!(
        res["output"]
            .as_str()
            .is_some_and(|o| o.contains("Echo: ") && o.contains("hello")),
        "{res}"
    );
}

#[test]
fn mcp_client_survives_a_crash_a_hang_and_an_odd_schema_over_http() {
    let Some(py) = mcp_python() else {
        return skipped("the Python `mcp` package");
    };
    let mut server = PyServer::start(&py);
    let a = Attacker::start(vec![
        call("py__shout", json!({"text": "hi"})),
        call("py__odd", json!({"when": "now"})),
        call("py__hang", json!({})),
        call("py__crash", json!({})),
        call("py__shout", json!({"text": "again"})),
        "The server is gone.".into(),
    ]);
    add_config(
        &a,
        &format!(
            "[mcp.servers.py]\nurl = {}\ncall_timeout_s = 3\nstart_timeout_s = 10\n",
            q(&server.url)
        ),
    );
    let ws = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let out = a.agent(ws.path(), &["--approve", "full-auto"]);
    let took = t0.elapsed();
    let ev = events(&out);
    finished(&out, &ev);
    let r = results(&ev);
    let n = notices(&ev);
    eprintln!("results: {r:#?}\nnotices: {n:#?}");
    assert_eq!(r.len(), 5, "{ev:#?}");

    // A read-only tool answers.
    assert_eq!(r[0], (true, "HI".to_string()));

    // The odd schema is offered simplified, with a notice, and its call still works.
    let tools = offered(&a);
    let odd = &tools.iter().find(|(n, _)| n == "py__odd").unwrap().1;
    assert_eq!(
        *odd,
        json!({"type": "object", "properties": {"when": {}, "code": {"type": "string"}}, "required": ["when"]})
    );
    assert!(
        n.iter().any(|m| m.starts_with(
            "MCP tool `py__odd`: its argument schema cannot be compiled for constrained decoding"
        )),
        "{n:?}"
    );
    assert!(r[1].0 && r[1].1.contains("odd got"), "{r:?}");

    // The hang times out after call_timeout_s, with a notice.
    assert!(!r[2].0, "{r:?}");
    assert!(
        r[2].1
            .starts_with("timed out: the MCP server `py` did not answer within 3 s"),
        "{r:?}"
    );
    assert!(
        n.iter()
            .any(|m| m.contains("MCP server `py`: a call to `hang` timed out after 3 s")),
        "{n:?}"
    );

    // The crash fails its call (the connection drops, or the call times out), with a notice;
    // the next call tries to start the server again, fails and says so.
    assert!(!r[3].0, "{r:?}");
    assert!(
        r[3].1.contains("crashed") || r[3].1.starts_with("timed out"),
        "{r:?}"
    );
    assert!(!server.alive(), "the crash tool stops the server");
    assert!(!r[4].0 && r[4].1.contains("did not start again"), "{r:?}");
    assert!(
        n.iter()
            .any(|m| m.starts_with("MCP server `py` failed to start")
                && m.contains("could not connect")
                && !m.contains("WorkerTransport")),
        "{n:?}"
    );
    // The turn went on to its answer, well before any default timeout.
    let answer: String = of_type(&ev, "answer_delta")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(answer.contains("The server is gone."), "{answer}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn mcp_client_restarts_a_stdio_server_that_crashed() {
    let Some(py) = mcp_python() else {
        return skipped("the Python `mcp` package");
    };
    let a = Attacker::start(vec![
        call("pyio__crash", json!({})),
        call("pyio__shout", json!({"text": "again"})),
        "Done.".into(),
    ]);
    add_config(
        &a,
        &format!(
            "[mcp.servers.pyio]\ncommand = {}\nargs = [{}, \"--stdio\"]\nstart_timeout_s = 60\ncall_timeout_s = 20\n",
            q(py.to_string_lossy()),
            q(PY_SERVER)
        ),
    );
    let ws = tempfile::tempdir().unwrap();
    let out = a.agent(ws.path(), &["--approve", "full-auto"]);
    let ev = events(&out);
    finished(&out, &ev);
    let r = results(&ev);
    assert_eq!(r.len(), 2, "{ev:#?}");
    assert!(
        !r[0].0 && r[0].1.contains("crashed during the call"),
        "{r:?}"
    );
    let n = notices(&ev);
    assert!(
        n.iter().any(
            |m| m.starts_with("MCP server `pyio`: it stopped during a call to `crash`")
                && m.contains("crashing on purpose")
        ),
        "{n:?}"
    );
    // Started again on its next call.
    assert_eq!(r[1], (true, "AGAIN".to_string()));
}
