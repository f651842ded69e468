//! Chat templates: the model's own Jinja template rendered with minijinja, or a built-in fallback.

use anyhow::{anyhow, Result};
use minijinja::{Environment, Error, ErrorKind, Value};

pub use aha_protocol::chat::{ChatMessage, Role};

/// ChatML, used by Qwen and SmolLM when a file carries no template.
pub const CHATML: &str = "{% if tools %}<|im_start|>system\n{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n{% endif %}{% for message in messages %}{% if not (tools and loop.first and message.role == 'system') %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Llama 3 instruct.
pub const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n{{ message.content | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

/// DeepSeek-R1 (its distills): no system role of its own, reasoning stripped from history, `<think>\n` opened.
pub const DEEPSEEK_R1: &str = "{{ bos_token }}{%- for message in messages %}{%- if message.role == 'system' %}{{ message.content }}{%- elif message.role == 'user' %}<｜User｜>{{ message.content }}{%- elif message.role == 'assistant' %}<｜Assistant｜>{{ message.content.split('</think>')[-1] }}<｜end▁of▁sentence｜>{%- elif message.role == 'tool' %}<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{{ message.content }}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>{%- endif %}{%- endfor %}{%- if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}";

/// Which conventions a template follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    ChatMl,
    Llama3,
    DeepSeekR1,
    Other,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    pub source: String,
    pub bos: String,
    pub eos: String,
    pub family: Family,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("family", &self.family)
            .finish()
    }
}

