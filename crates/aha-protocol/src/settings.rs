//! The small typed values that travel in `Op`s and `Event`s: why a turn ended, the thinking mode,
//! the approval policy and the id of a turn. Each reads and writes as the lowercase name the
//! JSON protocol, the config file and the slash commands use.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements `as_str`-based serialisation and `parse`-based deserialisation for a name type.
macro_rules! by_name {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(concat!("unknown ", $what, " `{}`"), s))
                })
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Why a turn (or one generation) ended. The complete set: `stop`, `length`, `context`,
/// `cancelled`, `incomplete`, `error`, `step_limit`, `repeated_call`, `loop`, plus whatever other reason
/// a remote server gives (`content_filter`…), passed through as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FinishReason {
    /// The model ended its turn.
    #[default]
    Stop,
    /// The token limit of the request was reached.
    Length,
    /// The model's context window is full.
    Context,
    /// A person (or a client) stopped it; what was produced is kept.
    Cancelled,
    /// A remote stream broke off; what arrived is kept.
    Incomplete,
    /// The engine failed; an `error` event says why.
    Error,
    /// The agent reached its most generations per turn.
    StepLimit,
    /// The agent stopped a model that kept repeating the same tool calls.
    RepeatedCall,
    /// The reasoning went in circles and the loop setting is `stop`.
    Loop,
    /// A reason from a remote server that aha has no name for.
    Other(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Context => "context",
            Self::Cancelled => "cancelled",
            Self::Incomplete => "incomplete",
            Self::Error => "error",
            Self::StepLimit => "step_limit",
            Self::RepeatedCall => "repeated_call",
            Self::Loop => "loop",
            Self::Other(s) => s,
        }
    }

    /// Reads a reason; unknown names become `Other`.
    pub fn from_name(s: &str) -> Self {
        match s {
            "stop" => Self::Stop,
            "length" => Self::Length,
            "context" => Self::Context,
            "cancelled" => Self::Cancelled,
            "incomplete" => Self::Incomplete,
            "error" => Self::Error,
            "step_limit" => Self::StepLimit,
            "repeated_call" => Self::RepeatedCall,
            "loop" => Self::Loop,
            other => Self::Other(other.to_string()),
        }
    }

    /// [`FinishReason::from_name`], in the shape the name-based serde impls take (never `None`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(Self::from_name(s))
    }
}

by_name!(FinishReason, "finish reason");

/// Whether the model reasons before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThinkMode {
    /// Reasoning models think; others don't.
    #[default]
    Auto,
    /// Make any model reason first (opens `<think>` after an instruction to reason).
    On,
    /// Ask a reasoning model to skip its reasoning (closes `<think>` at once).
    Off,
}

impl ThinkMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }

    /// Reads `auto`, `on` or `off`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "on" => Some(Self::On),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

by_name!(ThinkMode, "thinking mode (use auto, on or off)");

/// The approval policy for tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Only tools that change nothing run; the rest are refused.
    ReadOnly,
    /// Changes and code execution ask first (the default).
    #[default]
    Ask,
    /// File edits run; code and commits ask.
    AutoEdit,
    /// Everything runs.
    FullAuto,
}

impl Policy {
    /// Reads `read-only`, `ask`, `auto-edit`, `full-auto` (any case, `_` for `-`, `readonly`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "read-only" | "readonly" => Some(Self::ReadOnly),
            "ask" => Some(Self::Ask),
            "auto-edit" => Some(Self::AutoEdit),
            "full-auto" => Some(Self::FullAuto),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ReadOnly => "read-only",
            Self::Ask => "ask",
            Self::AutoEdit => "auto-edit",
            Self::FullAuto => "full-auto",
        }
    }
}

by_name!(
    Policy,
    "approval policy (use read-only, ask, auto-edit or full-auto)"
);

/// Names one turn a front end asked for (a user message or a branch), so that a later `Cancel`
/// says which turn it means: a cancel that arrives before its turn has started still stops it,
/// and a late cancel never stops the next turn. Front ends number their turns from 1 upwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TurnId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finish_reason_round_trips_by_name() {
        for r in [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Context,
            FinishReason::Cancelled,
            FinishReason::Incomplete,
            FinishReason::Error,
            FinishReason::StepLimit,
            FinishReason::RepeatedCall,
            FinishReason::Other("content_filter".into()),
        ] {
            let j = serde_json::to_string(&r).unwrap();
            assert_eq!(j, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<FinishReason>(&j).unwrap(), r);
        }
    }

    #[test]
    fn modes_and_policies_refuse_unknown_names() {
        assert_eq!(
            serde_json::from_str::<ThinkMode>("\"on\"").unwrap(),
            ThinkMode::On
        );
        let e = serde_json::from_str::<ThinkMode>("\"maybe\"").unwrap_err();
        assert!(e.to_string().contains("auto, on or off"), "{e}");
        assert_eq!(Policy::parse("Full_Auto"), Some(Policy::FullAuto));
        assert_eq!(
            serde_json::to_string(&Policy::ReadOnly).unwrap(),
            "\"read-only\""
        );
        assert!(serde_json::from_str::<Policy>("\"yolo\"").is_err());
    }
}
