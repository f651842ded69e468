//! Slash commands: the list the completion popup offers, and parsing a typed command.

use aha_protocol::{Policy, ThinkMode};

/// A command the composer knows, with a one-line description for the popup and help.
pub struct CommandInfo {
    pub name: &'static str,
    pub args: &'static str,
    pub help: &'static str,
}

/// Every slash command, in the order the popup lists them.
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "/help",
        args: "",
        help: "keys and commands",
    },
    CommandInfo {
        name: "/think",
        args: "on|off|auto|budget N|budget off|min N|min off",
        help: "thinking for the next turns",
    },
    CommandInfo {
        name: "/loops",
        args: "off|warn|stop|nudge",
        help: "what a loop in the reasoning does",
    },
    CommandInfo {
        name: "/model",
        args: "",
        help: "the model, device and context; models on disk",
    },
    CommandInfo {
        name: "/clear",
        args: "",
        help: "start the conversation over",
    },
    CommandInfo {
        name: "/compact",
        args: "",
        help: "summarize earlier turns to free context",
    },
    CommandInfo {
        name: "/save",
        args: "",
        help: "write the session log to disk now",
    },
    CommandInfo {
        name: "/resume",
        args: "[ID]",
        help: "list sessions, or reopen one",
    },
    CommandInfo {
        name: "/export",
        args: "[--html] [PATH]",
        help: "write the conversation as Markdown or HTML",
    },
    CommandInfo {
        name: "/approve",
        args: "read-only|ask|auto-edit|full-auto",
        help: "tool approval policy",
    },
    CommandInfo {
        name: "/undo",
        args: "",
        help: "restore files the last turn's tools changed",
    },
    CommandInfo {
        name: "/diff",
        args: "",
        help: "changes the tools made",
    },
    CommandInfo {
        name: "/tools",
        args: "",
        help: "the tools the model may use",
    },
    CommandInfo {
        name: "/mcp",
        args: "",
        help: "MCP servers: state, tools, last error",
    },
    CommandInfo {
        name: "/index",
        args: "[PATH…]",
        help: "index documents for search (default: the workspace)",
    },
    CommandInfo {
        name: "/research",
        args: "on|off",
        help: "answer from the indexed documents, with citations checked",
    },
    CommandInfo {
        name: "/open",
        args: "PATH[:LINE]",
        help: "open a cited source in $EDITOR at the line",
    },
    CommandInfo {
        name: "/search",
        args: "QUERY",
        help: "search the document index",
    },
    CommandInfo {
        name: "/quit",
        args: "",
        help: "leave aha",
    },
];

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    Think {
        mode: Option<ThinkMode>,
        budget: Option<Option<usize>>,
    },
    Model,
    Clear,
    /// `/compact`: summarize the turns before the latest one now.
    Compact,
    Save,
    Resume(Option<String>),
    Export(Option<String>),
    /// `/export --html [PATH]` (or a PATH ending in `.html`): the traces as one HTML page.
    ExportHtml(Option<String>),
    Approve(Policy),
    Diff,
    Tools,
    /// `/mcp`: the MCP servers, their states, tools and last errors.
    Mcp,
    Index(Vec<String>),
    Search(String),
    /// `/open path[:line]`: a cited source in `$EDITOR`.
    Open(String, usize),
    /// `/research on|off`.
    Research(bool),
    /// `/think min N|off`: budget forcing's minimum.
    ThinkMin(Option<usize>),
    /// `/loops off|warn|stop|nudge`.
    Loops(aha_protocol::LoopAction),
    Undo,
    Quit,
}

/// Commands whose name starts with what was typed (the word after `/`).
pub fn completions(typed: &str) -> Vec<&'static CommandInfo> {
    let word = typed.split_whitespace().next().unwrap_or(typed);
    COMMANDS
        .iter()
        .filter(|c| c.name.starts_with(word))
        .collect()
}

