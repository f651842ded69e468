//! Approval policies: which tool calls run at once, which wait for a person, which are refused.
//! Only a person's `Op::Approve` from the UI can approve; nothing the model reads or writes can.

use std::collections::HashSet;

/// What a tool may change (the tools' own classification).
pub use aha_tools::Effect;

pub use aha_protocol::Policy;

/// What to do with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Run,
    Ask,
    Refuse,
}

/// What a policy decides (the policy itself is a protocol type; its rules live here).
pub trait Decide {
    /// The decision for a tool of this effect. `approved_for_session` holds tool names a person
    /// approved "for this session".
    fn decide(self, tool: &str, effect: Effect, approved_for_session: &HashSet<String>)
        -> Decision;
}

impl Decide for Policy {
    fn decide(
        self,
        tool: &str,
        effect: Effect,
        approved_for_session: &HashSet<String>,
    ) -> Decision {
        if effect == Effect::ReadOnly {
            return Decision::Run;
        }
        match self {
            Self::ReadOnly => Decision::Refuse,
            Self::FullAuto => Decision::Run,
            _ if approved_for_session.contains(tool) => Decision::Run,
            Self::AutoEdit if effect == Effect::Edit => Decision::Run,
            Self::Ask | Self::AutoEdit => Decision::Ask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_table() {
        let none = HashSet::new();
        use Decision::*;
        use Effect::*;
        let table = [
            (Policy::ReadOnly, [Run, Refuse, Refuse, Refuse]),
            (Policy::Ask, [Run, Ask, Ask, Ask]),
            (Policy::AutoEdit, [Run, Run, Ask, Ask]),
            (Policy::FullAuto, [Run, Run, Run, Run]),
        ];
        for (p, want) in table {
            for (e, w) in [ReadOnly, Edit, Execute, Commit].into_iter().zip(want) {
                assert_eq!(p.decide("t", e, &none), w, "{p:?} {e:?}");
            }
        }
        let mut ok = HashSet::new();
        ok.insert("run_code".to_string());
        assert_eq!(Policy::Ask.decide("run_code", Execute, &ok), Run);
        assert_eq!(Policy::Ask.decide("git_commit", Commit, &ok), Ask);
        assert_eq!(
            Policy::ReadOnly.decide("run_code", Execute, &ok),
            Refuse,
            "read-only is absolute"
        );
        assert_eq!(Policy::parse("Auto_Edit"), Some(Policy::AutoEdit));
        assert_eq!(Policy::parse("yolo"), None);
    }
}
