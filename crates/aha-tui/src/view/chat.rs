//! The chat view: the transcript (user turns, replies with their reasoning folded or streaming,
//! Markdown answers, tool cards) above the composer. Each entry is wrapped once per width and
//! revision and cached; a frame lays out only the entries it shows, from the bottom up when
//! following new output, so drawing costs the same for 10 or 10,000 messages.

use super::Areas;
use crate::app::{App, Scroll};
use crate::markdown;
use crate::text::{str_width, truncate, wrap_text};
use aha_session::steps;
use aha_session::transcript::{Entry, EntryKind, Part, Reply, ReplyState, ToolCard, ToolState};
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;
use std::rc::Rc;

/// Wrapped lines of one entry.
#[derive(Debug, Clone)]
struct Cached {
    width: u16,
    key: u64,
    lines: Rc<Vec<Line<'static>>>,
}

/// Wrapped lines per transcript entry (index = entry index).
#[derive(Debug, Default)]
pub struct LayoutCache {
    entries: Vec<Option<Cached>>,
    /// Entries laid out (cache misses) since the counter was last read; for tests and benchmarks.
    pub misses: usize,
}

impl LayoutCache {
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// The wrapped lines of entry `i` at `width` (from the cache when nothing changed).
pub fn entry_lines(app: &App, i: usize, width: u16) -> Rc<Vec<Line<'static>>> {
    let Some(e) = app.t.entries.get(i) else {
        return Rc::new(Vec::new());
    };
    let focused = app.focus.is_some()
        && app
            .focused_turn()
            .and_then(|t| app.t.turns.get(t))
            .is_some_and(|&at| at == i);
    let key = e.rev.wrapping_mul(2) + u64::from(focused);
    {
        let c = app.layout.borrow();
        if let Some(Some(hit)) = c.entries.get(i) {
            if hit.width == width && hit.key == key {
                return hit.lines.clone();
            }
        }
    }
    let lines = Rc::new(render_entry(app, e, width as usize, focused));
    let mut c = app.layout.borrow_mut();
    c.misses += 1;
    if c.entries.len() <= i {
        c.entries.resize(i + 1, None);
    }
    c.entries[i] = Some(Cached {
        width,
        key,
        lines: lines.clone(),
    });
    lines
}

fn height(app: &App, i: usize, width: u16) -> usize {
    entry_lines(app, i, width).len()
}

fn render_entry(app: &App, e: &Entry, width: usize, focused: bool) -> Vec<Line<'static>> {
    let th = &app.theme;
    let mut out = Vec::new();
    match &e.kind {
        EntryKind::User(text) => {
            out.extend(wrap_text(
                text,
                th.user(),
                width,
                &[Span::styled("❯ ", th.user())],
                &[Span::raw("  ")],
            ));
        }
        EntryKind::Reply { versions, active } => {
            if let Some(r) = versions.get(*active) {
                reply_lines(app, r, *active, versions.len(), width, focused, &mut out);
            }
        }
        EntryKind::Notice(n) => {
            out.extend(wrap_text(
                n,
                th.dim(),
                width,
                &[Span::styled("· ", th.dim())],
                &[Span::raw("  ")],
            ));
        }
        EntryKind::Compacted { line, summary } => {
            // A rule across the screen: above it, turns the model now sees only as the summary.
            let label = format!(" {line} ");
            let side =
                width.saturating_sub(unicode_width::UnicodeWidthStr::width(label.as_str())) / 2;
            out.push(Line::from(Span::styled(
                format!(
                    "{}{label}{}",
                    "─".repeat(side.max(2)),
                    "─".repeat(side.max(2))
                ),
                th.dim(),
            )));
            for l in summary.lines().filter(|l| !l.trim().is_empty()).take(12) {
                out.extend(wrap_text(
                    l.trim_end(),
                    th.dim(),
                    width,
                    &[Span::raw("  ")],
                    &[Span::raw("    ")],
                ));
            }
        }
        EntryKind::Error(n) => {
            out.extend(wrap_text(
                n,
                th.error(),
                width,
                &[Span::styled("✗ ", th.error())],
                &[Span::raw("  ")],
            ));
        }
    }
    out.push(Line::default());
    out
}

