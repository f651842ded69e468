//! Colours and styles of every part of the workbench, overridable from the `[ui.colors]` config.

use ratatui::style::{Color, Modifier, Style};

/// The workbench's colours.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub user: Color,
    pub reasoning: Color,
    pub accent: Color,
    pub error: Color,
    pub ok: Color,
    pub dim: Color,
    pub code: Color,
    pub status_bg: Color,
    pub status_fg: Color,
    /// Heat colours from most to least confident (≥90 %, 60–90 %, 30–60 %, <30 %).
    pub heat: [Color; 4],
}

impl Default for Theme {
    fn default() -> Self {
        Self {
            user: Color::Cyan,
            reasoning: Color::Gray,
            accent: Color::Yellow,
            error: Color::LightRed,
            ok: Color::Green,
            dim: Color::DarkGray,
            code: Color::LightYellow,
            status_bg: Color::Rgb(40, 44, 52),
            status_fg: Color::Gray,
            heat: [
                Color::Rgb(140, 200, 140),
                Color::Rgb(230, 210, 110),
                Color::Rgb(240, 150, 70),
                Color::Rgb(240, 80, 80),
            ],
        }
    }
}

impl Theme {
    pub fn user(&self) -> Style {
        Style::new().fg(self.user).add_modifier(Modifier::BOLD)
    }
    pub fn reasoning(&self) -> Style {
        Style::new().fg(self.reasoning).add_modifier(Modifier::DIM)
    }
    pub fn rule(&self) -> Style {
        Style::new().fg(self.dim)
    }
    pub fn dim(&self) -> Style {
        Style::new().fg(self.dim)
    }
    pub fn accent(&self) -> Style {
        Style::new().fg(self.accent)
    }
    pub fn error(&self) -> Style {
        Style::new().fg(self.error)
    }
    pub fn ok(&self) -> Style {
        Style::new().fg(self.ok)
    }
    pub fn code(&self) -> Style {
        Style::new().fg(self.code)
    }
    pub fn status(&self) -> Style {
        Style::new().bg(self.status_bg).fg(self.status_fg)
    }
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// Colour for a token the model gave probability `p`.
    pub fn confidence(&self, p: Option<f32>) -> Style {
        match p {
            None => self.dim(),
            Some(p) if p >= 0.9 => Style::new().fg(self.heat[0]),
            Some(p) if p >= 0.6 => Style::new().fg(self.heat[1]),
            Some(p) if p >= 0.3 => Style::new().fg(self.heat[2]),
            Some(_) => Style::new().fg(self.heat[3]),
        }
    }

    /// Colour for a token drawn from a distribution of entropy `h` nats.
    pub fn entropy(&self, h: Option<f32>) -> Style {
        match h {
            None => self.dim(),
            Some(h) if h < 0.5 => Style::new().fg(self.heat[0]),
            Some(h) if h < 1.5 => Style::new().fg(self.heat[1]),
            Some(h) if h < 3.0 => Style::new().fg(self.heat[2]),
            Some(_) => Style::new().fg(self.heat[3]),
        }
    }
}

/// Parses a colour: a name (`cyan`, `darkgray`, `light-red`…), `#rrggbb`, or a 0–255 index.
pub fn parse_color(s: &str) -> Option<Color> {
    let t = s.trim().to_ascii_lowercase().replace(['-', '_', ' '], "");
    if let Some(hex) = t.strip_prefix('#') {
        if hex.len() == 6 {
            let v = u32::from_str_radix(hex, 16).ok()?;
            return Some(Color::Rgb((v >> 16) as u8, (v >> 8) as u8, v as u8));
        }
        return None;
    }
    if let Ok(i) = t.parse::<u8>() {
        return Some(Color::Indexed(i));
    }
    Some(match t.as_str() {
        "reset" | "default" => Color::Reset,
        "black" => Color::Black,
        "red" => Color::Red,
        "green" => Color::Green,
        "yellow" => Color::Yellow,
        "blue" => Color::Blue,
        "magenta" => Color::Magenta,
        "cyan" => Color::Cyan,
        "gray" | "grey" => Color::Gray,
        "darkgray" | "darkgrey" => Color::DarkGray,
        "lightred" => Color::LightRed,
        "lightgreen" => Color::LightGreen,
        "lightyellow" => Color::LightYellow,
        "lightblue" => Color::LightBlue,
        "lightmagenta" => Color::LightMagenta,
        "lightcyan" => Color::LightCyan,
        "white" => Color::White,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_parse() {
        assert_eq!(parse_color("#ff8000"), Some(Color::Rgb(255, 128, 0)));
        assert_eq!(parse_color("Light-Red"), Some(Color::LightRed));
        assert_eq!(parse_color("238"), Some(Color::Indexed(238)));
        assert_eq!(parse_color("#ff80"), None);
        assert_eq!(parse_color("mauve"), None);
    }
}
