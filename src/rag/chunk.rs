//! Splitting documents into chunks by their structure: prose by headings and paragraphs (the
//! heading trail kept with each chunk), code by blank-line-separated blocks. Every chunk keeps its
//! first and last line (1-based, inclusive); a chunk cut for size repeats the previous chunk's
//! last short block, so an answer that straddles the cut is whole in one of them.

/// What a chunk is aimed at, in characters.
pub const TARGET: usize = 1200;
/// The longest block carried over into the next chunk.
const OVERLAP_MAX: usize = 300;

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Headings above the chunk, outermost first, joined by " › " (for code: its definitions).
    pub heading: String,
    pub text: String,
    pub start_line: usize,
    pub end_line: usize,
}

/// How a file's text is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Markdown,
    Text,
    Code,
}

/// A run of non-blank lines.
struct Block {
    start: usize,
    lines: Vec<String>,
}

impl Block {
    fn len(&self) -> usize {
        self.lines.iter().map(|l| l.len() + 1).sum()
    }
}

/// Splits `text` into chunks.
pub fn chunk(text: &str, kind: Kind) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut trail: Vec<(usize, String)> = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut cur: Option<Block> = None;
    let mut in_fence = false;
    let flush_blocks =
        |blocks: &mut Vec<Block>, trail: &[(usize, String)], out: &mut Vec<Chunk>| {
            let heading = trail
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join(" › ");
            pack(std::mem::take(blocks), &heading, kind, out);
        };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim_start();
        if kind == Kind::Markdown && (t.starts_with("```") || t.starts_with("~~~")) {
            in_fence = !in_fence;
        }
        let heading = (kind == Kind::Markdown && !in_fence)
            .then(|| md_heading(line))
            .flatten();
        if let Some((level, title)) = heading {
            if let Some(b) = cur.take() {
                blocks.push(b);
            }
            flush_blocks(&mut blocks, &trail, &mut out);
            trail.retain(|(l, _)| *l < level);
            trail.push((level, title));
            cur = Some(Block {
                start: n,
                lines: vec![line.to_string()],
            });
            // A heading is its own block: the paragraph under it starts a new one.
            blocks.push(cur.take().unwrap());
            continue;
        }
        if line.trim().is_empty() && !in_fence {
            if let Some(b) = cur.take() {
                blocks.push(b);
            }
            continue;
        }
        match &mut cur {
            Some(b) => b.lines.push(line.to_string()),
            None => {
                cur = Some(Block {
                    start: n,
                    lines: vec![line.to_string()],
                })
            }
        }
    }
    if let Some(b) = cur.take() {
        blocks.push(b);
    }
    flush_blocks(&mut blocks, &trail, &mut out);
    out
}

