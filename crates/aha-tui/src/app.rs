//! The workbench's state and `update`: keys, mouse, pastes and agent events in; ops to send
//! (`outbox`) and effects for the shell (`effects`) out. Nothing here draws or does I/O, so it
//! is tested with scripted event sequences.

use super::commands::{self, Command};
use super::composer::Composer;
use super::keymap::Keymap;
use super::steps;
use super::theme::Theme;
use super::view;
use aha_protocol::{EngineInfo, Event, Op, TurnId, TurnStats};
use aha_session::transcript::{Part, Reply, ReplyState, Tok, ToolState, Transcript};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};
use std::cell::RefCell;
use std::collections::VecDeque;

/// Everything that can change the workbench.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Paste(String),
    Resize(u16, u16),
    Agent(Event),
}

/// What the shell around `update` must do (it owns files and the agent).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Flush the session log and say where it is.
    Save,
    /// Write Markdown to this path (or a default one).
    Export(Option<String>),
    /// Write the session as one self-contained HTML page to this path (or a default one).
    ExportHtml(Option<String>),
    /// Reopen a session (`None`: list them).
    Resume(Option<String>),
    /// Open a file at a line in `$EDITOR` (a citation such as `docs/a.md:12`).
    Open(String, usize),
}

/// Where the chat view is scrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scroll {
    /// Follow the newest output.
    Follow,
    /// The top row shows line `line` of entry `entry`; new output does not move it.
    At { entry: usize, line: usize },
}

/// Which full-screen view is shown.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    Chat,
    Trace(TraceView),
}

/// The trace explorer's state.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceView {
    pub turn: usize,
    /// The version shown; `None`: the active one (follows a new branch).
    pub version: Option<usize>,
    /// The selected step; `None`: the last one (follows generation).
    pub step: Option<usize>,
    pub entropy: bool,
    pub compare: bool,
    /// Text to insert when branching, while it is being typed.
    pub branch_input: Option<Composer>,
    /// The token cursor (an index into the reply's reasoning tokens): ←/→ move it, Tab jumps
    /// to the next fork, and the alternatives the model weighed there are shown. `None`: no
    /// cursor (the step list leads).
    pub cursor: Option<usize>,
}

/// A tool call waiting for a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: String,
    pub name: String,
    pub summary: String,
}

/// What the status bar calls the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Thinking,
    Answering,
    Paused,
    Approval,
    Tool,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Thinking => "thinking",
            Phase::Answering => "answering",
            Phase::Paused => "paused",
            Phase::Approval => "waiting for approval",
            Phase::Tool => "running a tool",
        }
    }
}

/// How long two Ctrl-C presses may be apart to quit.
pub const DOUBLE_CTRL_C_MS: u64 = 2000;

/// The workbench state.
pub struct App {
    pub info: EngineInfo,
    pub t: Transcript,
    pub view: View,
    pub help: Option<u16>,
    pub composer: Composer,
    pub popup: usize,
    pub popup_closed: bool,
    pub history: Vec<String>,
    hist_pos: Option<usize>,
    hist_draft: String,
    pub scroll: Scroll,
    pub size: (u16, u16),
    /// Milliseconds on the session clock (set by the shell before each update).
    pub now: u64,
    pub approvals: VecDeque<Approval>,
    pub outbox: Vec<Op>,
    pub effects: Vec<Effect>,
    ctrl_c_at: Option<u64>,
    pub flash: Option<(String, u64)>,
    pub think_mode: aha_protocol::ThinkMode,
    /// Research mode is on (`/research on`, or `research = true` in `[ui]`).
    pub research: bool,
    pub think_budget: Option<usize>,
    /// The microscope's settings: budget forcing's minimum (`think_min`), what loops do, and
    /// how forks and confidence are read (the config's `[trace]`).
    pub trace: aha_protocol::TraceOptions,
    /// The focused assistant turn (`None`: the newest).
    pub focus: Option<usize>,
    pub theme: Theme,
    pub keys: Keymap,
    /// The models on disk, as the caller found them at start-up (`/model` lists them).
    pub downloaded: Vec<String>,
    pub last_stats: Option<TurnStats>,
    /// Ops sent that start a turn the agent has not acknowledged yet.
    pub awaiting: bool,
    /// The id of the last turn asked for (user message or branch); a stop names it, so a stop
    /// pressed before the agent has started that turn still stops it.
    last_turn: u64,
    pub quit: bool,
    /// Wrapped lines per transcript entry, keyed by width and revision.
    pub layout: RefCell<view::chat::LayoutCache>,
}

