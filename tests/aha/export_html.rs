//! `aha export ID --html`: a session log written the way the workbench writes it (a reasoning
//! with alternatives per token, a fork, a self-correction, a loop, a branch on an alternative,
//! and a turn with hostile text), exported by the real binary, then loaded in headless Chromium
//! (Debian's `chromium`, installed by `.ci/run`): the DOM it builds is checked (one span per
//! token, colour bands, branch panes, forks, the loop, the alternatives, nothing injected, the
//! script allowed by its hash) and a screenshot is saved.
//!
//! Without Chromium the browser test fails and says what to install, unless
//! `AHA_TEST_NO_BROWSER=1` (then it checks the file only). `AHA_TEST_SCREENSHOT_DIR=DIR` keeps a
//! copy of the page and the screenshot there to look at.

use super::common::bin;
use aha::protocol::{Event, FinishReason, LoopAction, Op, TopToken, TurnStats};
use aha::session::SessionLog;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ID: &str = "20260102-030405-beef";

/// The first version's reasoning, split into tokens by [`tokens`].
const V0: &str =
    "The ball costs x, so the bat costs x + 1.00. Together they cost x + x + 1.00 = 1.10, \
so 2x = 0.10 and x = 0.05.\n\nWait, the ball costs 0.10? No: 0.10 is the difference. \
Let me check: the ball costs 0.05 and the bat costs 1.05. \
Let me check: the ball costs 0.05 and the bat costs 1.05. \
Let me check: the ball costs 0.05 and the bat costs 1.05.";
/// What the branch writes after the alternative "So".
const V1: &str = " the ball costs 0.05 and the bat costs 1.05, which adds up to 1.10.";

/// Words with their leading space, punctuation and line breaks on their own.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in text.chars() {
        let glue = match out.last() {
            None => false,
            Some(l) if l.ends_with('\n') => c == '\n',
            Some(_) => c.is_alphanumeric() && !c.is_whitespace(),
        };
        let after_space = out.last().is_some_and(|l| l == " ");
        if glue || after_space {
            out.last_mut().unwrap().push(c);
        } else {
            out.push(c.to_string());
        }
    }
    out
}

/// The probabilities the scripted model gives its tokens, every band among them.
const PROBS: [f32; 13] = [
    0.97, 0.93, 0.99, 0.71, 0.95, 0.88, 0.98, 0.45, 0.96, 0.99, 0.64, 0.92, 0.22,
];
const ALTS: [&str; 5] = [" price", " then", " total", " we", " one"];

/// A reasoning token as the engine reports it: the fork tokens ("Wait", " Together") are the
/// only ones above 1 nat.
fn delta(i: usize, text: &str) -> Event {
    let (p, h, top): (f32, f32, Vec<(&str, f32)>) = match text {
        "Wait" => (
            0.38,
            1.9,
            vec![("Wait", 0.38), ("So", 0.31), ("Therefore", 0.12)],
        ),
        " Together" => (
            0.52,
            1.4,
            vec![(" Together", 0.52), (" Adding", 0.2), (" Then", 0.1)],
        ),
        _ => {
            let p = PROBS[i % PROBS.len()];
            let h = (-p.ln() * 1.5 + 0.05).min(0.9);
            let alts = vec![
                (text, p),
                (ALTS[i % ALTS.len()], (1.0 - p) * 0.5),
                (ALTS[(i + 2) % ALTS.len()], (1.0 - p) * 0.2),
            ];
            (p, h, alts)
        }
    };
    Event::ThinkingDelta {
        text: text.to_string(),
        logprob: Some(p.ln()),
        entropy: Some(h),
        top: top
            .into_iter()
            .map(|(t, p)| TopToken {
                text: t.to_string(),
                logprob: p.ln(),
            })
            .collect(),
    }
}

fn answer(text: &str) -> Event {
    Event::AnswerDelta {
        text: text.into(),
        logprob: None,
        entropy: None,
        top: Vec::new(),
    }
}

fn finished(thinking: usize, decode: f64) -> Event {
    Event::TurnFinished {
        stats: TurnStats {
            prompt_tokens: 40,
            prefilled_tokens: 40,
            thinking_tokens: thinking,
            answer_tokens: 6,
            ttft_ms: 210.0,
            prefill_tok_s: 400.0,
            decode_tok_s: decode,
            finish_reason: FinishReason::Stop,
            forks: Some(2),
            min_group_confidence: Some(1.87),
            ..TurnStats::default()
        },
        tokens: Vec::new(),
    }
}

