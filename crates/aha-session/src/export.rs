//! `/export`: a conversation as Markdown, each reply's reasoning in a collapsible `<details>`
//! block and other versions of a branched turn after the active one.

use super::transcript::{EntryKind, Part, Reply, ToolState, Transcript};

/// The transcript as a Markdown document.
pub fn markdown(t: &Transcript, title: &str, model: &str) -> String {
    let mut out = format!("# {title}\n\nmodel: `{model}`\n\n");
    for e in &t.entries {
        match &e.kind {
            EntryKind::User(text) => {
                out.push_str("## You\n\n");
                out.push_str(text.trim_end());
                out.push_str("\n\n");
            }
            EntryKind::Reply { versions, active } => {
                out.push_str("## aha\n\n");
                if let Some(r) = versions.get(*active) {
                    reply(&mut out, r);
                }
                for (i, r) in versions.iter().enumerate() {
                    if i == *active {
                        continue;
                    }
                    out.push_str(&format!(
                        "<details><summary>Version {} of {}{}</summary>\n\n",
                        i + 1,
                        versions.len(),
                        origin(r)
                    ));
                    reply(&mut out, r);
                    out.push_str("</details>\n\n");
                }
            }
            EntryKind::Notice(n) => out.push_str(&format!("> {}\n\n", n.trim())),
            EntryKind::Compacted { line, summary } => {
                out.push_str(&format!("---\n\n> {line}\n"));
                for l in summary.lines().filter(|l| !l.trim().is_empty()) {
                    out.push_str(&format!("> {}\n", l.trim_end()));
                }
                out.push_str("\n---\n\n");
            }
            EntryKind::Error(n) => out.push_str(&format!("> **error:** {}\n\n", n.trim())),
        }
    }
    out
}

fn origin(r: &Reply) -> String {
    match &r.branch {
        Some(b) if b.inserted.trim().is_empty() => format!(" (branch of version {})", b.parent + 1),
        Some(b) => format!(
            " (branch of version {}, inserted “{}”)",
            b.parent + 1,
            html_escape(b.inserted.trim())
        ),
        None => String::new(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn reply(out: &mut String, r: &Reply) {
    if r.branch.is_some() {
        out.push_str(&format!(
            "*{}*\n\n",
            origin(r).trim().trim_matches(['(', ')'])
        ));
    }
    if !r.reasoning.trim().is_empty() {
        let secs = r.thought_secs(r.ended_ms.unwrap_or(r.started_ms));
        out.push_str(&format!(
            "<details><summary>Reasoning ({} tokens, {secs:.1} s)</summary>\n\n",
            r.tokens.len()
        ));
        // Escaped so that tags in the reasoning cannot close the block.
        out.push_str(&html_escape(r.reasoning.trim()));
        out.push_str("\n\n</details>\n\n");
    }
    for p in &r.parts {
        match p {
            Part::Answer(a) => {
                out.push_str(a.trim_end());
                out.push_str("\n\n");
            }
            Part::Tool(c) => {
                let status = c.state.outcome();
                out.push_str(&format!(
                    "**tool** `{}` `{}` — {status}\n\n",
                    c.name, c.arguments
                ));
                if let ToolState::Done { output, .. } = &c.state {
                    if !output.trim().is_empty() {
                        out.push_str(&format!("```\n{}\n```\n\n", output.trim_end()));
                    }
                }
            }
        }
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("> **error:** {e}\n\n"));
    }
    if matches!(r.state, super::transcript::ReplyState::Cancelled) {
        out.push_str("*(stopped)*\n\n");
    }
}