impl App {
    pub fn new(info: EngineInfo) -> Self {
        Self {
            info,
            t: Transcript::default(),
            view: View::Chat,
            help: None,
            composer: Composer::default(),
            popup: 0,
            popup_closed: false,
            history: Vec::new(),
            hist_pos: None,
            hist_draft: String::new(),
            scroll: Scroll::Follow,
            size: (80, 24),
            now: 0,
            approvals: VecDeque::new(),
            outbox: Vec::new(),
            effects: Vec::new(),
            ctrl_c_at: None,
            flash: None,
            think_mode: aha_protocol::ThinkMode::Auto,
            research: false,
            think_budget: None,
            trace: aha_protocol::TraceOptions::default(),
            focus: None,
            theme: Theme::default(),
            keys: Keymap::default(),
            downloaded: Vec::new(),
            last_stats: None,
            awaiting: false,
            last_turn: 0,
            quit: false,
            layout: RefCell::new(Default::default()),
        }
    }

    /// Sends an op: the transcript records it and the shell passes it on.
    pub fn send(&mut self, mut op: Op) {
        match &mut op {
            Op::UserMessage { turn_id, .. } | Op::Branch { turn_id, .. } => {
                self.last_turn += 1;
                *turn_id = Some(TurnId(self.last_turn));
            }
            Op::Cancel { turn_id } if self.last_turn > 0 => *turn_id = Some(TurnId(self.last_turn)),
            _ => {}
        }
        self.t.apply_op(&op, self.now);
        if matches!(op, Op::UserMessage { .. } | Op::Branch { .. }) {
            self.awaiting = true;
        }
        if matches!(op, Op::Clear) {
            self.scroll = Scroll::Follow;
            self.focus = None;
            self.view = View::Chat;
            self.layout.borrow_mut().clear();
        }
        self.outbox.push(op);
    }

    /// Shows a short message in the status bar for a few seconds.
    pub fn flash(&mut self, msg: impl Into<String>) {
        self.flash = Some((msg.into(), self.now + 4000));
    }

    /// Whether a reply is being generated (or about to be).
    pub fn generating(&self) -> bool {
        self.t.live.is_some() || self.awaiting
    }

    /// The state the status bar shows.
    pub fn phase(&self) -> Phase {
        if !self.approvals.is_empty() {
            return Phase::Approval;
        }
        match self.t.live_reply() {
            Some(r) if r.paused => Phase::Paused,
            Some(r) if r.thinking() => Phase::Thinking,
            Some(r) if matches!(r.parts.last(), Some(Part::Tool(c)) if c.state == ToolState::Running) => {
                Phase::Tool
            }
            Some(_) => Phase::Answering,
            None if self.awaiting => Phase::Thinking,
            None => Phase::Idle,
        }
    }

    /// The assistant turn that keys act on: the focused one, else the newest.
    pub fn focused_turn(&self) -> Option<usize> {
        match self.focus {
            Some(f) if f < self.t.turns.len() => Some(f),
            _ => self.t.turns.len().checked_sub(1),
        }
    }

    /// Tokens in the context now: the last turn's prompt and output, plus what is streaming.
    pub fn context_used(&self) -> usize {
        let base = self
            .last_stats
            .as_ref()
            .map_or(0, |s| s.prompt_tokens + s.thinking_tokens + s.answer_tokens);
        base + self.t.live_reply().map_or(0, |r| r.generated())
    }

    /// Applies an agent event.
    pub fn on_event(&mut self, e: &Event) {
        self.t.apply_event(e, self.now);
        match e {
            Event::TurnStarted { .. } => self.awaiting = false,
            Event::ApprovalRequest { id, name, summary } => self.approvals.push_back(Approval {
                id: id.clone(),
                name: name.clone(),
                summary: summary.clone(),
            }),
            Event::ToolResult { id, .. } => self.approvals.retain(|a| &a.id != id),
            Event::TurnFinished { stats, .. } => {
                self.awaiting = false;
                self.last_stats = Some(stats.clone());
                self.approvals.clear();
            }
            Event::Error { .. } => {
                self.awaiting = false;
                self.approvals.clear();
            }
            _ => {}
        }
    }

    fn chat_height(&self) -> usize {
        let a = view::areas(
            self,
            ratatui::layout::Rect::new(0, 0, self.size.0, self.size.1),
        );
        a.chat.height as usize
    }

