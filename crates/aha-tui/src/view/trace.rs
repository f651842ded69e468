//! The trace explorer: one reply's reasoning split into steps (tokens, time, mean confidence,
//! self-corrections), its tokens coloured by the probability the model gave them (or by
//! entropy), live pause/step/stop, branching from a step, and two versions side by side.

use crate::app::{alternatives, fork_threshold, trace_target, App, View};
use crate::text::{pad, str_width, truncate, wrap, wrap_text};
use crate::theme::Theme;
use aha_protocol::trace;
use aha_session::steps::{self, Step};
use aha_session::transcript::{LoopMark, Reply, ReplyState, Tok};
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

/// Draws the explorer in `area`.
pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let View::Trace(tv) = &app.view else {
        return;
    };
    let Some((turn, v)) = trace_target(app) else {
        return;
    };
    let Some((versions, active)) = app.t.versions(turn) else {
        return;
    };
    let Some(r) = versions.get(v) else {
        return;
    };
    let th = &app.theme;
    let st = steps::steps(&r.tokens);
    let sel = tv
        .step
        .unwrap_or(st.len().saturating_sub(1))
        .min(st.len().saturating_sub(1));
    let buf = f.buffer_mut();
    // Header: what is shown and its state; then the legend.
    let state = if r.paused {
        "⏸ paused".to_string()
    } else {
        match r.state {
            ReplyState::Streaming if r.thinking() => "● thinking".into(),
            ReplyState::Streaming => "● answering".into(),
            ReplyState::Done => "done".into(),
            ReplyState::Cancelled => "stopped".into(),
            ReplyState::Failed => "failed".into(),
            ReplyState::Interrupted => "interrupted".into(),
        }
    };
    let mut head = format!(
        "Trace · turn {} · version {}/{}{}",
        turn + 1,
        v + 1,
        versions.len(),
        if v == active { "" } else { " (not active)" }
    );
    if let Some(b) = &r.branch {
        head.push_str(&format!(" · branch of v{}", b.parent + 1));
    }
    let budget = app
        .think_budget
        .map_or("off".to_string(), |b| format!("{b} tokens"));
    let thr = fork_threshold(app, r);
    let nforks = r
        .tokens
        .iter()
        .filter(|t| trace::is_fork(t.entropy, thr))
        .count();
    let min = app
        .trace
        .think_min
        .map_or(String::new(), |m| format!(" · min {m}"));
    let loops = if r.loops.is_empty() {
        String::new()
    } else {
        format!(" · {}", plural(r.loops.len(), "loop"))
    };
    head.push_str(&format!(
        " · {state} · {} tokens · {:.1} s · {} · {} · {}{loops} · next-turn budget {budget}{min}",
        r.tokens.len(),
        r.thought_secs(app.now),
        plural(st.len(), "step"),
        plural(
            st.iter().filter(|s| s.correction).count(),
            "self-correction"
        ),
        plural(nforks, "fork"),
    ));
    let w = area.width as usize;
    let mut y = area.y;
    for l in wrap_text(&head, th.accent().add_modifier(Modifier::BOLD), w, &[], &[])
        .iter()
        .take(2)
    {
        buf.set_line(area.x, y, l, area.width);
        y += 1;
    }
    let mut leg = legend(th, tv.entropy);
    if let Some((line, low)) = confidence_curve(r, app.trace.confidence_window, 24) {
        leg.spans
            .push(Span::styled("  group confidence ", th.dim()));
        leg.spans.push(Span::styled(line, th.accent()));
        leg.spans
            .push(Span::styled(format!(" min {low:.2}"), th.dim()));
    }
    buf.set_line(area.x, y, &leg, area.width);
    y += 1;
    let cursor = tv.cursor.filter(|c| *c < r.tokens.len());
    let footer_h = if tv.branch_input.is_some() {
        2
    } else if cursor.is_some() && !tv.compare {
        3
    } else {
        1
    };
    let body = Rect::new(
        area.x,
        y,
        area.width,
        area.bottom().saturating_sub(y).saturating_sub(footer_h),
    );
    if tv.compare && versions.len() > 1 {
        let other = r
            .branch
            .as_ref()
            .map_or(if v == 0 { 1 } else { v - 1 }, |b| b.parent);
        compare(
            app,
            f,
            body,
            &versions[other.min(versions.len() - 1)],
            other,
            r,
            v,
        );
    } else if body.height > 0 {
        let marks = Marks {
            sel,
            cursor,
            fork: thr,
            loops: &r.loops,
            entropy: tv.entropy,
        };
        if area.width >= 80 {
            let lw = (area.width * 2 / 5).clamp(30, 56);
            let left = Rect::new(body.x, body.y, lw, body.height);
            let right = Rect::new(body.x + lw + 1, body.y, body.width - lw - 1, body.height);
            step_list(app, f, left, r, &st, sel, thr);
            let buf = f.buffer_mut();
            for yy in body.y..body.bottom() {
                buf.set_string(body.x + lw, yy, "│", th.dim());
            }
            heat(app, f, right, r, &st, &marks);
        } else {
            let lh = (body.height / 3).max(2).min(body.height);
            step_list(
                app,
                f,
                Rect::new(body.x, body.y, body.width, lh),
                r,
                &st,
                sel,
                thr,
            );
            let hr = Rect::new(body.x, body.y + lh, body.width, body.height - lh);
            heat(app, f, hr, r, &st, &marks);
        }
    }
    let buf = f.buffer_mut();
    let fy = area.bottom().saturating_sub(footer_h);
    if let Some(c) = &tv.branch_input {
        let at = match cursor {
            Some(i) => format!("token {}", i + 1),
            None => format!("step {}", sel + 1),
        };
        let label = format!("Branch at {at} — text to insert (optional): ");
        buf.set_string(area.x, fy, truncate(&label, w), th.accent());
        let lx = (str_width(&label) as u16).min(area.width.saturating_sub(10));
        let room = (area.width - lx) as usize;
        let (rows, (_, cc)) = c.layout(room.max(2) * 4);
        let text = rows.join(" ");
        let shown = if str_width(&text) >= room {
            truncate(&text, room)
        } else {
            text
        };
        buf.set_string(area.x + lx, fy, &shown, Style::new());
        f.set_cursor_position((area.x + lx + (cc.min(room.saturating_sub(1))) as u16, fy));
        let buf = f.buffer_mut();
        buf.set_string(
            area.x,
            fy + 1,
            truncate("Enter branches from here (the engine keeps the shared prefix in its cache) · Esc cancels", w),
            th.dim(),
        );
    } else {
        let k = &app.keys;
        let mut y = fy;
        if let (Some(i), false) = (cursor, tv.compare) {
            for l in token_card(app, r, i, thr, w) {
                buf.set_line(area.x, y, &l, area.width);
                y += 1;
            }
        }
        let hints = format!(
            "{} pause/resume · {} step · {} stop · {} branch · ←→ token · Tab fork · 1-9 branch on an alternative · {} entropy · {} compare · {} budget · {} min · [ ] version · Esc back",
            k.trace_pause, k.step, k.stop, k.branch, k.entropy, k.compare, k.budget, k.think_min
        );
        buf.set_string(area.x, y, truncate(&hints, w), th.dim());
    }
}

