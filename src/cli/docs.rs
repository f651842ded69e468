//! `aha index` and `aha search`: the document index from the command line.

use crate::rag::{self, Analyzer, DocIndex, IndexOptions, RagOptions};
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
    index_dir_in(&std::env::current_dir()?, given)
}

/// The index folder for the workspace `ws`: the one given, else `ws/.aha/index`.
pub(super) fn index_dir_in(ws: &std::path::Path, given: &Option<PathBuf>) -> Result<PathBuf> {
    Ok(match given {
        Some(d) => d.clone(),
        None => {
            // A `.aha` that is a link (a cloned repository may ship one) would send the index's
            // files wherever it points.
            let aha = ws.join(".aha");
            if std::fs::symlink_metadata(&aha).is_ok_and(|m| m.is_symlink()) {
                anyhow::bail!(
                    "{} is a symbolic link; aha keeps its index in a real .aha folder inside the workspace. Remove the link (`rm {}`) or pass --index DIR",
                    aha.display(),
                    aha.display()
                );
            }
            rag::default_dir(ws)
        }
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
    println!("{}", rep.summary());
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

pub fn search(a: SearchArgs, rag: &RagOptions) -> Result<i32> {
    use std::fmt::Write as _;
    let dir = index_dir(&a.index)?;
    let ix = DocIndex::open(&dir)?;
    let q = a.query.join(" ");
    let hits = ix.search(&q, a.k, rag)?;
    let mut out = String::new();
    if a.json {
        for h in &hits {
            let _ = writeln!(out, "{}", serde_json::to_string(h)?);
        }
        print_all(&out)?;
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
            let _ = writeln!(out, "\x1b[1m{loc}\x1b[0m  {:.2}{heading}", h.score);
            let mut s = String::new();
            for (i, part) in h.snippet.split("**").enumerate() {
                if i % 2 == 1 {
                    s.push_str(&format!("\x1b[1;33m{part}\x1b[0m"));
                } else {
                    s.push_str(part);
                }
            }
            let _ = writeln!(out, "    {s}");
        } else {
            let _ = writeln!(out, "{loc}  {:.2}{heading}", h.score);
            let _ = writeln!(out, "    {}", h.snippet);
        }
    }
    print_all(&out)?;
    Ok(0)
}

/// Writes to stdout; a reader that went away (`aha search … | head -1`) is not an error, where
/// `println!` would panic.
fn print_all(s: &str) -> Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

#[derive(Debug, Args)]
pub struct BenchIndexArgs {
    /// A folder of documents (e.g. the tools/rag_eval corpus).
    pub source: PathBuf,
    /// Where the benchmark indexes go (deleted first).
    #[arg(long, default_value = "/tmp/aha-bench-index")]
    pub out: PathBuf,
    /// Chunk counts of the synthetic indexes for query latency.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub sizes: Vec<usize>,
}

/// Peak resident memory of this process so far, in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `aha bench-index`: indexing throughput against tantivy's bare `add_document` on the same
/// chunks, query latency on large synthetic indexes, and peak memory while indexing.
pub fn bench_index(a: BenchIndexArgs, rag: &RagOptions) -> Result<i32> {
    use std::time::Instant;
    let _ = std::fs::remove_dir_all(&a.out);
    std::fs::create_dir_all(&a.out)?;
    let src = std::fs::canonicalize(&a.source)?;
    let chunks = rag::index::collect_chunks(&src)?;
    if chunks.is_empty() {
        anyhow::bail!("{} has no text to index", src.display());
    }
    let text_mb: f64 = chunks.iter().map(|(_, c)| c.text.len()).sum::<usize>() as f64 / 1e6;

    // 1. Our whole pipeline (walk, read, hash, extract, chunk, index) against tantivy alone.
    let mut ix = DocIndex::open_or_create(&a.out.join("pipeline"), Analyzer::Both, &src, true)?;
    let t = Instant::now();
    let rep = ix.update(
        std::slice::from_ref(&src),
        &IndexOptions::default(),
        &mut |_| {},
    )?;
    let pipe_s = t.elapsed().as_secs_f64();
    let mut bare = DocIndex::open_or_create(&a.out.join("bare"), Analyzer::Both, &src, true)?;
    let t = Instant::now();
    bare.add_chunks(chunks.iter().cloned(), usize::MAX)?;
    let bare_s = t.elapsed().as_secs_f64();
    println!(
        "throughput on {} ({} files, {:.1} MB of chunk text, {} chunks):",
        src.display(),
        rep.indexed,
        text_mb,
        rep.chunks
    );
    println!(
        "  aha index (whole pipeline): {:.2} s = {:.1} MB/s; tantivy add_document alone on the same chunks: {:.2} s = {:.1} MB/s; ratio {:.2}",
        pipe_s,
        text_mb / pipe_s,
        bare_s,
        text_mb / bare_s,
        bare_s / pipe_s
    );

    // 2. Large indexes from the chunks, each copy varied so terms do not just repeat.
    let queries = [
        "대통령의 임기",
        "국회의원 선거",
        "헌법 개정 절차",
        "근로자의 단결권",
        "법률안 제출",
        "Abraham Lincoln assassination",
        "anarchism property",
        "moon landing astronaut",
        "capital city of the state",
        "\"civil war\"",
        "KV cache truncation",
        "running totals",
    ];
    const WORDS: [&str; 16] = [
        "amber", "basalt", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo",
        "juniper", "kelp", "lumen", "마을", "바다", "하늘", "숲",
    ];
    for &n in &a.sizes {
        let dir = a.out.join(format!("n{n}"));
        let mut big = DocIndex::open_or_create(&dir, Analyzer::Both, &src, true)?;
        let base = chunks.len();
        let gen = (0..n).map(|i| {
            let (k, c) = &chunks[i % base];
            let copy = i / base;
            let mut c = c.clone();
            c.text.push_str(&format!(
                "\n{} {} copy{copy}",
                WORDS[copy % WORDS.len()],
                WORDS[(copy / WORDS.len() + i) % WORDS.len()]
            ));
            (format!("copy{copy}/{k}"), c)
        });
        let t = Instant::now();
        let mb = text_mb * n as f64 / base as f64;
        big.add_chunks(gen, 200_000)?;
        let build_s = t.elapsed().as_secs_f64();
        let big = DocIndex::open(&dir)?;
        for q in &queries {
            big.search(q, 10, rag)?; // warm
        }
        let mut lat = Vec::new();
        for _ in 0..5 {
            for q in &queries {
                let t = Instant::now();
                big.search(q, 10, rag)?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
        println!(
            "{n} chunks ({mb:.0} MB of text, built in {build_s:.0} s): query p50 {:.1} ms, p99 {:.1} ms ({} queries); peak RSS so far {:.0} MB",
            pct(0.5),
            pct(0.99),
            lat.len(),
            peak_rss_mb()
        );
    }
    Ok(0)
}