    fn scroll_by(&mut self, delta: i64) {
        let w = self.size.0;
        let h = self.chat_height();
        self.scroll = if delta < 0 {
            view::chat::scroll_up(self, w, h, delta.unsigned_abs() as usize)
        } else {
            view::chat::scroll_down(self, w, h, delta as usize)
        };
    }

    fn popup_items(&self) -> Vec<&'static commands::CommandInfo> {
        let text = self.composer.text();
        if self.popup_closed || !text.starts_with('/') || text.contains(char::is_whitespace) {
            return Vec::new();
        }
        commands::completions(text)
    }

    /// Whether the slash-command popup is open.
    pub fn popup_open(&self) -> bool {
        !self.popup_items().is_empty()
    }

    /// The popup's entries and the selected one.
    pub fn popup_view(&self) -> (Vec<&'static commands::CommandInfo>, usize) {
        let items = self.popup_items();
        let sel = self.popup.min(items.len().saturating_sub(1));
        (items, sel)
    }
}

/// Applies one event to the state.
pub fn update(app: &mut App, ev: AppEvent) {
    if let Some((_, until)) = &app.flash {
        if app.now > *until {
            app.flash = None;
        }
    }
    match ev {
        AppEvent::Agent(e) => app.on_event(&e),
        AppEvent::Resize(w, h) => app.size = (w, h),
        AppEvent::Paste(s) => paste(app, &s),
        AppEvent::Mouse(m) => mouse(app, m),
        AppEvent::Key(k) => {
            if k.kind == KeyEventKind::Release {
                return;
            }
            key(app, k);
        }
    }
}

fn paste(app: &mut App, s: &str) {
    match &mut app.view {
        View::Trace(TraceView {
            branch_input: Some(c),
            ..
        }) => c.insert_str(s),
        _ => {
            app.composer.insert_str(s);
            app.hist_pos = None;
        }
    }
}

fn mouse(app: &mut App, m: MouseEvent) {
    let d = match m.kind {
        MouseEventKind::ScrollUp => -3,
        MouseEventKind::ScrollDown => 3,
        _ => return,
    };
    match &mut app.view {
        View::Chat => app.scroll_by(d),
        View::Trace(_) => move_step(app, d.signum()),
    }
}

fn is_ctrl(k: &KeyEvent, c: char) -> bool {
    k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char(c)
}

fn key(app: &mut App, k: KeyEvent) {
    // Ctrl-C: once stops generation (or clears the composer); twice quits.
    if is_ctrl(&k, 'c') {
        if app
            .ctrl_c_at
            .is_some_and(|t| app.now.saturating_sub(t) <= DOUBLE_CTRL_C_MS)
        {
            app.quit = true;
            return;
        }
        app.ctrl_c_at = Some(app.now);
        if app.generating() {
            app.send(Op::Cancel { turn_id: None });
            app.flash("stopped — Ctrl-C again to quit");
        } else if !app.composer.is_empty() {
            app.composer.take();
            app.flash("cleared — Ctrl-C again to quit");
        } else {
            app.flash("Ctrl-C again to quit");
        }
        return;
    }
    if let Some(a) = app.approvals.front().cloned() {
        approval_key(app, &a, k);
        return;
    }
    if let Some(scroll) = app.help {
        match k.code {
            KeyCode::Up | KeyCode::Char('k') => app.help = Some(scroll.saturating_sub(1)),
            KeyCode::Down | KeyCode::Char('j') => app.help = Some(scroll.saturating_add(1)),
            KeyCode::PageUp => app.help = Some(scroll.saturating_sub(10)),
            KeyCode::PageDown => app.help = Some(scroll.saturating_add(10)),
            _ => app.help = None,
        }
        return;
    }
    if app.keys.help.matches(&k) {
        app.help = Some(0);
        return;
    }
    match app.view {
        View::Chat => chat_key(app, k),
        View::Trace(_) => trace_key(app, k),
    }
}

