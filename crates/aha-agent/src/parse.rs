//! Tool calls in model text: Qwen/Hermes `<tool_call>{json}</tool_call>`, DeepSeek's tool-call
//! tokens, and fenced JSON as a fallback. What cannot be read becomes a [`Malformed`] entry the
//! agent reports back to the model, never a panic.

use serde_json::Value;

/// A call read from the model's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub arguments: Value,
}

/// Text that looked like a tool call but could not be read; `reason` is written for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub raw: String,
    pub reason: String,
}

/// What a reply holds: its prose (calls removed), the calls, and the unreadable attempts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub text: String,
    pub calls: Vec<Call>,
    pub malformed: Vec<Malformed>,
}

const QWEN_OPEN: &str = "<tool_call>";
const QWEN_CLOSE: &str = "</tool_call>";
const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";

/// Reads a call object `{"name": …, "arguments": {…}}` (also `parameters` for `arguments`, and
/// arguments given as a JSON string).
fn call_from_json(raw: &str) -> Result<Call, String> {
    let body = strip_fence(raw.trim());
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not valid JSON ({e})"))?;
    call_from_value(v)
}

fn call_from_value(v: Value) -> Result<Call, String> {
    let Value::Object(mut o) = v else {
        return Err("a tool call must be a JSON object".into());
    };
    let name = match o.remove("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err("the call has no \"name\" string".into()),
    };
    let arguments = match o.remove("arguments").or_else(|| o.remove("parameters")) {
        None => Value::Object(Default::default()),
        Some(Value::String(s)) => serde_json::from_str(&s)
            .map_err(|e| format!("\"arguments\" is a string that is not JSON ({e})"))?,
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err("\"arguments\" must be a JSON object".into()),
    };
    Ok(Call { name, arguments })
}

/// Removes a Markdown code fence around JSON, if there is one.
fn strip_fence(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("```") else {
        return s;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// Finds every tool call in `text`. `known` names the offered tools: the fenced-JSON fallback only
/// takes objects whose name is one of them (ordinary JSON in an answer is left alone).
pub fn parse(text: &str, known: &[&str]) -> Parsed {
    let mut out = Parsed::default();
    let mut prose = String::new();
    let mut rest = text;
    // Qwen/Hermes tags and DeepSeek tokens, in the order they appear.
    loop {
        let q = rest.find(QWEN_OPEN);
        let d = rest
            .find(DS_CALLS_BEGIN)
            .or_else(|| rest.find(DS_CALL_BEGIN));
        let (at, deepseek) = match (q, d) {
            (Some(a), Some(b)) if b < a => (b, true),
            (Some(a), _) => (a, false),
            (None, Some(b)) => (b, true),
            (None, None) => break,
        };
        prose.push_str(&rest[..at]);
        if deepseek {
            let block = &rest[at..];
            let end = block
                .find(DS_CALLS_END)
                .map(|i| i + DS_CALLS_END.len())
                .unwrap_or(block.len());
            deepseek_calls(&block[..end], &mut out);
            rest = &block[end..];
        } else {
            let after = &rest[at + QWEN_OPEN.len()..];
            match after.find(QWEN_CLOSE) {
                Some(close) => {
                    push(&mut out, &after[..close]);
                    rest = &after[close + QWEN_CLOSE.len()..];
                }
                None => {
                    // Unclosed (the reply ended): take it if it parses.
                    push(&mut out, after);
                    rest = "";
                }
            }
        }
    }
    prose.push_str(rest);
    if out.calls.is_empty() && out.malformed.is_empty() {
        prose = fenced_calls(&prose, known, &mut out);
    }
    if out.calls.is_empty() && out.malformed.is_empty() {
        prose = bare_calls(&prose, known, &mut out);
    }
    out.text = prose.trim().to_string();
    out
}

fn push(out: &mut Parsed, raw: &str) {
    match call_from_json(raw) {
        Ok(c) => out.calls.push(c),
        Err(reason) => out.malformed.push(Malformed {
            raw: raw.trim().to_string(),
            reason,
        }),
    }
}

/// `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{args}\n```<｜tool▁call▁end｜>`.
fn deepseek_calls(block: &str, out: &mut Parsed) {
    for part in block.split(DS_CALL_BEGIN).skip(1) {
        let part = part.split(DS_CALL_END).next().unwrap_or(part);
        let Some((_, after_sep)) = part.split_once(DS_SEP) else {
            out.malformed.push(Malformed {
                raw: part.to_string(),
                reason: "a DeepSeek tool call without its separator token".into(),
            });
            continue;
        };
        let (name, args) = after_sep.split_once('\n').unwrap_or((after_sep, "{}"));
        let args = strip_fence(args.trim());
        match serde_json::from_str::<Value>(if args.is_empty() { "{}" } else { args }) {
            Ok(a @ Value::Object(_)) => out.calls.push(Call {
                name: name.trim().to_string(),
                arguments: a,
            }),
            Ok(_) => out.malformed.push(Malformed {
                raw: part.to_string(),
                reason: "the arguments must be a JSON object".into(),
            }),
            Err(e) => out.malformed.push(Malformed {
                raw: part.to_string(),
                reason: format!("the arguments are not valid JSON ({e})"),
            }),
        }
    }
}

/// ```json {"name": "known_tool", "arguments": {…}} ``` blocks; returns the text without them.
fn fenced_calls(text: &str, known: &[&str], out: &mut Parsed) -> String {
    let mut prose = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("```") else {
            break;
        };
        let inner = after[..end].trim_start_matches(|c: char| c.is_ascii_alphanumeric());
        let block_end = start + 3 + end + 3;
        let taken = serde_json::from_str::<Value>(inner.trim())
            .ok()
            .filter(|v| {
                v.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| known.contains(&n))
            })
            .and_then(|v| call_from_value(v).ok());
        match taken {
            Some(c) => {
                prose.push_str(&rest[..start]);
                out.calls.push(c);
            }
            None => prose.push_str(&rest[..block_end]),
        }
        rest = &rest[block_end..];
    }
    prose.push_str(rest);
    prose
}

