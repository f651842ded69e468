//! The reasoning microscope with the real model: the alternatives at each token against a
//! softmax of the engine's own logits, `--top-logprobs` in `aha run --json`, loops (warn, stop,
//! nudge), budget forcing, OpenAI `logprobs` through `aha serve`, and the trace explorer driven
//! in tmux (token cursor, a branch on an alternative, the loop mark).

use super::common::{bin, heavy, model};
use aha::engine::sampler::SamplingParams;
use aha::engine::{Control, GenerateRequest, LocalEngine, Prompt};
use aha::protocol::Event;
use candle_core::Device;
use serde_json::Value;
use std::time::Duration;

/// The prompt that makes the 0.5B model repeat itself inside its reasoning (`--think`).
const REPEAT: &str =
    "Write the sentence 'The quick brown fox jumps over the lazy dog.' five times.";

#[test]
fn top_alternatives_are_the_softmax_of_the_engines_logits() {
    let _g = heavy();
    let name = "qwen2.5-coder-0.5b";
    let mut engine = LocalEngine::load(&model(name), name, &Device::Cpu).unwrap();
    let prompt = engine
        .tokenizer
        .encode("The three primary colors of light are")
        .unwrap();
    let mut req = GenerateRequest::chat(vec![]);
    req.prompt = Prompt::Tokens(prompt.clone());
    req.sampling = SamplingParams::greedy();
    req.max_tokens = 6;
    req.trace.top_logprobs = 5;
    let mut deltas = Vec::new();
    let mut generated = Vec::new();
    engine
        .generate(&req, &Control::default(), &mut |e| match e {
            Event::AnswerDelta {
                text, logprob, top, ..
            } => deltas.push((text, logprob, top)),
            Event::TurnFinished { tokens, .. } => generated = tokens,
            _ => {}
        })
        .unwrap();
    assert_eq!(deltas.len(), generated.len(), "one piece per English token");
    // The same forward passes the engine made: the prompt but its last token in one batch, then
    // one token at a time (a batch of another size rounds differently, by hundredths of a nat).
    let mut cache = engine.model.new_cache();
    let last_row = |t: candle_core::Tensor| t.to_vec2::<f32>().unwrap().pop().unwrap();
    let (batch, last) = prompt.split_at(prompt.len() - 1);
    engine.model.forward(batch, &mut cache, false).unwrap();
    let mut rows = vec![last_row(
        engine.model.forward(last, &mut cache, false).unwrap(),
    )];
    for t in &generated[..generated.len() - 1] {
        rows.push(last_row(
            engine.model.forward(&[*t], &mut cache, false).unwrap(),
        ));
    }
    for (i, (text, logprob, top)) in deltas.iter().enumerate() {
        let row = &rows[i];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|l| ((l - max) as f64).exp()).sum();
        let lse = max + sum.ln() as f32;
        let mut ids: Vec<usize> = (0..row.len()).collect();
        ids.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
        assert_eq!(top.len(), 5);
        assert_eq!(&top[0].text, text, "greedy: the chosen token is the best");
        assert_eq!(Some(top[0].logprob), *logprob);
        for (k, t) in top.iter().enumerate() {
            let want = row[ids[k]] - lse;
            let want_text = engine.tokenizer.decode(&[ids[k] as u32]).unwrap();
            assert_eq!(t.text, want_text, "token {i} alternative {k}");
            assert!(
                (t.logprob - want).abs() < 1e-4,
                "token {i} alternative {k}: {} vs softmax {want}",
                t.logprob
            );
        }
        let sum: f32 = top.iter().map(|t| t.logprob.exp()).sum();
        assert!(sum <= 1.0 + 1e-4, "{sum}");
        for w in top.windows(2) {
            assert!(w[0].logprob >= w[1].logprob, "best first: {top:?}");
        }
    }
}