fn approval_key(app: &mut App, a: &Approval, k: KeyEvent) {
    let (approved, remember) = match k.code {
        KeyCode::Char('y') | KeyCode::Enter => (true, false),
        KeyCode::Char('a') => (true, true),
        KeyCode::Char('n') | KeyCode::Esc => (false, false),
        _ => return,
    };
    app.approvals.pop_front();
    if let Some(turn) = app.t.live_reply().map(|r| r.turn) {
        if let Some(r) = app.t.reply_mut(turn, None) {
            for p in r.parts.iter_mut() {
                if let Part::Tool(c) = p {
                    if c.id == a.id {
                        c.state = if approved {
                            ToolState::Running
                        } else {
                            ToolState::Done {
                                ok: false,
                                output: "denied".into(),
                                duration_ms: 0,
                            }
                        };
                    }
                }
            }
        }
    }
    app.send(Op::Approve {
        id: a.id.clone(),
        approved,
        remember,
    });
    app.flash(match (approved, remember) {
        (true, true) => format!("{} approved for this session", a.name),
        (true, false) => format!("{} approved once", a.name),
        _ => format!("{} denied", a.name),
    });
}

fn chat_key(app: &mut App, k: KeyEvent) {
    let keys = app.keys.clone();
    let m = k.modifiers;
    if keys.fold.matches(&k) {
        if let Some(turn) = app.focused_turn() {
            if let Some(r) = app.t.reply_mut(turn, None) {
                r.expanded = Some(r.folded());
            }
        }
        return;
    }
    if keys.trace.matches(&k) {
        match app.focused_turn() {
            Some(turn) => {
                app.view = View::Trace(TraceView {
                    turn,
                    version: None,
                    step: None,
                    entropy: false,
                    compare: false,
                    branch_input: None,
                    cursor: None,
                })
            }
            None => app.flash("no reply yet to explore"),
        }
        return;
    }
    if keys.pause.matches(&k) {
        toggle_pause(app);
        return;
    }
    if keys.focus_prev.matches(&k) || keys.focus_next.matches(&k) {
        let n = app.t.turns.len();
        if n == 0 {
            return;
        }
        let cur = app.focused_turn().unwrap_or(n - 1);
        let next = if keys.focus_prev.matches(&k) {
            cur.saturating_sub(1)
        } else {
            (cur + 1).min(n - 1)
        };
        app.focus = Some(next);
        // Bring the focused reply into view.
        if let Some(&entry) = app.t.turns.get(next) {
            let h = app.chat_height();
            app.scroll = Scroll::At { entry, line: 0 };
            if view::chat::fits_below(app, app.size.0, entry, 0, h) {
                app.scroll = Scroll::Follow;
            }
        }
        return;
    }
    let popup = app.popup_open();
    match k.code {
        KeyCode::Char('?') if app.composer.is_empty() => app.help = Some(0),
        KeyCode::Esc => {
            if app.generating() {
                app.send(Op::Cancel { turn_id: None });
                app.flash("stopped");
            } else if popup {
                app.popup_closed = true;
            } else if app.focus.is_some() {
                app.focus = None;
            } else {
                app.scroll = Scroll::Follow;
            }
        }
        KeyCode::Enter
            if m.intersects(KeyModifiers::SHIFT | KeyModifiers::ALT | KeyModifiers::CONTROL) =>
        {
            app.composer.insert('\n')
        }
        KeyCode::Char('j') if m.contains(KeyModifiers::CONTROL) => app.composer.insert('\n'),
        KeyCode::Enter => {
            if popup && complete(app) {
                return;
            }
            submit(app);
        }
        KeyCode::Tab if popup => {
            complete(app);
        }
        KeyCode::Up if popup => app.popup = app.popup.saturating_sub(1),
        KeyCode::Down if popup => app.popup += 1,
        KeyCode::Up => {
            if app.composer.on_first_line() {
                history(app, -1);
            } else {
                app.composer.vertical(-1);
            }
        }
        KeyCode::Down => {
            if app.composer.on_last_line() {
                history(app, 1);
            } else {
                app.composer.vertical(1);
            }
        }
        KeyCode::PageUp => {
            let h = app.chat_height() as i64;
            app.scroll_by(-(h - 2).max(1));
        }
        KeyCode::PageDown => {
            let h = app.chat_height() as i64;
            app.scroll_by((h - 2).max(1));
        }
        KeyCode::Home if m.contains(KeyModifiers::CONTROL) && !app.t.entries.is_empty() => {
            app.scroll = Scroll::At { entry: 0, line: 0 };
        }
        KeyCode::End if m.contains(KeyModifiers::CONTROL) => app.scroll = Scroll::Follow,
        KeyCode::Left => app.composer.left(),
        KeyCode::Right => app.composer.right(),
        KeyCode::Home => app.composer.home(),
        KeyCode::End => app.composer.end(),
        KeyCode::Backspace => {
            app.composer.backspace();
            app.popup_closed = false;
        }
        KeyCode::Delete => app.composer.delete(),
        KeyCode::Char('a') if m.contains(KeyModifiers::CONTROL) => app.composer.home(),
        KeyCode::Char('e') if m.contains(KeyModifiers::CONTROL) => app.composer.end(),
        KeyCode::Char('u') if m.contains(KeyModifiers::CONTROL) => {
            app.composer.take();
        }
        KeyCode::Char('w') if m.contains(KeyModifiers::CONTROL) => app.composer.delete_word(),
        KeyCode::Char(c) if !m.intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) => {
            app.composer.insert(c);
            app.hist_pos = None;
            if c == '/' && app.composer.text() == "/" {
                app.popup = 0;
                app.popup_closed = false;
            }
        }
        _ => {}
    }
}