/// The card under the trace for the token at the cursor: its text, probability, entropy and
/// whether it is a fork, then the alternatives the model weighed there, numbered for a branch.
fn token_card(app: &App, r: &Reply, i: usize, thr: Option<f32>, w: usize) -> Vec<Line<'static>> {
    let th = &app.theme;
    let t = &r.tokens[i];
    let mut head = vec![Span::styled(
        format!("token {}/{} ", i + 1, r.tokens.len()),
        th.dim(),
    )];
    head.push(Span::styled(
        format!("“{}”", shown(&t.text)),
        th.confidence(t.logprob.map(f32::exp))
            .add_modifier(Modifier::REVERSED),
    ));
    let mut facts = Vec::new();
    match t.logprob {
        Some(lp) => facts.push(format!("{:.0}%", lp.exp() * 100.0)),
        None if t.inherited => facts.push("inserted".to_string()),
        None => facts.push("not sampled".to_string()),
    }
    if let Some(e) = t.entropy {
        facts.push(format!("{e:.2} nats"));
    }
    if trace::is_fork(t.entropy, thr) {
        facts.push("⑂ fork".to_string());
    }
    head.push(Span::styled(format!(" {}", facts.join(" · ")), th.dim()));
    let alts = alternatives(t);
    let mut second = vec![Span::styled("alternatives ", th.dim())];
    if alts.is_empty() {
        second.push(Span::styled(
            if t.top.is_empty() {
                "none reported for this token"
            } else {
                "none: the model put all its weight here"
            },
            th.dim(),
        ));
    }
    for (k, a) in alts.iter().take(9).enumerate() {
        second.push(Span::styled(format!("{} ", k + 1), th.accent()));
        second.push(Span::styled(
            format!("“{}”", shown(&a.text)),
            th.confidence(Some(a.logprob.exp())),
        ));
        second.push(Span::styled(
            format!(" {:.0}%  ", a.logprob.exp() * 100.0),
            th.dim(),
        ));
    }
    let fit = |spans: Vec<Span<'static>>| {
        let text: String = spans.iter().map(|s| s.content.as_ref()).collect();
        if str_width(&text) <= w {
            Line::from(spans)
        } else {
            Line::styled(truncate(&text, w), th.dim())
        }
    };
    vec![fit(head), fit(second)]
}

