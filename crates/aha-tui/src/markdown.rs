//! Renders an answer's Markdown into terminal lines of a given width: headings, emphasis, lists,
//! quotes, code blocks with syntax highlighting, and tables as aligned columns.

use super::highlight::highlight;
use super::text::{clean, str_width, truncate, wrap};
use super::theme::Theme;
use pulldown_cmark::{Alignment, CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

struct Code {
    lang: String,
    text: String,
    closed: bool,
}

#[derive(Default)]
struct Table {
    aligns: Vec<Alignment>,
    rows: Vec<Vec<Vec<Span<'static>>>>,
    header_rows: usize,
}

struct R<'a> {
    th: &'a Theme,
    width: usize,
    out: Vec<Line<'static>>,
    inline: Vec<Span<'static>>,
    styles: Vec<Style>,
    /// Open lists: the next number of an ordered list, `None` for bullets.
    lists: Vec<Option<u64>>,
    item_first: bool,
    quote: usize,
    blank_pending: bool,
    code: Option<Code>,
    table: Option<Table>,
    streaming: bool,
}

/// Renders `md` for `width` columns. While `streaming`, a code block whose closing fence has not
/// arrived is shown plain (it is highlighted once it is complete).
pub fn render(md: &str, width: usize, th: &Theme, streaming: bool) -> Vec<Line<'static>> {
    let width = width.max(8);
    let md = clean(md);
    let mut r = R {
        th,
        width,
        out: Vec::new(),
        inline: Vec::new(),
        styles: vec![Style::new()],
        lists: Vec::new(),
        item_first: false,
        quote: 0,
        blank_pending: false,
        code: None,
        table: None,
        streaming,
    };
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    for (ev, range) in Parser::new_ext(&md, opts).into_offset_iter() {
        r.event(ev, &md[range]);
    }
    r.flush();
    if let Some(c) = r.code.take() {
        r.code_block(c);
    }
    while r
        .out
        .last()
        .is_some_and(|l| l.spans.iter().all(|s| s.content.trim().is_empty()))
    {
        r.out.pop();
    }
    r.out
}

