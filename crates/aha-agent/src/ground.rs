//! Grounding, by matching terms: which lines of the retrieved documents a question is about
//! (what research mode puts in the prompt), and whether each claim of an answer is stated by the
//! line it cites, or by some line of the passages the model read (citation check and
//! attribution).
//!
//! Terms work across scripts: outside CJK a term is a word, lower-cased, cut to six letters (a
//! rough stem: "horses" and "horse" meet), stop words dropped; inside Hangul, Han or kana runs
//! it is every pair of characters, which matches Korean stems through their particles
//! ("대통령의" and "대통령이" share "대통", "통령"). Numbers are compared whole, so "5" is not
//! found in "15" or "2015".

use std::collections::{HashMap, HashSet};

/// English words that say nothing about what a question is about.
const STOP: &[&str] = &[
    "a",
    "about",
    "according",
    "after",
    "all",
    "also",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "before",
    "by",
    "called",
    "can",
    "could",
    "did",
    "do",
    "does",
    "during",
    "each",
    "for",
    "from",
    "had",
    "has",
    "have",
    "how",
    "in",
    "into",
    "is",
    "it",
    "its",
    "many",
    "may",
    "much",
    "name",
    "named",
    "of",
    "on",
    "one",
    "or",
    "roughly",
    "says",
    "so",
    "such",
    "than",
    "that",
    "the",
    "their",
    "them",
    "there",
    "these",
    "they",
    "this",
    "those",
    "to",
    "was",
    "were",
    "what",
    "when",
    "where",
    "which",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "would",
];

/// Character pairs of Korean question words and endings (무엇, 어디, 언제, -인가요, -나요…).
const KO_STOP: &[&str] = &[
    "무엇", "엇인", "어디", "디인", "언제", "얼마", "누구", "어떤", "어떻", "인가", "나요", "가요",
    "니까", "습니", "까요", "인지", "엇을", "엇이",
];

fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{1100}'..='\u{11FF}' | '\u{3130}'..='\u{318F}' | '\u{AC00}'..='\u{D7A3}'
        | '\u{3040}'..='\u{30FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}')
}

/// The terms of `text` (see the module's notes).
pub fn terms(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let lower = text.to_lowercase();
    for run in lower.split(|c: char| !c.is_alphanumeric()) {
        if run.is_empty() {
            continue;
        }
        let chars: Vec<char> = run.chars().collect();
        if chars.iter().any(|&c| is_cjk(c)) {
            for w in chars.windows(2) {
                let pair: String = w.iter().collect();
                if !KO_STOP.contains(&pair.as_str()) {
                    out.insert(pair);
                }
            }
        } else if chars.iter().all(char::is_ascii_digit) {
            out.insert(run.to_string());
        } else if chars.len() > 1 && !STOP.contains(&run) {
            out.insert(chars.iter().take(6).collect());
        }
    }
    out
}

/// The terms of `text` that head its words: the word itself outside CJK, the first pair of
/// characters of a CJK run (a Korean word's stem, without the endings that follow it).
pub fn heads(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let lower = text.to_lowercase();
    for run in lower.split(|c: char| !c.is_alphanumeric()) {
        let chars: Vec<char> = run.chars().collect();
        if chars.iter().any(|&c| is_cjk(c)) {
            if chars.len() > 1 {
                let pair: String = chars[..2].iter().collect();
                if !KO_STOP.contains(&pair.as_str()) {
                    out.insert(pair);
                }
            }
        } else {
            out.extend(terms(run));
        }
    }
    out
}

/// The numbers written in `text`, digits only ("250,000" is "250000"; "87.2" stays).
pub fn numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut n = String::new();
        while i < chars.len() {
            let c = chars[i];
            let digit_next = chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if c.is_ascii_digit() {
                n.push(c);
            } else if c == ',' && digit_next {
            } else if c == '.' && digit_next {
                n.push('.');
            } else {
                break;
            }
            i += 1;
        }
        out.push(n);
    }
    out
}

/// A file of the documents, as lines (split on `\n` only, as the index counts them).
pub type Lines = Vec<String>;

/// A stretch of a document that went into the prompt: lines `start..=end` of `path`, and the
/// line in it that matched the question best.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub path: String,
    pub start: usize,
    pub end: usize,
    pub best: usize,
    pub score: f32,
}