fn run_json(args: &[&str]) -> Vec<Value> {
    let out = bin()
        .args([
            "run",
            "--json",
            "-m",
            "qwen2.5-coder-0.5b",
            "--temperature",
            "0",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

fn thinking(events: &[Value]) -> String {
    of_type(events, "thinking_delta")
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect()
}

#[test]
fn run_json_reports_alternatives_forks_and_group_confidence() {
    let _g = heavy();
    model("qwen2.5-coder-0.5b");
    let ev = run_json(&["--top-logprobs", "3", "--max-tokens", "12", "Name a color."]);
    let deltas = of_type(&ev, "answer_delta");
    assert!(!deltas.is_empty());
    for d in &deltas {
        let top = d["top"].as_array().expect("every sampled delta has `top`");
        assert_eq!(top.len(), 3, "{d}");
        assert_eq!(top[0]["text"], d["text"], "greedy picks the best: {d}");
        assert!(top[0]["logprob"].as_f64() >= top[2]["logprob"].as_f64());
    }
    let fin = of_type(&ev, "turn_finished")[0];
    assert!(fin["stats"]["forks"].as_u64().is_some(), "{fin}");
    let c = fin["stats"]["min_group_confidence"].as_f64().unwrap();
    assert!(c > 0.0, "{fin}");
    // Without the flag the deltas carry none.
    let ev = run_json(&["--max-tokens", "4", "Name a color."]);
    assert!(of_type(&ev, "answer_delta")
        .iter()
        .all(|d| d.get("top").is_none()));
}

#[test]
fn a_loop_warns_stops_or_nudges_the_real_model() {
    let _g = heavy();
    model("qwen2.5-coder-0.5b");
    let ev = run_json(&["--think", "--max-tokens", "120", "--loops", "stop", REPEAT]);
    let loops = of_type(&ev, "reasoning_loop");
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0]["count"], 3);
    assert_eq!(loops[0]["action"], "stop");
    assert!(loops[0]["text"]
        .as_str()
        .unwrap()
        .contains("quick brown fox"));
    let fin = of_type(&ev, "turn_finished")[0];
    assert_eq!(fin["stats"]["finish_reason"], "loop");
    assert_eq!(thinking(&ev).matches("lazy dog.").count(), 3);

    let ev = run_json(&["--think", "--max-tokens", "120", "--loops", "nudge", REPEAT]);
    let t = thinking(&ev);
    assert!(
        t.contains("I am going in circles; let me try a different approach."),
        "{t}"
    );
    assert_eq!(of_type(&ev, "reasoning_loop")[0]["action"], "nudge");

    let ev = run_json(&["--think", "--max-tokens", "80", "--loops", "off", REPEAT]);
    assert!(of_type(&ev, "reasoning_loop").is_empty());
}

#[test]
fn think_min_makes_the_real_model_think_on_with_wait() {
    let _g = heavy();
    model("qwen2.5-coder-0.5b");
    // Without it the model ends its turn inside the reasoning (after about 80 tokens here).
    let plain = run_json(&["--think", "--max-tokens", "300", "What is 2+2?"]);
    let fin = &of_type(&plain, "turn_finished")[0]["stats"];
    assert_eq!(
        fin["finish_reason"], "stop",
        "the premise: it stops by itself"
    );
    let n = fin["thinking_tokens"].as_u64().unwrap();
    assert!(!thinking(&plain).contains("Wait"));
    // Ask for 40 more than it took.
    let min = (n + 40).to_string();
    let max = (n + 160).to_string();
    let ev = run_json(&[
        "--think",
        "--think-min",
        &min,
        "--max-tokens",
        &max,
        "What is 2+2?",
    ]);
    let t = thinking(&ev);
    assert!(t.contains(" Wait"), "{t}");
    let s = &of_type(&ev, "turn_finished")[0]["stats"];
    assert!(s["thinking_tokens"].as_u64().unwrap() >= n + 40, "{s}");
    // The written "Wait" is not sampled: its delta has no logprob.
    assert!(of_type(&ev, "thinking_delta").iter().any(|d| d["text"]
        .as_str()
        .unwrap()
        .contains("Wait")
        && d.get("logprob").is_none()));
}

#[test]
fn serve_answers_openai_logprobs_streamed_and_whole() {
    let _g = heavy();
    let server = super::serve::Server::start(&[]);
    let port = server.port;
    // The body, or the status and body of an HTTP error.
    let post = |body: Value| -> Result<String, (u16, String)> {
        match ureq::post(&format!("http://127.0.0.1:{port}/v1/chat/completions")).send_json(body) {
            Ok(r) => Ok(r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => Err((code, r.into_string().unwrap())),
            Err(e) => panic!("{e}"),
        }
    };
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "Name a color."}],
        "temperature": 0, "max_tokens": 5, "logprobs": true, "top_logprobs": 2,
    });
    let whole: Value = serde_json::from_str(&post(body.clone()).unwrap()).unwrap();
    let content = whole["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    let text: String = content
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    for e in content {
        assert_eq!(e["top_logprobs"].as_array().unwrap().len(), 2, "{e}");
        assert!(e["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(
            e["bytes"].as_array().unwrap().len(),
            e["token"].as_str().unwrap().len()
        );
    }
    let mut streamed = body.clone();
    streamed["stream"] = true.into();
    let sse = post(streamed).unwrap();
    let entries: usize = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .map(|a| a.len())
        .sum();
    assert_eq!(entries, content.len(), "{sse}");
    // Not asked for: null; top_logprobs alone is refused with the field named.
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("logprobs");
    plain.as_object_mut().unwrap().remove("top_logprobs");
    let v: Value = serde_json::from_str(&post(plain).unwrap()).unwrap();
    assert!(v["choices"][0]["logprobs"].is_null());
    let mut bad = body.clone();
    bad["logprobs"] = false.into();
    match post(bad) {
        Err((400, body)) => {
            let e: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(e["error"]["param"], "top_logprobs", "{e}");
        }
        other => panic!("{other:?}"),
    }
    // aha's own remote engine asks for them and reads them back.
    let c = aha::config::Config::parse(&format!(
        "[engines.s]\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"qwen2.5-coder-0.5b\"\nprovider = \"aha\"\n"
    ))
    .unwrap();
    let mut remote = aha::engine::remote::RemoteEngine::new("s", c.remote("s").unwrap()).unwrap();
    let mut req = GenerateRequest::chat(vec![aha::engine::template::ChatMessage::user(
        "Name a color.",
    )]);
    req.sampling = SamplingParams::greedy();
    req.max_tokens = 4;
    req.trace.top_logprobs = 3;
    let mut tops = Vec::new();
    use aha::engine::Engine;
    remote
        .generate(&req, &Control::default(), &mut |e| {
            if let Event::AnswerDelta { top, .. } = e {
                tops.push(top.len());
            }
        })
        .unwrap();
    assert!(!tops.is_empty() && tops.iter().all(|n| *n == 3), "{tops:?}");
}

#[test]
fn trace_explorer_token_cursor_branch_on_an_alternative_and_the_loop_mark() {
    use super::tui::Tmux;
    let _g = heavy();
    let m = model("qwen2.5-coder-0.5b");
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[sampling]\ntemperature = 0.0\n\n[ui]\nthink = \"on\"\nmax_tokens = 90\n",
    )
    .unwrap();
    let t = Tmux::start("microscope", 140, 34);
    t.open_workbench(
        &format!(
            "AHA_DATA_DIR={} AHA_CONFIG={} AHA_PROMPT_CACHE=off",
            data.path().display(),
            cfg.display()
        ),
        &format!("--model {}", m.display()),
    );
    t.type_text(REPEAT);
    t.keys(&["Enter"]);
    t.wait_for(
        "the loop notice and the end of the turn",
        Duration::from_secs(180),
        |s| s.contains("reasoning is repeating itself (3×)") && s.contains(" idle "),
    );
    // The explorer: the loop is marked in the trace and counted in the header.
    t.keys(&["C-t"]);
    let p = t.wait_for("the trace explorer", Duration::from_secs(10), |s| {
        s.contains("Trace · turn 1") && s.contains("↻")
    });
    assert!(p.contains("1 loop"), "{p}");
    // The token cursor shows a token's alternatives.
    t.keys(&["Home", "Right", "Right", "Right"]);
    let p = t.wait_for("the token card", Duration::from_secs(10), |s| {
        s.contains("token 3/") && s.contains("alternatives")
    });
    let card = p
        .lines()
        .find(|l| l.starts_with("alternatives"))
        .unwrap_or_default()
        .to_string();
    assert!(
        card.contains("1 “"),
        "the first alternative is numbered: {p}"
    );
    // Branch on alternative 1: a second version starts, sharing the prefix.
    t.keys(&["1"]);
    let p = t.wait_for("the branch", Duration::from_secs(180), |s| {
        s.contains("version 2/2") && s.contains("branch of v1") && !s.contains("● thinking")
    });
    assert!(p.contains("Trace · turn 1"), "{p}");
    t.keys(&["c"]);
    t.wait_for("the comparison", Duration::from_secs(10), |s| {
        s.contains("they part at token 3")
    });
    // Two quick Escapes can read as one Alt-Escape: leave the comparison, then the explorer.
    t.keys(&["Escape"]);
    t.wait_for("the comparison closed", Duration::from_secs(10), |s| {
        !s.contains("they part at token")
    });
    t.keys(&["q"]);
    t.wait_for("the chat", Duration::from_secs(10), |s| {
        s.contains("Ask something")
    });
    t.quit_workbench();
}
