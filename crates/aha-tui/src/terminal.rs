//! The terminal guard: raw mode, alternate screen, mouse and bracketed paste on entry; all of it
//! undone on every exit path — normal return, error (the guard's `Drop`) and panic (a hook that
//! restores before the panic message is printed, so the message is readable).

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    KeyboardEnhancementFlags, PopKeyboardEnhancementFlags, PushKeyboardEnhancementFlags,
};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Whether the terminal is in the workbench's modes now.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Whether the keyboard enhancement flags were pushed (and must be popped).
static ENHANCED: AtomicBool = AtomicBool::new(false);

/// Owns the terminal while the workbench runs; dropping it restores the terminal.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    /// Switches the terminal into the workbench's modes.
    pub fn enter() -> anyhow::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = std::io::stdout();
        let r = execute!(
            out,
            EnterAlternateScreen,
            EnableMouseCapture,
            EnableBracketedPaste
        );
        if let Err(e) = r {
            restore();
            return Err(e.into());
        }
        // Shift-Enter is only distinguishable with the kitty keyboard protocol.
        if matches!(
            crossterm::terminal::supports_keyboard_enhancement(),
            Ok(true)
        ) && execute!(
            out,
            PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES)
        )
        .is_ok()
        {
            ENHANCED.store(true, Ordering::SeqCst);
        }
        let terminal = match Terminal::new(CrosstermBackend::new(std::io::stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e.into());
            }
        };
        Ok(Self { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs `f` with the terminal given back to the shell (e.g. an editor), then takes it again.
pub fn suspended<T>(f: impl FnOnce() -> T) -> anyhow::Result<T> {
    let was = ACTIVE.load(Ordering::SeqCst);
    restore();
    let r = f();
    if was {
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            EnableMouseCapture,
            EnableBracketedPaste
        )?;
    }
    Ok(r)
}

/// Whether the real terminal is in the workbench's modes (not a test backend).
pub fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// Puts the terminal back as it was (safe to call more than once, and from the panic hook).
pub fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout();
    if ENHANCED.swap(false, Ordering::SeqCst) {
        let _ = execute!(out, PopKeyboardEnhancementFlags);
    }
    let _ = execute!(
        out,
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
    let _ = out.flush();
}

/// Restores the terminal before the default panic message is printed, and keeps a copy of the
/// message in the log (tracing, which the workbench sends to a file).
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A panic that `aha_protocol::panic::catch_panic` turns into an error leaves the workbench running.
            if aha_protocol::panic::catching_panics() {
                return prev(info);
            }
            restore();
            tracing::error!("panic: {info}");
            prev(info);
        }));
    });
}