/// A token's text on one line: newlines and tabs made visible.
fn shown(t: &str) -> String {
    t.replace('\n', "⏎").replace('\t', "⇥")
}

/// The group confidence across the trace as a sparkline of `width` cells (each cell the
/// lowest window of its stretch, so dips show), and the lowest value. `None` when no token
/// reported alternatives.
pub fn confidence_curve(r: &Reply, window: usize, width: usize) -> Option<(String, f32)> {
    let conf: Vec<Option<f32>> = r
        .tokens
        .iter()
        .map(|t| {
            let lps: Vec<f32> = t
                .top
                .iter()
                .take(trace::CONFIDENCE_K)
                .map(|a| a.logprob)
                .collect();
            trace::token_confidence(&lps)
        })
        .collect();
    if conf.iter().all(Option::is_none) {
        return None;
    }
    let g = trace::group_confidence(&conf, window);
    let low = trace::min_group_confidence(&conf, window)?;
    let cells = width.min(g.len()).max(1);
    let vals: Vec<f32> = (0..cells)
        .map(|c| {
            let a = c * g.len() / cells;
            let b = ((c + 1) * g.len() / cells).max(a + 1).min(g.len());
            g[a..b].iter().copied().fold(f32::INFINITY, f32::min)
        })
        .collect();
    let (lo, hi) = vals
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let line = vals
        .iter()
        .map(|v| {
            let f = if hi > lo { (v - lo) / (hi - lo) } else { 1.0 };
            BARS[((f * 7.0).round() as usize).min(7)]
        })
        .collect();
    Some((line, low))
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn legend(th: &Theme, entropy: bool) -> Line<'static> {
    let (title, labels) = if entropy {
        ("entropy", ["<0.5", "0.5–1.5", "1.5–3", ">3 nats"])
    } else {
        ("confidence", ["≥90%", "60–90%", "30–60%", "<30%"])
    };
    let mut spans = vec![Span::styled(format!("{title} "), th.dim())];
    for (i, l) in labels.iter().enumerate() {
        spans.push(Span::styled("■ ", Style::new().fg(th.heat[i])));
        spans.push(Span::styled(format!("{l}  "), th.dim()));
    }
    spans.push(Span::styled("■ ", th.dim()));
    spans.push(Span::styled("not sampled", th.dim()));
    Line::from(spans)
}

