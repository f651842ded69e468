//! The message composer: multi-line text with a cursor, history, paste, and layout that places
//! wide characters (Hangul, Han…) and the cursor on the right columns.

use super::text::char_width;

/// Editable text with a cursor (a byte offset on a character boundary).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Composer {
    text: String,
    cursor: usize,
}

/// Text a paste may carry, made safe: invalid UTF-8 becomes U+FFFD, CRLF and CR become LF,
/// tabs become four spaces, other control characters are dropped.
pub fn sanitize_paste(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    super::text::clean(&s.replace("\r\n", "\n").replace('\r', "\n"))
}

impl Composer {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Replaces the text, cursor at the end.
    pub fn set(&mut self, text: &str) {
        self.text = text.to_string();
        self.cursor = self.text.len();
    }

    /// Takes the text out, leaving the composer empty.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    pub fn insert(&mut self, c: char) {
        if c.is_control() && c != '\n' {
            return;
        }
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    pub fn insert_str(&mut self, s: &str) {
        let s = sanitize_paste(s.as_bytes());
        self.text.insert_str(self.cursor, &s);
        self.cursor += s.len();
    }

    fn prev(&self) -> Option<usize> {
        self.text[..self.cursor]
            .char_indices()
            .last()
            .map(|(i, _)| i)
    }

    fn next(&self) -> Option<usize> {
        self.text[self.cursor..]
            .chars()
            .next()
            .map(|c| self.cursor + c.len_utf8())
    }

    pub fn backspace(&mut self) {
        if let Some(p) = self.prev() {
            self.text.replace_range(p..self.cursor, "");
            self.cursor = p;
        }
    }

    pub fn delete(&mut self) {
        if let Some(n) = self.next() {
            self.text.replace_range(self.cursor..n, "");
        }
    }

    pub fn left(&mut self) {
        if let Some(p) = self.prev() {
            self.cursor = p;
        }
    }

    pub fn right(&mut self) {
        if let Some(n) = self.next() {
            self.cursor = n;
        }
    }

    /// Start of the current line.
    pub fn home(&mut self) {
        self.cursor = self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1);
    }

    /// End of the current line.
    pub fn end(&mut self) {
        self.cursor = self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i);
    }

    /// Deletes the word before the cursor.
    pub fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end();
        let start = trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Whether the cursor is on the first / last line of the text.
    pub fn on_first_line(&self) -> bool {
        !self.text[..self.cursor].contains('\n')
    }
    pub fn on_last_line(&self) -> bool {
        !self.text[self.cursor..].contains('\n')
    }

    /// Moves the cursor one line up (`-1`) or down (`1`), keeping the column where it can.
    pub fn vertical(&mut self, dir: i32) {
        let line_start = self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..self.cursor].chars().count();
        let target_start = if dir < 0 {
            if line_start == 0 {
                return;
            }
            self.text[..line_start - 1].rfind('\n').map_or(0, |i| i + 1)
        } else {
            match self.text[self.cursor..].find('\n') {
                Some(i) => self.cursor + i + 1,
                None => return,
            }
        };
        let line_end = self.text[target_start..]
            .find('\n')
            .map_or(self.text.len(), |i| target_start + i);
        let mut pos = target_start;
        for (n, (i, c)) in self.text[target_start..line_end].char_indices().enumerate() {
            if n == col {
                pos = target_start + i;
                break;
            }
            pos = target_start + i + c.len_utf8();
        }
        self.cursor = pos;
    }

    /// The text laid out in `width` columns (breaking between characters, as terminals do), and
    /// the cursor's (row, column).
    pub fn layout(&self, width: usize) -> (Vec<String>, (usize, usize)) {
        let width = width.max(2);
        let mut rows = vec![String::new()];
        let mut col = 0usize;
        let mut cur = (0, 0);
        for (i, c) in self.text.char_indices() {
            if i == self.cursor {
                cur = (rows.len() - 1, col);
            }
            if c == '\n' {
                rows.push(String::new());
                col = 0;
                continue;
            }
            let w = char_width(c);
            if col + w > width {
                rows.push(String::new());
                col = 0;
                if i == self.cursor {
                    cur = (rows.len() - 1, 0);
                }
            }
            if let Some(r) = rows.last_mut() {
                r.push(c);
            }
            col += w;
        }
        if self.cursor >= self.text.len() {
            if col >= width {
                rows.push(String::new());
                col = 0;
            }
            cur = (rows.len() - 1, col);
        }
        (rows, cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_around_wide_characters() {
        let mut c = Composer::default();
        for ch in "안녕 hi".chars() {
            c.insert(ch);
        }
        c.left();
        c.left();
        c.left();
        c.backspace();
        assert_eq!(c.text(), "안 hi");
        let (rows, cur) = c.layout(20);
        assert_eq!(rows, ["안 hi"]);
        assert_eq!(
            cur,
            (0, 2),
            "after one Hangul syllable the cursor is at column 2"
        );
        c.delete_word();
        assert_eq!(c.text(), " hi");
    }

    #[test]
    fn layout_wraps_and_places_the_cursor() {
        let mut c = Composer::default();
        c.set("abcdef\n가나다");
        let (rows, cur) = c.layout(4);
        assert_eq!(rows, ["abcd", "ef", "가나", "다"]);
        assert_eq!(cur, (3, 2));
        c.set("abcd");
        assert_eq!(
            c.layout(4).1,
            (1, 0),
            "a full row puts the cursor on the next one"
        );
    }

    #[test]
    fn vertical_moves_keep_the_column() {
        let mut c = Composer::default();
        c.set("hello\nhi\nworld");
        c.vertical(-1);
        assert_eq!(&c.text()[..c.cursor()], "hello\nhi");
        c.vertical(-1);
        assert_eq!(
            &c.text()[..c.cursor()],
            "he",
            "column 2, as on the line below"
        );
        c.home();
        c.vertical(1);
        assert_eq!(&c.text()[..c.cursor()], "hello\n");
        assert!(!c.on_first_line() && !c.on_last_line());
    }

    #[test]
    fn pastes_are_sanitized() {
        assert_eq!(sanitize_paste(b"a\r\nb\rc\x1b[2Jd\te"), "a\nb\nc[2Jd    e");
        assert_eq!(
            sanitize_paste(b"ok \xff\xfe end"),
            "ok \u{fffd}\u{fffd} end"
        );
        let mut c = Composer::default();
        c.insert_str("x\r\ny");
        assert_eq!(c.text(), "x\ny");
    }
}
