//! The workbench TUI (`aha` with no subcommand): model / update / view over ratatui + crossterm.
//!
//! `app` holds the state and `update`; `view` draws it; this file is the shell around them: it
//! owns the terminal (through `terminal::TerminalGuard`), the agent link and the session log,
//! feeds key and agent events to `update`, and redraws when something changed — at most `fps`
//! times a second, however fast tokens arrive. The UI talks to the model only through the
//! agent's `Op`/`Event` queue pair.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod app;
pub mod bench;
pub mod commands;
pub mod composer;
pub mod config;
pub mod highlight;
pub mod keymap;
pub mod markdown;
pub use aha_session::steps;
pub mod terminal;
pub mod text;
pub mod theme;
pub mod view;

pub use aha_protocol::AgentLink;
use aha_protocol::{Event, Op};
use aha_session::thinking::ThinkingSettings;
use aha_session::{self as session, SessionLog};
use anyhow::Result;
use app::{App, AppEvent, Effect};
use ratatui::backend::Backend;
use ratatui::Terminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of key, mouse, paste and resize events.
pub trait Input {
    /// The next event, waiting at most `timeout`.
    fn next(&mut self, timeout: Duration) -> Result<Option<AppEvent>>;
}

/// The terminal's events through crossterm.
pub struct TerminalInput;

impl Input for TerminalInput {
    fn next(&mut self, timeout: Duration) -> Result<Option<AppEvent>> {
        use crossterm::event::{self, Event as CE};
        if !event::poll(timeout)? {
            return Ok(None);
        }
        Ok(match event::read()? {
            CE::Key(k) => Some(AppEvent::Key(k)),
            CE::Mouse(m) => Some(AppEvent::Mouse(m)),
            CE::Paste(s) => Some(AppEvent::Paste(s)),
            CE::Resize(w, h) => Some(AppEvent::Resize(w, h)),
            _ => None,
        })
    }
}

/// The session log, created when the first message is sent (so opening and closing aha leaves
/// no empty sessions behind).
pub struct Sessions {
    pub dir: PathBuf,
    pub id: String,
    pub model: String,
    pub log: Option<SessionLog>,
    pending: Vec<(u64, Op)>,
    /// The thinking settings chosen last, and the file they are remembered in between
    /// sessions (`<data dir>/thinking.json`, beside the sessions folder).
    pub thinking: ThinkingSettings,
    pub thinking_file: PathBuf,
}

impl Sessions {
    pub fn new(dir: PathBuf, model: &str) -> Self {
        let thinking_file = dir
            .parent()
            .unwrap_or(&dir)
            .join(session::thinking::FILE_NAME);
        Self {
            dir,
            id: session::new_id(),
            model: model.to_string(),
            log: None,
            pending: Vec::new(),
            thinking: ThinkingSettings::load(&thinking_file),
            thinking_file,
        }
    }

    /// The log file's path (once it exists).
    pub fn path(&self) -> Option<PathBuf> {
        self.log.as_ref().map(|l| l.path.clone())
    }

    fn op(&mut self, t: u64, op: &Op) -> Result<()> {
        if self.log.is_none() {
            if !matches!(op, Op::UserMessage { .. }) {
                self.pending.push((t, op.clone()));
                return Ok(());
            }
            let mut log = SessionLog::create(&self.dir, &self.id, &self.model)?;
            for (t, op) in self.pending.drain(..) {
                log.op(t, &op)?;
            }
            self.log = Some(log);
        }
        if let Some(l) = &mut self.log {
            l.op(t, op)?;
        }
        Ok(())
    }

