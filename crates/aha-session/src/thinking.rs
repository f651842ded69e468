//! The thinking settings a person chose last (mode and budget, budget forcing's minimum, what
//! loops do), remembered between sessions in `<data dir>/thinking.json` and restored with a
//! session's log: the workbench starts thinking as it was left.

use aha_protocol::{LoopAction, Op, ThinkMode};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file's name in aha's data folder.
pub const FILE_NAME: &str = "thinking.json";

/// The thinking settings; `None`: never set (the config's default stands).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThinkingSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<ThinkMode>,
    /// `Some(0)`: the budget was turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<usize>,
    /// `Some(0)`: budget forcing was turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think_min: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loops: Option<LoopAction>,
}

impl ThinkingSettings {
    /// Takes in an op that changes thinking; false for any other op.
    pub fn apply(&mut self, op: &Op) -> bool {
        match op {
            Op::SetThinking { mode, budget } => {
                self.think = Some(*mode);
                self.budget = Some(budget.unwrap_or(0));
            }
            Op::SetThinkMin { min } => self.think_min = Some(min.unwrap_or(0)),
            Op::SetLoops { action } => self.loops = Some(*action),
            _ => return false,
        }
        true
    }

    /// The settings the ops leave, the latest of each winning.
    pub fn from_ops<'a>(ops: impl IntoIterator<Item = &'a Op>) -> Self {
        let mut s = Self::default();
        for op in ops {
            s.apply(op);
        }
        s
    }

    /// The budget it sets: `Some(None)` turns it off; `None` leaves it.
    pub fn budget_setting(&self) -> Option<Option<usize>> {
        self.budget.map(|b| (b > 0).then_some(b))
    }

    /// Budget forcing's minimum it sets: `Some(None)` turns it off; `None` leaves it.
    pub fn think_min_setting(&self) -> Option<Option<usize>> {
        self.think_min.map(|m| (m > 0).then_some(m))
    }

    /// Whether nothing was ever set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Reads the file; a missing or unreadable one is no settings (it is only a convenience).
    pub fn load(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    /// Writes the file whole (a temporary file renamed over it, so a crash never leaves half).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, path)
    }

    /// How they read for a person: "thinking on · budget 512 · at least 128 · loops nudge".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = self.think {
            parts.push(format!("thinking {t}"));
        }
        match self.budget {
            Some(0) => parts.push("no budget".into()),
            Some(b) => parts.push(format!("budget {b}")),
            None => {}
        }
        if let Some(m) = self.think_min.filter(|m| *m > 0) {
            parts.push(format!("at least {m}"));
        }
        if let Some(l) = self.loops {
            parts.push(format!("loops {l}"));
        }
        parts.join(" · ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_of_each_setting_wins_and_survives_a_round_trip() {
        let ops = [
            Op::SetThinking {
                mode: ThinkMode::On,
                budget: Some(256),
            },
            Op::UserMessage {
                text: "hi".into(),
                turn_id: None,
            },
            Op::SetThinkMin { min: Some(128) },
            Op::SetThinking {
                mode: ThinkMode::On,
                budget: None,
            },
            Op::SetLoops {
                action: LoopAction::Nudge,
            },
        ];
        let s = ThinkingSettings::from_ops(&ops);
        assert_eq!(s.think, Some(ThinkMode::On));
        assert_eq!(s.budget, Some(0), "turned off later");
        assert_eq!(s.think_min, Some(128));
        assert_eq!(s.loops, Some(LoopAction::Nudge));
        assert_eq!(
            s.describe(),
            "thinking on · no budget · at least 128 · loops nudge"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/thinking.json");
        s.save(&p).unwrap();
        assert_eq!(ThinkingSettings::load(&p), s);
        std::fs::write(&p, "{ not json").unwrap();
        assert!(
            ThinkingSettings::load(&p).is_empty(),
            "a damaged file is no settings"
        );
        assert!(ThinkingSettings::load(&dir.path().join("none.json")).is_empty());
    }
}