/// The one-line summary of a folded reasoning block.
pub fn fold_summary(r: &Reply, now: u64) -> String {
    let n = r.tokens.len();
    let c = steps::corrections(&r.tokens);
    let mut s = format!(
        "{} {:.1} s · {n} tokens",
        if r.thinking() { "thinking" } else { "thought" },
        r.thought_secs(now)
    );
    if c > 0 {
        s.push_str(&format!(
            " · {c} self-correction{}",
            if c == 1 { "" } else { "s" }
        ));
    }
    if !r.loops.is_empty() {
        let l = r.loops.len();
        s.push_str(&format!(" · ↻ {l} loop{}", if l == 1 { "" } else { "s" }));
    }
    s
}

fn reply_lines(
    app: &App,
    r: &Reply,
    active: usize,
    nversions: usize,
    width: usize,
    focused: bool,
    out: &mut Vec<Line<'static>>,
) {
    let th = &app.theme;
    if nversions > 1 {
        let mut s = format!("⑂ version {} of {}", active + 1, nversions);
        if let Some(b) = &r.branch {
            s.push_str(&format!(" · branch of version {}", b.parent + 1));
            if !b.inserted.trim().is_empty() {
                s.push_str(&format!(" · inserted “{}”", b.inserted.trim()));
            }
        }
        s.push_str(&format!(" · {} compares", app.keys.trace));
        out.push(Line::styled(truncate(&s, width), th.dim()));
    }
    if let Some((sources, tokens)) = &r.sources {
        sources_card(app, sources, *tokens, !r.folded(), width, out);
    }
    if !r.tokens.is_empty() {
        // Times are shown for finished reasoning only, so a cached layout never goes stale.
        // While it thinks, the time runs to its latest token (the layout is cached per
        // revision, and each token is one).
        let at = r
            .thought_ms
            .or(r.ended_ms)
            .unwrap_or_else(|| r.tokens.last().map_or(r.started_ms, |t| t.t_ms));
        let summary = fold_summary(r, at);
        let mark_style = if focused {
            th.accent().add_modifier(Modifier::REVERSED)
        } else {
            th.accent()
        };
        if r.folded() {
            out.push(Line::from(vec![
                Span::styled("▸ ", mark_style),
                Span::styled(truncate(&summary, width.saturating_sub(2)), th.dim()),
            ]));
        } else {
            out.push(Line::from(vec![
                Span::styled("▾ ", mark_style),
                Span::styled(truncate(&summary, width.saturating_sub(2)), th.dim()),
            ]));
            let rule = [Span::styled("│ ", th.rule())];
            let style = th.reasoning().add_modifier(Modifier::ITALIC);
            out.extend(wrap_text(
                r.reasoning.trim_start_matches('\n'),
                style,
                width,
                &rule,
                &rule,
            ));
            if !r.parts.is_empty() {
                out.push(Line::default());
            }
        }
    } else if focused {
        out.push(Line::styled("▸ (no reasoning)", th.dim()));
    }
    let streaming = r.state == ReplyState::Streaming;
    for p in &r.parts {
        match p {
            Part::Answer(a) => out.extend(markdown::render(a, width, th, streaming)),
            Part::Tool(c) => tool_card(app, c, width, out),
        }
    }
    citation_lines(app, r, width, out);
    if streaming && r.tokens.is_empty() && r.parts.is_empty() {
        out.push(Line::styled("…", th.dim()));
    }
    match r.state {
        ReplyState::Streaming if r.paused => out.push(Line::styled(
            format!(
                "⏸ paused — {} or the trace explorer ({}) resumes",
                app.keys.pause, app.keys.trace
            ),
            th.accent(),
        )),
        ReplyState::Cancelled => out.push(Line::styled("⏹ stopped", th.dim())),
        ReplyState::Interrupted => out.push(Line::styled(
            "⚠ interrupted: aha ended while this reply was being written",
            th.error(),
        )),
        ReplyState::Failed => {
            let msg = r.error.clone().unwrap_or_default();
            out.extend(wrap_text(
                &msg,
                th.error(),
                width,
                &[Span::styled("✗ ", th.error())],
                &[Span::raw("  ")],
            ));
        }
        _ => {}
    }
}