fn raise_exception(msg: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> String {
    // Templates use this for "today's date"; a fixed, honest value would be wrong, so use UTC now.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    fmt.replace("%Y", &y.to_string())
        .replace("%m", &format!("{m:02}"))
        .replace("%d", &format!("{d:02}"))
        .replace("%B", MONTHS[(m as usize).saturating_sub(1) % 12])
        .replace("%b", &MONTHS[(m as usize).saturating_sub(1) % 12][..3])
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl ChatTemplate {
    /// Compiles `source`. `bos`/`eos` are the texts of those tokens, exposed to the template.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.set_trim_blocks(false);
        env.add_template_owned("chat".to_string(), source.to_string())
            .map_err(|e| anyhow!("the model's chat template does not compile: {e}"))?;
        let family = if source.contains("<｜Assistant｜>") {
            Family::DeepSeekR1
        } else if source.contains("<|im_start|>") {
            Family::ChatMl
        } else if source.contains("<|start_header_id|>") {
            Family::Llama3
        } else {
            Family::Other
        };
        Ok(Self {
            env,
            source: source.to_string(),
            bos: bos.into(),
            eos: eos.into(),
            family,
        })
    }

    /// The built-in template for a family, for models that ship none.
    pub fn fallback(family: Family, bos: &str, eos: &str) -> Result<Self> {
        let src = match family {
            Family::DeepSeekR1 => DEEPSEEK_R1,
            Family::Llama3 => LLAMA3,
            Family::ChatMl | Family::Other => CHATML,
        };
        Self::new(src, bos, eos)
    }

    /// Whether the template renders the `tools` variable itself (Qwen2.5 and newer templates do;
    /// the R1 distills' does not, so the agent describes its tools in a system prompt instead).
    pub fn supports_tools(&self) -> bool {
        self.source.contains("tools")
    }

    /// Whether this is a reasoning model's template (it thinks inside `<think>` by default).
    pub fn is_reasoning(&self) -> bool {
        self.family == Family::DeepSeekR1 || self.source.contains("<think>")
    }

    /// Whether a generation prompt of this template should open the reasoning itself: DeepSeek
    /// asks that R1's replies start with `<think>\n`, which its later templates write and the
    /// one in the distills' GGUF files (ending at `<｜Assistant｜>`) does not.
    pub fn opens_think(&self, prompt: &str) -> bool {
        self.family == Family::DeepSeekR1 && prompt.ends_with("<｜Assistant｜>")
    }

    /// Renders a conversation: [`ChatMessage`]s, or messages given as JSON in OpenAI's chat
    /// format, which [`ChatMessage`] cannot always hold (an assistant message whose `content`
    /// is null and which has `tool_calls`). `tools` are JSON schemas in OpenAI's function format.
    pub fn render<M: serde::Serialize>(
        &self,
        messages: &[M],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| anyhow!("chat template: {e}"))?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            tools => tools.map(Value::from_serialize),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.clone(),
            eos_token => self.eos.clone(),
            enable_thinking => enable_thinking,
        };
        tmpl.render(ctx)
            .map_err(|e| anyhow!("the model's chat template failed to render: {e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN_LIKE: &str = "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are Qwen.' }}{%- endif %}{{- \"\\n\\n# Tools\\n<tools>\" }}{%- for tool in tools %}{{- \"\\n\" }}{{- tool | tojson }}{%- endfor %}{{- \"\\n</tools><|im_end|>\\n\" }}{%- endif %}{%- for message in messages %}{%- if message.role == 'user' or (message.role == 'system' and not tools) %}{{- '<|im_start|>' + message.role + '\\n' + message.content.strip() + '<|im_end|>' + '\\n' }}{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

    #[test]
    fn renders_python_style_template_with_tools() {
        let t = ChatTemplate::new(QWEN_LIKE, "", "<|im_end|>").unwrap();
        assert_eq!(t.family, Family::ChatMl);
        let msgs = vec![ChatMessage::user("  hi  ")];
        let out = t.render(&msgs, None, true, true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let tools = vec![serde_json::json!({"type":"function","function":{"name":"f"}})];
        let out = t.render(&msgs, Some(&tools), false, true).unwrap();
        assert!(out.starts_with("<|im_start|>system\nYou are Qwen.\n\n# Tools\n<tools>\n{"));
        assert!(out.contains("\"name\":\"f\""), "{out}");
        assert!(!out.ends_with("assistant\n"));
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        let e = t
            .render::<ChatMessage>(&[], None, true, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no system role"), "{e}");
    }

    #[test]
    fn r1_fallback_opens_think_and_strips_history_reasoning() {
        let t = ChatTemplate::fallback(Family::DeepSeekR1, "<｜begin▁of▁sentence｜>", "").unwrap();
        assert!(t.is_reasoning());
        let msgs = vec![
            ChatMessage::user("2+2?"),
            ChatMessage::assistant("<think>\nadd\n</think>\n\n4"),
            ChatMessage::user("and 3+3?"),
        ];
        let out = t.render(&msgs, None, true, true).unwrap();
        assert_eq!(
            out,
            "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜>\n\n4<｜end▁of▁sentence｜><｜User｜>and 3+3?<｜Assistant｜><think>\n"
        );
    }

    /// The Jinja the R1 distills' own template leans on: a namespace written in a loop, `is
    /// none` on a JSON null, `in` and `split` on strings with a negative index, and a `set`
    /// inside an `if` that stays visible after it (Jinja's scoping, not a block's).
    const R1_LIKE: &str = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(sys='', is_tool=false) %}{%- for m in messages %}{%- if m['role'] == 'system' %}{% set ns.sys = m['content'] %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.sys }}{%- for m in messages %}{%- if m['role'] == 'user' %}{%- set ns.is_tool = false -%}{{ '<｜User｜>' + m['content'] }}{%- endif %}{%- if m['role'] == 'assistant' and m['content'] is none %}[calls:{% for c in m['tool_calls'] %}{{ c['function']['name'] }}{% endfor %}]{%- endif %}{%- if m['role'] == 'assistant' and m['content'] is not none %}{% set content = m['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{%- endif %}{%- if m['role'] == 'tool' %}{%- set ns.is_tool = true -%}(out){%- endif %}{%- endfor -%}{% if add_generation_prompt and not ns.is_tool %}{{ '<｜Assistant｜>' }}{% endif %}";

    #[test]
    fn r1_style_jinja_renders_as_jinja2_does() {
        let t = ChatTemplate::new(R1_LIKE, "<B>", "<E>").unwrap();
        assert_eq!(t.family, Family::DeepSeekR1);
        let msgs = vec![
            ChatMessage::user("q1"),
            ChatMessage::assistant("<think>a</think>b</think>\n\nA1"),
            ChatMessage::system("S"),
            ChatMessage::user("q2"),
        ];
        let out = t.render(&msgs, None, true, true).unwrap();
        assert_eq!(
            out,
            "<B>S<｜User｜>q1<｜Assistant｜>\n\nA1<｜end▁of▁sentence｜><｜User｜>q2<｜Assistant｜>"
        );
        assert!(t.opens_think(&out));
        // OpenAI-shaped messages: a null content with tool calls, then a tool result.
        let json: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"role":"user","content":"w?"},
                {"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"get","arguments":"{}"}}]},
                {"role":"tool","content":"21"}]"#,
        )
        .unwrap();
        let out = t.render(&json, None, true, true).unwrap();
        assert_eq!(out, "<B><｜User｜>w?[calls:get](out)");
        assert!(!t.opens_think(&out), "no assistant tag after tool output");
    }

    #[test]
    fn only_r1_prompts_ending_at_the_assistant_tag_open_the_reasoning() {
        let r1 = ChatTemplate::fallback(Family::DeepSeekR1, "", "").unwrap();
        assert!(r1.opens_think("<｜User｜>hi<｜Assistant｜>"));
        assert!(!r1.opens_think("<｜User｜>hi<｜Assistant｜><think>\n"));
        let chatml = ChatTemplate::fallback(Family::ChatMl, "", "").unwrap();
        assert!(!chatml.opens_think("<｜User｜>hi<｜Assistant｜>"));
    }

    #[test]
    fn date_helper() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_420), (2025, 11, 28));
    }
}