/// Completes the selected command in the popup; true when the text changed.
fn complete(app: &mut App) -> bool {
    let (items, sel) = app.popup_view();
    let Some(c) = items.get(sel) else {
        return false;
    };
    let typed = app.composer.text().to_string();
    if typed == c.name {
        return false;
    }
    let text = if c.args.is_empty() {
        c.name.to_string()
    } else {
        format!("{} ", c.name)
    };
    app.composer.set(&text);
    true
}

fn history(app: &mut App, dir: i32) {
    if app.history.is_empty() {
        return;
    }
    let n = app.history.len();
    let next = match (app.hist_pos, dir) {
        (None, d) if d < 0 => {
            app.hist_draft = app.composer.text().to_string();
            Some(n - 1)
        }
        (None, _) => return,
        (Some(p), d) if d < 0 => Some(p.saturating_sub(1)),
        (Some(p), _) if p + 1 < n => Some(p + 1),
        (Some(_), _) => None,
    };
    app.hist_pos = next;
    match next {
        Some(p) => {
            let t = app.history[p].clone();
            app.composer.set(&t);
        }
        None => {
            let d = std::mem::take(&mut app.hist_draft);
            app.composer.set(&d);
        }
    }
}

fn submit(app: &mut App) {
    let text = app.composer.text().to_string();
    if text.trim().is_empty() {
        return;
    }
    if text.starts_with('/') {
        app.composer.take();
        push_history(app, &text);
        command(app, text.trim());
        return;
    }
    if app.generating() {
        app.flash("a reply is still coming — Esc stops it");
        return;
    }
    app.composer.take();
    push_history(app, &text);
    app.scroll = Scroll::Follow;
    app.focus = None;
    app.send(Op::UserMessage {
        text,
        turn_id: None,
    });
}

fn push_history(app: &mut App, text: &str) {
    app.hist_pos = None;
    if app.history.last().map(String::as_str) != Some(text) {
        app.history.push(text.to_string());
    }
}

fn command(app: &mut App, line: &str) {
    let c = match commands::parse(line) {
        Ok(c) => c,
        Err(e) => {
            app.flash(e);
            return;
        }
    };
    match c {
        Command::Help => app.help = Some(0),
        Command::Quit => app.quit = true,
        Command::Think { mode, budget } => {
            if let Some(m) = mode {
                app.think_mode = m;
            }
            if let Some(b) = budget {
                app.think_budget = b;
            }
            let op = Op::SetThinking {
                mode: app.think_mode,
                budget: app.think_budget,
            };
            app.send(op);
        }
        Command::ThinkMin(min) => {
            app.trace.think_min = min;
            app.send(Op::SetThinkMin { min });
        }
        Command::Loops(action) => {
            app.trace.loops = action;
            app.send(Op::SetLoops { action });
        }
        Command::Model => {
            let i = &app.info;
            let on_disk = &app.downloaded;
            let msg = format!(
                "model {} on {} · context {} tokens · {} · downloaded: {} (start `aha --model NAME` to use another)",
                i.model,
                i.device,
                i.context_length,
                if i.reasoning { "reasons before answering" } else { "answers directly (/think on makes it reason)" },
                if on_disk.is_empty() { "none".to_string() } else { on_disk.join(", ") }
            );
            app.t.notice(msg);
        }
        Command::Clear => {
            if app.generating() {
                app.send(Op::Cancel { turn_id: None });
            }
            app.send(Op::Clear);
            app.flash("conversation cleared");
        }
        Command::Compact => {
            if app.generating() {
                app.flash(
                    "a reply is still coming — the context is compacted by itself when it fills",
                );
            } else {
                app.send(Op::Compact);
            }
        }
        Command::Save => app.effects.push(Effect::Save),
        Command::Export(p) => app.effects.push(Effect::Export(p)),
        Command::ExportHtml(p) => app.effects.push(Effect::ExportHtml(p)),
        Command::Resume(id) => {
            if app.generating() {
                app.flash("a reply is still coming — Esc stops it first");
            } else {
                app.effects.push(Effect::Resume(id));
            }
        }
        Command::Approve(p) => app.send(Op::SetPolicy { policy: p }),
        Command::Undo => app.send(Op::Undo),
        Command::Diff => app.send(Op::Diff),
        Command::Tools => app.send(Op::Tools),
        Command::Mcp => app.send(Op::Mcp),
        Command::Index(paths) => {
            app.t
                .notice("indexing… (the summary follows when it is done)".to_string());
            app.send(Op::Index { paths })
        }
        Command::Search(query) => app.send(Op::Search { query }),
        Command::Open(path, line) => app.effects.push(Effect::Open(path, line)),
        Command::Research(on) => {
            app.research = on;
            app.send(Op::SetResearch { on });
        }
    }
}

