//! `aha run --json` without `--agent` prints, byte for byte, what it printed before it went
//! through the agent: three runs of the real smollm2-135m compared with the streams recorded in
//! tests/fixtures/run_json (recorded with `-m smollm2-135m` and the flags below). Since then,
//! `turn_finished` gained `drafted_tokens` and `accepted_tokens` (speculative decoding) and
//! `forks` and `min_group_confidence` (the reasoning microscope, added to the recordings), and
//! `2.jsonl` was recorded again when `--think`'s instruction moved from the system message to
//! the user's (issue 17: a per-turn setting keeps the cached prefix).
//!
//! Before comparing, on both sides: the timing fields (`ttft_ms`, `prefill_tok_s`,
//! `decode_tok_s`) become 0, and `logprob`, `entropy` and `min_group_confidence` are rounded to
//! 2 decimals (another SIMD
//! width in the prompt GEMM changes their last bits). Everything else (texts, token ids, counts,
//! the finish reason, the keys and their order, the number of lines) must be the same bytes.

use super::common::{bin, heavy, model};
use std::path::Path;

/// The recorded runs: fixture name and the flags after `run --json -m MODEL`.
const RUNS: [(&str, &[&str]); 3] = [
    (
        "1.jsonl",
        &[
            "--temperature",
            "0",
            "--max-tokens",
            "40",
            "What is the capital of France?",
        ],
    ),
    (
        "2.jsonl",
        &[
            "--temperature",
            "0",
            "--max-tokens",
            "48",
            "--think",
            "--think-budget",
            "24",
            "Is 17 a prime number?",
        ],
    ),
    (
        "3.jsonl",
        &[
            "--temperature",
            "0",
            "--max-tokens",
            "32",
            "--raw",
            "def fibonacci(n):",
        ],
    ),
];

/// Fields whose value is the clock's.
const TIMING: [&str; 3] = ["ttft_ms", "prefill_tok_s", "decode_tok_s"];
/// Fields compared to 2 decimals.
const ROUNDED: [&str; 3] = ["logprob", "entropy", "min_group_confidence"];

/// Rewrites the number after each `"key":` in `line` with `f`.
fn rewrite_numbers(line: &str, key: &str, f: impl Fn(f64) -> String) -> String {
    let pat = format!("\"{key}\":");
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(&pat) {
        let start = i + pat.len();
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
            .unwrap_or(tail.len());
        match tail[..end].parse::<f64>() {
            Ok(v) => out.push_str(&f(v)),
            // Not a number (null, a string): left as it is.
            Err(_) => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// One line with the clock's fields zeroed and the floats rounded.
fn normalize_line(line: &str) -> String {
    let mut l = line.to_string();
    for k in TIMING {
        l = rewrite_numbers(&l, k, |_| "0".into());
    }
    for k in ROUNDED {
        l = rewrite_numbers(&l, k, |v| {
            let s = format!("{v:.2}");
            if s == "-0.00" {
                "0.00".into()
            } else {
                s
            }
        });
    }
    l
}

/// Compares a stream with its recording after normalising both; the first difference, named.
fn compare(got: &str, want: &str) -> Result<(), String> {
    let got: Vec<String> = got.lines().map(normalize_line).collect();
    let want: Vec<String> = want.lines().map(normalize_line).collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if g != w {
            return Err(format!("line {} differs:\n  got:  {g}\n  want: {w}", i + 1));
        }
    }
    if got.len() != want.len() {
        return Err(format!(
            "{} lines, the recording has {}",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/run_json")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn run_json_without_agent_prints_what_it_printed_before() {
    let _g = heavy();
    let m = model("smollm2-135m");
    for (name, flags) in RUNS {
        let out = bin()
            .args(["run", "--json", "-m", m.to_str().unwrap()])
            .args(flags)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 on stdout");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Err(e) = compare(&stdout, &fixture(name)) {
            panic!("aha run --json {flags:?} no longer prints tests/fixtures/run_json/{name}: {e}");
        }
    }
}

#[test]
fn normalising_keeps_everything_but_the_clock_and_the_last_bits() {
    let line = r#"{"type":"answer_delta","text":"L","logprob":-1.8633268,"entropy":3.5052354}"#;
    assert_eq!(
        normalize_line(line),
        r#"{"type":"answer_delta","text":"L","logprob":-1.86,"entropy":3.51}"#
    );
    let stats = r#"{"type":"turn_finished","stats":{"prompt_tokens":36,"ttft_ms":123.4,"prefill_tok_s":1.5e3,"decode_tok_s":40.0,"finish_reason":"length"},"tokens":[1,2]}"#;
    assert_eq!(
        normalize_line(stats),
        r#"{"type":"turn_finished","stats":{"prompt_tokens":36,"ttft_ms":0,"prefill_tok_s":0,"decode_tok_s":0,"finish_reason":"length"},"tokens":[1,2]}"#
    );
    assert_eq!(
        normalize_line(r#"{"logprob":-0.0001}"#),
        r#"{"logprob":0.00}"#
    );
}

#[test]
fn the_comparison_fails_on_any_change_but_the_clock_and_the_last_bits() {
    for name in ["1.jsonl", "2.jsonl", "3.jsonl"] {
        let want = fixture(name);
        // Other timings and other last bits of the floats: the same stream.
        let jittered = want
            .replace("\"ttft_ms\":", "\"ttft_ms\":9")
            .replace("\"decode_tok_s\":", "\"decode_tok_s\":1");
        let jittered = rewrite_numbers(&jittered, "logprob", |v| format!("{}", v + 1e-6));
        compare(&jittered, &want).unwrap_or_else(|e| panic!("{name}: {e}"));
        let last = want.lines().last().unwrap();
        let changed = |from: &str, to: &str| {
            assert!(want.contains(from), "{name} has no {from}");
            want.replacen(from, to, 1)
        };
        let finish = last
            .split("\"finish_reason\":")
            .nth(1)
            .and_then(|r| r.split('"').nth(1))
            .expect("a finish reason");
        let first_token = last
            .split("\"tokens\":[")
            .nth(1)
            .and_then(|r| r.split([',', ']']).next())
            .expect("tokens");
        for bad in [
            // A delta's text.
            changed("\"text\":\"", "\"text\":\"x"),
            // A token id.
            want.replacen(
                &format!("\"tokens\":[{first_token}"),
                &format!("\"tokens\":[{first_token}1"),
                1,
            ),
            // A stat count.
            changed("\"prompt_tokens\":", "\"prompt_tokens\":1"),
            // The finish reason.
            changed(
                &format!("\"finish_reason\":\"{finish}\""),
                "\"finish_reason\":\"other\"",
            ),
            // A logprob beyond its second decimal.
            rewrite_numbers(&want, "logprob", |v| format!("{}", v + 0.05)),
            // An event more (turn_started first), or one less.
            format!("{{\"type\":\"turn_started\",\"turn\":0,\"prefix\":\"\"}}\n{want}"),
            want.lines().skip(1).collect::<Vec<_>>().join("\n"),
        ] {
            assert!(compare(&bad, &want).is_err(), "{name}: not caught:\n{bad}");
        }
    }
}