/// Research mode's passages: one line, folded with the reasoning; the fold key opens it to a
/// line per passage.
fn sources_card(
    app: &App,
    sources: &[aha_protocol::Source],
    tokens: usize,
    open: bool,
    width: usize,
    out: &mut Vec<Line<'static>>,
) {
    let th = &app.theme;
    if sources.is_empty() {
        out.push(Line::styled(
            truncate("▸ sources · no passage matched the question", width),
            th.dim(),
        ));
        return;
    }
    let n = sources.len();
    let head = format!(
        "sources · {n} passage{} · {tokens} tokens",
        if n == 1 { "" } else { "s" }
    );
    if !open {
        let cited: Vec<String> = sources.iter().map(|s| s.cite()).collect();
        out.push(Line::from(vec![
            Span::styled("▸ ", th.accent()),
            Span::styled(
                truncate(
                    &crate::text::clean(&format!("{head} · {}", cited.join(", "))),
                    width.saturating_sub(2),
                ),
                th.dim(),
            ),
        ]));
        return;
    }
    out.push(Line::from(vec![
        Span::styled("╭ ▾ ", th.dim()),
        Span::styled(head, th.dim()),
    ]));
    for s in sources {
        let mut t = if s.start_line == s.end_line {
            format!("{}:{}", s.path, s.start_line)
        } else {
            format!("{}:{}-{}", s.path, s.start_line, s.end_line)
        };
        if !s.heading.is_empty() {
            t.push_str(&format!(" · {}", s.heading));
        }
        out.push(Line::from(vec![
            Span::styled("│ ", th.dim()),
            Span::styled(
                truncate(&crate::text::clean(&t), width.saturating_sub(2)),
                Style::new(),
            ),
        ]));
    }
    out.push(Line::styled("╰", th.dim()));
}

/// Research mode's checks after an answer: each citation marked as checked or not, with why,
/// and a warning when no passage supports the answer.
fn citation_lines(app: &App, r: &Reply, width: usize, out: &mut Vec<Line<'static>>) {
    let th = &app.theme;
    for c in &r.citations {
        let (mark, style) = if c.ok {
            ("✓ ", th.ok())
        } else {
            ("✗ ", th.error())
        };
        let by = if c.attached { " · found by aha" } else { "" };
        out.extend(wrap_text(
            &crate::text::clean(&format!("[{}]{by} · {}", c.cite(), c.reason)),
            if c.ok { th.dim() } else { th.error() },
            width,
            &[Span::styled(mark, style)],
            &[Span::raw("  ")],
        ));
        if !c.quote.is_empty() {
            out.extend(wrap_text(
                &format!("“{}”", crate::text::clean(&c.quote)),
                th.reasoning(),
                width,
                &[Span::raw("  ")],
                &[Span::raw("  ")],
            ));
        }
    }
    if let Some(check) = &r.check {
        if !check.supported && !check.abstained {
            out.push(Line::styled(
                truncate(
                    "⚠ no passage the model read supports all of this answer",
                    width,
                ),
                th.error(),
            ));
        }
        if !check.unsupported_numbers.is_empty() {
            out.push(Line::styled(
                truncate(
                    &format!(
                        "⚠ numbers in no cited passage: {}",
                        check.unsupported_numbers.join(", ")
                    ),
                    width,
                ),
                th.error(),
            ));
        }
    }
    if r.citations.iter().any(|c| c.ok) && r.state != ReplyState::Streaming {
        out.push(Line::styled(
            truncate("/open PATH:LINE opens a source at its line", width),
            th.dim(),
        ));
    }
}