fn toggle_pause(app: &mut App) {
    match app.t.live_reply() {
        Some(r) if r.paused => app.send(Op::Resume),
        Some(_) => app.send(Op::Pause),
        None => app.flash("nothing is generating"),
    }
}

/// The reply the trace explorer shows: (turn, version).
pub fn trace_target(app: &App) -> Option<(usize, usize)> {
    let View::Trace(tv) = &app.view else {
        return None;
    };
    let (versions, active) = app.t.versions(tv.turn)?;
    let v = tv
        .version
        .unwrap_or(active)
        .min(versions.len().saturating_sub(1));
    Some((tv.turn, v))
}

fn move_step(app: &mut App, d: i64) {
    let Some((turn, v)) = trace_target(app) else {
        return;
    };
    let n = app
        .t
        .versions(turn)
        .and_then(|(vs, _)| vs.get(v))
        .map_or(0, |r| steps::steps(&r.tokens).len());
    let View::Trace(tv) = &mut app.view else {
        return;
    };
    if n == 0 {
        return;
    }
    let cur = tv.step.unwrap_or(n - 1).min(n - 1) as i64;
    let next = (cur + d).clamp(0, n as i64 - 1) as usize;
    tv.step = Some(next);
    tv.cursor = None;
}

fn trace_key(app: &mut App, k: KeyEvent) {
    let keys = app.keys.clone();
    let Some((turn, v)) = trace_target(app) else {
        app.view = View::Chat;
        return;
    };
    // Typing the text to insert at a branch.
    if let View::Trace(TraceView {
        branch_input: Some(c),
        ..
    }) = &mut app.view
    {
        match k.code {
            KeyCode::Esc => {
                if let View::Trace(tv) = &mut app.view {
                    tv.branch_input = None;
                }
            }
            KeyCode::Enter => branch(app, turn, v),
            KeyCode::Backspace => c.backspace(),
            KeyCode::Left => c.left(),
            KeyCode::Right => c.right(),
            KeyCode::Char(ch)
                if !k
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                c.insert(ch)
            }
            _ => {}
        }
        return;
    }
    let live = app.t.live_reply().is_some_and(|r| r.turn == turn);
    let reply = app.t.versions(turn).and_then(|(vs, _)| vs.get(v)).cloned();
    let nversions = app.t.versions(turn).map_or(0, |(vs, _)| vs.len());
    let View::Trace(tv) = &mut app.view else {
        return;
    };
    if k.code == KeyCode::Esc || k.code == KeyCode::Char('q') {
        if tv.compare {
            tv.compare = false;
        } else {
            app.view = View::Chat;
        }
        return;
    }
    if keys.trace_pause.matches(&k) {
        if live {
            toggle_pause(app);
        } else {
            app.flash("this turn is not generating");
        }
        return;
    }
    if keys.step.matches(&k) {
        if live {
            app.send(Op::Step);
            if let View::Trace(tv) = &mut app.view {
                tv.step = None;
            }
        } else {
            app.flash("this turn is not generating");
        }
        return;
    }
    if keys.stop.matches(&k) {
        if live {
            app.send(Op::Cancel { turn_id: None });
            app.flash("stopped");
        }
        return;
    }
    if keys.entropy.matches(&k) {
        tv.entropy = !tv.entropy;
        return;
    }
    if keys.compare.matches(&k) {
        if nversions < 2 {
            app.flash("no branches of this turn yet — b branches at the selected step");
        } else {
            tv.compare = !tv.compare;
        }
        return;
    }
    if keys.branch.matches(&k) {
        if reply.as_ref().is_none_or(|r| r.tokens.is_empty()) {
            app.flash("no reasoning to branch from");
        } else {
            tv.branch_input = Some(Composer::default());
        }
        return;
    }
    if keys.think_min.matches(&k) {
        app.trace.think_min = match app.trace.think_min {
            None => Some(128),
            Some(b) if b < 128 => Some(128),
            Some(b) if b < 1024 => Some(b * 2),
            Some(_) => None,
        };
        let op = Op::SetThinkMin {
            min: app.trace.think_min,
        };
        app.send(op);
        return;
    }
    if let (KeyCode::Char(d @ '1'..='9'), Some(i), Some(r)) = (k.code, tv.cursor, &reply) {
        let n = d as usize - '0' as usize;
        match r
            .tokens
            .get(i)
            .map(alternatives)
            .and_then(|a| a.get(n - 1).cloned())
        {
            Some(alt) => branch_at_token(app, turn, v, i, &alt.text),
            None => app.flash(format!("no alternative {n} at this token")),
        }
        return;
    }
    if keys.budget.matches(&k) {
        app.think_budget = match app.think_budget {
            None => Some(256),
            Some(b) if b < 256 => Some(256),
            Some(b) if b < 2048 => Some(b * 2),
            Some(_) => None,
        };
        let op = Op::SetThinking {
            mode: app.think_mode,
            budget: app.think_budget,
        };
        app.send(op);
        return;
    }
    match k.code {
        KeyCode::Up | KeyCode::Char('k') => move_step(app, -1),
        KeyCode::Down | KeyCode::Char('j') => move_step(app, 1),
        KeyCode::PageUp => move_step(app, -10),
        KeyCode::PageDown => move_step(app, 10),
        KeyCode::Home | KeyCode::Char('g') => {
            tv.step = Some(0);
            tv.cursor = None;
        }
        KeyCode::End | KeyCode::Char('G') => {
            tv.step = None;
            tv.cursor = None;
        }
        KeyCode::Left | KeyCode::Char('h') => move_cursor(app, -1),
        KeyCode::Right | KeyCode::Char('l') => move_cursor(app, 1),
        KeyCode::Tab => next_fork(app, true),
        KeyCode::BackTab => next_fork(app, false),
        KeyCode::Char('[') => {
            tv.version = Some(v.saturating_sub(1));
            tv.cursor = None;
        }
        KeyCode::Char(']') => {
            tv.version = Some((v + 1).min(nversions.saturating_sub(1)));
            tv.cursor = None;
        }
        KeyCode::Char('?') => app.help = Some(0),
        _ => {}
    }
}

