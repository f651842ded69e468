//! Row 12 and the size findings of issue 14: no panic reaches the user from a damaged index or
//! model file, and no single input (a one-line 22 MB file, a 50 MB event in a session log)
//! makes aha hold hundreds of megabytes.
//!
//! Peak memory is measured on a child process. `getrusage(RUSAGE_CHILDREN)` gives the largest
//! child a process has waited for, and the other tests of this binary start children of their
//! own at the same time, so the measuring is done by a fresh copy of this test binary running
//! only [`rss_probe`], whose one child is the command measured.

use crate::attacker::{self, Attacker};
use crate::common::bin;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A workspace with a few documents, indexed with `aha index` into `.aha/index`.
fn indexed_workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("docs")).unwrap();
    for i in 0..40 {
        let mut text = format!("# Topic {i}\n\n");
        for p in 0..30 {
            text.push_str(&format!(
                "Paragraph {p} of topic {i} mentions kestrel{} harbor{} and the lighthouse keeper who counts {p} ships.\n\n",
                i * 31 + p,
                p % 7
            ));
        }
        std::fs::write(ws.join("docs").join(format!("t{i}.md")), text).unwrap();
    }
    let out = bin()
        .args(["index", "--json", "docs"])
        .current_dir(&ws)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aha index: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, ws)
}

/// Ways of flipping bytes in a segment file that make tantivy panic rather than return an error
/// (found by trying): (file extension, first and last sixteenth of the file, every nth byte).
/// The term dictionary's make tantivy-fst index out of bounds and an `ownedbytes` assertion
/// fail, the attack's two panics; the postings' an index out of bounds.
const CORRUPTIONS: [(&str, usize, usize, usize); 3] =
    [("term", 0, 4, 13), ("term", 2, 14, 13), ("idx", 8, 12, 13)];

/// Copies the index of `ws` to a new workspace and applies `c` to its segment files there.
fn corrupt_copy(ws: &Path, c: (&str, usize, usize, usize)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ws");
    let out = Command::new("cp")
        .arg("-a")
        .arg(ws)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (ext, from, to, step) = c;
    let mut n = 0;
    for e in std::fs::read_dir(copy.join(".aha/index")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != ext) {
            continue;
        }
        let mut b = std::fs::read(&p).unwrap();
        for i in (b.len() * from / 16..b.len() * to / 16).step_by(step) {
            b[i] ^= 0xA5;
        }
        std::fs::write(&p, b).unwrap();
        n += 1;
    }
    assert!(n > 0, "no .{ext} file in the index");
    (dir, copy)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn aha_search_on_a_corrupt_index_fails_with_a_message_not_a_panic() {
    let (_d, clean) = indexed_workspace();
    let ok = bin()
        .args(["search", "lighthouse keeper"])
        .current_dir(&clean)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok).1);
    let mut panics = Vec::new();
    for c in CORRUPTIONS {
        let (_d, ws) = corrupt_copy(&clean, c);
        let mut failed = 0;
        for query in ["lighthouse keeper", "kestrel100", "\"harbor3 and\""] {
            let out = bin()
                .args(["search", query])
                .current_dir(&ws)
                .output()
                .unwrap();
            let (stdout, stderr) = text(&out);
            assert!(!stderr.contains("panicked"), "{c:?} `{query}`: {stderr}");
            assert_ne!(out.status.code(), Some(101), "{c:?} `{query}`: {stderr}");
            if out.status.success() {
                // Not every query reads the damaged part.
                continue;
            }
            failed += 1;
            assert_eq!(
                out.status.code(),
                Some(1),
                "{c:?} `{query}`: {stdout}{stderr}"
            );
            assert!(
                stderr.contains("is corrupt") && stderr.contains("aha index --rebuild"),
                "{c:?} `{query}`: the error names the problem and the fix: {stderr}"
            );
            for p in ["index out of bounds", "assertion failed"] {
                if stderr.contains(p) {
                    panics.push(format!("{c:?}: {p}"));
                }
            }
        }
        assert!(failed > 0, "{c:?} damaged nothing a search reads");
        // The advice works: a rebuild makes the index answer again.
        let re = bin()
            .args(["index", "--rebuild", "docs"])
            .current_dir(&ws)
            .output()
            .unwrap();
        assert!(re.status.success(), "{}", text(&re).1);
        let out = bin()
            .args(["search", "lighthouse keeper"])
            .current_dir(&ws)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out).1);
        assert!(text(&out).0.contains("docs/t"), "{}", text(&out).0);
    }
    // These are the panics the attack saw (now reported, not crashing aha).
    assert!(
        panics.iter().any(|p| p.contains("index out of bounds"))
            && panics.iter().any(|p| p.contains("assertion failed")),
        "{panics:?}"
    );
}

