//! `aha eval-tools`: how often the model's tool calls are well-formed, with and without the
//! constraint, on a fixed task list (tools/tool_tasks.jsonl). One generation per task: the first
//! thing the model writes for the request, with the built-in tools offered.

use super::{load_engine, ModelArgs};
use crate::agent::parse;
use crate::config::Config;
use crate::engine::sampler::SamplingParams;
use crate::engine::template::ChatMessage;
use crate::engine::{Control, GenerateRequest};
use crate::protocol::Event;
use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// JSON lines: {"prompt": …, "tool": expected tool name}.
    #[arg(long, default_value = "tools/tool_tasks.jsonl")]
    pub tasks: PathBuf,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Samples per task (seeds 0..N).
    #[arg(long, default_value_t = 1)]
    pub samples: u64,
    /// Tokens per generation.
    #[arg(long, default_value_t = 160)]
    pub max_tokens: usize,
    /// Print one JSON object per task and mode.
    #[arg(long)]
    pub json: bool,
}

/// Checks `v` against the parts of JSON Schema that tool schemas use (type, properties,
/// required, additionalProperties, enum, items, minimum, anyOf).
pub fn validate(v: &Value, schema: &Value) -> std::result::Result<(), String> {
    if let Some(alts) = schema.get("anyOf").and_then(Value::as_array) {
        return if alts.iter().any(|s| validate(v, s).is_ok()) {
            Ok(())
        } else {
            Err(format!("{v} matches none of the allowed forms"))
        };
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{v} is not one of {}", Value::Array(e.clone())));
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let is = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        return Err(format!("{v} is not of type {}", types.join("|")));
    }
    if let (Some(min), Some(x)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            return Err(format!("{x} is below the minimum {min}"));
        }
    }
    if let Value::Object(o) = v {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !o.contains_key(r) {
                return Err(format!("missing required field `{r}`"));
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(x, s).map_err(|e| format!("{k}: {e}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("unknown field `{k}`"))
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
        for x in items {
            validate(x, s)?;
        }
    }
    Ok(())
}

/// Runs `aha eval-tools`.
pub fn eval_tools(m: &ModelArgs, a: EvalArgs, cfg: &Config) -> Result<i32> {
    let text = std::fs::read_to_string(&a.tasks)
        .with_context(|| format!("cannot read {}", a.tasks.display()))?;
    let tasks: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| -> Result<(String, String)> {
            let v: Value =
                serde_json::from_str(l).with_context(|| format!("bad task line: {l}"))?;
            Ok((
                v["prompt"].as_str().unwrap_or_default().to_string(),
                v["tool"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect::<Result<_>>()?;
    let specs = crate::agent::host::builtin(&std::env::current_dir()?)?.specs();
    let schema_of = |name: &str| -> Option<Value> {
        specs
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.parameters.clone())
    };
    let names: Vec<String> = crate::tools::spec_names(&specs);
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut engine = load_engine(m, cfg)?;
    let ctrl = Control::default();
    let mut summary = Vec::new();
    for constrained in [false, true] {
        let (mut attempted, mut well_formed, mut right_tool, mut n) = (0, 0, 0, 0);
        for (prompt, expected) in &tasks {
            for seed in 0..a.samples.max(1) {
                n += 1;
                let mut req = GenerateRequest::chat(vec![ChatMessage::user(prompt.clone())]);
                req.tools = Some(crate::protocol::ToolSpec::to_openai_all(&specs));
                req.constrain_tools = constrained;
                req.max_tokens = a.max_tokens;
                req.sampling = if a.temperature <= 0.0 {
                    SamplingParams::greedy()
                } else {
                    SamplingParams {
                        temperature: a.temperature,
                        seed,
                        ..engine.default_sampling()
                    }
                };
                let mut answer = String::new();
                engine.generate(&req, &ctrl, &mut |e| {
                    if let Event::AnswerDelta { text, .. } = e {
                        answer.push_str(&text)
                    }
                })?;
                let p = parse::parse(&answer, &name_refs);
                let tried = !p.calls.is_empty() || !p.malformed.is_empty();
                let errors: Vec<String> = p
                    .malformed
                    .iter()
                    .map(|b| b.reason.clone())
                    .chain(p.calls.iter().filter_map(|c| match schema_of(&c.name) {
                        None => Some(format!("unknown tool {}", c.name)),
                        Some(s) => validate(&c.arguments, &s).err(),
                    }))
                    .collect();
                let ok = tried && errors.is_empty();
                attempted += tried as usize;
                well_formed += ok as usize;
                right_tool += (ok && p.calls.iter().any(|c| &c.name == expected)) as usize;
                if a.json {
                    println!(
                        "{}",
                        serde_json::json!({"constrained": constrained, "prompt": prompt, "seed": seed,
                            "attempted": tried, "well_formed": ok, "errors": errors, "text": answer})
                    );
                }
            }
        }
        let line = format!(
            "{}: {n} generations · {attempted} attempted a call · {well_formed} well-formed ({:.0}% of attempts) · {right_tool} called the expected tool",
            if constrained { "constrained  " } else { "unconstrained" },
            100.0 * well_formed as f64 / attempted.max(1) as f64
        );
        eprintln!("{line}");
        summary.push(line);
    }
    println!("{}", summary.join("\n"));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::validate;
    use serde_json::json;

    #[test]
    fn the_schema_checks_tool_calls_need() {
        let s = json!({"type": "object", "properties": {
            "language": {"type": "string", "enum": ["python", "bash"]},
            "timeout_s": {"type": ["integer", "null"], "minimum": 1},
            "code": {"type": "string"}}, "required": ["language", "code"], "additionalProperties": false});
        assert!(validate(&json!({"language": "bash", "code": "ls"}), &s).is_ok());
        assert!(validate(
            &json!({"language": "bash", "code": "ls", "timeout_s": null}),
            &s
        )
        .is_ok());
        assert!(validate(&json!({"language": "ruby", "code": "x"}), &s)
            .unwrap_err()
            .contains("not one of"));
        assert!(validate(&json!({"code": "x"}), &s)
            .unwrap_err()
            .contains("language"));
        assert!(
            validate(&json!({"language": "bash", "code": "x", "extra": 1}), &s)
                .unwrap_err()
                .contains("extra")
        );
        assert!(validate(&json!({"language": "bash", "code": 3}), &s).is_err());
        assert!(validate(
            &json!({"language": "bash", "code": "x", "timeout_s": 0}),
            &s
        )
        .is_err());
    }
}
