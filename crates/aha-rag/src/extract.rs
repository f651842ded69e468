//! Text out of files: Markdown, plain text and code as they are (invalid UTF-8 decoded lossily),
//! HTML as its visible text (headings kept as Markdown headings, no scripts or styles), PDF from
//! its text layer. Binary files are recognised and left out.

use super::chunk::Kind;
use anyhow::{anyhow, Result};
use std::path::Path;

/// A file's text, ready to chunk.
#[derive(Debug)]
pub struct Extracted {
    pub text: String,
    pub kind: Kind,
    /// The bytes were not valid UTF-8 and were decoded lossily.
    pub lossy: bool,
}

/// Why a file gave no text.
#[derive(Debug, PartialEq)]
pub enum Skip {
    Binary,
    /// Unreadable or unparsable, with the reason.
    Failed(String),
}

const CODE: &[&str] = &[
    "rs",
    "py",
    "js",
    "mjs",
    "cjs",
    "ts",
    "tsx",
    "jsx",
    "go",
    "c",
    "h",
    "cpp",
    "hpp",
    "cc",
    "cxx",
    "java",
    "kt",
    "kts",
    "swift",
    "rb",
    "php",
    "cs",
    "scala",
    "sh",
    "bash",
    "zsh",
    "fish",
    "toml",
    "yaml",
    "yml",
    "json",
    "jsonl",
    "lua",
    "sql",
    "r",
    "jl",
    "hs",
    "ml",
    "mli",
    "ex",
    "exs",
    "zig",
    "nim",
    "dart",
    "vue",
    "svelte",
    "css",
    "scss",
    "less",
    "proto",
    "cmake",
    "gradle",
    "pl",
    "ps1",
    "bat",
    "ini",
    "cfg",
    "conf",
    "xml",
    "dockerfile",
    "makefile",
    "mk",
    "el",
    "clj",
    "erl",
    "f90",
];
const MARKDOWN: &[&str] = &["md", "markdown", "mdx", "mdown"];
const HTML: &[&str] = &["html", "htm", "xhtml"];
const BINARY: &[&str] = &[
    "png",
    "jpg",
    "jpeg",
    "gif",
    "bmp",
    "ico",
    "webp",
    "tif",
    "tiff",
    "zip",
    "gz",
    "tgz",
    "bz2",
    "xz",
    "zst",
    "7z",
    "rar",
    "tar",
    "gguf",
    "safetensors",
    "bin",
    "pt",
    "pth",
    "onnx",
    "so",
    "dylib",
    "dll",
    "exe",
    "o",
    "a",
    "rlib",
    "class",
    "jar",
    "wasm",
    "pyc",
    "mp3",
    "mp4",
    "wav",
    "flac",
    "ogg",
    "mov",
    "avi",
    "mkv",
    "woff",
    "woff2",
    "ttf",
    "otf",
    "eot",
    "sqlite",
    "db",
    "parquet",
    "arrow",
    "npy",
    "npz",
    "pkl",
    "docx",
    "xlsx",
    "pptx",
    "odt",
];

fn ext(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name == "dockerfile" || name == "makefile" {
        return name;
    }
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// Whether the name alone says the file is binary (so it need not be read).
pub fn binary_by_name(path: &Path) -> bool {
    BINARY.contains(&ext(path).as_str())
}

/// Extracts the text of a file whose bytes are `bytes`.
pub fn extract(path: &Path, bytes: &[u8]) -> Result<Extracted, Skip> {
    let e = ext(path);
    if e == "pdf" {
        return pdf(bytes).map_err(|e| Skip::Failed(format!("{e:#}")));
    }
    if BINARY.contains(&e.as_str()) || looks_binary(bytes) {
        return Err(Skip::Binary);
    }
    let (text, lossy) = match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
    };
    let text = text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text);
    if HTML.contains(&e.as_str()) {
        return Ok(Extracted {
            text: html_text(&text),
            kind: Kind::Markdown,
            lossy,
        });
    }
    let kind = if MARKDOWN.contains(&e.as_str()) {
        Kind::Markdown
    } else if CODE.contains(&e.as_str()) {
        Kind::Code
    } else {
        Kind::Text
    };
    Ok(Extracted { text, kind, lossy })
}

/// NUL bytes, or mostly control bytes, in the first 8 KiB.
fn looks_binary(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return true;
    }
    let ctrl = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c | 0x1b))
        .count();
    !head.is_empty() && ctrl * 10 > head.len()
}

