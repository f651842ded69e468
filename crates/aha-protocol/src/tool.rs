//! A tool as the model is offered it: a name, what it does, and the JSON schema of its arguments.

use serde_json::{json, Value};

/// One tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    /// What the tool does, for the model (may be empty).
    pub description: String,
    /// The JSON schema its arguments must follow.
    pub parameters: Value,
}

impl ToolSpec {
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }

    /// The OpenAI function-tool shape that chat templates and servers take:
    /// `{"type": "function", "function": {"name", "description", "parameters"}}` (no
    /// `description` when it is empty).
    pub fn to_openai(&self) -> Value {
        // Keys in this order: with serde_json's `preserve_order` (on in this workspace) they are
        // rendered into the prompt in the order written here.
        let f = if self.description.is_empty() {
            json!({"name": self.name, "parameters": self.parameters})
        } else {
            json!({"name": self.name, "description": self.description, "parameters": self.parameters})
        };
        json!({"type": "function", "function": f})
    }

    /// Every spec of `specs` in the OpenAI shape, in order (a request's `tools`).
    pub fn to_openai_all(specs: &[ToolSpec]) -> Vec<Value> {
        specs.iter().map(ToolSpec::to_openai).collect()
    }

    /// Reads the OpenAI function-tool shape; `None` when it names no function.
    pub fn from_openai(v: &Value) -> Option<Self> {
        let f = &v["function"];
        Some(Self {
            name: f["name"].as_str()?.to_string(),
            description: f["description"].as_str().unwrap_or_default().to_string(),
            parameters: f.get("parameters").cloned().unwrap_or(Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_round_trips_through_the_openai_shape() {
        let s = ToolSpec::new("echo", "Says it back.", json!({"type": "object"}));
        let v = s.to_openai();
        assert_eq!(
            v,
            json!({"type": "function", "function": {"name": "echo", "description": "Says it back.", "parameters": {"type": "object"}}})
        );
        assert_eq!(ToolSpec::from_openai(&v), Some(s));
        assert!(ToolSpec::new("x", "", json!({})).to_openai()["function"]
            .get("description")
            .is_none());
        assert_eq!(ToolSpec::from_openai(&json!({"type": "function"})), None);
    }
}