    fn event(&mut self, t: u64, e: &Event) -> Result<()> {
        match &mut self.log {
            Some(l) => l.event(t, e),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<()> {
        match &mut self.log {
            Some(l) => l.flush(),
            None => Ok(()),
        }
    }
}

/// How the loop runs.
pub struct LoopOpts {
    /// Most frames per second.
    pub fps: u32,
    /// Panic right after the first frame (tests that the terminal is restored; the CLI sets it
    /// from `AHA_TEST_PANIC=1` at start-up).
    pub panic_after_first_draw: bool,
    /// Stop once this is set and the agent has nothing more to say (benchmarks).
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for LoopOpts {
    fn default() -> Self {
        Self {
            fps: 30,
            panic_after_first_draw: false,
            stop: None,
        }
    }
}

/// The session clock: milliseconds since the start, continuing a resumed session's clock.
pub struct Clock {
    start: Instant,
    pub offset: u64,
}

impl Clock {
    pub fn new(offset: u64) -> Self {
        Self {
            start: Instant::now(),
            offset,
        }
    }
    pub fn now(&self) -> u64 {
        self.offset + self.start.elapsed().as_millis() as u64
    }
}

/// Frames actually drawn by the last `run_loop` (for benchmarks).
pub static FRAMES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs the workbench until the person quits: input and agent events go through `update`;
/// ops go to the log and the agent; a frame is drawn when something changed, at most `fps`
/// times a second.
pub fn run_loop<B: Backend>(
    term: &mut Terminal<B>,
    app: &mut App,
    agent: &mut dyn AgentLink,
    input: &mut dyn Input,
    sessions: &mut Sessions,
    clock: &mut Clock,
    opts: &LoopOpts,
) -> Result<()> {
    let frame = Duration::from_millis(1000 / u64::from(opts.fps.clamp(1, 240)));
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    let mut last_tick = Instant::now();
    FRAMES.store(0, Ordering::Relaxed);
    loop {
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= frame) {
            app.now = clock.now();
            term.draw(|f| {
                app.size = (f.area().width, f.area().height);
                view::draw(app, f)
            })?;
            FRAMES.fetch_add(1, Ordering::Relaxed);
            last_draw = Some(Instant::now());
            dirty = false;
            if opts.panic_after_first_draw {
                panic!("AHA_TEST_PANIC: a panic inside the UI loop, after the first frame");
            }
        }
        // Wait for input: briefly while output streams (agent events are polled), longer idle.
        let busy = app.generating() || dirty;
        let wait = if dirty {
            frame.saturating_sub(last_draw.map_or(Duration::ZERO, |t| t.elapsed()))
        } else if busy {
            frame
        } else {
            Duration::from_millis(100)
        };
        if let Some(ev) = input.next(wait)? {
            app.now = clock.now();
            app::update(app, ev);
            dirty = true;
            // Drain a burst (a paste, a resize storm) before drawing.
            while let Some(ev) = input.next(Duration::ZERO)? {
                app::update(app, ev);
            }
        }
        let mut got = 0;
        while let Some(e) = agent.try_recv() {
            app.now = clock.now();
            if let Err(err) = sessions.event(app.now, &e) {
                app.t.error(format!("session log: {err:#}"));
            }
            app::update(app, AppEvent::Agent(e));
            got += 1;
            if got >= 4096 {
                break;
            }
        }
        if got > 0 {
            dirty = true;
        }
        for op in std::mem::take(&mut app.outbox) {
            if let Err(err) = sessions.op(app.now, &op) {
                app.t.error(format!("session log: {err:#}"));
            }
            if sessions.thinking.apply(&op) {
                if let Err(e) = sessions.thinking.save(&sessions.thinking_file) {
                    tracing::warn!("cannot remember the thinking settings: {e}");
                }
            }
            agent.send(op);
        }
        for eff in std::mem::take(&mut app.effects) {
            if let Effect::Open(path, line) = &eff {
                open_in_editor(app, path, *line);
                term.clear()?;
            } else {
                effect(app, agent, sessions, clock, eff);
            }
            dirty = true;
        }
        // Elapsed time and live speed in the status bar move even without tokens.
        if app.generating() && last_tick.elapsed() >= Duration::from_millis(250) {
            last_tick = Instant::now();
            dirty = true;
        }
        if app
            .flash
            .as_ref()
            .is_some_and(|(_, until)| clock.now() > *until)
        {
            app.flash = None;
            dirty = true;
        }
        if app.quit {
            let _ = sessions.flush();
            return Ok(());
        }
        if let Some(stop) = &opts.stop {
            if stop.load(Ordering::SeqCst) && got == 0 {
                return Ok(());
            }
        }
    }
}

/// `/open`: the file in `$VISUAL`/`$EDITOR` (else vi) at `line`, the terminal handed over while
/// it runs.
fn open_in_editor(app: &mut App, path: &str, line: usize) {
    let p = PathBuf::from(path);
    if !p.exists() {
        app.t.error(format!(
            "{path} does not exist (paths are relative to where aha started)"
        ));
        return;
    }
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    if !terminal::active() {
        app.t
            .notice(format!("would open {path}:{line} in {editor}"));
        return;
    }
    let mut words = editor.split_whitespace();
    let prog = words.next().unwrap_or("vi").to_string();
    let rest: Vec<String> = words.map(str::to_string).collect();
    let r = terminal::suspended(|| {
        std::process::Command::new(&prog)
            .args(&rest)
            .arg(format!("+{line}"))
            .arg(&p)
            .status()
    });
    match r {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => app.t.error(format!("{editor} exited with {s}")),
        Ok(Err(e)) => app
            .t
            .error(format!("cannot run {editor}: {e} (set $EDITOR)")),
        Err(e) => app.t.error(format!("terminal: {e:#}")),
    }
}

fn effect(
    app: &mut App,
    agent: &mut dyn AgentLink,
    sessions: &mut Sessions,
    clock: &mut Clock,
    eff: Effect,
) {
    match eff {
        Effect::Save => match sessions.flush() {
            Ok(()) => match sessions.path() {
                Some(p) => app.t.notice(format!(
                    "session {} saved: {} (aha --resume {} reopens it)",
                    sessions.id,
                    p.display(),
                    sessions.id
                )),
                None => app
                    .t
                    .notice("nothing to save yet: the session starts with the first message"),
            },
            Err(e) => app.t.error(format!("{e:#}")),
        },
        Effect::Open(path, line) => open_in_editor(app, &path, line),
        Effect::Export(p) => {
            let path = p
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("aha-{}.md", sessions.id)));
            let md = session::export::markdown(
                &app.t,
                &format!("aha session {}", sessions.id),
                &app.info.model,
            );
            match std::fs::write(&path, md) {
                Ok(()) => app.t.notice(format!("exported to {}", path.display())),
                Err(e) => app.t.error(format!("cannot write {}: {e}", path.display())),
            }
        }
        Effect::ExportHtml(p) => {
            let path = p
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("aha-{}.html", sessions.id)));
            // Forks as the explorer marks them (the config's `[trace]`).
            let page = session::html::html(
                &app.t,
                &format!("aha session {}", sessions.id),
                &app.info.model,
                &app.trace,
            );
            match std::fs::write(&path, page) {
                Ok(()) => app.t.notice(format!("exported to {}", path.display())),
                Err(e) => app.t.error(format!("cannot write {}: {e}", path.display())),
            }
        }
        Effect::Resume(None) => {
            let all = session::list(&sessions.dir);
            if all.is_empty() {
                app.t
                    .notice(format!("no sessions yet in {}", sessions.dir.display()));
            } else {
                let ids: Vec<String> = all.iter().take(10).map(|s| s.id.clone()).collect();
                app.t.notice(format!(
                    "sessions, newest first: {}{} — /resume ID reopens one",
                    ids.join(", "),
                    if all.len() > 10 { ", …" } else { "" }
                ));
            }
        }
        Effect::Resume(Some(id)) => match session::find(&sessions.dir, &id) {
            Ok(path) => {
                if let Err(e) = resume(app, agent, sessions, clock, &path) {
                    app.t.error(format!("{e:#}"));
                }
            }
            Err(e) => app.t.error(format!("{e:#}")),
        },
    }
}

