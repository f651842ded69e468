//! Things drawn over the views: the help overlay, the approval dialog, the slash-command popup,
//! and the notice shown instead of a layout when the terminal is too small.

use super::{Areas, MIN_H, MIN_W};
use crate::app::{App, Approval};
use crate::commands::COMMANDS;
use crate::text::{pad, wrap_text};
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear};
use ratatui::Frame;

/// Says the terminal is too small instead of drawing a broken layout.
pub fn too_small(f: &mut Frame, area: Rect) {
    let msg = format!(
        "terminal too small ({}×{}); aha needs {MIN_W}×{MIN_H}",
        area.width, area.height
    );
    let lines = wrap_text(&msg, Style::new(), area.width.max(1) as usize, &[], &[]);
    let buf = f.buffer_mut();
    for (i, l) in lines.iter().enumerate().take(area.height as usize) {
        buf.set_line(area.x, area.y + i as u16, l, area.width);
    }
}

/// The slash-command completion list, just above the composer.
pub fn popup(app: &App, f: &mut Frame, a: Areas) {
    let (items, sel) = app.popup_view();
    let n = items.len().min(8).min(a.chat.height as usize);
    if n == 0 {
        return;
    }
    let first = (sel + 1).saturating_sub(n);
    let w = (a.chat.width as usize).min(72);
    let area = Rect::new(
        a.chat.x,
        a.rule.y.saturating_sub(n as u16),
        w as u16,
        n as u16,
    );
    f.render_widget(Clear, area);
    let th = &app.theme;
    let buf = f.buffer_mut();
    for (row, (k, c)) in items.iter().enumerate().skip(first).take(n).enumerate() {
        let name = format!(" {} {}", c.name, c.args);
        let name = pad(&name, 24.min(w / 2));
        let text = format!("{name} {}", c.help);
        let style = if k == sel {
            th.accent().add_modifier(Modifier::REVERSED)
        } else {
            th.status()
        };
        buf.set_string(area.x, area.y + row as u16, pad(&text, w), style);
    }
}

/// Every key and command, grouped.
pub fn help_lines(app: &App) -> Vec<(String, String)> {
    let k = &app.keys;
    let mut v: Vec<(String, String)> = vec![
        ("Chat".into(), String::new()),
        (
            "Enter".into(),
            "send the message (or run the /command)".into(),
        ),
        (
            "Alt-Enter, Shift-Enter, Ctrl-J".into(),
            "new line in the message".into(),
        ),
        (
            "Up / Down".into(),
            "earlier messages (history); lines of a long message".into(),
        ),
        (
            "PgUp / PgDn, mouse wheel".into(),
            "scroll the conversation".into(),
        ),
        (
            "Ctrl-Home / Ctrl-End".into(),
            "top / back to the newest output".into(),
        ),
        (
            "Esc".into(),
            "stop the reply (keeps what was written)".into(),
        ),
        ("Ctrl-C".into(), "stop the reply; twice quits".into()),
        (k.fold.to_string(), "expand / collapse the reasoning".into()),
        (
            k.trace.to_string(),
            "trace explorer for the focused turn".into(),
        ),
        (k.pause.to_string(), "pause / resume generation".into()),
        (
            format!("{} / {}", k.focus_prev, k.focus_next),
            "focus an earlier / later turn".into(),
        ),
        (format!("? (empty message), {}", k.help), "this help".into()),
        ("Tab".into(), "complete a /command".into()),
        (
            "Ctrl-A / Ctrl-E, Ctrl-U, Ctrl-W".into(),
            "line start / end, clear, delete word".into(),
        ),
        (String::new(), String::new()),
        ("Trace explorer".into(), String::new()),
        ("Up / Down, j / k".into(), "select a step".into()),
        ("Home / End".into(), "first step / follow the newest".into()),
        (
            k.trace_pause.to_string(),
            "pause / resume generation".into(),
        ),
        (
            k.step.to_string(),
            "step: generate to the next step, then pause".into(),
        ),
        (k.stop.to_string(), "stop generation".into()),
        (
            "Left / Right, h / l".into(),
            "token cursor: a token's probability, entropy and alternatives".into(),
        ),
        (
            "Tab / Shift-Tab".into(),
            "next / previous fork (a high-entropy token)".into(),
        ),
        (
            "1 … 9".into(),
            "branch at the cursor with that alternative written instead".into(),
        ),
        (
            k.branch.to_string(),
            "branch: regenerate from the cursor or the selected step (type text to insert)".into(),
        ),
        (
            k.entropy.to_string(),
            "colour by entropy instead of confidence".into(),
        ),
        (
            k.compare.to_string(),
            "compare this turn's versions side by side".into(),
        ),
        (
            k.budget.to_string(),
            "thinking budget for the next turn: off, 256 … 2048".into(),
        ),
        (
            k.think_min.to_string(),
            "least thinking (budget forcing): off, 128 … 1024; an early close becomes “Wait”"
                .into(),
        ),
        ("[ / ]".into(), "previous / next version of the turn".into()),
        ("Esc, q".into(), "back to the chat".into()),
        (String::new(), String::new()),
        ("Approval dialog".into(), String::new()),
        (
            "y, Enter / a / n, Esc".into(),
            "approve once / for this session / deny".into(),
        ),
        (String::new(), String::new()),
        ("Commands".into(), String::new()),
    ];
    for c in COMMANDS {
        let name = if c.args.is_empty() {
            c.name.to_string()
        } else {
            format!("{} {}", c.name, c.args)
        };
        v.push((name, c.help.to_string()));
    }
    v
}

