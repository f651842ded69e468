//! Key bindings: which key does what, parsed from names like `ctrl-o` or `f1` so the `[ui.keys]`
//! config can change them, and printed the same way in the help overlay.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::fmt;

/// One key with its modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl Key {
    pub const fn new(code: KeyCode, mods: KeyModifiers) -> Self {
        Self { code, mods }
    }
    const fn ctrl(c: char) -> Self {
        Self::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }
    const fn plain(c: char) -> Self {
        Self::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    /// Whether a key event is this key (Shift is ignored for characters, which carry it).
    pub fn matches(&self, e: &KeyEvent) -> bool {
        let strip = |m: KeyModifiers| match e.code {
            KeyCode::Char(_) => m - KeyModifiers::SHIFT,
            _ => m,
        };
        let code = match e.code {
            KeyCode::Char(c) if e.modifiers.contains(KeyModifiers::CONTROL) => {
                KeyCode::Char(c.to_ascii_lowercase())
            }
            c => c,
        };
        code == self.code && strip(e.modifiers) == strip(self.mods)
    }

    /// Parses `ctrl-o`, `alt-enter`, `f1`, `esc`, `space`, `?`…
    pub fn parse(s: &str) -> Option<Key> {
        let s = s.trim();
        let mut mods = KeyModifiers::NONE;
        let mut rest = s;
        loop {
            let lower = rest.to_ascii_lowercase();
            let (m, n) = if lower.starts_with("ctrl-") || lower.starts_with("ctrl+") {
                (KeyModifiers::CONTROL, 5)
            } else if lower.starts_with("alt-") || lower.starts_with("alt+") {
                (KeyModifiers::ALT, 4)
            } else if lower.starts_with("shift-") || lower.starts_with("shift+") {
                (KeyModifiers::SHIFT, 6)
            } else {
                break;
            };
            mods |= m;
            rest = &rest[n..];
        }
        let lower = rest.to_ascii_lowercase();
        let code = match lower.as_str() {
            "enter" | "return" => KeyCode::Enter,
            "esc" | "escape" => KeyCode::Esc,
            "tab" => KeyCode::Tab,
            "space" => KeyCode::Char(' '),
            "backspace" => KeyCode::Backspace,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pageup" | "pgup" => KeyCode::PageUp,
            "pagedown" | "pgdn" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            f if f.starts_with('f')
                && f.len() > 1
                && f[1..].chars().all(|c| c.is_ascii_digit()) =>
            {
                KeyCode::F(f[1..].parse().ok().filter(|n| (1..=24).contains(n))?)
            }
            _ => {
                let mut cs = rest.chars();
                let c = cs.next()?;
                if cs.next().is_some() {
                    return None;
                }
                if mods.contains(KeyModifiers::CONTROL) {
                    KeyCode::Char(c.to_ascii_lowercase())
                } else {
                    KeyCode::Char(c)
                }
            }
        };
        Some(Key { code, mods })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mods.contains(KeyModifiers::CONTROL) {
            write!(f, "Ctrl-")?;
        }
        if self.mods.contains(KeyModifiers::ALT) {
            write!(f, "Alt-")?;
        }
        if self.mods.contains(KeyModifiers::SHIFT) {
            write!(f, "Shift-")?;
        }
        match self.code {
            KeyCode::Char(' ') => write!(f, "Space"),
            KeyCode::Char(c) if self.mods.contains(KeyModifiers::CONTROL) => {
                write!(f, "{}", c.to_ascii_uppercase())
            }
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::F(n) => write!(f, "F{n}"),
            KeyCode::Enter => write!(f, "Enter"),
            KeyCode::Esc => write!(f, "Esc"),
            KeyCode::Tab => write!(f, "Tab"),
            KeyCode::Up => write!(f, "Up"),
            KeyCode::Down => write!(f, "Down"),
            KeyCode::Left => write!(f, "Left"),
            KeyCode::Right => write!(f, "Right"),
            KeyCode::PageUp => write!(f, "PgUp"),
            KeyCode::PageDown => write!(f, "PgDn"),
            KeyCode::Home => write!(f, "Home"),
            KeyCode::End => write!(f, "End"),
            KeyCode::Backspace => write!(f, "Backspace"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// The bindings that can be changed. Text editing keys (Enter, arrows, Backspace…) are fixed.
#[derive(Debug, Clone, PartialEq)]
pub struct Keymap {
    /// Expand or collapse the focused turn's reasoning.
    pub fold: Key,
    /// Open the trace explorer for the focused turn.
    pub trace: Key,
    /// Help overlay (also `?` with an empty composer).
    pub help: Key,
    /// Pause or resume generation (chat and trace explorer).
    pub pause: Key,
    /// Move the focus to the previous / next assistant turn.
    pub focus_prev: Key,
    pub focus_next: Key,
    /// In the trace explorer.
    pub trace_pause: Key,
    pub step: Key,
    pub stop: Key,
    pub branch: Key,
    pub entropy: Key,
    pub compare: Key,
    pub budget: Key,
    /// Budget forcing: the least thinking before the model may close it (cycles).
    pub think_min: Key,
}

impl Default for Keymap {
    fn default() -> Self {
        Self {
            fold: Key::ctrl('o'),
            trace: Key::ctrl('t'),
            help: Key::new(KeyCode::F(1), KeyModifiers::NONE),
            pause: Key::ctrl('p'),
            focus_prev: Key::new(KeyCode::Up, KeyModifiers::ALT),
            focus_next: Key::new(KeyCode::Down, KeyModifiers::ALT),
            trace_pause: Key::plain(' '),
            step: Key::plain('s'),
            stop: Key::plain('x'),
            branch: Key::plain('b'),
            entropy: Key::plain('e'),
            compare: Key::plain('c'),
            budget: Key::plain('t'),
            think_min: Key::plain('m'),
        }
    }
}

impl Keymap {
    /// Sets binding `name` from a key name; errors name the problem.
    pub fn set(&mut self, name: &str, key: &str) -> Result<(), String> {
        let k = Key::parse(key).ok_or_else(|| {
            format!("[ui.keys] {name}: cannot read key `{key}` (try ctrl-o, alt-up, f2, space, x)")
        })?;
        let slot = match name {
            "fold" => &mut self.fold,
            "trace" => &mut self.trace,
            "help" => &mut self.help,
            "pause" => &mut self.pause,
            "focus_prev" => &mut self.focus_prev,
            "focus_next" => &mut self.focus_next,
            "trace_pause" => &mut self.trace_pause,
            "step" => &mut self.step,
            "stop" => &mut self.stop,
            "branch" => &mut self.branch,
            "entropy" => &mut self.entropy,
            "compare" => &mut self.compare,
            "budget" => &mut self.budget,
            "think_min" => &mut self.think_min,
            _ => return Err(format!("[ui.keys] has no binding `{name}`")),
        };
        *slot = k;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_match_and_print() {
        let k = Key::parse("ctrl-o").unwrap();
        assert!(k.matches(&KeyEvent::new(KeyCode::Char('o'), KeyModifiers::CONTROL)));
        assert!(!k.matches(&KeyEvent::new(KeyCode::Char('o'), KeyModifiers::NONE)));
        assert_eq!(k.to_string(), "Ctrl-O");
        assert_eq!(Key::parse("F2").unwrap().to_string(), "F2");
        assert_eq!(Key::parse("alt-up").unwrap().to_string(), "Alt-Up");
        let q = Key::parse("?").unwrap();
        assert!(q.matches(&KeyEvent::new(KeyCode::Char('?'), KeyModifiers::SHIFT)));
        assert!(Key::parse("ctrl-").is_none());
        assert!(Key::parse("hyper-x").is_none());
        assert!(Key::parse("f99").is_none());
        let mut m = Keymap::default();
        assert!(m.set("fold", "f3").is_ok());
        assert_eq!(m.fold.to_string(), "F3");
        assert!(m.set("nope", "f3").unwrap_err().contains("nope"));
    }
}