/// The visible text of an HTML page: no scripts, styles or templates; headings as `#` lines;
/// block elements on their own lines.
pub fn html_text(src: &str) -> String {
    let doc = scraper::Html::parse_document(src);
    let mut out = String::new();
    if let Some(t) = doc
        .select(&scraper::Selector::parse("title").expect("selector"))
        .next()
    {
        let t = t.text().collect::<String>();
        if !t.trim().is_empty() {
            out.push_str(&format!("# {}\n\n", t.trim()));
        }
    }
    walk(doc.tree.root(), &mut out);
    // Collapse spaces inside lines and runs of blank lines.
    let mut clean = String::new();
    let mut blank = 0;
    for l in out.lines() {
        let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
        if l.is_empty() {
            blank += 1;
            continue;
        }
        if blank > 0 && !clean.is_empty() {
            clean.push('\n');
        }
        blank = 0;
        clean.push_str(&l);
        clean.push('\n');
    }
    clean
}

fn walk(node: ego_tree::NodeRef<'_, scraper::Node>, out: &mut String) {
    use scraper::Node;
    for child in node.children() {
        match child.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) => {
                let name = e.name();
                if matches!(
                    name,
                    "script" | "style" | "noscript" | "template" | "head" | "svg" | "iframe"
                ) {
                    continue;
                }
                let heading = match name {
                    "h1" => Some(1),
                    "h2" => Some(2),
                    "h3" => Some(3),
                    "h4" => Some(4),
                    "h5" => Some(5),
                    "h6" => Some(6),
                    _ => None,
                };
                let block = heading.is_some()
                    || matches!(
                        name,
                        "p" | "div"
                            | "li"
                            | "ul"
                            | "ol"
                            | "tr"
                            | "table"
                            | "section"
                            | "article"
                            | "pre"
                            | "blockquote"
                            | "header"
                            | "footer"
                            | "nav"
                            | "main"
                            | "aside"
                            | "dl"
                            | "dt"
                            | "dd"
                            | "figure"
                            | "form"
                    );
                if let Some(level) = heading {
                    let text: String = child
                        .descendants()
                        .filter_map(|d| match d.value() {
                            Node::Text(t) => Some(t.to_string()),
                            _ => None,
                        })
                        .collect();
                    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    out.push_str(&format!("\n\n{} {}\n\n", "#".repeat(level), text));
                    continue;
                }
                if name == "br" {
                    out.push('\n');
                }
                if block {
                    out.push_str("\n\n");
                }
                if matches!(name, "td" | "th") {
                    out.push(' ');
                }
                walk(child, out);
                if block {
                    out.push_str("\n\n");
                }
            }
            _ => {}
        }
    }
}

/// The text layer of a PDF, pages separated by blank lines. The PDF parser can panic on odd
/// files; that is caught and reported like any other failure.
fn pdf(bytes: &[u8]) -> Result<Extracted> {
    let owned = bytes.to_vec();
    let r = aha_protocol::panic::catch_panic(move || {
        pdf_extract::extract_text_from_mem_by_pages(&owned)
    });
    let pages = match r {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(anyhow!("cannot read the PDF: {e}")),
        Err(e) => return Err(anyhow!("cannot read the PDF: its parser failed ({})", e.0)),
    };
    let text = pages
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    if text.trim().is_empty() {
        return Err(anyhow!("the PDF has no text layer (scanned images?)"));
    }
    Ok(Extracted {
        text,
        kind: Kind::Text,
        lossy: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_keeps_visible_text_and_headings_and_drops_scripts_and_styles() {
        let html = "<html><head><title>Guide</title><style>.x{color:red}</style></head><body><script>var secret = 1;</script><h2>Install  steps</h2><p>Run <b>make</b>.</p><ul><li>one</li><li>two</li></ul></body></html>";
        let t = html_text(html);
        assert!(t.starts_with("# Guide\n"), "{t}");
        assert!(t.contains("## Install steps"), "{t}");
        assert!(t.contains("Run make."), "{t}");
        assert!(t.contains("one\n") && t.contains("two"), "{t}");
        assert!(!t.contains("secret") && !t.contains("color"), "{t}");
    }

    #[test]
    fn binary_and_lossy_files_are_told_apart() {
        let p = Path::new("x.dat");
        assert_eq!(extract(p, b"\x00\x01\x02abc").unwrap_err(), Skip::Binary);
        let e = extract(Path::new("a.txt"), b"caf\xe9 ok").unwrap();
        assert!(e.lossy && e.text.contains("ok"));
        assert_eq!(
            extract(Path::new("a.rs"), b"fn x(){}").unwrap().kind,
            Kind::Code
        );
        assert!(binary_by_name(Path::new("m.gguf")));
    }

    #[test]
    fn a_broken_pdf_is_an_error_not_a_panic() {
        let r = extract(Path::new("x.pdf"), b"%PDF-1.4 garbage");
        assert!(matches!(r, Err(Skip::Failed(_))), "{r:?}");
    }
}