/// Writes the session through `SessionLog`, as the workbench does. Returns the tokens of the
/// first version and where the branch leaves it.
fn write_session(dir: &Path) -> (Vec<String>, usize) {
    let mut log = SessionLog::create(dir, ID, "r1-distill-qwen-1.5b").unwrap();
    let mut t = 0u64;
    let mut ev = |log: &mut SessionLog, e: Event| {
        t += 40;
        log.event(t, &e).unwrap();
    };
    let user = "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. \
                How much does the ball cost?";
    log.op(
        1,
        &Op::UserMessage {
            text: user.into(),
            turn_id: None,
        },
    )
    .unwrap();
    let v0 = tokens(V0);
    ev(
        &mut log,
        Event::TurnStarted {
            turn: 0,
            branch_of: None,
            prefix: String::new(),
        },
    );
    for (i, tok) in v0.iter().enumerate() {
        ev(&mut log, delta(i, tok));
    }
    // The engine's loop detector speaks at the end of the third equal sentence.
    ev(
        &mut log,
        Event::ReasoningLoop {
            count: 3,
            text: "Let me check: the ball costs 0.05 and the bat costs 1.05.".into(),
            action: LoopAction::Warn,
        },
    );
    for a in ["The ball", " costs", " $0.05."] {
        ev(&mut log, answer(a));
    }
    ev(&mut log, finished(v0.len(), 23.4));

    // A branch on the alternative the model weighed at "Wait": "So".
    let wait = v0.iter().position(|t| t == "Wait").unwrap();
    let prefix = format!("<think>\n{}So", v0[..wait].concat());
    log.op(
        2_000,
        &Op::Branch {
            turn: 0,
            prefix: prefix.clone(),
            turn_id: None,
        },
    )
    .unwrap();
    ev(
        &mut log,
        Event::TurnStarted {
            turn: 0,
            branch_of: Some(0),
            prefix,
        },
    );
    let v1 = tokens(V1);
    for (i, tok) in v1.iter().enumerate() {
        ev(&mut log, delta(i + 3, tok));
    }
    for a in ["The ball", " costs", " $0.05", " (5 cents)."] {
        ev(&mut log, answer(a));
    }
    ev(&mut log, finished(v1.len(), 24.1));

    // Text from a model or a document that is markup must stay text.
    log.op(
        9_000,
        &Op::UserMessage {
            text: "And <img src=x onerror=\"document.title='pwned'\">?".into(),
            turn_id: None,
        },
    )
    .unwrap();
    ev(
        &mut log,
        Event::TurnStarted {
            turn: 1,
            branch_of: None,
            prefix: String::new(),
        },
    );
    ev(
        &mut log,
        delta(0, "</script><script>document.title='pwned'</script>"),
    );
    ev(&mut log, answer("<b>not bold</b>"));
    ev(&mut log, finished(1, 20.0));
    log.flush().unwrap();
    (v0, wait)
}

/// The expected colour class of a probability, by the bands the page's legend gives.
fn band(p: f32) -> &'static str {
    if p >= 0.9 {
        "p-hi"
    } else if p >= 0.6 {
        "p-mid"
    } else if p >= 0.3 {
        "p-low"
    } else {
        "p-vlow"
    }
}

