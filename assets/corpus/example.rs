//! A small example of using aha's document index from Rust.

use aha::rag::{Analyzer, DocIndex, IndexOptions};
use std::path::{Path, PathBuf};

/// Indexes a folder and prints the best passages for a question.
pub fn research(folder: &Path, question: &str) -> anyhow::Result<()> {
    let dir = folder.join(".aha").join("index");
    let mut index = DocIndex::open_or_create(&dir, Analyzer::Both, folder, false)?;
    index.update(&[PathBuf::from(folder)], &IndexOptions::default(), &mut |_| {})?;

    for hit in index.search(question, 5)? {
        println!("{}:{}-{}  {}", hit.path, hit.start_line, hit.end_line, hit.snippet);
    }
    Ok(())
}