#[test]
fn search_docs_on_a_corrupt_index_fails_the_call_and_the_turn_still_ends() {
    let (_d, clean) = indexed_workspace();
    let (_c, ws) = corrupt_copy(&clean, CORRUPTIONS[0]);
    let a = Attacker::start(vec![
        attacker::call("search_docs", json!({"query": "lighthouse keeper"})),
        attacker::call("search_docs", json!({"query": "kestrel100 harbor3"})),
    ]);
    let out = a.agent(&ws, &["--approve", "read-only"]);
    let (stdout, stderr) = text(&out);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let results = attacker::results(&out);
    assert_eq!(results.len(), 2, "one result per call: {stdout}");
    for (ok, output) in &results {
        assert!(!ok, "a search of a corrupt index cannot succeed: {output}");
        assert!(
            output.contains("is corrupt")
                && output.contains("index out of bounds")
                && output.contains("aha index --rebuild"),
            "{output}"
        );
    }
    let ev = attacker::events(&out);
    let finished: Vec<&Value> = ev.iter().filter(|e| e["type"] == "turn_finished").collect();
    assert_eq!(finished.len(), 1, "exactly one turn_finished: {stdout}");
    assert_eq!(
        ev.last().map(|e| e["type"].clone()),
        Some(json!("turn_finished")),
        "the turn's end is the last event: {stdout}"
    );
    // The agent handled the failure (the model read it and answered): a finished turn, exit 0.
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let reqs = a.requests.lock().unwrap();
    assert!(
        reqs.iter()
            .any(|r| r.to_string().contains("is corrupt") && r.to_string().contains("--rebuild")),
        "the model saw the error"
    );
}

/// Where each tensor's entry of a GGUF (v2/v3) tensor table lies: name → (file position of its
/// first dimension, number of dimensions, position of its data offset).
fn tensor_table(b: &[u8]) -> Vec<(String, usize, usize, usize)> {
    let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize;
    let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
    assert_eq!(&b[..4], b"GGUF");
    let n_tensors = u64_at(8);
    let n_kv = u64_at(16);
    let mut p = 24;
    // Skips one metadata value of type `t` at `p`.
    fn skip(b: &[u8], p: &mut usize, t: usize) {
        let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize;
        let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
        match t {
            0 | 1 | 7 => *p += 1,
            2 | 3 => *p += 2,
            4..=6 => *p += 4,
            10..=12 => *p += 8,
            8 => *p += 8 + u64_at(*p),
            9 => {
                let (et, n) = (u32_at(*p), u64_at(*p + 4));
                *p += 12;
                for _ in 0..n {
                    skip(b, p, et);
                }
            }
            _ => panic!("unknown GGUF value type {t}"),
        }
    }
    for _ in 0..n_kv {
        p += 8 + u64_at(p);
        let t = u32_at(p);
        p += 4;
        skip(b, &mut p, t);
    }
    let mut out = Vec::new();
    for _ in 0..n_tensors {
        let len = u64_at(p);
        let name = String::from_utf8(b[p + 8..p + 8 + len].to_vec()).unwrap();
        p += 8 + len;
        let nd = u32_at(p);
        p += 4;
        let dims = p;
        p += 8 * nd + 4;
        out.push((name, dims, nd, p));
        p += 8;
    }
    out
}

/// A tiny real-shaped f32 model (`aha synth`'s shapes), with `patch` applied to its bytes.
fn patched_model(dir: &Path, name: &str, patch: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let p = dir.join(format!("{name}.gguf"));
    aha::engine::local::synth::SynthSpec::tiny()
        .write_gguf(&p, candle_core::quantized::GgmlDType::F32)
        .unwrap();
    let mut b = std::fs::read(&p).unwrap();
    patch(&mut b);
    std::fs::write(&p, b).unwrap();
    p
}

