//! The status bar: state, model and device, context used, live decode speed, the last turn's
//! prefill speed and time to first token, elapsed time, and short messages.

use crate::app::{App, Phase};
use crate::text::{str_width, truncate};
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::Frame;

fn human(n: usize) -> String {
    if n >= 10_000 {
        format!("{:.0}k", n as f64 / 1000.0)
    } else if n >= 1000 {
        format!("{:.1}k", n as f64 / 1000.0)
    } else {
        n.to_string()
    }
}

/// The status bar's text segments with their priority (0 = always shown; higher numbers are
/// dropped first when the bar is too narrow).
pub fn segments(app: &App) -> Vec<(String, u8)> {
    let i = &app.info;
    let mut segs = vec![(app.phase().label().to_string(), 0)];
    segs.push((i.model.clone(), 2));
    segs.push((i.device.clone(), 5));
    if app.research {
        segs.push(("research".to_string(), 2));
    }
    if i.context_length > 0 {
        segs.push((
            format!(
                "ctx {}/{}",
                human(app.context_used()),
                human(i.context_length)
            ),
            3,
        ));
    }
    if let Some(r) = app.t.live_reply() {
        if let Some(first) = r.first_ms {
            let secs = app.now.saturating_sub(first) as f64 / 1000.0;
            let n = r.generated();
            if secs > 0.2 && n > 1 {
                segs.push((format!("{:.1} tok/s", (n - 1) as f64 / secs), 1));
            }
        }
        segs.push((
            format!(
                "{:.1} s",
                app.now.saturating_sub(r.started_ms) as f64 / 1000.0
            ),
            1,
        ));
    } else if let Some(s) = &app.last_stats {
        if s.decode_tok_s > 0.0 {
            segs.push((format!("{:.1} tok/s", s.decode_tok_s), 4));
        }
        if s.prefill_tok_s > 0.0 || s.ttft_ms > 0.0 {
            segs.push((format!("ttft {:.0} ms", s.ttft_ms), 4));
            segs.push((format!("prefill {:.0} tok/s", s.prefill_tok_s), 6));
        }
    }
    segs
}

/// Draws the status bar.
pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    if area.height == 0 {
        return;
    }
    let th = &app.theme;
    let base = th.status();
    let right = match &app.flash {
        Some((m, until)) if app.now <= *until => format!("{m} "),
        _ => "? help ".to_string(),
    };
    let w = area.width as usize;
    let mut segs = segments(app);
    let width_of = |segs: &[(String, u8)]| -> usize {
        segs.iter().map(|(s, _)| str_width(s) + 3).sum::<usize>()
    };
    // Drop the least important figures until the bar and the message fit.
    while width_of(&segs) + str_width(&right) + 1 > w {
        let Some((k, _)) = segs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.1 > 0)
            .max_by_key(|(k, s)| (s.1, *k))
        else {
            break;
        };
        segs.remove(k);
    }
    let phase_style = match app.phase() {
        Phase::Idle => base,
        Phase::Paused | Phase::Approval => base.fg(th.accent).add_modifier(Modifier::BOLD),
        _ => base.fg(th.ok).add_modifier(Modifier::BOLD),
    };
    let mut spans = vec![Span::styled(format!(" {} ", segs[0].0), phase_style)];
    for (s, _) in &segs[1..] {
        spans.push(Span::styled("│ ", base.fg(th.dim)));
        spans.push(Span::styled(format!("{s} "), base));
    }
    let buf = f.buffer_mut();
    buf.set_style(area, base);
    buf.set_line(area.x, area.y, &Line::from(spans), area.width);
    let left_w = width_of(&segs);
    let rw = str_width(&right);
    if left_w + rw <= w {
        let style = if app.flash.is_some() {
            base.fg(th.accent)
        } else {
            base.fg(th.dim)
        };
        buf.set_string(area.x + (w - rw) as u16, area.y, &right, style);
    } else if app.flash.is_some() {
        let room = w.saturating_sub(left_w);
        buf.set_string(
            area.x + left_w as u16,
            area.y,
            truncate(&right, room),
            base.fg(th.accent),
        );
    }
}
