//! The approval step of a call: is it a tool, are its arguments readable, does the policy let it
//! run, refuse it, or ask a person, and then running it.

use super::policy::{Decide, Decision, Effect, Policy};
use super::{tool_panicked, Agent};
use aha_protocol::{Event, Op};
use serde_json::Value;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// What the approval step makes of a call the policy has decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Approval {
    /// It may run.
    Run,
    /// It may not; the model reads why.
    Refused(String),
    /// A person must say.
    Ask,
}

/// The approval step for tool `name` under `policy`, given its decision; `interactive`: a person
/// is there to ask.
pub(super) fn approval(
    policy: Policy,
    decision: Decision,
    interactive: bool,
    name: &str,
) -> Approval {
    match decision {
        Decision::Run => Approval::Run,
        Decision::Refuse => Approval::Refused(format!(
            "denied: the approval policy is {}, so {name} may not run. Answer without it, or say what you would do.",
            policy.as_str()
        )),
        Decision::Ask if !interactive => Approval::Refused(format!(
            "denied: {name} needs a person's approval under the `{}` policy and nobody is there to give it (headless run). Answer without it, or say what you would do.",
            policy.as_str()
        )),
        Decision::Ask => Approval::Ask,
    }
}

impl Agent {
    /// Decides, asks if need be, and runs one call.
    pub(super) fn call(&mut self, id: &str, name: &str, args: Value) -> (bool, String) {
        match self.check_call(name, &args) {
            Ok((effect, preview)) => match self.approve(id, name, effect, preview) {
                Ok(()) => self.run_tool(name, args),
                Err(refusal) => (false, refusal),
            },
            Err(e) => (false, e),
        }
    }

    /// What the call may change and its preview for a person, or why it cannot run (no tools, no
    /// such tool, arguments the tool cannot read).
    fn check_call(&self, name: &str, args: &Value) -> Result<(Effect, String), String> {
        let Some(host) = self.tools.as_ref() else {
            return Err("no tools are enabled".into());
        };
        let offered = self.offered_specs();
        let effect = host
            .effect(name)
            .filter(|_| offered.iter().any(|s| s.name == name));
        let Some(effect) = effect else {
            let names: Vec<String> = aha_tools::spec_names(&offered);
            return Err(format!(
                "there is no tool `{name}`; the tools are: {}",
                names.join(", ")
            ));
        };
        match aha_protocol::panic::catch_panic(|| host.preview(name, args)) {
            Ok(Ok(p)) => Ok((effect, p)),
            Ok(Err(e)) => Err(format!("invalid arguments for {name}: {e:#}")),
            Err(p) => Err(tool_panicked(name, &p)),
        }
    }

    /// Applies the policy to a call, asking the person when it says so; why not, if not.
    fn approve(
        &mut self,
        id: &str,
        name: &str,
        effect: Effect,
        preview: String,
    ) -> Result<(), String> {
        let decision = self.cfg.policy.decide(name, effect, &self.approved);
        match approval(self.cfg.policy, decision, self.cfg.interactive, name) {
            Approval::Run => Ok(()),
            Approval::Refused(why) => Err(why),
            Approval::Ask => {
                self.emit(Event::ApprovalRequest {
                    id: id.to_string(),
                    name: name.to_string(),
                    summary: preview,
                });
                if self.wait_for_approval(id, name) {
                    Ok(())
                } else {
                    Err(format!("denied: the user did not approve {name}"))
                }
            }
        }
    }

    /// Runs an approved call. A tool that panics (a library on a damaged file) fails this call
    /// only: the model reads why, and the turn goes on to its end.
    fn run_tool(&mut self, name: &str, args: Value) -> (bool, String) {
        let cancel = self.ctrl.cancel.clone();
        let turn = self.tool_turn;
        let out = match self.tools.as_mut() {
            Some(h) => aha_protocol::panic::catch_panic(|| h.run(name, args, turn, cancel))
                .unwrap_or_else(|p| (false, tool_panicked(name, &p))),
            None => (false, "no tools are enabled".into()),
        };
        self.tool_notices();
        out
    }

    /// Says, as notices, what the tools have to tell a person (an MCP server that failed to
    /// start, crashed or timed out).
    pub(super) fn tool_notices(&self) {
        let said = self
            .tools
            .as_ref()
            .map(|t| aha_protocol::panic::catch_panic(|| t.notices()).unwrap_or_default());
        for message in said.unwrap_or_default() {
            self.emit(Event::Notice { message });
        }
    }