/// Replaces the conversation with a saved session's and appends to its log from now on.
pub fn resume(
    app: &mut App,
    agent: &mut dyn AgentLink,
    sessions: &mut Sessions,
    clock: &mut Clock,
    path: &std::path::Path,
) -> Result<()> {
    let loaded = session::load(path)?;
    let _ = sessions.flush();
    let log = SessionLog::append(path)?;
    app.t = session::replay(&loaded);
    app.layout.borrow_mut().clear();
    app.scroll = app::Scroll::Follow;
    app.focus = None;
    app.view = app::View::Chat;
    // Context used and speeds of the last finished turn, as before.
    app.last_stats = app
        .t
        .entries
        .iter()
        .rev()
        .find_map(|e| e.reply().and_then(|r| r.stats.clone()));
    *clock = Clock::new(loaded.last_t() + 1);
    app.now = clock.now();
    agent.send(Op::Restore {
        messages: app.t.messages(),
    });
    // The session goes on thinking as it did.
    let ops = loaded.records.iter().filter_map(|r| match r {
        session::Record::Op { op, .. } => Some(op),
        _ => None,
    });
    set_thinking(app, agent, &ThinkingSettings::from_ops(ops));
    sessions.id = loaded.id.clone();
    sessions.log = Some(log);
    sessions.pending.clear();
    let turns = app.t.turns.len();
    app.t.notice(format!(
        "resumed session {} ({turns} turn{}{})",
        loaded.id,
        if turns == 1 { "" } else { "s" },
        if loaded.model.is_empty() || loaded.model == app.info.model {
            String::new()
        } else {
            format!(", written with {}", loaded.model)
        }
    ));
    if let Some(s) = loaded.skipped_summary() {
        app.t.error(s);
    }
    Ok(())
}