/// The class attributes of the token spans in `dom`, in order.
fn token_classes(dom: &str) -> Vec<Vec<String>> {
    dom.split("<span class=\"tok ")
        .skip(1)
        .map(|s| {
            s[..s.find('"').unwrap()]
                .split(' ')
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The part of `dom` from `start` to the next `end`.
fn between<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let a = dom
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in the page"));
    let rest = &dom[a..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs `aha export` with the data folder `data` and an empty config.
fn export(data: &Path, args: &[&str], cwd: &Path) -> std::process::Output {
    let cfg = data.join("config.toml");
    std::fs::write(&cfg, "").unwrap();
    bin()
        .arg("export")
        .args(args)
        .env("AHA_DATA_DIR", data)
        .env("AHA_CONFIG", &cfg)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// `chromium` or `chromium-browser` on the PATH.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs headless Chromium on `page` with `args`; stdout goes to `out`. Killed after two minutes.
fn browse(exe: &Path, profile: &Path, page: &Path, args: &[String], out: &Path) -> String {
    let mut child = Command::new(exe)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish in two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "chromium failed ({status}): {err}");
    err
}

#[test]
fn export_html_of_a_session_is_one_page_that_chromium_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (v0, wait) = write_session(&data.join("sessions"));
    let log = std::fs::read_to_string(data.join("sessions").join(format!("{ID}.jsonl"))).unwrap();
    let deltas = log.matches("\"type\":\"thinking_delta\"").count();

    let page = tmp.path().join("trace.html");
    let o = export(
        &data,
        &["20260102", "--html", "-o", page.to_str().unwrap()],
        tmp.path(),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "aha export failed: {stderr}");
    assert!(
        stderr.contains(&format!("exported to {}", page.display())),
        "{stderr}"
    );
    let html = std::fs::read_to_string(&page).unwrap();

    // Self-contained: nothing to fetch, and only the page's own script may run, by its hash.
    for bad in ["http://", "https://", "<link", "url(", "@import", "<img"] {
        assert!(!html.contains(bad), "the page holds {bad}");
    }
    let script = between(&html, "<script>", "</script>")["<script>".len()..].to_string();
    let digest = {
        use sha2::Digest;
        base64(&sha2::Sha256::digest(script.as_bytes()))
    };
    assert!(
        html.contains(&format!("script-src 'sha256-{digest}'")),
        "the CSP must name the script's hash: set SCRIPT_SHA256 in crates/aha-session/src/html.rs to {digest}"
    );

    if let Some(dir) = std::env::var_os("AHA_TEST_SCREENSHOT_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&page, Path::new(&dir).join("trace.html")).unwrap();
    }
    let Some(exe) = chromium() else {
        if std::env::var_os("AHA_TEST_NO_BROWSER").is_some_and(|v| v == "1") {
            eprintln!("note: no chromium on the PATH and AHA_TEST_NO_BROWSER=1: the page was not loaded in a browser");
            return;
        }
        panic!(
            "headless Chromium is needed to test the HTML export: install Debian's `chromium` \
             package (apt-get install chromium; .ci/run does), or set AHA_TEST_NO_BROWSER=1 to skip"
        );
    };

    let dom_file = tmp.path().join("dom.html");
    browse(
        &exe,
        &tmp.path().join("profile"),
        &page,
        &["--dump-dom".to_string()],
        &dom_file,
    );
    let dom = std::fs::read_to_string(&dom_file).unwrap();
    assert!(dom.contains("<main>"), "chromium gave no page: {dom}");
    // The script ran: the CSP let it through by its hash.
    assert!(
        dom.contains("<html lang=\"en\" class=\"js\">") && dom.contains("id=\"tipbox\""),
        "the page's script did not run"
    );
    // Nothing the model or the user wrote became markup.
    assert!(!dom.contains("<img") && !dom.contains("<b>not bold"));
    assert_eq!(dom.matches("<script").count(), 1);
    assert!(!dom.contains("pwned</title>"));
    assert!(dom.contains("&lt;/script&gt;&lt;script&gt;document.title='pwned'&lt;/script&gt;"));
    assert!(dom.contains("&lt;b&gt;not bold&lt;/b&gt;"));

    // One span per token: the deltas in the log, and in the branch the tokens it keeps from the
    // original and the one a person chose.
    let all = token_classes(&dom);
    let copied = |c: &Vec<String>| c.iter().any(|x| x == "inh" || x == "ins");
    assert_eq!(all.iter().filter(|c| !copied(c)).count(), deltas);
    assert_eq!(all.iter().filter(|c| copied(c)).count(), wait + 1);

    // Turn 1: two versions side by side.
    let turn = between(&dom, "id=\"t0\"", "id=\"t1\"");
    assert_eq!(turn.matches("<section class=\"branch-pane").count(), 2);
    assert!(turn.contains("2 versions side by side"));
    let pane0 = between(turn, "id=\"t0v0\"", "id=\"t0v1\"");
    let pane1 = between(turn, "id=\"t0v1\"", "</section>\n</div>");
    assert!(pane1.contains("branch of v1 after"));
    assert!(pane1.contains(&format!("after {wait} tokens, inserted")));
    assert!(pane0.contains("title=\"v2 branches here\""));

    // The colour of every token of the original, from its probability.
    let c0 = token_classes(pane0);
    assert_eq!(c0.len(), v0.len());
    for (i, (c, text)) in c0.iter().zip(&v0).enumerate() {
        let p = match text.as_str() {
            "Wait" => 0.38,
            " Together" => 0.52,
            _ => PROBS[i % PROBS.len()],
        };
        assert_eq!(c[0], band(p), "token {i} {text:?}: {c:?}");
    }
    for b in ["p-hi", "p-mid", "p-low", "p-vlow"] {
        assert!(c0.iter().any(|c| c[0] == b), "no {b} token");
    }
    // The forks: the two tokens above 1 nat.
    let forks: Vec<&str> = c0
        .iter()
        .zip(&v0)
        .filter(|(c, _)| c.iter().any(|x| x == "fork"))
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(forks, [" Together", "Wait"]);
    assert!(pane0.contains("<dt>forks</dt><dd>2</dd>"));
    // The loop: marked at the token it was flagged after, and listed.
    let looped: Vec<usize> = (0..c0.len())
        .filter(|&i| c0[i].iter().any(|x| x == "loop"))
        .collect();
    assert_eq!(
        looped,
        [v0.len() - 1],
        "flagged at the end of the third sentence"
    );
    assert!(
        pane0.contains("reasoning is repeating itself (3×): “Let me check: the ball costs 0.05")
    );
    // Steps, with the self-correction.
    assert!(pane0.contains("self-correction"));
    assert!(pane0.contains("<span class=\"corr-mark\">↺ </span>Wait, the ball costs 0.10?"));
    // The alternatives, for the hover card.
    assert!(
        pane0.contains("<span class=\"alt-t\">Therefore</span><span class=\"alt-p\">12.0%</span>")
    );
    assert!(pane0.contains("<span class=\"alt-t\">So</span><span class=\"alt-p\">31.0%</span>"));
    assert!(pane0.contains("<span class=\"alt-t\">␣Adding</span>"));
    assert!(pane0.contains("<dd>23.4 tok/s</dd>"));

    // The branch: the kept prefix faded, the chosen alternative with its probability.
    let c1 = token_classes(pane1);
    assert!(c1[..wait].iter().all(|c| c.iter().any(|x| x == "inh")));
    assert_eq!(c1[wait][0], "p-low", "\"So\" had 31%");
    assert!(c1[wait].iter().any(|x| x == "ins"));
    assert!(c1[wait + 1..].iter().all(|c| !copied(c)));
    assert!(pane1.contains("(5 cents)."));

    // The screenshot.
    let shot = tmp.path().join("trace.png");
    browse(
        &exe,
        &tmp.path().join("profile"),
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,1000".to_string(),
        ],
        &tmp.path().join("shot.out"),
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 40_000,
        "a near-empty screenshot: {} bytes",
        png.len()
    );
    if let Some(dir) = std::env::var_os("AHA_TEST_SCREENSHOT_DIR") {
        std::fs::copy(&shot, Path::new(&dir).join("trace.png")).unwrap();
    }
}

#[test]
fn export_finds_sessions_by_id_or_path_and_says_why_it_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_session(&data.join("sessions"));

    // By id, Markdown to the default path in the current folder.
    let o = export(&data, &[ID], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(tmp.path().join(format!("aha-{ID}.md"))).unwrap();
    assert!(md.starts_with(&format!("# aha session {ID}")), "{md}");
    // By path, HTML to the default path.
    let log = data.join("sessions").join(format!("{ID}.jsonl"));
    let o = export(&data, &[log.to_str().unwrap(), "--html"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join(format!("aha-{ID}.html")).is_file());

    // An unknown id names the folder it looked in.
    let o = export(&data, &["nosuch", "--html"], tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("no session `nosuch`"), "{err}");
    assert!(
        err.contains(&data.join("sessions").display().to_string()),
        "{err}"
    );
    // A file that cannot be read says so.
    let o = export(&data, &["missing/x.jsonl"], tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("cannot read session log missing/x.jsonl"),
        "{err}"
    );
}