/// Clears a `w`×`h` box centred in `area`, draws its border and title; returns the inside.
fn centered_box(app: &App, f: &mut Frame, area: Rect, w: u16, h: u16, title: &str) -> Rect {
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.accent())
        .title(title.to_string());
    let inner = block.inner(r);
    f.render_widget(block, r);
    inner
}

/// The help overlay.
pub fn help(app: &App, f: &mut Frame, area: Rect) {
    let th = &app.theme;
    let w = area.width.saturating_sub(4).clamp(10, 90);
    let h = area.height.saturating_sub(2).max(3);
    let inner = centered_box(app, f, area, w, h, " Keys · any other key closes ");
    let iw = inner.width as usize;
    let kw = (iw / 2).min(32);
    let mut lines: Vec<Line<'static>> = Vec::new();
    for (k, d) in help_lines(app) {
        if d.is_empty() {
            lines.push(Line::styled(k, th.accent().add_modifier(Modifier::BOLD)));
            continue;
        }
        let first = [Span::styled(pad(&k, kw), th.user()), Span::raw(" ")];
        let rest = [Span::raw(" ".repeat(kw + 1))];
        lines.extend(wrap_text(&d, Style::new(), iw, &first, &rest));
    }
    let max_scroll = lines.len().saturating_sub(inner.height as usize);
    let scroll = (app.help.unwrap_or(0) as usize).min(max_scroll);
    let buf = f.buffer_mut();
    for (i, l) in lines
        .iter()
        .skip(scroll)
        .take(inner.height as usize)
        .enumerate()
    {
        buf.set_line(inner.x, inner.y + i as u16, l, inner.width);
    }
}

/// The approval dialog for a tool call.
pub fn approval(app: &App, a: &Approval, f: &mut Frame, area: Rect) {
    let th = &app.theme;
    let w = area.width.saturating_sub(4).clamp(10, 72);
    let iw = w.saturating_sub(2) as usize;
    let mut lines = wrap_text(
        &format!("The model wants to run {}:", a.name),
        Style::new().add_modifier(Modifier::BOLD),
        iw,
        &[],
        &[],
    );
    // The command or the diff: a diff's added and removed lines in their colours.
    let mut body = Vec::new();
    for l in a.summary.split('\n') {
        let style = if l.starts_with("+++") || l.starts_with("---") {
            th.dim()
        } else if l.starts_with('+') {
            th.ok()
        } else if l.starts_with('-') {
            th.error()
        } else if l.starts_with("@@") {
            th.dim()
        } else {
            th.accent()
        };
        body.extend(wrap_text(
            l,
            style,
            iw,
            &[Span::raw("  ")],
            &[Span::raw("  ")],
        ));
    }
    let mut tail = vec![Line::default()];
    let choices = "[y] approve once   [a] approve for this session   [n] deny";
    tail.extend(wrap_text(choices, th.user(), iw, &[], &[]));
    let more = app.approvals.len().saturating_sub(1);
    if more > 0 {
        tail.push(Line::styled(format!("({more} more waiting)"), th.dim()));
    }
    // A long diff is cut in the middle so the choices always show.
    let room = (area.height as usize)
        .saturating_sub(2 + lines.len() + tail.len())
        .max(1);
    if body.len() > room {
        let cut = body.len() - room + 1;
        let head = room / 2;
        let rest = body.split_off(head + cut);
        body.truncate(head);
        body.push(Line::styled(format!("  … {cut} more lines …"), th.dim()));
        body.extend(rest);
    }
    lines.extend(body);
    lines.extend(tail);
    let h = (lines.len() as u16 + 2).min(area.height);
    let inner = centered_box(app, f, area, w, h, " Approval needed ");
    let buf = f.buffer_mut();
    for (i, l) in lines.iter().take(inner.height as usize).enumerate() {
        buf.set_line(inner.x, inner.y + i as u16, l, inner.width);
    }
}