/// Puts `s` into the app and the agent: each setting it holds that differs from the app's
/// (the agent says so in a notice).
pub fn set_thinking(app: &mut App, agent: &mut dyn AgentLink, s: &ThinkingSettings) {
    let (mode, budget) = (
        s.think.unwrap_or(app.think_mode),
        s.budget_setting().unwrap_or(app.think_budget),
    );
    if (mode, budget) != (app.think_mode, app.think_budget) {
        app.think_mode = mode;
        app.think_budget = budget;
        agent.send(Op::SetThinking { mode, budget });
    }
    if let Some(min) = s.think_min_setting().filter(|m| *m != app.trace.think_min) {
        app.trace.think_min = min;
        agent.send(Op::SetThinkMin { min });
    }
    if let Some(action) = s.loops.filter(|l| *l != app.trace.loops) {
        app.trace.loops = action;
        agent.send(Op::SetLoops { action });
    }
}

/// Which session to reopen at start.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeArg {
    Last,
    Id(String),
}

/// Runs the workbench on the real terminal with an agent already started (`trace`: the
/// microscope's settings it was given). `downloaded` lists
/// the models on disk at start-up (for `/model`); `opts` says how the loop runs. Nothing here
/// reads the environment: the caller gathers its knobs at start-up.
pub fn run_tui(
    mut agent: impl AgentLink,
    cfg: &config::UiConfig,
    trace: aha_protocol::TraceOptions,
    resume_arg: Option<ResumeArg>,
    downloaded: Vec<String>,
    opts: LoopOpts,
) -> Result<i32> {
    let mut app = App::new(agent.info().clone());
    app.downloaded = downloaded;
    app.theme = cfg.theme()?;
    app.keys = cfg.keymap()?;
    if let Some(m) = cfg.think {
        app.think_mode = m;
    }
    app.think_budget = cfg.think_budget.filter(|b| *b > 0);
    app.trace = trace;
    app.research = cfg.research.unwrap_or(false);
    let dir = session::sessions_dir();
    let mut sessions = Sessions::new(dir.clone(), &app.info.model);
    // Thinking as it was left last time (over the config's defaults).
    let remembered = sessions.thinking.clone();
    set_thinking(&mut app, &mut agent, &remembered);
    let mut clock = Clock::new(0);
    if let Some(r) = resume_arg {
        let path = match r {
            ResumeArg::Last => session::last(&dir)?,
            ResumeArg::Id(id) => session::find(&dir, &id)?,
        };
        resume(&mut app, &mut agent, &mut sessions, &mut clock, &path)?;
    }
    tracing::info!(
        model = %app.info.model,
        device = %app.info.device,
        "workbench started"
    );
    let mut guard = terminal::TerminalGuard::enter()?;
    let r = run_loop(
        &mut guard.terminal,
        &mut app,
        &mut agent,
        &mut TerminalInput,
        &mut sessions,
        &mut clock,
        &opts,
    );
    drop(guard);
    r?;
    // After the terminal is restored: tell the person where the session went.
    if let Some(p) = sessions.path() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "session {} saved in {} — `aha --resume {}` reopens it",
                sessions.id,
                p.display(),
                sessions.id
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests;
