//! Syntax highlighting of code blocks (syntect's bundled grammars, pure-Rust regexes), with a
//! small cache so a code block is highlighted once, not on every frame.

use ratatui::style::{Color, Modifier, Style};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::OnceLock;
use syntect::easy::HighlightLines;
use syntect::highlighting::{FontStyle, Theme, ThemeSet};
use syntect::parsing::SyntaxSet;
use syntect::util::LinesWithEndings;

/// Highlighted lines: each a list of (style, text).
pub type Highlighted = Rc<Vec<Vec<(Style, String)>>>;

fn syntaxes() -> &'static SyntaxSet {
    static S: OnceLock<SyntaxSet> = OnceLock::new();
    S.get_or_init(SyntaxSet::load_defaults_newlines)
}

fn theme() -> Option<&'static Theme> {
    static T: OnceLock<Option<Theme>> = OnceLock::new();
    T.get_or_init(|| ThemeSet::load_defaults().themes.remove("base16-ocean.dark"))
        .as_ref()
}

thread_local! {
    static CACHE: RefCell<HashMap<u64, Highlighted>> = RefCell::new(HashMap::new());
}

/// Highlights `code` as language `lang` (a fence tag like `rust`, `py`, `sh`); `None` when the
/// language is unknown.
pub fn highlight(code: &str, lang: &str) -> Option<Highlighted> {
    let lang = lang.trim();
    if lang.is_empty() {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    lang.hash(&mut h);
    code.hash(&mut h);
    let key = h.finish();
    if let Some(v) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return Some(v);
    }
    let ss = syntaxes();
    let syntax = ss
        .find_syntax_by_token(lang)
        .or_else(|| ss.find_syntax_by_extension(lang))?;
    let mut hl = HighlightLines::new(syntax, theme()?);
    let mut out = Vec::new();
    for line in LinesWithEndings::from(code) {
        let ranges = hl.highlight_line(line, ss).ok()?;
        out.push(
            ranges
                .into_iter()
                .map(|(st, t)| {
                    let mut s = Style::new().fg(Color::Rgb(
                        st.foreground.r,
                        st.foreground.g,
                        st.foreground.b,
                    ));
                    if st.font_style.contains(FontStyle::BOLD) {
                        s = s.add_modifier(Modifier::BOLD);
                    }
                    if st.font_style.contains(FontStyle::ITALIC) {
                        s = s.add_modifier(Modifier::ITALIC);
                    }
                    (s, t.trim_end_matches(['\n', '\r']).to_string())
                })
                .collect(),
        );
    }
    let v = Rc::new(out);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 512 {
            c.clear();
        }
        c.insert(key, v.clone());
    });
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_is_coloured_and_unknown_languages_are_not() {
        let h = highlight("fn main() {}\nlet x = 1;\n", "rust").unwrap();
        assert_eq!(h.len(), 2);
        let joined: String = h[0].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(joined, "fn main() {}");
        let colours: std::collections::HashSet<_> = h[0].iter().map(|(s, _)| s.fg).collect();
        assert!(colours.len() > 1, "more than one colour: {colours:?}");
        assert!(highlight("x", "no-such-language").is_none());
        assert!(highlight("x", "").is_none());
    }
}