/// A passage the index returned: lines `start..=end` of `path` (1-based).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub path: String,
    pub start: usize,
    pub end: usize,
}

/// Tokens a text is assumed to take: a byte count over three errs on the large side for English
/// (about four bytes a token) and fits Korean (three-byte characters, about one a token).
pub fn tokens_of(text: &str) -> usize {
    text.len().div_ceil(3)
}

/// Lines shorter than this are taken with a line of context on each side: short lines are
/// mostly a sentence broken across lines (text from PDF), and the fact may sit on the next.
const SHORT_LINE: usize = 200;

/// The lines of `chunks` that match `question` best, each with its neighbours where lines are
/// short, within `budget` tokens: grouped into windows, best first. A line's score is the sum
/// of the question's terms it holds, each weighted by how rare it is among the chunks' lines.
pub fn select(
    question: &str,
    chunks: &[Chunk],
    files: &HashMap<String, Lines>,
    budget: usize,
) -> Vec<Window> {
    let q = terms(question);
    let mut cands: Vec<(&str, usize, HashSet<String>)> = Vec::new();
    let mut seen = HashSet::new();
    for c in chunks {
        let Some(lines) = files.get(&c.path) else {
            continue;
        };
        for i in c.start..=c.end.min(lines.len()) {
            let text = lines[i - 1].trim();
            if !text.is_empty() && seen.insert((c.path.as_str(), i)) {
                cands.push((c.path.as_str(), i, terms(text)));
            }
        }
    }
    let n = cands.len() as f32;
    let idf: HashMap<&String, f32> = q
        .iter()
        .filter_map(|t| {
            let df = cands.iter().filter(|c| c.2.contains(t)).count();
            (df > 0).then(|| (t, (1.0 + n / df as f32).ln()))
        })
        .collect();
    let mut scored: Vec<(&str, usize, f32)> = cands
        .iter()
        .map(|(p, i, t)| {
            let s = idf
                .iter()
                .filter(|(q, _)| t.contains(**q))
                .map(|(_, w)| w)
                .sum();
            (*p, *i, s)
        })
        .collect();
    let score_of: HashMap<(&str, usize), f32> =
        scored.iter().map(|&(p, i, s)| ((p, i), s)).collect();
    // Stable: equal scores keep the index's order.
    scored.sort_by(|a, b| b.2.total_cmp(&a.2));

    let mut chosen: HashMap<&str, HashMap<usize, f32>> = HashMap::new();
    let mut used = 0;
    for &(path, i, score) in &scored {
        if score <= 0.0 {
            break;
        }
        let lines = &files[path];
        let text = lines[i - 1].trim();
        let span = if text.chars().count() < SHORT_LINE {
            i.saturating_sub(1).max(1)..=(i + 1).min(lines.len())
        } else {
            i..=i
        };
        let taken = chosen.entry(path).or_default();
        let new: Vec<usize> = span
            .filter(|j| !lines[j - 1].trim().is_empty() && !taken.contains_key(j))
            .collect();
        if new.is_empty() {
            continue;
        }
        let cost: usize = new.iter().map(|j| tokens_of(lines[j - 1].trim()) + 4).sum();
        if used + cost > budget {
            continue;
        }
        used += cost;
        for j in new {
            taken.insert(j, score_of.get(&(path, j)).copied().unwrap_or(0.0));
        }
    }
    let mut windows = Vec::new();
    for (path, taken) in chosen {
        let mut at: Vec<(usize, f32)> = taken.into_iter().collect();
        at.sort_by_key(|x| x.0);
        let mut run: Vec<(usize, f32)> = Vec::new();
        let flush = |run: &mut Vec<(usize, f32)>, windows: &mut Vec<Window>| {
            if let (Some(first), Some(last)) = (run.first(), run.last()) {
                let best = run.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
                windows.push(Window {
                    path: path.to_string(),
                    start: first.0,
                    end: last.0,
                    best: best.0,
                    score: best.1,
                });
            }
            run.clear();
        };
        for x in at {
            if run.last().is_some_and(|l| l.0 + 1 != x.0) {
                flush(&mut run, &mut windows);
            }
            run.push(x);
        }
        flush(&mut run, &mut windows);
    }
    windows.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.path.cmp(&b.path))
            .then(a.start.cmp(&b.start))
    });
    windows
}

