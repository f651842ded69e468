//! The workbench through the real release binary in tmux: type, watch output appear, stop a
//! reply with Esc, ask again, quit — and the terminal is the shell's again afterwards, also when
//! the UI loop panics.

use super::common::{heavy, model};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of our own (its own socket) with one pane running a plain shell.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn start(tag: &str, w: u16, h: u16) -> Self {
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "tmux is needed for the workbench tests (apt-get install tmux; .ci/run does)"
        );
        let t = Tmux {
            socket: format!("aha-test-{}-{tag}", std::process::id()),
        };
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let shell = format!(
            "env -i PATH=/usr/local/bin:/usr/bin:/bin HOME={home} TERM=xterm-256color LANG=C.UTF-8 PS1='READY$ ' bash --norc --noprofile"
        );
        let ok = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
                &shell,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        t.wait_for("shell prompt", Duration::from_secs(10), |s| {
            s.contains("READY$")
        });
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).args(args);
        c
    }

    /// Types text literally.
    pub(crate) fn type_text(&self, s: &str) {
        self.cmd(&["send-keys", "-t", "t", "-l", s])
            .status()
            .unwrap();
    }

    /// Presses keys by tmux name (Enter, Escape, C-c…).
    pub(crate) fn keys(&self, k: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(k);
        self.cmd(&args).status().unwrap();
    }

    pub(crate) fn pane(&self) -> String {
        let o = self
            .cmd(&["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn display(&self, fmt: &str) -> String {
        let o = self
            .cmd(&["display-message", "-p", "-t", "t", fmt])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub(crate) fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&str) -> bool,
    ) -> String {
        let t0 = Instant::now();
        loop {
            let p = self.pane();
            if f(&p) {
                return p;
            }
            if t0.elapsed() > timeout {
                panic!("timed out waiting for {what}; the pane shows:\n{p}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts the workbench in the pane, `env` (`VAR=value …`) before the binary and `args`
    /// after it, and waits until it asks for a message.
    pub(crate) fn open_workbench(&self, env: &str, args: &str) {
        self.type_text(&format!("{env} {} {args}", env!("CARGO_BIN_EXE_aha")));
        self.keys(&["Enter"]);
        self.wait_for("the workbench", Duration::from_secs(120), |s| {
            s.contains("Ask something")
        });
    }

    /// Leaves the workbench with /quit and waits for the shell's prompt.
    pub(crate) fn quit_workbench(&self) -> String {
        self.type_text("/quit");
        self.keys(&["Enter"]);
        self.wait_for("the shell again", Duration::from_secs(20), |s| {
            s.matches("READY$").count() >= 2
        })
    }

    /// Checks that the terminal is the shell's again: main screen, cursor shown, cooked mode.
    fn assert_restored(&self) {
        assert_eq!(
            self.display("#{alternate_on}"),
            "0",
            "still in the alternate screen"
        );
        assert_eq!(self.display("#{cursor_flag}"), "1", "cursor hidden");
        self.keys(&["C-l"]);
        // The marker is computed so that only the output line, not the typed command, holds it.
        self.type_text("stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(echo|icanon)' | tr '\\n' ' '; echo MODES-$((40+2))");
        self.keys(&["Enter"]);
        let p = self.wait_for("stty output", Duration::from_secs(10), |s| {
            s.contains("MODES-42")
        });
        let line = p.lines().find(|l| l.contains("MODES-42")).unwrap_or("");
        assert!(
            line.contains("icanon")
                && !line.contains("-icanon")
                && line.contains("echo")
                && !line.contains("-echo"),
            "terminal left in raw mode: {line}"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).status();
    }
}

fn sessions_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("sessions"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn workbench_end_to_end_with_the_real_model() {
    let _g = heavy();
    let m = model("qwen2.5-coder-0.5b");
    let data = tempfile::tempdir().unwrap();
    let t = Tmux::start("e2e", 100, 30);
    t.type_text(&format!(
        "AHA_DATA_DIR={} {} --model {}",
        data.path().display(),
        env!("CARGO_BIN_EXE_aha"),
        m.display()
    ));
    t.keys(&["Enter"]);
    t.wait_for("the workbench", Duration::from_secs(120), |s| {
        s.contains("Ask something")
    });
    assert_eq!(t.display("#{alternate_on}"), "1");

    // First prompt: text streams in; Esc stops it and keeps what was written.
    // A long reply, so that Esc lands mid-stream. (The coder model, told it works on a project,
    // declines to write stories; it explains data structures at length.)
    t.type_text("Explain what a linked list is, in detail, with a long example.");
    t.keys(&["Enter"]);
    let p = t.wait_for("output and live speed", Duration::from_secs(120), |s| {
        // Lines of the reply: between the prompt and the rule above the composer.
        let body = s.split("with a long example.").nth(1).unwrap_or("");
        let body = body.split("─ Enter send").next().unwrap_or("");
        let lines = body
            .lines()
            .filter(|l| l.chars().filter(|c| c.is_alphabetic()).count() > 10)
            .count();
        lines >= 2 && s.contains("answering") && s.contains("tok/s")
    });
    assert!(!p.contains("READY$"), "{p}");
    t.keys(&["Escape"]);
    let p = t.wait_for("the stop", Duration::from_secs(30), |s| {
        s.contains("⏹ stopped") && s.contains(" idle ")
    });
    assert!(!p.contains("READY$"), "Esc must not quit:\n{p}");

    // Second prompt runs to the end.
    t.type_text("Say hello in one word.");
    t.keys(&["Enter"]);
    t.wait_for("the second reply", Duration::from_secs(120), |s| {
        s.contains("❯ Say hello in one word.") && s.contains(" idle ") && s.contains("ttft")
    });

    t.type_text("/quit");
    t.keys(&["Enter"]);
    let p = t.wait_for("the shell again", Duration::from_secs(20), |s| {
        s.matches("READY$").count() >= 2
    });
    assert!(p.contains("saved in"), "{p}");
    t.assert_restored();

    let files = sessions_in(data.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let log = std::fs::read_to_string(&files[0]).unwrap();
    let recs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kind = |r: &serde_json::Value| -> String {
        r.get("op")
            .or_else(|| r.get("event"))
            .and_then(|x| x["type"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let users: Vec<&serde_json::Value> =
        recs.iter().filter(|r| kind(r) == "user_message").collect();
    assert_eq!(users.len(), 2);
    assert!(users[0]["op"]["text"]
        .as_str()
        .unwrap()
        .starts_with("Explain what a linked list is"));
    let finished: Vec<String> = recs
        .iter()
        .filter(|r| kind(r) == "turn_finished")
        .map(|r| {
            r["event"]["stats"]["finish_reason"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert_eq!(finished[0], "cancelled");
    // The log replays to both turns.
    let loaded = aha::session::load(&files[0]).unwrap();
    assert!(loaded.skipped.is_empty());
    assert_eq!(aha::session::replay(&loaded).turns.len(), 2);
}

#[test]
fn a_panic_in_the_ui_loop_restores_the_terminal() {
    let _g = heavy();
    let m = model("smollm2-135m");
    let data = tempfile::tempdir().unwrap();
    let t = Tmux::start("panic", 80, 24);
    t.type_text(&format!(
        "AHA_TEST_PANIC=1 AHA_DATA_DIR={} {} --model {}",
        data.path().display(),
        env!("CARGO_BIN_EXE_aha"),
        m.display()
    ));
    t.keys(&["Enter"]);
    let p = t.wait_for("the panic and the shell", Duration::from_secs(120), |s| {
        s.contains("AHA_TEST_PANIC") && s.matches("READY$").count() >= 2
    });
    assert!(
        p.contains("panicked"),
        "the panic message is readable:\n{p}"
    );
    t.assert_restored();
    // The workbench's log went to its file (AHA_LOG unset: `info`), never to the terminal: the
    // start line and the panic hook's copy of the message.
    let log = std::fs::read_to_string(data.path().join("logs").join("aha.log"))
        .expect("the workbench writes <data dir>/logs/aha.log");
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("workbench started")),
        "{log}"
    );
    // The message ("panicked at FILE:LINE:COL:" then the payload) spans two lines.
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("panic: panicked at")),
        "{log}"
    );
    assert!(
        log.contains("AHA_TEST_PANIC: a panic inside the UI loop"),
        "{log}"
    );
    assert!(
        !p.contains("workbench started"),
        "the log reached the terminal:\n{p}"
    );
}

#[test]
fn without_a_terminal_the_workbench_points_to_aha_chat() {
    for args in [
        &[][..],
        &["--resume", "--last"][..],
        &["--resume", "some-id"][..],
    ] {
        let out = super::common::bin()
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("needs a terminal") && err.contains("aha chat"),
            "{args:?}: {err}"
        );
    }
}

/// The agent in the workbench with the real model: a file edit asks first, in a dialog showing
/// the diff; approving writes the file, `/diff` shows the session's change and `/undo` takes it
/// back.
#[test]
fn workbench_asks_before_a_tool_edits_and_undo_restores() {
    let _g = heavy();
    let m = model("qwen2.5-coder-0.5b");
    let data = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let cfg = data.path().join("config.toml");
    // Greedy, so the model's first move is the same on every run.
    std::fs::write(
        &cfg,
        "[ui]\nmax_tokens = 200\n[ui.sampling]\ntemperature = 0.0\nseed = 0\n",
    )
    .unwrap();
    let t = Tmux::start("approve", 110, 32);
    t.type_text(&format!(
        "cd {} && AHA_CONFIG={} AHA_DATA_DIR={} {} --model {}",
        ws.path().display(),
        cfg.display(),
        data.path().display(),
        env!("CARGO_BIN_EXE_aha"),
        m.display()
    ));
    t.keys(&["Enter"]);
    t.wait_for("the workbench", Duration::from_secs(120), |s| {
        s.contains("Ask something")
    });
    t.type_text("Use write_file to create hello.py containing print('hello').");
    t.keys(&["Enter"]);
    let p = t.wait_for("the approval dialog", Duration::from_secs(240), |s| {
        s.contains("Approval needed")
    });
    assert!(p.contains("write_file"), "{p}");
    assert!(p.contains("+++ b/"), "the dialog shows the diff:\n{p}");
    assert!(
        std::fs::read_dir(ws.path()).unwrap().next().is_none(),
        "nothing is written before approval"
    );
    t.keys(&["y"]);
    let p = t.wait_for("the write", Duration::from_secs(60), |s| s.contains("✓ ok"));
    let written: Vec<_> = std::fs::read_dir(ws.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != ".aha")
        .map(|e| e.path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}\n{p}");
    // Whatever the model does next, stop it and look at the session's changes.
    t.keys(&["Escape"]);
    t.wait_for("idle", Duration::from_secs(60), |s| {
        s.contains(" idle ") && !s.contains("Approval needed")
    });
    t.type_text("/diff");
    t.keys(&["Enter"]);
    t.wait_for("the diff", Duration::from_secs(10), |s| {
        s.contains("@@ -0,0")
    });
    t.type_text("/undo");
    t.keys(&["Enter"]);
    t.wait_for("the undo", Duration::from_secs(10), |s| {
        s.contains("restored")
    });
    assert!(!written[0].exists(), "undo removes the new file");
    t.type_text("/quit");
    t.keys(&["Enter"]);
    t.wait_for("the shell again", Duration::from_secs(20), |s| {
        s.matches("READY$").count() >= 2
    });
    t.assert_restored();
}
