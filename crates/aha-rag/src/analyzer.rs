//! Text analysis for the document index: English words (lowercased, stemmed, stop-words left out)
//! and CJK runs (Hangul, Han, Kana) as overlapping character bigrams, in one pass over mixed text.
//! Korean particles attach to words (대통령은, 대통령의), so whole-word tokens miss them; bigrams
//! (대통·통령·령은) match the stem in every inflected form.

use serde::{Deserialize, Serialize};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, Stemmer, StopWordFilter, TextAnalyzer, Token,
    TokenStream, Tokenizer,
};

/// The tokenizer name the schema's text fields use.
pub const TOKENIZER: &str = "aha";

/// Which analysis an index uses (fixed when the index is created).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Analyzer {
    /// English words only: CJK text stays in whole space-separated words.
    En,
    /// CJK bigrams, other words lowercased but not stemmed.
    Cjk,
    /// Both: stemmed English words and CJK bigrams.
    #[default]
    Both,
}

impl Analyzer {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "en" | "english" => Some(Self::En),
            "cjk" => Some(Self::Cjk),
            "both" => Some(Self::Both),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Cjk => "cjk",
            Self::Both => "both",
        }
    }

    /// The tantivy analyzer for this choice.
    pub fn build(self) -> TextAnalyzer {
        let tok = MixedTokenizer {
            cjk_bigrams: self != Self::En,
        };
        let base = TextAnalyzer::builder(tok)
            .filter(RemoveLongFilter::limit(48))
            .filter(LowerCaser);
        match self {
            Self::Cjk => base.build(),
            Self::En | Self::Both => base
                .filter(StopWordFilter::new(Language::English).expect("English stop words"))
                .filter(Stemmer::new(Language::English))
                .build(),
        }
    }

    /// The terms `text` analyses to (for tests and query building).
    pub fn terms(self, text: &str) -> Vec<String> {
        let mut a = self.build();
        let mut s = a.token_stream(text);
        let mut out = Vec::new();
        while s.advance() {
            out.push(s.token().text.clone());
        }
        out
    }
}

/// Hangul (syllables and jamo), Han ideographs, Hiragana and Katakana.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xA960..=0xA97F | 0xAC00..=0xD7AF | 0xD7B0..=0xD7FF
        | 0x3040..=0x309F | 0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F
        | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// Splits text into word tokens (letters and digits) and, when `cjk_bigrams`, CJK runs into
/// overlapping bigrams (a one-character run is one token).
#[derive(Clone)]
pub struct MixedTokenizer {
    pub cjk_bigrams: bool,
}

pub struct MixedStream {
    tokens: Vec<Token>,
    at: usize,
}

impl TokenStream for MixedStream {
    fn advance(&mut self) -> bool {
        if self.at < self.tokens.len() {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn token(&self) -> &Token {
        &self.tokens[self.at - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.at - 1]
    }
}

impl Tokenizer for MixedTokenizer {
    type TokenStream<'a> = MixedStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> MixedStream {
        let mut tokens = Vec::new();
        let mut pos = 0usize;
        let mut push = |from: usize, to: usize, tokens: &mut Vec<Token>| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position: pos,
                text: text[from..to].to_string(),
                position_length: 1,
            });
            pos += 1;
        };
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let end_of = |i: usize| chars.get(i).map(|c| c.0).unwrap_or(text.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i].1;
            if self.cjk_bigrams && is_cjk(c) {
                let start = i;
                while i < chars.len() && is_cjk(chars[i].1) {
                    i += 1;
                }
                if i - start == 1 {
                    push(chars[start].0, end_of(start + 1), &mut tokens);
                } else {
                    for (k, &(from, _)) in chars.iter().enumerate().take(i - 1).skip(start) {
                        push(from, end_of(k + 2), &mut tokens);
                    }
                }
            } else if c.is_alphanumeric() {
                let start = i;
                while i < chars.len()
                    && chars[i].1.is_alphanumeric()
                    && !(self.cjk_bigrams && is_cjk(chars[i].1))
                {
                    i += 1;
                }
                push(chars[start].0, end_of(i), &mut tokens);
            } else {
                i += 1;
            }
        }
        MixedStream { tokens, at: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn korean_runs_become_bigrams_so_inflected_forms_share_terms() {
        let q = Analyzer::Both.terms("대통령");
        assert_eq!(q, ["대통", "통령"]);
        for form in ["대통령은", "대통령의", "대통령이"] {
            let t = Analyzer::Both.terms(form);
            assert!(q.iter().all(|x| t.contains(x)), "{form}: {t:?}");
        }
        // The English-only analyzer keeps the inflected word whole: no shared term.
        assert_eq!(Analyzer::En.terms("대통령은"), ["대통령은"]);
    }

    #[test]
    fn english_words_are_lowercased_and_stemmed_and_stop_words_dropped() {
        assert_eq!(
            Analyzer::Both.terms("The Runners running"),
            ["runner", "run"]
        );
        assert_eq!(Analyzer::En.terms("runs"), Analyzer::En.terms("running"));
        // The CJK-only analyzer does not stem.
        assert_eq!(Analyzer::Cjk.terms("running"), ["running"]);
    }

    #[test]
    fn mixed_script_splits_at_the_script_boundary() {
        assert_eq!(
            Analyzer::Both.terms("aha의 engine은 KV캐시를"),
            ["aha", "의", "engin", "은", "kv", "캐시", "시를"]
        );
        assert_eq!(
            Analyzer::Both.terms("東京タワー"),
            ["東京", "京タ", "タワ", "ワー"]
        );
    }

    #[test]
    fn offsets_point_at_the_original_text() {
        let mut t = MixedTokenizer { cjk_bigrams: true };
        let text = "x 헌법은";
        let mut s = t.token_stream(text);
        let mut spans = Vec::new();
        while s.advance() {
            let k = s.token();
            spans.push(&text[k.offset_from..k.offset_to]);
        }
        assert_eq!(spans, ["x", "헌법", "법은"]);
    }
}