/// Whether `text` says the documents do not answer (in English or Korean).
pub fn abstains(text: &str) -> bool {
    let t = text.to_lowercase();
    [
        "not say",
        "do not contain",
        "does not contain",
        "do not mention",
        "does not mention",
        "do not state",
        "does not state",
        "no information",
        "not mentioned",
        "not stated",
        "not specified",
        "not provided",
        "cannot be found",
        "나와 있지 않",
        "나와있지 않",
        "언급되어 있지 않",
        "명시되어 있지 않",
        "알 수 없",
        "찾을 수 없",
    ]
    .iter()
    .any(|p| t.contains(p))
}

/// A citation as written in an answer: `[path:line]` or `[path:first-last]` (the first line
/// counts).
#[derive(Debug, Clone, PartialEq)]
pub struct Cite {
    pub path: String,
    pub line: usize,
}

/// A sentence of an answer and the citations written in or right after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The sentence with its citations taken out.
    pub text: String,
    pub cites: Vec<Cite>,
}

/// Reads `[path:line]` at the start of `s` (which begins with `[`): the citation and its length
/// in bytes.
fn cite_at(s: &str) -> Option<(Cite, usize)> {
    let close = s.find(']')?;
    let inner = s[1..close].trim().trim_matches('`');
    let Some((path, line)) = inner.rsplit_once(':') else {
        // `[path]` with no line: a citation that names no line (checked, and never ok).
        let pathlike = (inner.contains('/') || inner.contains('.'))
            && !inner.is_empty()
            && !inner.contains(|c: char| c.is_whitespace() || c.is_control())
            && !inner.ends_with('.');
        return pathlike.then(|| {
            (
                Cite {
                    path: inner.to_string(),
                    line: 0,
                },
                close + 1,
            )
        });
    };
    let line = line.trim();
    let first = line.split(['-', '–']).next()?.trim();
    let line: usize = first.parse().ok()?;
    let path = path.trim();
    if path.is_empty() || path.contains(|c: char| c.is_whitespace() || c.is_control()) || line == 0
    {
        return None;
    }
    Some((
        Cite {
            path: path.to_string(),
            line,
        },
        close + 1,
    ))
}

/// The claims of an answer: its sentences (split at `.`, `!`, `?`, `。` before a space, and at
/// line breaks), each with the citations written in it or right after it.
pub fn claims(answer: &str) -> Vec<Claim> {
    let mut out: Vec<Claim> = Vec::new();
    let mut text = String::new();
    let mut cites = Vec::new();
    let mut rest = answer;
    let flush = |text: &mut String, cites: &mut Vec<Cite>, out: &mut Vec<Claim>| {
        let t = text.trim().to_string();
        let has_words = t.chars().any(char::is_alphanumeric);
        if has_words {
            out.push(Claim {
                text: t,
                cites: std::mem::take(cites),
            });
        } else if let Some(last) = out.last_mut() {
            // Citations standing alone belong to the sentence before them.
            last.cites.append(cites);
        }
        text.clear();
    };
    while let Some(c) = rest.chars().next() {
        if c == '[' {
            if let Some((cite, len)) = cite_at(rest) {
                cites.push(cite);
                rest = &rest[len..];
                text.truncate(text.trim_end().len());
                continue;
            }
        }
        rest = &rest[c.len_utf8()..];
        if c == '\n' {
            flush(&mut text, &mut cites, &mut out);
            continue;
        }
        text.push(c);
        let ends = matches!(c, '.' | '!' | '?' | '。')
            && rest
                .chars()
                .next()
                .is_none_or(|n| n.is_whitespace() || n == '[');
        if ends {
            // A citation right after the full stop still belongs to this sentence.
            let mut r = rest.trim_start_matches([' ', '\t']);
            while r.starts_with('[') {
                let Some((cite, len)) = cite_at(r) else {
                    break;
                };
                cites.push(cite);
                r = r[len..].trim_start_matches([' ', '\t']);
            }
            rest = r;
            flush(&mut text, &mut cites, &mut out);
        }
    }
    flush(&mut text, &mut cites, &mut out);
    out
}