fn step_row(r: &Reply, s: &Step, k: usize, width: usize, thr: Option<f32>) -> String {
    let stats = steps::stats(&r.tokens, s, r.started_ms);
    let forks = r.tokens[s.tok_start.min(r.tokens.len())..s.tok_end.min(r.tokens.len())]
        .iter()
        .filter(|t| trace::is_fork(t.entropy, thr))
        .count();
    let forks = if forks > 0 {
        format!("⑂{forks:<2}")
    } else {
        "   ".to_string()
    };
    let conf = stats
        .confidence
        .map_or("  – ".to_string(), |c| format!("{:>3.0}%", c * 100.0));
    let mark = if s.correction { "✎" } else { " " };
    let inherited = r.tokens[s.tok_start.min(r.tokens.len())..s.tok_end.min(r.tokens.len())]
        .iter()
        .all(|t| t.inherited)
        && s.tokens() > 0;
    let text: String = r
        .reasoning
        .get(s.start..s.end)
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let head = format!(
        "{:>3} {mark}{} {:>4}t {:>5.1}s {conf} {forks}",
        k + 1,
        if inherited { "=" } else { " " },
        s.tokens(),
        stats.ms as f64 / 1000.0,
    );
    let room = width.saturating_sub(str_width(&head));
    format!("{head}{}", truncate(&text, room))
}

fn step_list(
    app: &App,
    f: &mut Frame,
    area: Rect,
    r: &Reply,
    st: &[Step],
    sel: usize,
    thr: Option<f32>,
) {
    let th = &app.theme;
    let h = area.height as usize;
    if h == 0 {
        return;
    }
    let first = if sel >= h { sel + 1 - h } else { 0 };
    let buf = f.buffer_mut();
    if st.is_empty() || r.tokens.is_empty() {
        buf.set_string(
            area.x,
            area.y,
            truncate("no reasoning yet", area.width as usize),
            th.dim(),
        );
        return;
    }
    for (row, k) in (first..st.len()).take(h).enumerate() {
        let s = &st[k];
        let text = pad(
            &step_row(r, s, k, area.width as usize, thr),
            area.width as usize,
        );
        let mut style = if s.correction {
            th.accent()
        } else {
            Style::new()
        };
        if k == sel {
            style = style.add_modifier(Modifier::REVERSED);
        }
        buf.set_string(area.x, area.y + row as u16, text, style);
    }
}

/// What the coloured trace marks besides the colours: the selected step (underlined), the
/// token cursor (reversed), the forks (bold) and the loops (a `↻3×` mark after the token where
/// each was flagged).
struct Marks<'a> {
    sel: usize,
    cursor: Option<usize>,
    fork: Option<f32>,
    loops: &'a [LoopMark],
    entropy: bool,
}

/// Lines of the coloured trace, and the row of the cursor (else where step `sel` starts).
fn heat_lines(
    th: &Theme,
    toks: &[Tok],
    st: &[Step],
    m: &Marks,
    width: usize,
) -> (Vec<Line<'static>>, usize) {
    let mut out: Vec<Line<'static>> = Vec::new();
    let mut cur: Vec<Span<'static>> = Vec::new();
    let sel_range = st.get(m.sel).map_or(0..0, |s| s.tok_start..s.tok_end);
    let mut sel_row = None;
    let mut cursor_row = None;
    for (i, t) in toks.iter().enumerate() {
        let mut style = if t.inherited && t.logprob.is_none() {
            th.user()
        } else if m.entropy {
            th.entropy(t.entropy)
        } else {
            th.confidence(t.logprob.map(f32::exp))
        };
        if sel_range.contains(&i) {
            style = style.add_modifier(Modifier::UNDERLINED);
            if sel_row.is_none() {
                sel_row = Some(out.len());
            }
        }
        if trace::is_fork(t.entropy, m.fork) {
            style = style.add_modifier(Modifier::BOLD);
        }
        if m.cursor == Some(i) {
            style = style.add_modifier(Modifier::REVERSED);
            cursor_row = Some(out.len());
            if t.text.trim().is_empty() {
                // A whitespace token still shows where the cursor is.
                cur.push(Span::styled("·", style));
            }
        }
        let mut parts = t.text.split('\n').peekable();
        while let Some(p) = parts.next() {
            if !p.is_empty() {
                cur.push(Span::styled(p.to_string(), style));
            }
            if parts.peek().is_some() {
                out.extend(wrap(&cur, width, &[], &[]));
                cur.clear();
            }
        }
        for l in m.loops.iter().filter(|l| l.at == i + 1) {
            cur.push(Span::styled(format!(" ↻{}× ", l.count), th.error()));
        }
    }
    if !cur.is_empty() {
        out.extend(wrap(&cur, width, &[], &[]));
    }
    (out, cursor_row.or(sel_row).unwrap_or(0))
}

