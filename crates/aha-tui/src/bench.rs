//! Benchmarks of the workbench (`aha bench-ui`): frame time with a short and a very long
//! transcript, and the UI thread's CPU while a scripted source streams tokens fast.

use super::app::App;
use super::{run_loop, AgentLink, Clock, Input, LoopOpts, Sessions};
use aha_protocol::EngineInfo;
use aha_protocol::{Event, Op, TurnStats};
use anyhow::Result;
use ratatui::backend::{CrosstermBackend, TestBackend};
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn info() -> EngineInfo {
    EngineInfo {
        model: "scripted".into(),
        device: "none".into(),
        context_length: 32768,
        reasoning: true,
    }
}

const WORDS: &[&str] = &[
    " the",
    " model",
    " checks",
    " whether",
    " seven",
    " times",
    " eight",
    " is",
    " fifty-six",
    " and",
    " then",
    " adds",
    " one",
    " more",
    " step",
    ".",
];

/// One scripted reply as events: reasoning, then a Markdown answer (every tenth with code).
pub fn reply_events(i: usize, tokens: usize) -> Vec<Event> {
    let mut out = vec![Event::TurnStarted {
        turn: i,
        branch_of: None,
        prefix: String::new(),
    }];
    for k in 0..tokens {
        let text = if k % 40 == 39 {
            "\n\nWait,".to_string()
        } else {
            WORDS[(i + k) % WORDS.len()].to_string()
        };
        out.push(Event::ThinkingDelta {
            text,
            logprob: Some(-((k % 7) as f32) * 0.3),
            entropy: Some((k % 5) as f32 * 0.7),
            top: Vec::new(),
        });
    }
    let mut answer = format!(
        "## Answer {i}\n\nThe result is **{}**, because:\n\n- first\n- second\n\n",
        i * 7
    );
    if i.is_multiple_of(10) {
        answer.push_str("```rust\nfn main() {\n    println!(\"{}\", 6 * 7);\n}\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
    for w in answer.split_inclusive(' ') {
        out.push(Event::AnswerDelta {
            text: w.to_string(),
            logprob: None,
            entropy: None,
            top: Vec::new(),
        });
    }
    out.push(Event::TurnFinished {
        stats: TurnStats {
            finish_reason: aha_protocol::FinishReason::Stop,
            ..TurnStats::default()
        },
        tokens: vec![],
    });
    out
}

/// A workbench holding `messages` messages (half questions, half replies).
pub fn synthetic_app(messages: usize) -> App {
    let mut app = App::new(info());
    for i in 0..messages / 2 {
        app.t.apply_op(
            &Op::UserMessage {
                text: format!("Question {i}: what is {i} times seven, and why?"),
                turn_id: None,
            },
            i as u64 * 10,
        );
        for e in reply_events(i, 24) {
            app.t.apply_event(&e, i as u64 * 10 + 5);
        }
    }
    app
}

/// Frame times for one transcript length.
#[derive(Debug, Clone)]
pub struct FrameTimes {
    pub messages: usize,
    /// The first frame (nothing cached yet).
    pub cold_ms: f64,
    /// Frames while a reply streams at the bottom.
    pub mean_ms: f64,
    pub p95_ms: f64,
}

/// Draws `frames` frames of a `w`×`h` terminal while a reply streams into a transcript of
/// `messages` messages.
pub fn frame_times(messages: usize, frames: usize, w: u16, h: u16) -> Result<FrameTimes> {
    let mut app = synthetic_app(messages);
    let turn = app.t.turns.len();
    app.t.apply_op(
        &Op::UserMessage {
            text: "and now?".into(),
            turn_id: None,
        },
        0,
    );
    app.t.apply_event(
        &Event::TurnStarted {
            turn,
            branch_of: None,
            prefix: String::new(),
        },
        0,
    );
    let mut term = Terminal::new(TestBackend::new(w, h))?;
    let t0 = Instant::now();
    term.draw(|f| super::view::draw(&app, f))?;
    let cold_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut times = Vec::with_capacity(frames);
    for k in 0..frames {
        let e = if k < frames / 2 {
            Event::ThinkingDelta {
                text: WORDS[k % WORDS.len()].into(),
                logprob: Some(-0.2),
                entropy: Some(0.4),
                top: Vec::new(),
            }
        } else {
            Event::AnswerDelta {
                text: WORDS[k % WORDS.len()].into(),
                logprob: None,
                entropy: None,
                top: Vec::new(),
            }
        };
        app.t.apply_event(&e, k as u64);
        let t = Instant::now();
        term.draw(|f| super::view::draw(&app, f))?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let mean_ms = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let p95_ms = times
        .get((times.len() * 95 / 100).min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    Ok(FrameTimes {
        messages,
        cold_ms,
        mean_ms,
        p95_ms,
    })
}

struct ChannelAgent(Receiver<Event>, EngineInfo);

impl AgentLink for ChannelAgent {
    fn send(&mut self, _op: Op) {}
    fn try_recv(&mut self) -> Option<Event> {
        self.0.try_recv().ok()
    }
    fn info(&self) -> &EngineInfo {
        &self.1
    }
}

struct NoInput;

impl Input for NoInput {
    fn next(&mut self, timeout: Duration) -> Result<Option<super::app::AppEvent>> {
        std::thread::sleep(timeout);
        Ok(None)
    }
}

/// CPU time of the calling thread, in nanoseconds (Linux: /proc/thread-self/schedstat).
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// The UI thread's load while tokens stream.
#[derive(Debug, Clone)]
pub struct CpuLoad {
    pub tokens: usize,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub frames: usize,
    /// CPU time over wall time, in percent of one core.
    pub percent: f64,
}

/// Runs the real UI loop (to a terminal that writes to nowhere) while a scripted source
/// streams `tok_s` tokens per second for `secs` seconds.
pub fn cpu_load(tok_s: u32, secs: f64, w: u16, h: u16) -> Result<CpuLoad> {
    let (tx, rx) = channel();
    let stop = Arc::new(AtomicBool::new(false));
    let total = (f64::from(tok_s) * secs) as usize;
    let stop2 = stop.clone();
    let source = std::thread::spawn(move || {
        let mut events = reply_events(1, total * 7 / 10);
        // Pad the answer to the total with more words.
        let fin = events.pop();
        let mut k = 0;
        while events.len() < total + 1 {
            events.push(Event::AnswerDelta {
                text: if k % 12 == 11 {
                    "\n\n".into()
                } else {
                    WORDS[k % WORDS.len()].into()
                },
                logprob: None,
                entropy: None,
                top: Vec::new(),
            });
            k += 1;
        }
        events.extend(fin);
        let t0 = Instant::now();
        let per = Duration::from_secs_f64(1.0 / f64::from(tok_s.max(1)));
        for (i, e) in events.into_iter().enumerate() {
            let due = per * i as u32;
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            if tx.send(e).is_err() {
                break;
            }
        }
        stop2.store(true, Ordering::SeqCst);
    });
    let mut app = App::new(info());
    app.t.apply_op(
        &Op::UserMessage {
            text: "stream".into(),
            turn_id: None,
        },
        0,
    );
    let backend = CrosstermBackend::new(std::io::sink());
    let mut term = Terminal::with_options(
        backend,
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, w, h)),
        },
    )?;
    let mut sessions = Sessions::new(std::env::temp_dir(), "scripted");
    let mut clock = Clock::new(0);
    let opts = LoopOpts {
        fps: 30,
        panic_after_first_draw: false,
        stop: Some(stop),
    };
    let cpu0 = thread_cpu_ns().unwrap_or(0);
    let t0 = Instant::now();
    run_loop(
        &mut term,
        &mut app,
        &mut ChannelAgent(rx, info()),
        &mut NoInput,
        &mut sessions,
        &mut clock,
        &opts,
    )?;
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = thread_cpu_ns().unwrap_or(0).saturating_sub(cpu0) as f64 / 1e9;
    let _ = source.join();
    Ok(CpuLoad {
        tokens: total,
        wall_s,
        cpu_s,
        frames: super::FRAMES.load(Ordering::Relaxed),
        percent: 100.0 * cpu_s / wall_s.max(1e-9),
    })
}