/// `aha run` on a model file: (exit code, stdout + stderr).
fn run_model(m: &Path) -> (Option<i32>, String) {
    let out = bin()
        .args(["run", "--raw", "--temperature", "0", "--max-tokens", "3"])
        .arg("-m")
        .arg(m)
        .arg("abc")
        .output()
        .unwrap();
    let (o, e) = text(&out);
    (out.status.code(), format!("{o}{e}"))
}

#[test]
fn gguf_with_a_misaligned_or_overflowing_tensor_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = patched_model(dir.path(), "good", |_| {});
    let (code, out) = run_model(&good);
    assert_eq!(code, Some(0), "the unpatched model runs: {out}");

    // The norm's data one byte later than the alignment allows: read as is, it is shifted.
    let misaligned = patched_model(dir.path(), "misaligned", |b| {
        let t = tensor_table(b);
        let (_, _, _, off) = t.iter().find(|t| t.0 == "output_norm.weight").unwrap();
        let v = u64::from_le_bytes(b[*off..off + 8].try_into().unwrap()) + 4;
        b[*off..off + 8].copy_from_slice(&v.to_le_bytes());
    });
    let (code, out) = run_model(&misaligned);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("output_norm.weight") && out.contains("alignment 32"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");

    // Dimensions whose product is 2^64: a wrapping count makes the tensor look empty.
    let wraps = patched_model(dir.path(), "wraps", |b| {
        let t = tensor_table(b);
        let (_, dims, nd, _) = t.iter().find(|t| t.0 == "token_embd.weight").unwrap();
        assert_eq!(*nd, 2);
        b[*dims..dims + 8].copy_from_slice(&(1u64 << 31).to_le_bytes());
        b[dims + 8..dims + 16].copy_from_slice(&(1u64 << 33).to_le_bytes());
    });
    let (code, out) = run_model(&wraps);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("token_embd.weight") && out.contains("more elements than"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");

    // A count that fits but whose size in bytes (4 per f32) is 2^64.
    let big = patched_model(dir.path(), "big", |b| {
        let t = tensor_table(b);
        let (_, dims, nd, _) = t.iter().find(|t| t.0 == "output_norm.weight").unwrap();
        assert_eq!(*nd, 1);
        b[*dims..dims + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    });
    let (code, out) = run_model(&big);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("output_norm.weight") && out.contains("2^64 bytes"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");

    // A dimension of 0 (found by the gguf fuzzer): candle would make a slice from an empty,
    // unaligned buffer.
    let empty = patched_model(dir.path(), "empty", |b| {
        let t = tensor_table(b);
        let (_, dims, _, _) = t.iter().find(|t| t.0 == "output_norm.weight").unwrap();
        b[*dims..dims + 8].copy_from_slice(&0u64.to_le_bytes());
    });
    let (code, out) = run_model(&empty);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("output_norm.weight") && out.contains("no elements"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");

    // A block count of 2^32 - 1 (found by the gguf fuzzer) sized a vector before any tensor
    // was read, and the failed allocation aborted the process.
    let blocks = patched_model(dir.path(), "blocks", |b| {
        let key = b"block_count";
        let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        let ty = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        match ty {
            4 => b[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes()),
            10 => b[at + 4..at + 12].copy_from_slice(&(1u64 << 37).to_le_bytes()),
            t => panic!("block_count has GGUF type {t}"),
        }
    });
    let (code, out) = run_model(&blocks);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("block tensors"), "{out}");
    assert!(
        !out.contains("panicked") && !out.contains("memory allocation"),
        "{out}"
    );

    // An alignment of 0 made candle's header reader divide by zero.
    let zero = dir.path().join("zero.gguf");
    let arch = candle_core::quantized::gguf_file::Value::String("qwen2".into());
    let align = candle_core::quantized::gguf_file::Value::U32(0);
    let mut f = std::fs::File::create(&zero).unwrap();
    candle_core::quantized::gguf_file::write(
        &mut f,
        &[
            ("general.architecture", &arch),
            ("general.alignment", &align),
        ],
        &[],
    )
    .unwrap();
    drop(f);
    let (code, out) = run_model(&zero);
    assert_ne!(code, Some(0), "{out}");
    assert!(!out.contains("panicked"), "{out}");
    assert!(out.contains("not a readable GGUF"), "{out}");
}

/// Runs only inside a copy of the test binary started by [`peak_rss_kb`]: runs the command in
/// `AHA_RSS_PROBE` (a JSON array, with `AHA_RSS_PROBE_CWD`) and prints its peak RSS. Or, for
/// `["session", PATH]`, loads and replays that session here and prints this process's peak.
#[test]
#[ignore = "a helper that peak_rss_kb runs in a process of its own"]
fn rss_probe() {
    let Ok(spec) = std::env::var("AHA_RSS_PROBE") else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&spec).unwrap();
    if args[0] == "session" {
        let l = aha::session::load(Path::new(&args[1])).unwrap();
        let t = aha::session::replay(&l);
        let msgs = t.messages();
        let kept: usize = msgs.iter().map(|m| m.content.len()).sum();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap();
        println!("RSS_PROBE {hwm} {kept}");
        return;
    }
    let out = Command::new(&args[0])
        .args(&args[1..])
        .current_dir(std::env::var("AHA_RSS_PROBE_CWD").unwrap())
        .output()
        .unwrap();
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    println!(
        "RSS_PROBE {} {}",
        ru.max_rss(),
        out.status.code().unwrap_or(-1)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
}

/// Peak resident memory in KB of `args` run in `cwd` (or of loading a session), and the second
/// number the probe printed (the exit code, or the bytes a loaded session kept).
fn peak_rss_kb(args: &[&str], cwd: &Path) -> (u64, i64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "escape::robust::rss_probe",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AHA_RSS_PROBE", serde_json::to_string(args).unwrap())
        .env("AHA_RSS_PROBE_CWD", cwd)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RSS_PROBE ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("the probe said nothing: {stdout}{stderr}"));
    let mut it = line.split_whitespace();
    let kb = it.next().unwrap().parse().unwrap();
    let second = it.next().unwrap().parse().unwrap();
    (kb, second)
}

#[test]
fn a_22_mb_single_line_file_indexes_into_small_chunks_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    // One line, words that differ (a real minified file or log line), 22 MB.
    let mut line = String::with_capacity(23 << 20);
    let mut i = 0u64;
    while line.len() < 22_000_000 {
        line.push_str(&format!("tok{} ", i.wrapping_mul(2654435761) % 1_000_003));
        i += 1;
    }
    line.push_str("needleword");
    std::fs::write(ws.join("one-line.txt"), &line).unwrap();
    drop(line);
    let aha = env!("CARGO_BIN_EXE_aha");
    let (kb, code) = peak_rss_kb(&[aha, "index", "--json", "."], &ws);
    assert_eq!(code, 0);
    assert!(
        kb < 300 * 1024,
        "aha index on one 22 MB line peaked at {} MB",
        kb / 1024
    );
    let out = bin()
        .args(["index", "--json", "."])
        .current_dir(&ws)
        .output()
        .unwrap();
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["unchanged"], 1, "{rep}");
    let (files, chunks) = aha::rag::DocIndex::open(&ws.join(".aha/index"))
        .unwrap()
        .stats()
        .unwrap();
    assert_eq!(files, 1);
    assert!(chunks > 22_000_000 / 3000, "{chunks} chunks");

    // Searching it is bounded too, and finds the word at the end of the line, on line 1.
    let (kb, code) = peak_rss_kb(&[aha, "search", "--json", "needleword"], &ws);
    assert_eq!(code, 0);
    assert!(kb < 300 * 1024, "aha search peaked at {} MB", kb / 1024);
    let out = bin()
        .args(["search", "--json", "needleword"])
        .current_dir(&ws)
        .output()
        .unwrap();
    let hit: Value = serde_json::from_str(text(&out).0.lines().next().unwrap()).unwrap();
    assert_eq!(
        (hit["start_line"].clone(), hit["line"].clone()),
        (json!(1), json!(1))
    );
    assert!(
        hit["snippet"].as_str().unwrap().contains("**needleword**"),
        "{hit}"
    );
}

