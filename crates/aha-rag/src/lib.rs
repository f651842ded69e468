//! Local document research: ingest (the `ignore` walker; Markdown, text, code, HTML, PDF),
//! chunking by structure, English + CJK-bigram analysis, an incremental tantivy index on disk,
//! and BM25 search with snippets and `path:start-end` citations.

pub mod analyzer;
pub mod chunk;
pub mod extract;
pub mod index;

pub use analyzer::Analyzer;
pub use index::{default_dir, exists, DocIndex, Hit, IndexOptions, RagOptions, Report};