/// Whether a stretch of the documents states a claim made in answer to a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Support {
    /// It does; what it shares with the claim, for a person.
    Yes(String),
    /// It does not; why.
    No(String),
}

/// What a claim adds to its question: its terms and numbers that the question does not hold.
pub struct Assertion {
    terms: HashSet<String>,
    numbers: Vec<String>,
    question: HashSet<String>,
}

impl Assertion {
    pub fn new(question: &str, claim: &str) -> Self {
        let q = terms(question);
        let qn = numbers(question);
        let mut nums: Vec<String> = numbers(claim)
            .into_iter()
            .filter(|n| !qn.contains(n))
            .collect();
        nums.dedup();
        Self {
            terms: heads(claim)
                .into_iter()
                .filter(|t| !q.contains(t))
                .collect(),
            numbers: nums,
            question: q,
        }
    }

    /// Whether `text` (a line and its neighbours) states the claim: it holds every number the
    /// claim adds, at least half of the claim's other new terms, and at least a quarter of the
    /// question's terms (so that "4년" from a line about another office does not count).
    pub fn supported_by(&self, text: &str) -> Support {
        if self.terms.is_empty() && self.numbers.is_empty() {
            // "대통령의 임기는 몇 년인가요." answers nothing, whatever states it.
            return Support::No("the claim only repeats the question".to_string());
        }
        let have = terms(text);
        let have_n = numbers(text);
        let missing: Vec<&str> = self
            .numbers
            .iter()
            .filter(|n| !have_n.contains(n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Support::No(format!("the passage does not state {}", missing.join(", ")));
        }
        let shared = self.terms.iter().filter(|t| have.contains(*t)).count();
        if !self.terms.is_empty() && shared * 2 < self.terms.len() {
            return Support::No(format!(
                "the passage holds {shared} of the {} words the claim adds",
                self.terms.len()
            ));
        }
        let about = self.question.iter().filter(|t| have.contains(*t)).count();
        if !self.question.is_empty() && about * 4 < self.question.len() {
            return Support::No("the passage is not about the question".to_string());
        }
        Support::Yes(if self.numbers.is_empty() {
            format!(
                "the passage holds {shared} of the {} words the claim adds",
                self.terms.len()
            )
        } else {
            format!("the passage states {}", self.numbers.join(", "))
        })
    }

    /// How much of the claim `text` holds, to rank candidate lines (numbers count double).
    pub fn overlap(&self, text: &str) -> usize {
        let have = terms(text);
        let have_n = numbers(text);
        self.terms.iter().filter(|t| have.contains(*t)).count()
            + 2 * self.numbers.iter().filter(|n| have_n.contains(n)).count()
            + self.question.iter().filter(|t| have.contains(*t)).count()
    }
}

/// Line `line` of `lines` with one neighbour on each side, as one text.
pub fn around(lines: &[String], line: usize) -> String {
    let lo = line.saturating_sub(1).max(1);
    let hi = (line + 1).min(lines.len());
    (lo..=hi)
        .map(|i| lines[i - 1].trim())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Lines {
        s.split('\n').map(String::from).collect()
    }

    #[test]
    fn terms_match_korean_stems_through_particles_and_english_through_plurals() {
        let a = terms("대통령의 임기는 몇 년인가?");
        let b = terms("제70조 대통령의 임기는 5년으로 하며");
        assert!(a.contains("대통") && a.contains("임기") && b.contains("임기"));
        assert!(!a.contains("인가"), "question endings are not terms");
        assert!(terms("the horses").contains("horses") && terms("horse").contains("horse"));
        assert!(terms("Horses of Achilles").contains("horses"));
        assert!(!terms("what is the name").contains("the"));
        assert!(terms("in 1387 AD").contains("1387"));
    }

    #[test]
    fn numbers_are_whole() {
        assert_eq!(numbers("about 250,000 termites"), ["250000"]);
        assert_eq!(numbers("87.2%, 15년, 2015년."), ["87.2", "15", "2015"]);
        assert_eq!(numbers("1948년 7월 12일"), ["1948", "7", "12"]);
        assert!(numbers("no digits").is_empty());
    }

    #[test]
    fn the_line_that_answers_is_chosen_over_one_that_shares_fewer_terms() {
        let doc = lines(
            "제98조 감사원은 원장을 포함한 5인 이상 11인 이하의 감사위원으로 구성한다.\n\
             원장은 국회의 동의를 얻어 대통령이 임명하고, 그 임기는 4년으로 한다.\n\
             \n\
             제69조 대통령은 취임에 즈음하여 선서를 한다.\n\
             제70조 대통령의 임기는 5년으로 하며, 중임할 수 없다.\n\
             제71조 대통령이 궐위되거나 사고로 인하여",
        );
        let files = HashMap::from([("ko/c.txt".to_string(), doc)]);
        let chunks = [
            Chunk {
                path: "ko/c.txt".into(),
                start: 1,
                end: 2,
            },
            Chunk {
                path: "ko/c.txt".into(),
                start: 4,
                end: 6,
            },
        ];
        let w = select("대통령의 임기는 몇 년인가요?", &chunks, &files, 1000);
        assert_eq!(
            (w[0].path.as_str(), w[0].best, w[0].start, w[0].end),
            ("ko/c.txt", 5, 4, 6)
        );
        // A budget for one window only: the best one.
        let w = select("대통령의 임기는 몇 년인가요?", &chunks, &files, 60);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].best, 5);
        assert!(select("무엇인가요?", &chunks, &files, 1000).is_empty());
    }

    #[test]
    fn claims_carry_the_citations_written_in_or_after_them() {
        let c =
            claims("The term is 5 years [ko/c.txt:175]. It cannot be renewed.\n[ko/c.txt:175-176]");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].text, "The term is 5 years.");
        assert_eq!(
            c[0].cites,
            [Cite {
                path: "ko/c.txt".into(),
                line: 175
            }]
        );
        assert_eq!(c[1].text, "It cannot be renewed.");
        assert_eq!(
            c[1].cites,
            [Cite {
                path: "ko/c.txt".into(),
                line: 175
            }]
        );
        let c = claims("임기는 5년이다. [ko/c.txt:5] 87.2%가 찬성했다.");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].cites.len(), 1);
        assert_eq!(c[1].text, "87.2%가 찬성했다.");
        assert!(c[1].cites.is_empty());
        assert_eq!(claims("[not a cite] x")[0].text, "[not a cite] x");
        assert!(
            claims("x [a\u{1b}[2J.md:3]")[0]
                .cites
                .iter()
                .all(|c| !c.path.contains('\u{1b}')),
            "no control characters in a cited path"
        );
        let c = claims("Paris [geo.md].");
        assert_eq!((c[0].text.as_str(), c[0].cites[0].line), ("Paris.", 0));
    }

    #[test]
    fn support_needs_the_numbers_the_terms_and_the_question() {
        let q = "대통령의 임기는 몇 년인가요?";
        let a = Assertion::new(q, "대통령의 임기는 5년입니다.");
        assert_eq!(a.numbers, ["5"]);
        assert!(matches!(
            a.supported_by("제70조 대통령의 임기는 5년으로 하며, 중임할 수 없다."),
            Support::Yes(_)
        ));
        assert_eq!(
            a.supported_by("원장은 대통령이 임명하고, 그 임기는 4년으로 한다."),
            Support::No("the passage does not state 5".into())
        );
        assert!(matches!(a.supported_by("15년 이상"), Support::No(_)));
        let a = Assertion::new(
            "What was the name of Abraham Lincoln's dog?",
            "Abraham Lincoln's dog was named Samuel.",
        );
        assert!(matches!(
            a.supported_by("Abraham Lincoln had a dog named Fido."),
            Support::No(_)
        ));
        let a = Assertion::new(q, "대통령의 임기는 몇 년인가요.");
        assert_eq!(
            a.supported_by("제70조 대통령의 임기는 5년으로 하며"),
            Support::No("the claim only repeats the question".into())
        );
        let a = Assertion::new("헌법에 규정된 대한민국의 수도는 어디인가요?", "제1장 총강");
        assert_eq!(
            a.supported_by("제1장 총강"),
            Support::No("the passage is not about the question".into())
        );
    }

    #[test]
    fn abstentions_are_recognised_in_both_languages() {
        assert!(abstains("The documents do not say."));
        assert!(abstains("문서에 나와 있지 않습니다."));
        assert!(!abstains("The capital is Edmonton."));
    }
}