impl R<'_> {
    fn style(&self) -> Style {
        self.styles.last().copied().unwrap_or_default()
    }

    fn push_style(&mut self, f: impl Fn(Style) -> Style) {
        let s = f(self.style());
        self.styles.push(s);
    }

    fn pop_style(&mut self) {
        if self.styles.len() > 1 {
            self.styles.pop();
        }
    }

    /// Starts a block: a blank line between top-level blocks.
    fn block(&mut self) {
        if self.blank_pending && !self.out.is_empty() {
            // Blank lines keep the quote bars, not list indentation.
            let bars: Vec<Span<'static>> = (0..self.quote)
                .map(|_| Span::styled("▌ ", self.th.dim()))
                .collect();
            self.out.push(Line::from(bars));
        }
        self.blank_pending = false;
    }

    fn prefixes(&self) -> (Vec<Span<'static>>, Vec<Span<'static>>) {
        let mut base = Vec::new();
        for _ in 0..self.quote {
            base.push(Span::styled("▌ ", self.th.dim()));
        }
        let mut first = base.clone();
        let mut rest = base;
        if let Some((last, outer)) = self.lists.split_last() {
            let indent = "  ".repeat(outer.len());
            let bullet = match last {
                Some(n) => format!("{}. ", n.saturating_sub(1)),
                None => "• ".to_string(),
            };
            let blank = " ".repeat(str_width(&bullet));
            if self.item_first {
                first.push(Span::raw(indent.clone()));
                first.push(Span::styled(bullet, self.th.accent()));
            } else {
                first.push(Span::raw(format!("{indent}{blank}")));
            }
            rest.push(Span::raw(format!("{indent}{blank}")));
        }
        (first, rest)
    }

    fn flush(&mut self) {
        if self.inline.is_empty() {
            return;
        }
        let (first, rest) = self.prefixes();
        let spans = std::mem::take(&mut self.inline);
        self.out.extend(wrap(&spans, self.width, &first, &rest));
        self.item_first = false;
    }

    fn text(&mut self, t: &str) {
        if let Some(c) = &mut self.code {
            c.text.push_str(t);
            return;
        }
        let s = self.style();
        self.inline.push(Span::styled(t.to_string(), s));
    }

    fn event(&mut self, ev: Event<'_>, src: &str) {
        match ev {
            Event::Start(tag) => self.start(tag, src),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => self.text(&t),
            Event::Code(t) => {
                let s = self.th.code();
                self.inline.push(Span::styled(t.to_string(), s));
            }
            Event::SoftBreak => self.text(" "),
            Event::HardBreak => self.flush(),
            Event::Rule => {
                self.flush();
                self.block();
                self.out
                    .push(Line::styled("─".repeat(self.width.min(40)), self.th.dim()));
                self.blank_pending = true;
            }
            Event::Html(t) | Event::InlineHtml(t) => {
                let s = self.th.dim();
                for (i, l) in t.lines().enumerate() {
                    if i > 0 {
                        self.flush();
                    }
                    self.inline.push(Span::styled(l.to_string(), s));
                }
            }
            Event::TaskListMarker(done) => self.text(if done { "[x] " } else { "[ ] " }),
            Event::FootnoteReference(t) => self.text(&format!("[{t}]")),
            Event::InlineMath(t) | Event::DisplayMath(t) => self.text(&t),
        }
    }

    fn start(&mut self, tag: Tag<'_>, src: &str) {
        match tag {
            Tag::Paragraph if self.lists.is_empty() => self.block(),
            Tag::Heading { level, .. } => {
                self.flush();
                self.block();
                let n = match level {
                    HeadingLevel::H1 => 1,
                    HeadingLevel::H2 => 2,
                    HeadingLevel::H3 => 3,
                    HeadingLevel::H4 => 4,
                    HeadingLevel::H5 => 5,
                    HeadingLevel::H6 => 6,
                };
                let th = self.th;
                self.push_style(|_| th.accent().add_modifier(Modifier::BOLD));
                self.inline
                    .push(Span::styled(format!("{} ", "#".repeat(n)), self.th.dim()));
            }
            Tag::BlockQuote(_) => {
                self.flush();
                self.block();
                self.quote += 1;
            }
            Tag::CodeBlock(kind) => {
                self.flush();
                if self.lists.is_empty() {
                    self.block();
                }
                let (lang, closed) = match kind {
                    CodeBlockKind::Fenced(info) => {
                        let fence: String = src
                            .trim_start()
                            .chars()
                            .take_while(|c| *c == '`' || *c == '~')
                            .collect();
                        let body = src.trim_end();
                        let closed = !fence.is_empty()
                            && body.len() > fence.len()
                            && body
                                .lines()
                                .last()
                                .is_some_and(|l| l.trim().starts_with(&fence))
                            && body.lines().count() > 1;
                        (
                            info.split_whitespace().next().unwrap_or("").to_string(),
                            closed,
                        )
                    }
                    CodeBlockKind::Indented => (String::new(), true),
                };
                self.code = Some(Code {
                    lang,
                    text: String::new(),
                    closed,
                });
            }
            Tag::List(start) => {
                self.flush();
                if self.lists.is_empty() {
                    self.block();
                }
                self.lists.push(start);
            }
            Tag::Item => {
                self.flush();
                self.item_first = true;
                if let Some(Some(n)) = self.lists.last_mut() {
                    *n += 1;
                }
            }
            Tag::Table(aligns) => {
                self.flush();
                self.block();
                self.table = Some(Table {
                    aligns,
                    ..Table::default()
                });
            }
            Tag::TableHead => {
                if let Some(t) = &mut self.table {
                    t.rows.push(Vec::new());
                    t.header_rows = 1;
                }
            }
            Tag::TableRow => {
                if let Some(t) = &mut self.table {
                    t.rows.push(Vec::new());
                }
            }
            Tag::TableCell => self.inline.clear(),
            Tag::Emphasis => self.push_style(|s| s.add_modifier(Modifier::ITALIC)),
            Tag::Strong => self.push_style(|s| s.add_modifier(Modifier::BOLD)),
            Tag::Strikethrough => self.push_style(|s| s.add_modifier(Modifier::CROSSED_OUT)),
            Tag::Link { .. } => self.push_style(|s| s.add_modifier(Modifier::UNDERLINED)),
            Tag::Image { .. } => self.push_style(|s| s.add_modifier(Modifier::ITALIC)),
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => {
                self.flush();
                if self.lists.is_empty() {
                    self.blank_pending = true;
                }
            }
            TagEnd::Heading(_) => {
                self.flush();
                self.pop_style();
                self.blank_pending = true;
            }
            TagEnd::BlockQuote(_) => {
                self.flush();
                self.quote = self.quote.saturating_sub(1);
                self.blank_pending = true;
            }
            TagEnd::CodeBlock => {
                if let Some(c) = self.code.take() {
                    self.code_block(c);
                }
                if self.lists.is_empty() {
                    self.blank_pending = true;
                }
            }
            TagEnd::List(_) => {
                self.flush();
                self.lists.pop();
                if self.lists.is_empty() {
                    self.blank_pending = true;
                }
            }
            TagEnd::Item => self.flush(),
            TagEnd::TableCell => {
                let cell = std::mem::take(&mut self.inline);
                if let Some(row) = self.table.as_mut().and_then(|t| t.rows.last_mut()) {
                    row.push(cell);
                }
            }
            TagEnd::Table => {
                if let Some(t) = self.table.take() {
                    self.table_lines(t);
                }
                self.blank_pending = true;
            }
            TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Strikethrough
            | TagEnd::Link
            | TagEnd::Image => self.pop_style(),
            _ => {}
        }
    }

    fn code_block(&mut self, c: Code) {
        let (_, rest) = self.prefixes();
        let dim = self.th.dim();
        let mut head = rest.clone();
        head.push(Span::styled(
            format!("╭─ {}", if c.lang.is_empty() { "code" } else { &c.lang }),
            dim,
        ));
        self.out.push(Line::from(head));
        let mut bar = rest.clone();
        bar.push(Span::styled("│ ", dim));
        let code = c.text.strip_suffix('\n').unwrap_or(&c.text);
        let hl = if c.closed || !self.streaming {
            highlight(code, &c.lang)
        } else {
            None
        };
        match hl {
            Some(lines) => {
                for l in lines.iter() {
                    let spans: Vec<Span<'static>> =
                        l.iter().map(|(s, t)| Span::styled(t.clone(), *s)).collect();
                    self.out.extend(wrap(&spans, self.width, &bar, &bar));
                }
            }
            None => {
                for l in code.split('\n') {
                    let spans = [Span::styled(l.to_string(), self.th.code())];
                    self.out.extend(wrap(&spans, self.width, &bar, &bar));
                }
            }
        }
        let mut foot = rest;
        foot.push(Span::styled("╰─", dim));
        self.out.push(Line::from(foot));
    }

    fn table_lines(&mut self, t: Table) {
        let ncol = t.rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if ncol == 0 {
            return;
        }
        let (_, rest) = self.prefixes();
        let avail = self
            .width
            .saturating_sub(rest.iter().map(|s| str_width(&s.content)).sum());
        let cell_text = |c: &Vec<Span<'static>>| -> String {
            c.iter().map(|s| s.content.as_ref()).collect::<String>()
        };
        let mut widths = vec![1usize; ncol];
        for r in &t.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(str_width(cell_text(c).trim()));
            }
        }
        let sep = 3;
        // Shrink the widest column until the table fits.
        while widths.iter().sum::<usize>() + sep * (ncol - 1) > avail {
            let Some((i, w)) = widths.iter().copied().enumerate().max_by_key(|x| x.1) else {
                break;
            };
            if w <= 3 {
                break;
            }
            widths[i] = w - 1;
        }
        let dim = self.th.dim();
        for (ri, r) in t.rows.iter().enumerate() {
            let mut spans = rest.clone();
            for (i, w) in widths.iter().copied().enumerate() {
                if i > 0 {
                    spans.push(Span::styled(" │ ", dim));
                }
                let cell = r.get(i);
                let text = cell.map(&cell_text).unwrap_or_default();
                let text = truncate(text.trim(), w);
                let tw = str_width(&text);
                let gap = w.saturating_sub(tw);
                let (l, rgt) = match t.aligns.get(i) {
                    Some(Alignment::Right) => (gap, 0),
                    Some(Alignment::Center) => (gap / 2, gap - gap / 2),
                    _ => (0, gap),
                };
                let mut style = cell
                    .and_then(|c| c.first())
                    .map(|s| s.style)
                    .unwrap_or_default();
                if ri < t.header_rows {
                    style = style.add_modifier(Modifier::BOLD);
                }
                spans.push(Span::raw(" ".repeat(l)));
                spans.push(Span::styled(text, style));
                spans.push(Span::raw(" ".repeat(rgt)));
            }
            self.out.push(Line::from(spans));
            if ri + 1 == t.header_rows {
                let mut line = rest.clone();
                let s: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
                line.push(Span::styled(s.join("─┼─"), dim));
                self.out.push(Line::from(line));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(md: &str, w: usize) -> Vec<String> {
        render(md, w, &Theme::default(), false)
            .iter()
            .map(|l| {
                l.spans
                    .iter()
                    .map(|s| s.content.as_ref())
                    .collect::<String>()
            })
            .map(|s| s.trim_end().to_string())
            .collect()
    }

    #[test]
    fn headings_lists_and_paragraphs() {
        let out = plain(
            "# Title\n\nSome *text* here.\n\n- one\n- two\n  1. a\n  2. b\n\nEnd.",
            40,
        );
        assert_eq!(
            out,
            [
                "# Title",
                "",
                "Some text here.",
                "",
                "• one",
                "• two",
                "  1. a",
                "  2. b",
                "",
                "End."
            ]
        );
    }

    #[test]
    fn tables_align_columns() {
        let out = plain(
            "| a | long header |\n|---|--:|\n| xyz | 1 |\n| k | 22 |\n",
            40,
        );
        assert_eq!(
            out,
            [
                "a   │ long header",
                "────┼────────────",
                "xyz │           1",
                "k   │          22"
            ]
        );
        let narrow = plain("| aaaaaaaaaa | bbbbbbbbbb |\n|---|---|\n| 1 | 2 |\n", 16);
        assert!(narrow.iter().all(|l| str_width(l) <= 16), "{narrow:?}");
    }

    #[test]
    fn code_blocks_are_framed_and_unclosed_ones_stay_plain_while_streaming() {
        let out = plain("```rust\nfn main() {}\n```\n", 30);
        assert_eq!(out, ["╭─ rust", "│ fn main() {}", "╰─"]);
        let th = Theme::default();
        let live = render("```rust\nfn main() {", 30, &th, true);
        assert_eq!(live[1].spans[1].style, th.code(), "not highlighted yet");
        let done = render("```rust\nfn main() {}\n```", 30, &th, true);
        assert_ne!(done[1].spans[1].style, th.code(), "highlighted once closed");
    }
}