    /// Waits for the person's answer to approval `id`; other ops wait until the turn is over.
    fn wait_for_approval(&mut self, id: &str, name: &str) -> bool {
        loop {
            if self.ctrl.cancelled() {
                return false;
            }
            match self.ops.recv_timeout(Duration::from_millis(100)) {
                Ok(Op::Approve {
                    id: got,
                    approved,
                    remember,
                }) if got == id => {
                    if approved && remember {
                        self.approved.insert(name.to_string());
                    }
                    return approved;
                }
                Ok(Op::Cancel { .. }) => return false,
                Ok(Op::Approve { .. }) => {}
                Ok(other) => self.pending.push_back(other),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::bench;
    use super::super::AgentConfig;
    use super::*;
    use serde_json::json;

    fn cfg(policy: Policy, interactive: bool) -> AgentConfig {
        AgentConfig {
            policy,
            interactive,
            ..AgentConfig::default()
        }
    }

    #[test]
    fn the_decision_becomes_run_a_refusal_or_a_question() {
        assert_eq!(
            approval(Policy::Ask, Decision::Run, false, "x"),
            Approval::Run
        );
        assert_eq!(
            approval(Policy::Ask, Decision::Ask, true, "x"),
            Approval::Ask
        );
        assert_eq!(
            approval(Policy::ReadOnly, Decision::Refuse, true, "exec"),
            Approval::Refused("denied: the approval policy is read-only, so exec may not run. Answer without it, or say what you would do.".into())
        );
        assert_eq!(
            approval(Policy::Ask, Decision::Ask, false, "write"),
            Approval::Refused("denied: write needs a person's approval under the `ask` policy and nobody is there to give it (headless run). Answer without it, or say what you would do.".into())
        );
    }

    #[test]
    fn a_call_that_cannot_run_says_why_and_asks_nobody() {
        let mut b = bench(&[], cfg(Policy::Ask, true), false);
        assert_eq!(
            b.agent.call("c", "echo", json!({})),
            (false, "no tools are enabled".into())
        );
        let mut b = bench(&[], cfg(Policy::Ask, true), true);
        assert_eq!(
            b.agent.call("c", "nope", json!({})),
            (
                false,
                "there is no tool `nope`; the tools are: echo, write, exec".into()
            )
        );
        assert_eq!(
            b.agent.call("c", "exec", json!({"bad_preview": true})),
            (false, "invalid arguments for exec: no such file".into())
        );
        assert!(b.take().is_empty());
        assert!(b.ran.lock().unwrap().is_empty());
    }

    #[test]
    fn a_question_waits_for_its_own_answer_and_keeps_other_ops_for_later() {
        let mut b = bench(&[], cfg(Policy::Ask, true), true);
        for op in [
            Op::Approve {
                id: "other".into(),
                approved: true,
                remember: true,
            },
            Op::Diff,
            Op::Approve {
                id: "c1".into(),
                approved: true,
                remember: true,
            },
        ] {
            b.ops.send(op).unwrap();
        }
        assert_eq!(
            b.agent.call("c1", "exec", json!({})),
            (true, "exec output".into())
        );
        assert_eq!(
            b.take(),
            [Event::ApprovalRequest {
                id: "c1".into(),
                name: "exec".into(),
                summary: "exec {}".into()
            }]
        );
        assert_eq!(b.agent.pending, [Op::Diff]);
        // Remembered: the next exec runs without asking.
        assert!(b.agent.call("c2", "exec", json!({})).0);
        assert!(b.take().is_empty());
    }

    #[test]
    fn a_denial_or_a_cancel_refuses_the_call() {
        let mut b = bench(&[], cfg(Policy::Ask, true), true);
        b.ops
            .send(Op::Approve {
                id: "c1".into(),
                approved: false,
                remember: true,
            })
            .unwrap();
        assert_eq!(
            b.agent.call("c1", "write", json!({})),
            (false, "denied: the user did not approve write".into())
        );
        assert!(b.agent.approved.is_empty(), "a denial is not remembered");
        b.ops.send(Op::Cancel { turn_id: None }).unwrap();
        assert!(!b.agent.call("c2", "write", json!({})).0);
        b.agent.ctrl.cancel();
        assert!(!b.agent.call("c3", "write", json!({})).0);
        assert!(b.ran.lock().unwrap().is_empty());
    }

    #[test]
    fn a_tool_that_panics_fails_its_call_only() {
        let mut b = bench(&[], cfg(Policy::FullAuto, false), true);
        let (ok, out) = b.agent.call("c", "exec", json!({"panic": true}));
        assert!(!ok);
        assert!(
            out.starts_with("exec failed with an internal error"),
            "{out}"
        );
    }
}