fn tool_card(app: &App, c: &ToolCard, width: usize, out: &mut Vec<Line<'static>>) {
    let th = &app.theme;
    let bar = [Span::styled("│ ", th.dim())];
    let mut head = vec![
        Span::styled("╭ ⚙ ", th.dim()),
        Span::styled(c.name.clone(), th.accent().add_modifier(Modifier::BOLD)),
    ];
    if !c.arguments.is_empty() && c.arguments != "null" {
        let room = width.saturating_sub(str_width(&c.name) + 5);
        head.push(Span::styled(
            format!(" {}", truncate(&c.arguments, room)),
            th.dim(),
        ));
    }
    out.push(Line::from(head));
    match &c.state {
        ToolState::Running => out.push(Line::from(vec![
            bar[0].clone(),
            Span::styled("⧗ running…", th.dim()),
        ])),
        ToolState::Approval(summary) => {
            out.extend(wrap_text(
                &format!("? waiting for approval: {summary}"),
                th.accent(),
                width,
                &bar,
                &bar,
            ));
        }
        ToolState::Done {
            ok,
            output,
            duration_ms,
        } => {
            let (mark, style) = if *ok {
                ("✓ ok", th.ok())
            } else {
                ("✗ failed", th.error())
            };
            out.push(Line::from(vec![
                bar[0].clone(),
                Span::styled(mark, style),
                Span::styled(format!(" · {duration_ms} ms"), th.dim()),
            ]));
            let lines: Vec<&str> = output.lines().collect();
            const SHOW: usize = 5;
            for l in lines.iter().take(SHOW) {
                out.push(Line::from(vec![
                    bar[0].clone(),
                    Span::styled(
                        truncate(&crate::text::clean(l), width.saturating_sub(2)),
                        Style::new(),
                    ),
                ]));
            }
            if lines.len() > SHOW {
                out.push(Line::from(vec![
                    bar[0].clone(),
                    Span::styled(format!("… {} more lines", lines.len() - SHOW), th.dim()),
                ]));
            }
        }
    }
    out.push(Line::styled("╰", th.dim()));
}

/// The first row shown when following the newest output: (entry, line).
fn follow_top(app: &App, width: u16, height: usize) -> (usize, usize) {
    let mut acc = 0usize;
    for i in (0..app.t.entries.len()).rev() {
        let h = height_of(app, i, width);
        acc += h;
        if acc >= height {
            return (i, acc - height);
        }
    }
    (0, 0)
}

fn height_of(app: &App, i: usize, width: u16) -> usize {
    height(app, i, width).max(1)
}

/// Whether everything from (entry, line) to the end fits in `height` rows.
pub fn fits_below(app: &App, width: u16, entry: usize, line: usize, height: usize) -> bool {
    let mut acc = 0usize;
    for i in entry..app.t.entries.len() {
        let h = height_of(app, i, width);
        acc += if i == entry {
            h.saturating_sub(line)
        } else {
            h
        };
        if acc > height {
            return false;
        }
    }
    true
}

/// The scroll position `n` rows further up.
pub fn scroll_up(app: &App, width: u16, height: usize, mut n: usize) -> Scroll {
    let (mut e, mut l) = match app.scroll {
        Scroll::Follow => {
            if fits_below(app, width, 0, 0, height) {
                return Scroll::Follow;
            }
            follow_top(app, width, height)
        }
        Scroll::At { entry, line } => (entry.min(app.t.entries.len().saturating_sub(1)), line),
    };
    while n > 0 {
        if l > 0 {
            let take = l.min(n);
            l -= take;
            n -= take;
        } else if e > 0 {
            e -= 1;
            l = height_of(app, e, width) - 1;
            n -= 1;
        } else {
            break;
        }
    }
    Scroll::At { entry: e, line: l }
}

/// The scroll position `n` rows further down (following again at the bottom).
pub fn scroll_down(app: &App, width: u16, height: usize, mut n: usize) -> Scroll {
    let Scroll::At { entry, line } = app.scroll else {
        return Scroll::Follow;
    };
    let (mut e, mut l) = (entry, line);
    while n > 0 && e < app.t.entries.len() {
        let h = height_of(app, e, width);
        if l + 1 < h {
            let take = (h - 1 - l).min(n);
            l += take;
            n -= take;
        } else {
            e += 1;
            l = 0;
            n -= 1;
        }
    }
    if e >= app.t.entries.len() || fits_below(app, width, e, l, height) {
        Scroll::Follow
    } else {
        Scroll::At { entry: e, line: l }
    }
}

/// The rows the transcript area shows, as (entry lines, first line) slices.
pub fn visible(app: &App, width: u16, height: usize) -> Vec<Line<'static>> {
    let mut out: Vec<Line<'static>> = Vec::with_capacity(height);
    let (start_e, start_l) = match app.scroll {
        Scroll::Follow => {
            if fits_below(app, width, 0, 0, height) {
                (0, 0)
            } else {
                follow_top(app, width, height)
            }
        }
        Scroll::At { entry, line } => (entry, line),
    };
    let mut e = start_e;
    let mut l = start_l;
    while out.len() < height && e < app.t.entries.len() {
        let lines = entry_lines(app, e, width);
        for line in lines.iter().skip(l) {
            if out.len() >= height {
                break;
            }
            out.push(line.clone());
        }
        e += 1;
        l = 0;
    }
    out
}