/// A session log with one user message and a reply whose reasoning came as one `delta_mb` MB
/// delta, written as the log format has it (not through aha's writer, which caps it).
fn session_with_huge_delta(path: &Path, delta_mb: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let huge: String = "thinking hard ".repeat(delta_mb * 1024 * 1024 / 14);
    let recs = [
        json!({"rec": "header", "version": 1, "id": "huge", "created": 0, "model": "m"}),
        json!({"rec": "op", "t": 1, "op": {"type": "user_message", "text": "hi"}}),
        json!({"rec": "event", "t": 2, "event": {"type": "turn_started", "turn": 0, "branch_of": null, "prefix": ""}}),
        json!({"rec": "event", "t": 3, "event": {"type": "thinking_delta", "text": huge, "logprob": null, "entropy": null}}),
        json!({"rec": "event", "t": 4, "event": {"type": "answer_delta", "text": "Hello.", "logprob": null, "entropy": null}}),
        json!({"rec": "event", "t": 5, "event": {"type": "turn_finished", "stats": {"prompt_tokens": 1, "prefilled_tokens": 1, "thinking_tokens": 1, "answer_tokens": 1, "ttft_ms": 1.0, "prefill_tok_s": 1.0, "decode_tok_s": 1.0, "finish_reason": "stop"}, "tokens": [1, 2]}}),
    ];
    for r in recs {
        serde_json::to_writer(&mut f, &r).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

#[test]
fn a_session_with_a_50_mb_delta_resumes_in_bounded_memory_and_says_what_was_cut() {
    use aha::protocol::Event;
    use aha::session::{self, transcript::EntryKind, Record};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jsonl");
    session_with_huge_delta(&path, 50);

    let l = session::load(&path).unwrap();
    assert!(l.skipped.is_empty(), "{:?}", l.skipped);
    let deltas: Vec<&String> = l
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Event {
                event: Event::ThinkingDelta { text, .. },
                ..
            } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(deltas.len(), 1);
    assert!(
        deltas[0].len() < session::FIELD_MAX + 100,
        "{}",
        deltas[0].len()
    );
    assert!(deltas[0].starts_with("thinking hard thinking hard"));
    assert!(deltas[0].ends_with("bytes cut …]"), "the cut is marked");
    // What follows the huge line is all there.
    let t = session::replay(&l);
    let EntryKind::Reply { versions, .. } = &t.entries[1].kind else {
        panic!("{:?}", t.entries[1].kind)
    };
    assert_eq!(versions[0].answer(), "Hello.");
    assert!(versions[0].stats.is_some(), "the turn finished");
    drop((l, t));

    // In a process of its own: load, replay and the messages for the model stay far below the
    // 2.2 GB the attack saw (and below the 50 MB the line holds).
    let (kb, kept) = peak_rss_kb(&["session", path.to_str().unwrap()], dir.path());
    assert!(kept < 3 * session::FIELD_MAX as i64, "{kept} bytes kept");
    assert!(kb < 120 * 1024, "resuming peaked at {} MB", kb / 1024);

    // Resuming appends to the log; the writer caps what a new event brings in the same way.
    let mut log = session::SessionLog::append(&path).unwrap();
    log.event(
        9,
        &Event::AnswerDelta {
            text: "x".repeat(10 << 20),
            logprob: None,
            entropy: None,
            top: Vec::new(),
        },
    )
    .unwrap();
    drop(log);
    let last = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(last.len() < session::FIELD_MAX + 200, "{}", last.len());
    let r: Record = serde_json::from_str(&last).unwrap();
    let Record::Event {
        event: Event::AnswerDelta { text, .. },
        ..
    } = r
    else {
        panic!("{last:.200}")
    };
    assert!(text.ends_with(&format!(
        " [… {} bytes cut …]",
        (10 << 20) - session::FIELD_MAX
    )));
}

/// The smallest file for each crash the gguf fuzzer found (fuzz/regressions/gguf): each is
/// refused with an error, never a panic or an aborted allocation.
#[test]
fn gguf_regressions_from_the_fuzzer_are_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/gguf");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "gguf") {
            continue;
        }
        n += 1;
        let (code, out) = run_model(&p);
        assert!(
            code.is_some() && code != Some(0),
            "{}: {code:?} {out}",
            p.display()
        );
        assert!(
            !out.contains("panicked") && !out.contains("memory allocation"),
            "{}: {out}",
            p.display()
        );
    }
    assert!(
        n >= 6,
        "the regression files are missing from {}",
        dir.display()
    );
}