/// The alternatives the model weighed at a token, best first, without the token it chose.
pub fn alternatives(t: &Tok) -> Vec<aha_protocol::TopToken> {
    let mut out = t.top.clone();
    if let Some(i) = out.iter().position(|a| a.text == t.text) {
        out.remove(i);
    }
    out
}

/// The fork threshold of a reply under the app's settings (see `aha_protocol::trace`).
pub fn fork_threshold(app: &App, r: &Reply) -> Option<f32> {
    let e: Vec<f32> = r.tokens.iter().filter_map(|t| t.entropy).collect();
    aha_protocol::trace::fork_threshold(&e, app.trace.fork_share, app.trace.fork_min_nats)
}

/// The step that holds token `i`.
fn step_of(st: &[steps::Step], i: usize) -> Option<usize> {
    st.iter()
        .position(|s| (s.tok_start..s.tok_end).contains(&i))
}

/// Moves the token cursor by `d` tokens; without a cursor it starts at the selected step's
/// first token (or the last token while following), and the step follows the cursor.
fn move_cursor(app: &mut App, d: i64) {
    let Some((turn, v)) = trace_target(app) else {
        return;
    };
    let Some(r) = app.t.versions(turn).and_then(|(vs, _)| vs.get(v)) else {
        return;
    };
    let n = r.tokens.len();
    let st = steps::steps(&r.tokens);
    let View::Trace(tv) = &mut app.view else {
        return;
    };
    if n == 0 {
        return;
    }
    let next = match tv.cursor {
        Some(c) => (c as i64 + d).clamp(0, n as i64 - 1) as usize,
        None => match tv.step.and_then(|k| st.get(k)) {
            Some(s) => s.tok_start.min(n - 1),
            None => n - 1,
        },
    };
    tv.cursor = Some(next);
    tv.step = step_of(&st, next).or(tv.step);
}