/// Draws the transcript, the composer and its rule.
pub fn draw(app: &App, f: &mut Frame, a: Areas) {
    let th = &app.theme;
    let buf = f.buffer_mut();
    if app.t.entries.is_empty() && a.chat.height > 2 {
        let lines = welcome(app, a.chat.width as usize);
        for (row, l) in lines.iter().enumerate().take(a.chat.height as usize) {
            buf.set_line(a.chat.x, a.chat.y + row as u16, l, a.chat.width);
        }
    } else {
        let rows = visible(app, a.chat.width, a.chat.height as usize);
        for (row, l) in rows.iter().enumerate() {
            buf.set_line(a.chat.x, a.chat.y + row as u16, l, a.chat.width);
        }
    }
    if matches!(app.scroll, Scroll::At { .. }) && a.chat.height > 0 {
        let hint = if app.generating() {
            " ↓ new output below · Ctrl-End follows "
        } else {
            " ↑ scrolled · Ctrl-End returns to the bottom "
        };
        let w = str_width(hint) as u16;
        if w < a.chat.width {
            buf.set_string(
                a.chat.right() - w,
                a.chat.bottom() - 1,
                hint,
                th.accent().add_modifier(Modifier::REVERSED),
            );
        }
    }
    // The rule above the composer, with hints.
    if a.rule.height > 0 {
        let hints = format!(
            " Enter send · Alt-Enter newline · / commands · {} fold · {} trace · ? help ",
            app.keys.fold, app.keys.trace
        );
        let w = a.rule.width as usize;
        let mut s = String::from("─");
        s.push_str(&truncate(&hints, w.saturating_sub(2)));
        let rest = w.saturating_sub(str_width(&s));
        s.push_str(&"─".repeat(rest));
        buf.set_string(a.rule.x, a.rule.y, s, th.dim());
    }
    draw_composer(app, f, a.composer);
}

fn welcome(app: &App, width: usize) -> Vec<Line<'static>> {
    let th = &app.theme;
    let i = &app.info;
    let mut out = vec![
        Line::from(vec![
            Span::styled("aha", th.accent().add_modifier(Modifier::BOLD)),
            Span::styled(" — a workbench for reasoning models", th.dim()),
        ]),
        Line::default(),
    ];
    let body = format!(
        "{} on {}. Type a message and press Enter. The reasoning streams above each answer and folds when the answer starts; {} opens the trace explorer, where you can pause, step and branch it. /help or ? lists everything.",
        i.model, i.device, app.keys.trace
    );
    out.extend(wrap_text(&body, Style::new(), width, &[], &[]));
    out
}

fn draw_composer(app: &App, f: &mut Frame, area: Rect) {
    if area.height == 0 {
        return;
    }
    let th = &app.theme;
    let inner_w = (area.width as usize).saturating_sub(2);
    let (rows, (cr, cc)) = app.composer.layout(inner_w);
    let h = area.height as usize;
    // Keep the cursor's row in view.
    let first = (cr + 1).saturating_sub(h);
    let buf = f.buffer_mut();
    if app.composer.is_empty() {
        buf.set_string(area.x, area.y, "› ", th.accent());
        let hint = if app.generating() {
            "Esc stops the reply"
        } else {
            "Ask something…"
        };
        buf.set_string(area.x + 2, area.y, truncate(hint, inner_w), th.dim());
    } else {
        for (k, row) in rows.iter().skip(first).take(h).enumerate() {
            let prompt = if first + k == 0 { "› " } else { "  " };
            buf.set_string(area.x, area.y + k as u16, prompt, th.accent());
            buf.set_string(area.x + 2, area.y + k as u16, row, Style::new());
        }
    }
    if app.help.is_none() && app.approvals.is_empty() {
        let x = area.x + 2 + cc.min(inner_w) as u16;
        let y = area.y + (cr - first) as u16;
        f.set_cursor_position((x.min(area.right().saturating_sub(1)), y));
    }
}
