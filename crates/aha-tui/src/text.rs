//! Width-aware wrapping of styled text into terminal lines (wide characters such as Hangul count
//! two columns; control characters never reach the screen).

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthChar;

/// Display width of one character (control characters are dropped by [`clean`], so 0 here).
pub fn char_width(c: char) -> usize {
    if c.is_control() {
        0
    } else {
        c.width().unwrap_or(0)
    }
}

/// Display width of a string.
pub fn str_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Text safe to put in a cell: tabs become spaces, other control characters (ESC above all,
/// which a model can emit) are dropped. Newlines are kept; callers split on them.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Cuts `s` to at most `width` columns, ending with `…` when something was cut.
pub fn truncate(s: &str, width: usize) -> String {
    if str_width(s) <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if w + cw + 1 > width {
            break;
        }
        w += cw;
        out.push(c);
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// Pads `s` with spaces to `width` columns (after truncating it to fit).
pub fn pad(s: &str, width: usize) -> String {
    let mut t = truncate(s, width);
    let w = str_width(&t);
    t.extend(std::iter::repeat_n(' ', width.saturating_sub(w)));
    t
}

/// A run of text with one style and no break opportunity inside (a word, a space run, or one
/// wide character, after which a line may break).
struct Piece {
    text: String,
    style: Style,
    width: usize,
    space: bool,
}

fn pieces(spans: &[Span<'_>]) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for sp in spans {
        for c in sp.content.chars() {
            if c.is_control() {
                continue;
            }
            let w = char_width(c);
            let space = c == ' ';
            let joinable = out.last().is_some_and(|p: &Piece| {
                p.style == sp.style && p.space == space && !(breaks_after(c) || last_breaks(p))
            });
            if joinable {
                if let Some(p) = out.last_mut() {
                    p.text.push(c);
                    p.width += w;
                }
            } else {
                out.push(Piece {
                    text: c.to_string(),
                    style: sp.style,
                    width: w,
                    space,
                });
            }
        }
    }
    out
}

fn last_breaks(p: &Piece) -> bool {
    p.text.chars().last().is_some_and(breaks_after)
}

/// Wide characters a line may break around (Han, Kana…). Hangul is written with spaces
/// between words, so it wraps at spaces like Latin text (long runs still break anywhere).
fn breaks_after(c: char) -> bool {
    let hangul = matches!(c as u32, 0xAC00..=0xD7A3 | 0x1100..=0x11FF | 0x3130..=0x318F);
    char_width(c) >= 2 && !hangul
}

/// Word-wraps one logical line of styled spans to `width` columns. `first` is put before the
/// first output line and `rest` before the others (list bullets, the reasoning rule…). Words
/// longer than a line are broken between characters; a line may also break around Han and Kana
/// characters, so Chinese and Japanese text without spaces wraps too. Always returns at least one line.
pub fn wrap(
    spans: &[Span<'_>],
    width: usize,
    first: &[Span<'static>],
    rest: &[Span<'static>],
) -> Vec<Line<'static>> {
    let pw_first: usize = first.iter().map(|s| str_width(&s.content)).sum();
    let pw_rest: usize = rest.iter().map(|s| str_width(&s.content)).sum();
    let mut lines: Vec<Line<'static>> = Vec::new();
    let mut cur: Vec<Span<'static>> = first.to_vec();
    let mut cur_w = 0usize;
    let mut avail = width.saturating_sub(pw_first).max(1);
    let mut pending_space: Option<Piece> = None;
    let new_line = |lines: &mut Vec<Line<'static>>, cur: &mut Vec<Span<'static>>| {
        lines.push(Line::from(std::mem::replace(cur, rest.to_vec())));
    };
    // Indentation at the start of the logical line is content (code, nested text); spaces at
    // a wrap point are not.
    let mut indent = true;
    for p in pieces(spans) {
        if p.space {
            if indent && p.width < avail {
                cur_w += p.width;
                push(&mut cur, p.text, p.style);
            } else if cur_w > 0 {
                pending_space = Some(p);
            }
            continue;
        }
        indent = false;
        let sp_w = pending_space.as_ref().map_or(0, |s| s.width);
        if cur_w + sp_w + p.width <= avail {
            if let Some(s) = pending_space.take() {
                push(&mut cur, s.text, s.style);
                cur_w += sp_w;
            }
            cur_w += p.width;
            push(&mut cur, p.text, p.style);
            continue;
        }
        pending_space = None;
        if p.width <= width.saturating_sub(pw_rest).max(1) && cur_w > 0 {
            new_line(&mut lines, &mut cur);
            avail = width.saturating_sub(pw_rest).max(1);
            cur_w = p.width;
            push(&mut cur, p.text, p.style);
            continue;
        }
        // Longer than a line: break between characters.
        for c in p.text.chars() {
            let w = char_width(c);
            if cur_w + w > avail && cur_w > 0 {
                new_line(&mut lines, &mut cur);
                avail = width.saturating_sub(pw_rest).max(1);
                cur_w = 0;
            }
            cur_w += w;
            push(&mut cur, c.to_string(), p.style);
        }
    }
    lines.push(Line::from(cur));
    lines
}

/// Appends text to the last span when the style matches (fewer spans, cheaper drawing).
fn push(cur: &mut Vec<Span<'static>>, text: String, style: Style) {
    if let Some(last) = cur.last_mut() {
        if last.style == style {
            last.content.to_mut().push_str(&text);
            return;
        }
    }
    cur.push(Span::styled(text, style));
}

/// Wraps plain text that may hold newlines, one style for all of it.
pub fn wrap_text(
    text: &str,
    style: Style,
    width: usize,
    first: &[Span<'static>],
    rest: &[Span<'static>],
) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for (i, l) in clean(text).split('\n').enumerate() {
        let f = if i == 0 { first } else { rest };
        out.extend(wrap(&[Span::styled(l.to_string(), style)], width, f, rest));
    }
    out
}

/// Display width of a line.
pub fn line_width(l: &Line<'_>) -> usize {
    l.spans.iter().map(|s| str_width(&s.content)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(ls: &[Line<'_>]) -> Vec<String> {
        ls.iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn wraps_words_and_breaks_long_ones() {
        let l = wrap(&[Span::raw("hello big world")], 9, &[], &[]);
        assert_eq!(texts(&l), ["hello big", "world"]);
        let l = wrap(&[Span::raw("abcdefghijkl")], 5, &[], &[]);
        assert_eq!(texts(&l), ["abcde", "fghij", "kl"]);
        let l = wrap(
            &[Span::raw("one two")],
            20,
            &[Span::raw("│ ")],
            &[Span::raw("│ ")],
        );
        assert_eq!(texts(&l), ["│ one two"]);
        let l = wrap(&[Span::raw("    indented code here")], 16, &[], &[]);
        assert_eq!(texts(&l), ["    indented", "code here"]);
    }

    #[test]
    fn korean_counts_two_columns_and_breaks_between_syllables() {
        let l = wrap(&[Span::raw("안녕하세요 세계")], 10, &[], &[]);
        assert_eq!(texts(&l), ["안녕하세요", "세계"]);
        let l = wrap(&[Span::raw("안녕 하세요")], 8, &[], &[]);
        assert_eq!(texts(&l), ["안녕", "하세요"], "Hangul words stay whole");
        let l = wrap(&[Span::raw("日本語の文章")], 6, &[], &[]);
        assert_eq!(texts(&l), ["日本語", "の文章"]);
        for line in wrap(&[Span::raw("가나다라마바사아자차카타파하")], 7, &[], &[]) {
            assert!(line_width(&line) <= 7);
        }
    }

    #[test]
    fn control_characters_never_reach_cells() {
        assert_eq!(clean("a\x1b[31mb\tc\r"), "a[31mb    c");
        let l = wrap(&[Span::raw("x\x07y")], 10, &[], &[]);
        assert_eq!(texts(&l), ["xy"]);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(pad("ab", 4), "ab  ");
    }
}