/// Moves the token cursor to the next (or previous) fork.
fn next_fork(app: &mut App, forward: bool) {
    let Some((turn, v)) = trace_target(app) else {
        return;
    };
    let Some(r) = app.t.versions(turn).and_then(|(vs, _)| vs.get(v)) else {
        return;
    };
    let thr = fork_threshold(app, r);
    let forks: Vec<usize> = (0..r.tokens.len())
        .filter(|&i| aha_protocol::trace::is_fork(r.tokens[i].entropy, thr))
        .collect();
    let st = steps::steps(&r.tokens);
    let View::Trace(tv) = &mut app.view else {
        return;
    };
    let at = tv.cursor;
    let found = if forward {
        forks.iter().copied().find(|&f| at.is_none_or(|c| f > c))
    } else {
        forks
            .iter()
            .rev()
            .copied()
            .find(|&f| at.is_none_or(|c| f < c))
    };
    match found {
        Some(f) => {
            tv.cursor = Some(f);
            tv.step = step_of(&st, f).or(tv.step);
        }
        None if forks.is_empty() => app.flash("no forks in this trace"),
        None => app.flash(if forward {
            "no fork after this one"
        } else {
            "no fork before this one"
        }),
    }
}

/// Branches turn `turn` of version `v` at token `i`, writing `text` in its place (one of the
/// alternatives the model weighed there): the engine keeps the shared prefix in its cache.
fn branch_at_token(app: &mut App, turn: usize, v: usize, i: usize, text: &str) {
    let Some(r) = app.t.versions(turn).and_then(|(vs, _)| vs.get(v)) else {
        return;
    };
    let prefix = format!("<think>\n{}{text}", &r.reasoning[..token_offset(r, i)]);
    let live = r.state == ReplyState::Streaming;
    send_branch(app, turn, prefix, live);
    app.flash(format!(
        "branching turn {} at token {} with “{}”",
        turn + 1,
        i + 1,
        text
    ));
}

/// Sends the branch of turn `turn` from `prefix` (stopping it first while it streams), and
/// makes the explorer follow the new version.
fn send_branch(app: &mut App, turn: usize, prefix: String, live: bool) {
    if let View::Trace(tv) = &mut app.view {
        tv.version = None;
        tv.step = None;
        tv.cursor = None;
        tv.compare = false;
    }
    if live {
        app.send(Op::Cancel { turn_id: None });
    }
    app.send(Op::Branch {
        turn,
        prefix,
        turn_id: None,
    });
}

/// Where token `i` starts in the reply's reasoning text (a char boundary).
pub fn token_offset(r: &Reply, i: usize) -> usize {
    let mut at: usize = r.tokens[..i.min(r.tokens.len())]
        .iter()
        .map(|t| t.text.len())
        .sum();
    at = at.min(r.reasoning.len());
    while !r.reasoning.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Branches turn `turn` at the selected step of version `v`, with the typed text inserted.
fn branch(app: &mut App, turn: usize, v: usize) {
    let Some(r) = app.t.versions(turn).and_then(|(vs, _)| vs.get(v)) else {
        return;
    };
    let st = steps::steps(&r.tokens);
    let View::Trace(tv) = &mut app.view else {
        return;
    };
    let sel = tv.step.unwrap_or(st.len().saturating_sub(1));
    let cut = match tv.cursor {
        Some(i) => token_offset(r, i),
        None => st.get(sel).map_or(r.reasoning.len(), |s| s.start),
    };
    let at = match tv.cursor {
        Some(i) => format!("token {}", i + 1),
        None => format!("step {}", sel + 1),
    };
    let inserted = tv
        .branch_input
        .take()
        .map(|mut c| c.take())
        .unwrap_or_default();
    let kept = r.reasoning.get(..cut).unwrap_or(&r.reasoning);
    let prefix = format!("<think>\n{kept}{inserted}");
    let live = r.state == ReplyState::Streaming;
    send_branch(app, turn, prefix, live);
    app.flash(format!("branching turn {} at {at}", turn + 1));
}
