//! The approval step of a call: is it a tool, are its arguments readable, does the policy let it
//! run, refuse it, or ask a person, and then running it.

use super::policy::{Decision, Effect, Policy};
use super::{tool_panicked, Agent};
use crate::protocol::{Event, Op};
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
            policy.name()
        )),
        Decision::Ask if !interactive => Approval::Refused(format!(
            "denied: {name} needs a person's approval under the `{}` policy and nobody is there to give it (headless run). Answer without it, or say what you would do.",
            policy.name()
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
        let Some(effect) = host.effect(name) else {
            let names: Vec<String> = crate::tools::spec_names(&host.specs());
            return Err(format!(
                "there is no tool `{name}`; the tools are: {}",
                names.join(", ")
            ));
        };
        match crate::tools::catch_panic(|| host.preview(name, args)) {
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
        match self.tools.as_mut() {
            Some(h) => crate::tools::catch_panic(|| h.run(name, args, turn, cancel))
                .unwrap_or_else(|p| (false, tool_panicked(name, &p))),
            None => (false, "no tools are enabled".into()),
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
                Ok(Op::Cancel) => return false,
                Ok(Op::Approve { .. }) => {}
                Ok(other) => self.pending.push_back(other),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}
