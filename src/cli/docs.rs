//! `aha index` and `aha search`: the document index from the command line.

use crate::rag::{self, Analyzer, DocIndex, IndexOptions};
use anyhow::{anyhow, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Files and folders to index (default: the current directory).
    pub paths: Vec<PathBuf>,
    /// The index folder (default: .aha/index in the current directory).
    #[arg(long, env = "AHA_INDEX")]
    pub index: Option<PathBuf>,
    /// Only files matching this glob (repeatable), e.g. '*.md'.
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave out files matching this glob (repeatable), e.g. 'target/**'.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Text analysis for a new index: both (English words + CJK bigrams), en, or cjk.
    #[arg(long, default_value = "both")]
    pub analyzer: String,
    /// Delete the index first and build it again.
    #[arg(long)]
    pub rebuild: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many commits (to test interrupted runs).
    #[arg(long, hide = true)]
    pub stop_after_commits: Option<usize>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for; "quoted words" must appear together.
    #[arg(required = true)]
    pub query: Vec<String>,
    /// The index folder (default: .aha/index in the current directory).
    #[arg(long, env = "AHA_INDEX")]
    pub index: Option<PathBuf>,
    /// How many results.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// One JSON object per line: path, start_line, end_line, line, score, heading, snippet.
    #[arg(long)]
    pub json: bool,
}

fn index_dir(given: &Option<PathBuf>) -> Result<PathBuf> {
    Ok(match given {
        Some(d) => d.clone(),
        None => rag::default_dir(&std::env::current_dir()?),
    })
}

pub fn index(a: IndexArgs) -> Result<i32> {
    let analyzer = Analyzer::parse(&a.analyzer)
        .ok_or_else(|| anyhow!("--analyzer {}: use both, en or cjk", a.analyzer))?;
    let cwd = std::fs::canonicalize(std::env::current_dir()?)?;
    let dir = index_dir(&a.index)?;
    let mut ix = DocIndex::open_or_create(&dir, analyzer, &cwd, a.rebuild)?;
    let paths = if a.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        a.paths.clone()
    };
    let pb = if std::io::stderr().is_terminal() && !a.json {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("progress template"),
    );
    let t0 = std::time::Instant::now();
    let opts = IndexOptions {
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        stop_after_commits: a.stop_after_commits,
    };
    let rep = ix.update(&paths, &opts, &mut |p| {
        let s = t0.elapsed().as_secs_f64().max(1e-3);
        pb.set_message(format!(
            "{} files · {:.1} MB · {} chunks · {:.0} chunks/s · {}",
            p.files,
            p.bytes as f64 / 1e6,
            p.chunks,
            p.chunks as f64 / s,
            p.current
        ));
        pb.tick();
    })?;
    pb.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string(&rep)?);
        return Ok(0);
    }
    let (files, chunks) = ix.stats()?;
    println!(
        "indexed {} files ({} chunks) in {:.1} s; {} unchanged, {} removed, {} binary skipped",
        rep.indexed, rep.chunks, rep.seconds, rep.unchanged, rep.removed, rep.binary
    );
    if !rep.lossy.is_empty() {
        println!(
            "{} files were not valid UTF-8 and were decoded lossily: {}",
            rep.lossy.len(),
            rep.lossy.join(", ")
        );
    }
    for (p, why) in &rep.failed {
        println!("skipped {p}: {why}");
    }
    println!(
        "index {}: {files} files, {chunks} chunks ({} analyzer)",
        ix.dir.display(),
        ix.analyzer().name()
    );
    Ok(0)
}

pub fn search(a: SearchArgs) -> Result<i32> {
    let dir = index_dir(&a.index)?;
    let ix = DocIndex::open(&dir)?;
    let q = a.query.join(" ");
    let hits = ix.search(&q, a.k)?;
    if a.json {
        for h in &hits {
            println!("{}", serde_json::to_string(h)?);
        }
        return Ok(0);
    }
    if hits.is_empty() {
        println!("no results for `{q}`");
        return Ok(1);
    }
    let tty = std::io::stdout().is_terminal();
    for h in &hits {
        let loc = format!("{}:{}-{}", h.path, h.start_line, h.end_line);
        let heading = if h.heading.is_empty() {
            String::new()
        } else {
            format!("  {}", h.heading)
        };
        if tty {
            println!("\x1b[1m{loc}\x1b[0m  {:.2}{heading}", h.score);
            let mut s = String::new();
            for (i, part) in h.snippet.split("**").enumerate() {
                if i % 2 == 1 {
                    s.push_str(&format!("\x1b[1;33m{part}\x1b[0m"));
                } else {
                    s.push_str(part);
                }
            }
            println!("    {s}");
        } else {
            println!("{loc}  {:.2}{heading}", h.score);
            println!("    {}", h.snippet);
        }
    }
    Ok(0)
}
