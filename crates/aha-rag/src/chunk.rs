//! Splitting documents into chunks by their structure: prose by headings and paragraphs (the
//! heading trail kept with each chunk), code by blank-line-separated blocks. Every chunk keeps its
//! first and last line (1-based, inclusive); a chunk cut for size repeats the previous chunk's
//! last short block, so an answer that straddles the cut is whole in one of them. A line longer
//! than [`LINE_MAX`] is cut into pieces (each keeps that line's number), so no chunk grows past a
//! few kilobytes whatever the file's line structure: a 20 MB file of one line makes thousands of
//! small chunks, not one that the index and every search must hold whole.

/// What a chunk is aimed at, in characters.
pub const TARGET: usize = 1200;
/// The longest block carried over into the next chunk.
const OVERLAP_MAX: usize = 300;
/// Lines longer than this many bytes are cut into pieces of at most this size.
pub const LINE_MAX: usize = TARGET;
/// Headings (and code definitions named as headings) are shortened to this many bytes: they are
/// repeated on every chunk below them.
const HEADING_MAX: usize = 200;

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
    /// Its first line is the rest of the previous block's last line (a long line cut in pieces).
    cont: bool,
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
                cont: false,
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
                    cont: false,
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
    (!title.is_empty()).then(|| (level, clip(title, HEADING_MAX).to_string()))
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

/// The longest start of `s` of at most `max` bytes that ends on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cuts a long line into pieces of at most `max` bytes on character boundaries, at a space in
/// the last quarter of a piece where there is one (so words stay whole for the index).
fn split_line(line: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(line.len() / max.max(1) + 1);
    let mut rest = line;
    while rest.len() > max {
        let head = clip(rest, max);
        let mut from = head.len() * 3 / 4;
        while !head.is_char_boundary(from) {
            from += 1;
        }
        let at = match head[from..].rfind(' ') {
            Some(i) => from + i + 1,
            // One character longer than `max` (max is at least 4 in practice): take it whole.
            None if head.is_empty() => rest.chars().next().map_or(rest.len(), char::len_utf8),
            None => head.len(),
        };
        out.push(&rest[..at]);
        rest = &rest[at..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Packs blocks into chunks of about TARGET characters.
fn pack(blocks: Vec<Block>, heading: &str, kind: Kind, out: &mut Vec<Chunk>) {
    // Split blocks too long to fit into line groups, and lines too long to fit into pieces.
    let mut pieces: Vec<Block> = Vec::new();
    for b in blocks {
        if b.len() <= TARGET * 2 {
            pieces.push(b);
            continue;
        }
        let mut p = Block {
            start: b.start,
            lines: Vec::new(),
            cont: b.cont,
        };
        let mut size = 0;
        for (k, l) in b.lines.into_iter().enumerate() {
            let n = b.start + k;
            if l.len() > LINE_MAX {
                if !p.lines.is_empty() {
                    pieces.push(std::mem::replace(
                        &mut p,
                        Block {
                            start: n + 1,
                            lines: Vec::new(),
                            cont: false,
                        },
                    ));
                    size = 0;
                }
                for (j, piece) in split_line(&l, LINE_MAX).into_iter().enumerate() {
                    pieces.push(Block {
                        start: n,
                        lines: vec![piece.to_string()],
                        cont: j > 0 || (k == 0 && b.cont),
                    });
                }
                p.start = n + 1;
                p.cont = false;
                continue;
            }
            if size + l.len() > TARGET && !p.lines.is_empty() {
                pieces.push(std::mem::replace(
                    &mut p,
                    Block {
                        start: n,
                        lines: Vec::new(),
                        cont: false,
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
        for (i, b) in group.iter().enumerate() {
            if b.cont && i > 0 {
                // The rest of the line the previous piece began: no line break between them.
                text.pop();
            }
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
                .map(|l| clip(l.trim().trim_end_matches('{').trim(), HEADING_MAX))
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
    fn a_long_line_is_cut_into_pieces_that_keep_its_number_and_its_text() {
        // Numbered words, so that each piece is found at one place in the line.
        let long: String = (0..40_000).map(|i| format!("w{i} 한글 ")).collect();
        let text = format!("# Title\n\nintro\n{long}\noutro\n");
        let lines: Vec<&str> = text.lines().collect();
        for kind in [Kind::Markdown, Kind::Text, Kind::Code] {
            let c = chunk(&text, kind);
            assert!(
                c.len() > long.len() / (2 * TARGET),
                "{kind:?}: {} chunks",
                c.len()
            );
            let mut covered = vec![false; long.len()];
            for ch in &c {
                assert!(
                    ch.text.len() <= 2 * TARGET + OVERLAP_MAX,
                    "{}",
                    ch.text.len()
                );
                // A chunk is a stretch of the file: its lines, maybe starting or ending inside one.
                let span = lines[ch.start_line - 1..ch.end_line].join("\n");
                assert!(
                    span.contains(&ch.text),
                    "{kind:?}: lines {}-{}",
                    ch.start_line,
                    ch.end_line
                );
                if !(ch.start_line..=ch.end_line).contains(&4) {
                    continue;
                }
                // Its part of line 4.
                let mut part = ch.text.as_str();
                for _ in ch.start_line..4 {
                    part = part.split_once('\n').map_or("", |(_, r)| r);
                }
                let part = part.split('\n').next().unwrap_or("");
                let at = long.find(part).expect("a piece of the line");
                covered[at..at + part.len()]
                    .iter_mut()
                    .for_each(|b| *b = true);
            }
            // Only spaces may be left out (a chunk's text is trimmed at its end).
            let gaps = (0..long.len())
                .filter(|&i| !covered[i] && long.as_bytes()[i] != b' ')
                .count();
            assert_eq!(gaps, 0, "{kind:?}: bytes of the line in no chunk");
            assert_eq!(c.last().unwrap().end_line, 5);
        }
    }

    #[test]
    fn split_line_pieces_are_bounded_and_join_to_the_line() {
        for line in ["x".repeat(5000), "é".repeat(3000), "ab cd ".repeat(900)] {
            let p = split_line(&line, 1000);
            assert!(p.iter().all(|s| !s.is_empty() && s.len() <= 1000));
            assert_eq!(p.concat(), line);
        }
    }

    #[test]
    fn a_huge_heading_is_shortened_on_every_chunk_under_it() {
        let text = format!("# {}\n\n{}", "T".repeat(100_000), "para.\n\n".repeat(2000));
        let c = chunk(&text, Kind::Markdown);
        assert!(
            c.iter().all(|ch| ch.heading.len() <= HEADING_MAX),
            "{}",
            c[1].heading.len()
        );
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
