//! `run_code`: runs a Python or bash program in the sandbox and reports its output, exit status,
//! duration, whether it was killed and why, and which protections were in force.

use super::{args, schema_of, Effect, Tool, ToolContext, ToolOutput};
use crate::sandbox::{self, Limits};
use anyhow::{bail, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCodeArgs {
    /// "python" or "bash".
    pub language: Language,
    /// The program's source.
    pub code: String,
    /// Text on the program's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Wall-clock limit in seconds (default 10, at most 60).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Bash,
}

pub struct RunCode;

impl Tool for RunCode {
    fn name(&self) -> &'static str {
        "run_code"
    }
    fn description(&self) -> &'static str {
        "Run a Python or bash program in a sandbox (no network, temporary folder) and return its output."
    }
    fn schema(&self) -> Value {
        schema_of::<RunCodeArgs>()
    }
    fn effect(&self) -> Effect {
        Effect::Execute
    }
    fn preview(&self, a: &Value, _: &ToolContext) -> Result<String> {
        let a: RunCodeArgs = args(self.name(), a)?;
        let lang = match a.language {
            Language::Python => "python",
            Language::Bash => "bash",
        };
        Ok(format!("{lang}:\n{}", a.code))
    }
    fn run(&self, a: Value, ctx: &ToolContext) -> ToolOutput {
        match run_code(a, ctx) {
            Ok(o) => o,
            Err(e) => ToolOutput::err(format!("{e:#}")),
        }
    }
}

fn run_code(a: Value, ctx: &ToolContext) -> Result<ToolOutput> {
    let a: RunCodeArgs = args("run_code", &a)?;
    if a.code.trim().is_empty() {
        bail!("the code is empty");
    }
    // Private (0700); the launcher gives it to the sandbox user (or mounts the run's tmpfs over it).
    let dir = tempfile::Builder::new().prefix("aha-run").tempdir()?;
    let (program, file) = match a.language {
        Language::Python => ("python3", "_aha_run.py"),
        Language::Bash => ("bash", "main.sh"),
    };
    match a.language {
        Language::Python => {
            std::fs::write(dir.path().join("main.py"), &a.code)?;
            std::fs::write(dir.path().join(file), PY_RUNNER)?;
        }
        Language::Bash => std::fs::write(dir.path().join(file), &a.code)?,
    }
    let limits = Limits {
        timeout: Duration::from_secs(a.timeout_s.unwrap_or(10).clamp(1, 60)),
        ..Limits::default()
    };
    let o = sandbox::run(
        dir.path(),
        program,
        &[file.to_string()],
        a.stdin.as_deref(),
        &limits,
        &ctx.cancel,
    )?;
    let status = match (&o.killed, o.exit_code, o.signal) {
        (Some(why), _, _) => format!("killed: {why}"),
        (None, Some(c), _) => format!("exit {c}"),
        (None, None, Some(s)) => format!("killed by signal {s}{}", signal_hint(s)),
        _ => "unknown".into(),
    };
    let ok = o.killed.is_none() && o.exit_code == Some(0);
    // No duration here (the tool_result event carries it): the same program gives the same text,
    // which is how the agent sees that a call brought nothing new.
    let mut text = format!("{status} · protections: {}\n", o.protections.join(", "));
    text.push_str(&format!(
        "--- stdout ({} bytes) ---\n{}\n",
        o.stdout_bytes,
        o.stdout.trim_end()
    ));
    if o.stderr_bytes > 0 || !o.stderr.is_empty() {
        text.push_str(&format!(
            "--- stderr ({} bytes) ---\n{}\n",
            o.stderr_bytes,
            o.stderr.trim_end()
        ));
    }
    Ok(ToolOutput { ok, output: text })
}

/// Runs main.py like a notebook cell: when the last statement is an expression, its value is
/// printed (models often write `123 * 456` and expect to see the result).
const PY_RUNNER: &str = r#"import ast, sys
src = open("main.py", encoding="utf-8").read()
tree = ast.parse(src, "main.py")
last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
if last is not None:
    tree.body.pop()
g = {"__name__": "__main__", "__file__": "main.py"}
exec(compile(tree, "main.py", "exec"), g)
if last is not None:
    v = eval(compile(ast.Expression(last.value), "main.py", "eval"), g)
    if v is not None:
        print(repr(v))
"#;

fn signal_hint(s: i32) -> &'static str {
    match s {
        9 => " (SIGKILL)",
        24 => " (SIGXCPU: CPU time limit)",
        25 => " (SIGXFSZ: file size limit)",
        11 => " (SIGSEGV)",
        6 => " (SIGABRT)",
        _ => "",
    }
}
