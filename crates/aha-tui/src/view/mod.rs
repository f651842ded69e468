//! Drawing: `draw(&App, &mut Frame)` is a pure function of the state. The chat view, the trace
//! explorer, the status bar and the overlays each live in their own file.

pub mod chat;
pub mod overlay;
pub mod status;
pub mod trace;

use super::app::{App, View};
use ratatui::layout::Rect;
use ratatui::Frame;

/// The smallest terminal the workbench draws in.
pub const MIN_W: u16 = 20;
pub const MIN_H: u16 = 6;

/// Where each part of the screen goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Areas {
    pub chat: Rect,
    /// The rule above the composer (hints).
    pub rule: Rect,
    pub composer: Rect,
    pub status: Rect,
}

/// Splits the screen: transcript on top, composer, status bar at the bottom.
pub fn areas(app: &App, area: Rect) -> Areas {
    let status = Rect::new(
        area.x,
        area.bottom().saturating_sub(1),
        area.width,
        1.min(area.height),
    );
    let body_h = area.height.saturating_sub(1);
    if matches!(app.view, View::Trace(_)) {
        return Areas {
            chat: Rect::new(area.x, area.y, area.width, body_h),
            rule: Rect::new(area.x, area.y + body_h, area.width, 0),
            composer: Rect::new(area.x, area.y + body_h, area.width, 0),
            status,
        };
    }
    let max_rows = (body_h / 3).clamp(1, 8) as usize;
    let rows = composer_rows(app, area.width).clamp(1, max_rows) as u16;
    let chat_h = body_h.saturating_sub(rows + 1);
    Areas {
        chat: Rect::new(area.x, area.y, area.width, chat_h),
        rule: Rect::new(area.x, area.y + chat_h, area.width, 1),
        composer: Rect::new(area.x, area.y + chat_h + 1, area.width, rows),
        status,
    }
}

/// Rows the composer's text needs at this width (after the two-column prompt).
pub fn composer_rows(app: &App, width: u16) -> usize {
    app.composer
        .layout((width as usize).saturating_sub(2))
        .0
        .len()
}

/// Draws the whole screen.
pub fn draw(app: &App, f: &mut Frame) {
    let area = f.area();
    if area.width < MIN_W || area.height < MIN_H {
        overlay::too_small(f, area);
        return;
    }
    let a = areas(app, area);
    match &app.view {
        View::Chat => {
            chat::draw(app, f, a);
            if app.popup_open() {
                overlay::popup(app, f, a);
            }
        }
        View::Trace(_) => trace::draw(app, f, a.chat),
    }
    status::draw(app, f, a.status);
    if app.help.is_some() {
        overlay::help(app, f, area);
    }
    if let Some(ap) = app.approvals.front() {
        overlay::approval(app, ap, f, area);
    }
}