/// Parses `/name args…`; the error is a message for the person who typed it.
pub fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    let usage = |c: &str| {
        COMMANDS
            .iter()
            .find(|i| i.name == c)
            .map_or(String::new(), |i| format!("usage: {} {}", i.name, i.args))
    };
    Ok(match name {
        "/help" | "/?" => Command::Help,
        "/quit" | "/exit" | "/q" => Command::Quit,
        "/model" | "/models" => Command::Model,
        "/clear" => Command::Clear,
        "/compact" => Command::Compact,
        "/save" => Command::Save,
        "/resume" => Command::Resume(args.first().map(|s| s.to_string())),
        "/export" => {
            let html = args.contains(&"--html");
            let rest: Vec<&str> = args.iter().copied().filter(|a| *a != "--html").collect();
            let path = (!rest.is_empty()).then(|| rest.join(" "));
            let by_name = path.as_deref().is_some_and(|p| {
                let p = p.to_ascii_lowercase();
                p.ends_with(".html") || p.ends_with(".htm")
            });
            if html || by_name {
                Command::ExportHtml(path)
            } else {
                Command::Export(path)
            }
        }
        "/undo" => Command::Undo,
        "/diff" => Command::Diff,
        "/tools" => Command::Tools,
        "/mcp" => Command::Mcp,
        "/index" => Command::Index(args.iter().map(|s| s.to_string()).collect()),
        "/search" if !args.is_empty() => Command::Search(args.join(" ")),
        "/search" => return Err(usage("/search")),
        "/open" => match args.as_slice() {
            [cite] => {
                let cite = cite.trim_matches(|c| c == '[' || c == ']');
                match cite.rsplit_once(':') {
                    Some((p, l)) if l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty() => {
                        // path:start-end cites open at the start.
                        Command::Open(p.to_string(), l.parse().unwrap_or(1))
                    }
                    _ => match cite.rsplit_once(':').and_then(|(p, r)| {
                        r.split_once('-')
                            .and_then(|(a, _)| a.parse::<usize>().ok())
                            .map(|l| (p, l))
                    }) {
                        Some((p, l)) => Command::Open(p.to_string(), l),
                        None => Command::Open(cite.to_string(), 1),
                    },
                }
            }
            _ => return Err(usage("/open")),
        },
        "/loops" => match args.as_slice() {
            [a] => {
                Command::Loops(aha_protocol::LoopAction::parse(a).ok_or_else(|| usage("/loops"))?)
            }
            _ => return Err(usage("/loops")),
        },
        "/research" => match args.as_slice() {
            ["on"] => Command::Research(true),
            ["off"] => Command::Research(false),
            _ => return Err(usage("/research")),
        },
        "/approve" => match args.as_slice() {
            [p] if matches!(*p, "read-only" | "ask" | "auto-edit" | "full-auto") => {
                Command::Approve(Policy::parse(p).ok_or_else(|| usage("/approve"))?)
            }
            _ => return Err(usage("/approve")),
        },
        "/think" => match args.as_slice() {
            [m] if ThinkMode::parse(m).is_some() => Command::Think {
                mode: ThinkMode::parse(m),
                budget: None,
            },
            ["budget", "off"] | ["budget", "0"] => Command::Think {
                mode: None,
                budget: Some(None),
            },
            ["min", "off"] | ["min", "0"] => Command::ThinkMin(None),
            ["min", n] => match n.parse::<usize>() {
                Ok(n) => Command::ThinkMin(Some(n)),
                Err(_) => return Err(format!("/think min: `{n}` is not a number of tokens")),
            },
            ["budget", n] => match n.parse::<usize>() {
                Ok(n) => Command::Think {
                    mode: None,
                    budget: Some(Some(n)),
                },
                Err(_) => return Err(format!("/think budget: `{n}` is not a number of tokens")),
            },
            _ => return Err(usage("/think")),
        },
        other => {
            let near: Vec<&str> = completions(other).iter().map(|c| c.name).collect();
            return Err(if near.is_empty() {
                format!("unknown command `{other}`: /help lists them")
            } else {
                format!(
                    "unknown command `{other}`: did you mean {}?",
                    near.join(", ")
                )
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_explains_mistakes() {
        assert_eq!(parse("/quit"), Ok(Command::Quit));
        assert_eq!(
            parse("/think budget 256"),
            Ok(Command::Think {
                mode: None,
                budget: Some(Some(256))
            })
        );
        assert_eq!(
            parse("/think off"),
            Ok(Command::Think {
                mode: Some(ThinkMode::Off),
                budget: None
            })
        );
        assert!(parse("/think budget many").unwrap_err().contains("many"));
        assert_eq!(parse("/think min 256"), Ok(Command::ThinkMin(Some(256))));
        assert_eq!(parse("/think min off"), Ok(Command::ThinkMin(None)));
        assert_eq!(
            parse("/loops nudge"),
            Ok(Command::Loops(aha_protocol::LoopAction::Nudge))
        );
        assert!(parse("/loops loudly")
            .unwrap_err()
            .starts_with("usage: /loops"));
        assert!(parse("/think sometimes")
            .unwrap_err()
            .starts_with("usage: /think"));
        assert_eq!(
            parse("/export out.md"),
            Ok(Command::Export(Some("out.md".into())))
        );
        assert_eq!(parse("/export"), Ok(Command::Export(None)));
        assert_eq!(
            parse("/export --html x.html"),
            Ok(Command::ExportHtml(Some("x.html".into())))
        );
        assert_eq!(parse("/export --html"), Ok(Command::ExportHtml(None)));
        assert_eq!(
            parse("/export my trace --html"),
            Ok(Command::ExportHtml(Some("my trace".into())))
        );
        assert_eq!(
            parse("/export trace.HTML"),
            Ok(Command::ExportHtml(Some("trace.HTML".into())))
        );
        assert_eq!(
            parse("/search foo bar"),
            Ok(Command::Search("foo bar".into()))
        );
        assert_eq!(
            parse("/index docs"),
            Ok(Command::Index(vec!["docs".into()]))
        );
        assert!(parse("/search").unwrap_err().contains("usage"));
        assert_eq!(
            parse("/open [docs/a.md:12]"),
            Ok(Command::Open("docs/a.md".into(), 12))
        );
        assert_eq!(parse("/open a.md:3-9"), Ok(Command::Open("a.md".into(), 3)));
        assert_eq!(parse("/open a.md"), Ok(Command::Open("a.md".into(), 1)));
        assert_eq!(parse("/compact"), Ok(Command::Compact));
        assert_eq!(parse("/research on"), Ok(Command::Research(true)));
        assert_eq!(parse("/research off"), Ok(Command::Research(false)));
        assert_eq!(parse("/research"), Err("usage: /research on|off".into()));
        assert!(parse("/qui").unwrap_err().contains("/quit"));
        assert!(parse("/zzz").unwrap_err().contains("/help"));
        assert_eq!(completions("/t").len(), 2);
        assert_eq!(completions("/").len(), COMMANDS.len());
    }
}