/// `## Title` → (2, "Title").
fn md_heading(line: &str) -> Option<(usize, String)> {
    let t = line.trim_end();
    let level = t.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !rest.starts_with(' ') && !rest.is_empty() {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then(|| (level, title.to_string()))
}

/// A code line that opens a top-level item.
fn definition(line: &str) -> bool {
    const OPENERS: [&str; 18] = [
        "fn ",
        "pub ",
        "def ",
        "class ",
        "struct ",
        "impl ",
        "enum ",
        "trait ",
        "mod ",
        "function ",
        "export ",
        "interface ",
        "type ",
        "const ",
        "async ",
        "func ",
        "package ",
        "module ",
    ];
    !line.starts_with(char::is_whitespace) && OPENERS.iter().any(|o| line.starts_with(o))
}

/// Packs blocks into chunks of about TARGET characters.
fn pack(blocks: Vec<Block>, heading: &str, kind: Kind, out: &mut Vec<Chunk>) {
    // Split blocks too long to fit into line groups.
    let mut pieces: Vec<Block> = Vec::new();
    for b in blocks {
        if b.len() <= TARGET * 2 {
            pieces.push(b);
            continue;
        }
        let mut p = Block {
            start: b.start,
            lines: Vec::new(),
        };
        let mut size = 0;
        for (k, l) in b.lines.into_iter().enumerate() {
            if size + l.len() > TARGET && !p.lines.is_empty() {
                let next = b.start + k;
                pieces.push(std::mem::replace(
                    &mut p,
                    Block {
                        start: next,
                        lines: Vec::new(),
                    },
                ));
                size = 0;
            }
            size += l.len() + 1;
            p.lines.push(l);
        }
        if !p.lines.is_empty() {
            pieces.push(p);
        }
    }
    let mut group: Vec<&Block> = Vec::new();
    let mut size = 0;
    let emit = |group: &[&Block], out: &mut Vec<Chunk>| {
        if group.is_empty() {
            return;
        }
        let mut text = String::new();
        let mut line = group[0].start;
        for b in group {
            // Keep the line numbering: blank lines between blocks come back.
            while line < b.start {
                if !text.is_empty() {
                    text.push('\n');
                }
                line += 1;
            }
            for l in &b.lines {
                text.push_str(l);
                text.push('\n');
            }
            line = b.start + b.lines.len();
        }
        let last = group.last().unwrap();
        let heading = if kind == Kind::Code {
            group
                .iter()
                .flat_map(|b| b.lines.iter())
                .filter(|l| definition(l))
                .map(|l| l.trim().trim_end_matches('{').trim())
                .take(4)
                .collect::<Vec<_>>()
                .join(" › ")
        } else {
            heading.to_string()
        };
        out.push(Chunk {
            heading,
            text: text.trim_end().to_string(),
            start_line: group[0].start,
            end_line: last.start + last.lines.len() - 1,
        });
    };
    for (k, b) in pieces.iter().enumerate() {
        if size + b.len() > TARGET && !group.is_empty() {
            emit(&group, out);
            let prev = pieces[k - 1].len();
            // Carry the last short block over (not a lone heading line).
            let carry = prev <= OVERLAP_MAX && group.len() > 1;
            group.clear();
            size = 0;
            if carry {
                group.push(&pieces[k - 1]);
                size = prev;
            }
        }
        group.push(b);
        size += b.len();
    }
    emit(&group, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_chunks_follow_headings_and_keep_the_trail_and_lines() {
        let md = "# Guide\n\nIntro line.\n\n## Install\n\nRun it.\nTwice.\n\n### Linux\n\napt.\n\n## Use\n\nType.\n";
        let c = chunk(md, Kind::Markdown);
        let got: Vec<_> = c
            .iter()
            .map(|c| (c.heading.as_str(), c.start_line, c.end_line))
            .collect();
        assert_eq!(
            got,
            [
                ("Guide", 1, 3),
                ("Guide › Install", 5, 8),
                ("Guide › Install › Linux", 10, 12),
                ("Guide › Use", 14, 16)
            ]
        );
        assert_eq!(c[1].text, "## Install\n\nRun it.\nTwice.");
        // The text's lines are the file's lines.
        let lines: Vec<&str> = md.lines().collect();
        for ch in &c {
            assert_eq!(ch.text, lines[ch.start_line - 1..ch.end_line].join("\n"));
        }
    }

    #[test]
    fn a_heading_inside_a_code_fence_is_not_a_heading() {
        let md = "# Top\n\n```sh\n# not a heading\necho\n```\n";
        let c = chunk(md, Kind::Markdown);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].heading, "Top");
    }

    #[test]
    fn long_prose_is_cut_near_the_target_with_overlap_and_exact_lines() {
        let mut text = String::new();
        for i in 0..60 {
            text.push_str(&format!(
                "Paragraph {i} says something about topic {i}.\n\n"
            ));
        }
        let c = chunk(&text, Kind::Text);
        assert!(c.len() > 1);
        let lines: Vec<&str> = text.lines().collect();
        for w in c.windows(2) {
            assert!(w[1].start_line <= w[0].end_line, "overlap: {w:?}");
        }
        for ch in &c {
            assert!(
                ch.text.len() <= TARGET + OVERLAP_MAX + 100,
                "{}",
                ch.text.len()
            );
            assert_eq!(ch.text, lines[ch.start_line - 1..ch.end_line].join("\n"));
        }
        assert_eq!(c.last().unwrap().end_line, 119);
    }

    #[test]
    fn code_chunks_name_their_definitions() {
        let code = "use x;\n\nfn alpha() {\n    1\n}\n\npub struct Beta {\n    a: u8,\n}\n";
        let c = chunk(code, Kind::Code);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].heading, "fn alpha() › pub struct Beta");
        assert_eq!((c[0].start_line, c[0].end_line), (1, 9));
    }

    #[test]
    fn one_huge_block_is_split_by_lines() {
        let text: String = (0..400)
            .map(|i| format!("line {i} of a long block\n"))
            .collect();
        let c = chunk(&text, Kind::Code);
        assert!(c.len() >= 4, "{}", c.len());
        assert_eq!(c[0].start_line, 1);
        assert_eq!(c.last().unwrap().end_line, 400);
    }
}