/// Small models often answer with the call object alone, without tags: a reply that starts
/// with `{` and holds one or more JSON objects naming a known tool. Anything else is left alone.
fn bare_calls(text: &str, known: &[&str], out: &mut Parsed) -> String {
    let t = text.trim_start();
    if !t.starts_with('{') || known.is_empty() {
        return text.to_string();
    }
    let mut it = serde_json::Deserializer::from_str(t).into_iter::<Value>();
    let mut calls = Vec::new();
    let mut end = 0;
    while let Some(Ok(v)) = it.next() {
        let named = v
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| known.contains(&n));
        match (named, call_from_value(v)) {
            (true, Ok(c)) => {
                calls.push(c);
                end = it.byte_offset();
            }
            _ => break,
        }
    }
    if calls.is_empty() {
        return text.to_string();
    }
    out.calls.extend(calls);
    t[end..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn qwen_calls_several_and_prose_kept() {
        let t = "Let me check.\n<tool_call>\n{\"name\": \"git_log\", \"arguments\": {\"n\": 5}}\n</tool_call>\n<tool_call>{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\":\\\"a.txt\\\"}\"}</tool_call>";
        let p = parse(t, &[]);
        assert_eq!(p.text, "Let me check.");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].name, "git_log");
        assert_eq!(p.calls[0].arguments, json!({"n": 5}));
        assert_eq!(
            p.calls[1].arguments,
            json!({"path": "a.txt"}),
            "string arguments decoded"
        );
        assert!(p.malformed.is_empty());
    }

    #[test]
    fn malformed_calls_are_reported_not_dropped() {
        let p = parse(
            "<tool_call>{\"name\": \"run_code\", \"arguments\": {\"code\": }</tool_call>",
            &[],
        );
        assert!(p.calls.is_empty());
        assert_eq!(p.malformed.len(), 1);
        assert!(p.malformed[0].reason.contains("not valid JSON"));
        let p = parse("<tool_call>{\"arguments\": {}}</tool_call>", &[]);
        assert!(p.malformed[0].reason.contains("no \"name\""));
        let p = parse("<tool_call>[1,2]</tool_call>", &[]);
        assert!(p.malformed[0].reason.contains("JSON object"));
    }

    #[test]
    fn unclosed_call_at_the_end_is_taken_when_it_parses() {
        let p = parse(
            "<tool_call>\n{\"name\": \"git_status\", \"arguments\": {}}\n",
            &[],
        );
        assert_eq!(p.calls.len(), 1);
        assert_eq!(p.calls[0].name, "git_status");
    }

    #[test]
    fn deepseek_tokens() {
        let t = "ok<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>run_code\n```json\n{\"language\": \"python\", \"code\": \"print(1)\"}\n```<｜tool▁call▁end｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>git_status\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        let p = parse(t, &[]);
        assert_eq!(p.text, "ok");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].name, "run_code");
        assert_eq!(p.calls[0].arguments["code"], "print(1)");
        assert_eq!(p.calls[1].name, "git_status");
    }

    #[test]
    fn fenced_json_only_for_known_tools() {
        let t = "I will run it:\n```json\n{\"name\": \"run_code\", \"arguments\": {\"language\": \"bash\", \"code\": \"ls\"}}\n```\nand here is data:\n```json\n{\"name\": \"Alice\"}\n```";
        let p = parse(t, &["run_code"]);
        assert_eq!(p.calls.len(), 1);
        assert_eq!(p.calls[0].name, "run_code");
        assert!(
            p.text.contains("Alice"),
            "ordinary JSON stays in the answer"
        );
        assert!(!p.text.contains("\"code\""));
        let p = parse(t, &["git_log"]);
        assert!(p.calls.is_empty());
    }

    #[test]
    fn bare_json_calls_for_known_tools() {
        let t = "{\"name\": \"git_log\", \"arguments\": {\"n\": 1}}\n{\"name\": \"git_status\", \"arguments\": {}}";
        let p = parse(t, &["git_log", "git_status"]);
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].arguments, json!({"n": 1}));
        let p = parse("{\"name\": \"Alice\", \"age\": 3}", &["git_log"]);
        assert!(p.calls.is_empty() && p.text.contains("Alice"));
    }

    #[test]
    fn plain_answer_has_no_calls() {
        let p = parse("The product is 121932631112635269.", &["run_code"]);
        assert_eq!(p.text, "The product is 121932631112635269.");
        assert!(p.calls.is_empty() && p.malformed.is_empty());
    }
}