fn heat(app: &App, f: &mut Frame, area: Rect, r: &Reply, st: &[Step], marks: &Marks) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let th = &app.theme;
    let (lines, sel_row) = heat_lines(th, &r.tokens, st, marks, area.width as usize);
    let h = area.height as usize;
    let following =
        matches!(&app.view, View::Trace(tv) if tv.step.is_none() && tv.cursor.is_none());
    let first = if following {
        lines.len().saturating_sub(h)
    } else {
        sel_row.saturating_sub(1).min(lines.len().saturating_sub(h))
    };
    let buf = f.buffer_mut();
    for (i, l) in lines.iter().skip(first).take(h).enumerate() {
        buf.set_line(area.x, area.y + i as u16, l, area.width);
    }
}

fn column(
    app: &App,
    r: &Reply,
    v: usize,
    label: &str,
    shared: usize,
    width: usize,
) -> Vec<Line<'static>> {
    let th = &app.theme;
    let mut out = vec![Line::styled(
        truncate(&format!("v{} · {label}", v + 1), width),
        th.accent().add_modifier(Modifier::BOLD),
    )];
    let st = steps::steps(&r.tokens);
    let thr = fork_threshold(app, r);
    for (k, s) in st.iter().enumerate() {
        let style = if s.tok_end <= shared {
            th.dim()
        } else if s.correction {
            th.accent()
        } else {
            Style::new()
        };
        out.push(Line::styled(
            truncate(&step_row(r, s, k, width, thr), width),
            style,
        ));
    }
    out.push(Line::styled(
        truncate(&format!("── answer {}", "─".repeat(width)), width),
        th.dim(),
    ));
    let ans = r.answer();
    out.extend(wrap_text(
        if ans.trim().is_empty() {
            "(no answer)"
        } else {
            ans.trim()
        },
        Style::new(),
        width,
        &[],
        &[],
    ));
    out
}

/// Where two versions of a reasoning part: the first token whose text differs, and what each
/// has there.
fn parting(a: &Reply, b: &Reply) -> String {
    let same = a
        .tokens
        .iter()
        .zip(&b.tokens)
        .take_while(|(x, y)| x.text == y.text)
        .count();
    let at = |r: &Reply| {
        r.tokens
            .get(same)
            .map_or("(end)".to_string(), |t| format!("“{}”", shown(&t.text)))
    };
    if same == a.tokens.len() && same == b.tokens.len() {
        return "the two reasonings are the same".to_string();
    }
    format!(
        "they part at token {}: {} → {} ({} shared tokens)",
        same + 1,
        at(a),
        at(b),
        same
    )
}

fn compare(app: &App, f: &mut Frame, area: Rect, a: &Reply, va: usize, b: &Reply, vb: usize) {
    let th = &app.theme;
    let half = area.width.saturating_sub(1) / 2;
    let shared = b.branch.as_ref().map_or(0, |x| x.kept);
    let la = if a.branch.is_none() {
        "original".to_string()
    } else {
        "branch".to_string()
    };
    let lb = match &b.branch {
        Some(x) if !x.inserted.trim().is_empty() => {
            format!("branch, inserted “{}”", x.inserted.trim())
        }
        Some(_) => "branch".to_string(),
        None => "original".to_string(),
    };
    let left = column(app, a, va, &la, shared, half as usize);
    let right = column(app, b, vb, &lb, shared, half as usize);
    let buf = f.buffer_mut();
    if area.height == 0 {
        return;
    }
    buf.set_string(
        area.x,
        area.y,
        truncate(&parting(a, b), area.width as usize),
        th.accent(),
    );
    let area = Rect::new(area.x, area.y + 1, area.width, area.height - 1);
    for i in 0..area.height as usize {
        let y = area.y + i as u16;
        if let Some(l) = left.get(i) {
            buf.set_line(area.x, y, l, half);
        }
        buf.set_string(area.x + half, y, "│", th.dim());
        if let Some(l) = right.get(i) {
            buf.set_line(area.x + half + 1, y, l, half);
        }
    }
}
