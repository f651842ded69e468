//! The document index through the real binary: `aha index` / `aha search` on real files on disk,
//! incremental updates, a kill -9 in the middle of indexing, and the `search_docs` tool.

use super::common::bin;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn run(dir: &Path, args: &[&str]) -> Output {
    let o = bin().current_dir(dir).args(args).output().unwrap();
    o
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(
        o.status.success(),
        "aha {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn search(dir: &Path, q: &str) -> Vec<Value> {
    ok(dir, &["search", "--json", "-k", "10", q])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The files hit, in order, each once.
fn paths(hits: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in hits {
        let p = h["path"].as_str().unwrap().to_string();
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

fn index_json(dir: &Path) -> Value {
    serde_json::from_str(&ok(dir, &["index", "--json"])).unwrap()
}

fn corpus() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir_all(p.join("docs")).unwrap();
    std::fs::write(
        p.join("docs/헌법.md"),
        "# 대한민국 헌법\n\n## 대통령\n\n대통령의 임기는 5년으로 하며, 중임할 수 없다.\n\n## 국회\n\n국회의원의 임기는 4년으로 한다.\n",
    )
    .unwrap();
    std::fs::write(
        p.join("docs/engine.md"),
        "# Engine\n\nIntro.\n\n## Caching\n\nThe runner keeps running totals of every cached key.\n",
    )
    .unwrap();
    std::fs::write(
        p.join("page.html"),
        "<html><head><title>Page</title><script>var hiddenword = 1;</script></head><body><h1>Visible heading</h1><p>Seaside lighthouse keepers.</p></body></html>",
    )
    .unwrap();
    std::fs::write(p.join("blob.dat"), b"\x00\x01\x02\x03binary lighthouse").unwrap();
    std::fs::write(p.join("latin1.txt"), b"caf\xe9 lighthouse menu").unwrap();
    std::fs::write(p.join(".gitignore"), "ignored/\n").unwrap();
    std::fs::create_dir_all(p.join("ignored")).unwrap();
    std::fs::write(p.join("ignored/secret.md"), "lighthouse secret").unwrap();
    d
}

#[test]
fn index_and_search_cite_files_and_lines_in_korean_and_english() {
    let d = corpus();
    let p = d.path();
    let rep = index_json(p);
    assert_eq!(rep["indexed"], 4, "{rep}"); // 2 md, html, latin1.txt
    assert_eq!(rep["binary"], 1, "{rep}");
    assert_eq!(rep["lossy"], serde_json::json!(["latin1.txt"]), "{rep}");

    // A particle-inflected Korean query finds the passage, at its line.
    let h = search(p, "대통령은 임기가 몇 년이지");
    assert_eq!(h[0]["path"], "docs/헌법.md", "{h:?}");
    assert!([3, 5].contains(&h[0]["line"].as_u64().unwrap()), "{h:?}");
    assert_eq!(h[0]["start_line"], 3, "{h:?}");
    assert!(
        h[0]["heading"].as_str().unwrap().ends_with("대통령"),
        "{h:?}"
    );
    assert!(h[0]["snippet"].as_str().unwrap().contains("**"), "{h:?}");
    assert!(h[0]["score"].as_f64().unwrap() > 0.0);

    // English stemming: "run" finds "runner … running".
    let h = search(p, "run");
    assert_eq!(paths(&h), ["docs/engine.md"]);

    // HTML: visible text yes, script no; binary and ignored files are not there.
    let mut lh = paths(&search(p, "lighthouse"));
    lh.sort();
    assert_eq!(lh, ["latin1.txt", "page.html"]);
    assert!(search(p, "hiddenword").is_empty());

    // A phrase must appear as written.
    assert_eq!(
        paths(&search(p, "\"keepers seaside\"")),
        Vec::<String>::new()
    );
    assert_eq!(paths(&search(p, "\"seaside lighthouse\"")), ["page.html"]);

    // Human output: path:start-end.
    let out = ok(p, &["search", "임기"]);
    assert!(out.contains("docs/헌법.md:3-5"), "{out}");
}

#[test]
fn reindexing_skips_unchanged_replaces_changed_and_drops_deleted_files() {
    let d = corpus();
    let p = d.path();
    index_json(p);
    let rep = index_json(p);
    assert_eq!(
        (rep["indexed"].as_u64(), rep["unchanged"].as_u64()),
        (Some(0), Some(4))
    );

    std::fs::write(
        p.join("docs/engine.md"),
        "# Engine\n\nNow about zeppelins.\n",
    )
    .unwrap();
    std::fs::remove_file(p.join("page.html")).unwrap();
    let rep = index_json(p);
    assert_eq!(rep["indexed"], 1, "{rep}");
    assert_eq!(rep["unchanged"], 2, "{rep}");
    assert_eq!(rep["removed"], 1, "{rep}");
    assert_eq!(paths(&search(p, "zeppelins")), ["docs/engine.md"]);
    assert!(search(p, "runner").is_empty(), "the old text is gone");
    assert_eq!(paths(&search(p, "lighthouse")), ["latin1.txt"]);
}

#[test]
fn a_missing_index_says_how_to_make_one() {
    let d = tempfile::tempdir().unwrap();
    let o = run(d.path(), &["search", "anything"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("aha index"), "{err}");
}

#[test]
fn kill_9_while_indexing_leaves_a_working_index_and_the_next_run_finishes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // Enough files for several commits (one per 200 files).
    for i in 0..2400 {
        let dir = p.join(format!("d{:02}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let body: String = (0..40)
            .map(|k| format!("Line {k} of note {i} mentions marker{i} and some filler words.\n"))
            .collect();
        std::fs::write(
            dir.join(format!("n{i:04}.md")),
            format!("# Note {i}\n\n{body}"),
        )
        .unwrap();
    }
    let mut child = bin()
        .current_dir(p)
        .args(["index", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first commit to be searchable, then kill.
    let t0 = std::time::Instant::now();
    loop {
        let o = run(p, &["search", "--json", "marker0"]);
        if o.status.success() && !o.stdout.is_empty() {
            break;
        }
        assert!(t0.elapsed().as_secs() < 120, "no commit appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let finished_anyway = child.wait().unwrap().success();
    // The last commit answers.
    assert_eq!(paths(&search(p, "marker0")), ["d00/n0000.md"]);
    let rep = index_json(p);
    let total = rep["indexed"].as_u64().unwrap() + rep["unchanged"].as_u64().unwrap();
    assert_eq!(total, 2400, "{rep}");
    if !finished_anyway {
        assert!(
            rep["indexed"].as_u64().unwrap() > 0,
            "the rest was indexed: {rep}"
        );
    }
    assert_eq!(paths(&search(p, "marker2399")), ["d23/n2399.md"]);
    let again = index_json(p);
    assert_eq!(again["unchanged"], 2400, "{again}");
}

#[test]
fn search_docs_tool_returns_the_same_hits_as_the_cli() {
    let d = corpus();
    let p = d.path();
    index_json(p);
    let reg = aha::tools::Registry::builtin();
    let tool = reg.get("search_docs").expect("search_docs is built in");
    let ctx = aha::tools::ToolContext::new(p).unwrap();
    let out = tool.run(serde_json::json!({"query": "대통령의 임기", "k": 3}), &ctx);
    assert!(out.ok, "{}", out.output);
    let first: Value = serde_json::from_str(out.output.lines().next().unwrap()).unwrap();
    let cli = search(p, "대통령의 임기");
    assert_eq!(first, cli[0]);

    // No index: an error the model can act on.
    let empty = tempfile::tempdir().unwrap();
    let ctx = aha::tools::ToolContext::new(empty.path()).unwrap();
    let out = tool.run(serde_json::json!({"query": "x"}), &ctx);
    assert!(
        !out.ok && out.output.contains("aha index"),
        "{}",
        out.output
    );
}

#[test]
fn bad_inputs_are_reported_and_the_rest_is_indexed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // An empty corpus indexes to an empty index that answers with nothing.
    let rep = index_json(p);
    assert_eq!(rep["indexed"], 0, "{rep}");
    assert!(search(p, "anything").is_empty());

    std::fs::write(p.join("fake.md"), b"\x00\x00PK\x03\x04 not text").unwrap();
    std::fs::write(p.join("good.md"), "# Good\n\nA quokka lives here.\n").unwrap();
    // One 40 MB line: over the size limit, reported, not read.
    std::fs::write(p.join("huge.txt"), "quokka ".repeat(6_000_000)).unwrap();
    std::fs::create_dir_all(p.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", p.join("loop/up")).unwrap();
    let rep = index_json(p);
    assert_eq!(rep["indexed"], 1, "{rep}");
    assert_eq!(rep["binary"], 1, "the binary .md: {rep}");
    let failed = rep["failed"].to_string();
    assert!(
        failed.contains("huge.txt") && failed.contains("larger than"),
        "{rep}"
    );
    assert_eq!(paths(&search(p, "quokka")), ["good.md"]);

    // A query with nothing searchable says so.
    let o = run(p, &["search", "?!.,"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no searchable words"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
