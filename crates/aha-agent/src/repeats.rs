//! Repeat detection for one turn: the calls the model made and the results they gave, so that a
//! call it already made is not run again and a result it already has is recognised.

use super::parse::Call;
use std::collections::HashSet;

/// What a turn has seen of its calls; a fresh one per turn.
#[derive(Debug, Default)]
pub(super) struct RepeatGuard {
    /// Each call made this turn, as `name arguments`.
    calls: HashSet<String>,
    /// Each successful result this turn, as `name NUL output`.
    results: HashSet<String>,
    /// Calls refused because they had been made before.
    repeats: usize,
}

/// A call's identity: its tool and its arguments.
fn key(c: &Call) -> String {
    format!("{} {}", c.name, c.arguments)
}

impl RepeatGuard {
    /// Whether every one of `calls` was made before in this turn (their results are in the
    /// conversation already).
    pub fn all_made(&self, calls: &[Call]) -> bool {
        calls.iter().all(|c| self.calls.contains(&key(c)))
    }

    /// Admits `call` to run: true the first time it is made this turn; a repeat is counted and
    /// answered with [`already_called`] instead of running.
    pub fn first_time(&mut self, call: &Call) -> bool {
        if self.calls.contains(&key(call)) {
            self.repeats += 1;
            false
        } else {
            self.calls.insert(key(call));
            true
        }
    }

    /// Records a call's result; true when it succeeded and repeats, word for word, an earlier
    /// successful result of the same tool (say, a program that only prints what the previous run
    /// printed): it tells the model nothing new.
    pub fn same_result(&mut self, name: &str, ok: bool, output: &str) -> bool {
        ok && !self.results.insert(format!("{name}\u{0}{output}"))
    }

    /// How many calls were refused as repeats so far.
    pub fn repeats(&self) -> usize {
        self.repeats
    }
}

/// What the model reads in place of a result when it makes a call again.
pub(super) fn already_called(name: &str) -> String {
    format!("You already called {name} with these arguments in this turn; its result is above. Use it and answer the user now.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(name: &str, args: serde_json::Value) -> Call {
        Call {
            name: name.into(),
            arguments: args,
        }
    }

    #[test]
    fn a_call_is_new_once_and_each_repeat_is_counted() {
        let mut g = RepeatGuard::default();
        let c = call("echo", json!({"x": 1}));
        assert!(g.first_time(&c));
        assert_eq!(g.repeats(), 0);
        assert!(!g.first_time(&c));
        assert!(!g.first_time(&c));
        assert_eq!(g.repeats(), 2);
        assert!(
            g.first_time(&call("echo", json!({"x": 2}))),
            "other arguments"
        );
        assert!(g.first_time(&call("exec", json!({"x": 1}))), "another tool");
        assert_eq!(g.repeats(), 2);
    }

    #[test]
    fn all_made_needs_every_call_made_before_and_records_nothing() {
        let mut g = RepeatGuard::default();
        let a = call("echo", json!({"i": 1}));
        let b = call("echo", json!({"i": 2}));
        assert!(!g.all_made(std::slice::from_ref(&a)));
        assert!(g.first_time(&a), "asking did not record it");
        assert!(g.all_made(std::slice::from_ref(&a)));
        assert!(g.all_made(&[a.clone(), a.clone()]));
        assert!(!g.all_made(&[a.clone(), b.clone()]));
        assert_eq!(g.repeats(), 0, "asking is not a repeat");
    }

    #[test]
    fn only_a_successful_result_seen_before_from_the_same_tool_is_the_same() {
        let mut g = RepeatGuard::default();
        assert!(!g.same_result("echo", true, "4"));
        assert!(g.same_result("echo", true, "4"));
        assert!(!g.same_result("exec", true, "4"), "another tool");
        assert!(!g.same_result("echo", true, "5"));
        assert!(!g.same_result("echo", false, "oops"));
        assert!(
            !g.same_result("echo", false, "oops"),
            "failures are never the same"
        );
        assert!(!g.same_result("echo", true, "oops"), "nor recorded");
        assert!(g.same_result("echo", true, "oops"));
    }

    #[test]
    fn the_repeat_message_names_the_tool() {
        assert_eq!(
            already_called("echo"),
            "You already called echo with these arguments in this turn; its result is above. Use it and answer the user now."
        );
    }
}
