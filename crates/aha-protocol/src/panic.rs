//! Catching panics at library boundaries. Libraries (tantivy on a damaged index, a parser on a
//! hostile file) may panic on input they did not expect; where aha calls them that becomes an
//! error, not a dead thread. Every crate uses this one hook, and the workbench's terminal guard
//! asks `catching_panics` whether a panic is about to be caught before it restores the terminal.

/// A panic caught by [`catch_panic`]: what the panicking code said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "internal error: {}", self.0)
    }
}

impl std::error::Error for Panicked {}

thread_local! {
    /// How many `catch_panic` calls this thread is inside: the hook stays quiet while it is > 0.
    static CATCHING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The message of the last panic the hook saw while catching (with its location, for the log).
    static CAUGHT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Whether this thread is inside [`catch_panic`] (a panic now will be caught and reported as an
/// error, so a panic hook need not treat it as the end of the program).
pub fn catching_panics() -> bool {
    CATCHING.try_with(|c| c.get() > 0).unwrap_or(false)
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Installed on first use, so it wraps whatever hook is there by then (the workbench's, which
/// restores the terminal): a caught panic goes to the log instead of the user's screen, and a
/// panic nobody catches still reaches the previous hook.
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !catching_panics() {
                return prev(info);
            }
            let msg = panic_text(info.payload());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            tracing::warn!("caught a panic: {msg}{at}");
            let _ = CAUGHT.try_with(|c| *c.borrow_mut() = Some(msg));
        }));
    });
}

/// Runs `f`, turning a panic into an error. Libraries (tantivy on a damaged index, a parser on a
/// hostile file) may panic on input they did not expect; at the boundaries where aha calls them
/// that must become an error the user or the model sees, not a dead thread. The panic's message
/// is not printed to the terminal (it goes to the `AHA_LOG` log).
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, Panicked> {
    install_quiet_hook();
    let _ = CATCHING.try_with(|c| c.set(c.get() + 1));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let _ = CATCHING.try_with(|c| c.set(c.get().saturating_sub(1)));
    r.map_err(|payload| {
        let seen = CAUGHT.try_with(|c| c.borrow_mut().take()).ok().flatten();
        Panicked(seen.unwrap_or_else(|| panic_text(payload.as_ref())))
    })
}
