//! The document index on disk (tantivy): one document per chunk plus one per file (its content
//! hash), so that re-indexing skips unchanged files, replaces changed ones and drops deleted
//! ones. Work is committed in batches, a file's chunks and its hash always in the same commit: a
//! kill -9 leaves the last commit, which opens and answers, and the next run finishes the work.

use super::analyzer::{Analyzer, TOKENIZER};
use super::chunk::{chunk, Chunk};
use super::extract::{self, Skip};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, OwnedValue, Schema, TextFieldIndexing, TextOptions, Value, STORED,
    STRING,
};
use tantivy::{Index, IndexWriter, TantivyDocument, Term};

/// The file next to tantivy's own that records how the index was made.
const META: &str = "aha-index.json";
/// Files bigger than this are not read.
const MAX_FILE: u64 = 32 << 20;
/// Commit after this many changed files or bytes.
const BATCH_FILES: usize = 200;
const BATCH_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    version: u32,
    analyzer: Analyzer,
    /// Paths in the index are relative to this folder (when inside it).
    root: PathBuf,
}

/// The schema's fields.
#[derive(Clone, Copy)]
struct Fields {
    kind: Field,
    path: Field,
    path_text: Field,
    heading: Field,
    trail: Field,
    body: Field,
    start: Field,
    end: Field,
    hash: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = |positions: bool| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(if positions {
                    IndexRecordOption::WithFreqsAndPositions
                } else {
                    IndexRecordOption::WithFreqs
                }),
        )
    };
    let f = Fields {
        kind: b.add_text_field("kind", STRING),
        path: b.add_text_field("path", STRING | STORED),
        path_text: b.add_text_field("path_text", text(false)),
        heading: b.add_text_field("heading", text(true)),
        trail: b.add_text_field("trail", STORED),
        body: b.add_text_field("body", text(true) | STORED),
        start: b.add_u64_field("start_line", STORED),
        end: b.add_u64_field("end_line", STORED),
        hash: b.add_text_field("hash", STRING | STORED),
    };
    (b.build(), f)
}

/// The index folder for a workspace: `<workspace>/.aha/index`.
pub fn default_dir(workspace: &Path) -> PathBuf {
    workspace.join(".aha").join("index")
}

/// The chunks of every text file under `root` (as `aha index` would make them), paths relative
/// to `root`, without indexing them.
pub fn collect_chunks(root: &Path) -> Result<Vec<(String, Chunk)>> {
    let mut out = Vec::new();
    for e in ignore::WalkBuilder::new(root).require_git(false).build() {
        let e = e?;
        if !e.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        if let Ok(x) = extract::extract(e.path(), &bytes) {
            let key = e
                .path()
                .strip_prefix(root)
                .unwrap_or(e.path())
                .to_string_lossy()
                .into_owned();
            out.extend(chunk(&x.text, x.kind).into_iter().map(|c| (key.clone(), c)));
        }
    }
    Ok(out)
}

/// Whether `dir` holds a document index.
pub fn exists(dir: &Path) -> bool {
    dir.join(META).exists()
}

/// An open index.
pub struct DocIndex {
    index: Index,
    f: Fields,
    meta: Meta,
    pub dir: PathBuf,
}

/// One search hit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hit {
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    /// The line in the chunk where the first matched term is.
    pub line: usize,
    pub score: f32,
    pub heading: String,
    /// A passage around the matches, the matched terms marked `**like this**`.
    pub snippet: String,
    /// The whole chunk (lines `start_line..=end_line`), for a prompt that quotes it; not in the
    /// JSON that `search_docs` returns.
    #[serde(default, skip_serializing)]
    pub text: String,
}

/// What an indexing run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub indexed: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub binary: usize,
    pub chunks: usize,
    pub bytes: u64,
    pub lossy: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub seconds: f64,
}

impl Report {
    /// One line for a person: what was indexed, skipped and removed.
    pub fn summary(&self) -> String {
        format!(
            "indexed {} files ({} chunks) in {:.1} s; {} unchanged, {} removed, {} binary skipped",
            self.indexed, self.chunks, self.seconds, self.unchanged, self.removed, self.binary
        )
    }
}

/// Progress of an indexing run, for a progress bar.
pub struct Progress<'a> {
    pub files: usize,
    pub bytes: u64,
    pub chunks: usize,
    pub current: &'a str,
}

/// Options of an indexing run.
#[derive(Default, Clone)]
pub struct IndexOptions {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Stop after this many commits (tests of interrupted runs).
    pub stop_after_commits: Option<usize>,
}

/// How searches rank matches. The weights are over a body match's 1.0; a heading line is also
/// part of the body, so a heading match scores the body's weight plus `heading_boost`. The
/// defaults were chosen on tools/rag_eval (see BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RagOptions {
    /// Weight of a query term found in the chunk's innermost heading (default 1.0).
    pub heading_boost: f32,
    /// Weight of a query term found in the file's path (default 0.5).
    pub path_boost: f32,
}

impl Default for RagOptions {
    fn default() -> Self {
        Self {
            heading_boost: 1.0,
            path_boost: 0.5,
        }
    }
}

impl RagOptions {
    /// The options from the environment: `AHA_RAG_BOOST=HEADING,PATH` sets the two weights
    /// (a missing or unparsable one keeps its default). The CLI calls this once at start-up
    /// and passes the result to whatever searches.
    pub fn from_env() -> Self {
        Self::from_boost_spec(&std::env::var("AHA_RAG_BOOST").unwrap_or_default())
    }

    /// Parses `HEADING,PATH` as `AHA_RAG_BOOST` gives it.
    pub fn from_boost_spec(spec: &str) -> Self {
        let d = Self::default();
        let mut it = spec.split(',').filter_map(|x| x.parse().ok());
        Self {
            heading_boost: it.next().unwrap_or(d.heading_boost),
            path_boost: it.next().unwrap_or(d.path_boost),
        }
    }
}

impl DocIndex {
    /// Opens the index in `dir`, or says how to make one.
    pub fn open(dir: &Path) -> Result<Self> {
        guard(dir, || Self::open_unguarded(dir))
    }

    fn open_unguarded(dir: &Path) -> Result<Self> {
        let meta_path = dir.join(META);
        if !meta_path.exists() {
            bail!(
                "no document index at {}: run `aha index PATH…` first (or pass --index DIR)",
                dir.display()
            );
        }
        let meta: Meta = serde_json::from_slice(
            &std::fs::read(&meta_path)
                .with_context(|| format!("reading {}", meta_path.display()))?,
        )
        .with_context(|| {
            format!(
                "{} is damaged; delete {} and index again",
                meta_path.display(),
                dir.display()
            )
        })?;
        let index = Index::open_in_dir(dir).with_context(|| {
            format!(
                "cannot open the index at {}; rebuild it with `aha index --rebuild PATH…`",
                dir.display()
            )
        })?;
        index
            .tokenizers()
            .register(TOKENIZER, meta.analyzer.build());
        let (_, f) = schema();
        Ok(Self {
            index,
            f,
            meta,
            dir: dir.to_path_buf(),
        })
    }

    /// Opens the index in `dir`, creating it (with `analyzer`, paths relative to `root`) if there
    /// is none. An existing index keeps its analyzer unless `rebuild`.
    pub fn open_or_create(
        dir: &Path,
        analyzer: Analyzer,
        root: &Path,
        rebuild: bool,
    ) -> Result<Self> {
        if rebuild && dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        if dir.join(META).exists() {
            let ix = Self::open(dir)?;
            if ix.meta.analyzer != analyzer {
                bail!(
                    "the index at {} uses the {} analyzer, not {}: add --rebuild to index again with {}",
                    dir.display(),
                    ix.meta.analyzer.name(),
                    analyzer.name(),
                    analyzer.name()
                );
            }
            return Ok(ix);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (schema, _) = schema();
        // A run killed before its first commit leaves tantivy files without our meta: start over.
        let index = match Index::open_in_dir(dir) {
            Ok(i) => i,
            Err(_) => Index::create_in_dir(dir, schema)
                .with_context(|| format!("cannot create an index in {}", dir.display()))?,
        };
        let meta = Meta {
            version: 1,
            analyzer,
            root: root.to_path_buf(),
        };
        let tmp = dir.join(format!("{META}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&meta)?)?;
        std::fs::rename(&tmp, dir.join(META))?;
        drop(index);
        Self::open(dir)
    }

    pub fn analyzer(&self) -> Analyzer {
        self.meta.analyzer
    }

    /// The folder paths are relative to.
    pub fn root(&self) -> &Path {
        &self.meta.root
    }

    /// How a file's path is written in the index.
    fn key(&self, p: &Path) -> String {
        match p.strip_prefix(&self.meta.root) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => p.to_string_lossy().into_owned(),
        }
    }

    /// Path → content hash of every file in the last commit.
    fn hashes(&self) -> Result<HashMap<String, String>> {
        guard(&self.dir, || self.hashes_unguarded())
    }

    fn hashes_unguarded(&self) -> Result<HashMap<String, String>> {
        let reader = self.index.reader()?;
        let s = reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.f.kind, "file"),
            IndexRecordOption::Basic,
        );
        let n = s.num_docs() as usize;
        let mut out = HashMap::new();
        if n == 0 {
            return Ok(out);
        }
        for (_, addr) in s.search(&q, &TopDocs::with_limit(n))? {
            let d: TantivyDocument = s.doc(addr)?;
            let get = |f| {
                d.get_first(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            out.insert(get(self.f.path), get(self.f.hash));
        }
        Ok(out)
    }

    /// Indexes the files under `roots` (files or folders), incrementally.
    pub fn update(
        &mut self,
        roots: &[PathBuf],
        opts: &IndexOptions,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Report> {
        // Reading the index is guarded in `hashes`; a panic past that (the chunker on an odd
        // file, tantivy's writer) is not evidence of a damaged index, so it is worded apart.
        match aha_protocol::panic::catch_panic(|| self.update_unguarded(roots, opts, progress)) {
            Ok(r) => r,
            Err(p) => Err(anyhow!(
                "indexing stopped on an {p}{}; what was committed before stays searchable. If it happens again, rebuild the index with `aha index --rebuild PATH…`",
                damaged_files(&self.dir)
            )),
        }
    }

    fn update_unguarded(
        &mut self,
        roots: &[PathBuf],
        opts: &IndexOptions,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Report> {
        let t0 = Instant::now();
        let mut rep = Report::default();
        let known = self.hashes()?;
        let mut writer: IndexWriter = self
            .index
            .writer_with_num_threads(1, 64 << 20)
            .context("cannot open the index for writing (is another `aha index` running?)")?;
        let mut roots_abs = Vec::new();
        for r in roots {
            let a = std::fs::canonicalize(r)
                .with_context(|| format!("cannot index {}: it does not exist", r.display()))?;
            roots_abs.push(a);
        }
        let mut seen: HashSet<String> = HashSet::new();
        let (mut pending_files, mut pending_bytes, mut commits) = (0usize, 0usize, 0usize);
        let index_dir = std::fs::canonicalize(&self.dir).unwrap_or(self.dir.clone());
        for root in &roots_abs {
            let mut ov = ignore::overrides::OverrideBuilder::new(root);
            for g in &opts.include {
                ov.add(g).with_context(|| format!("--include {g}"))?;
            }
            for g in &opts.exclude {
                ov.add(&format!("!{g}"))
                    .with_context(|| format!("--exclude {g}"))?;
            }
            let walker = ignore::WalkBuilder::new(root)
                .overrides(ov.build()?)
                .require_git(false)
                .sort_by_file_name(|a, b| a.cmp(b))
                .build();
            for entry in walker {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        rep.failed.push((root.display().to_string(), e.to_string()));
                        continue;
                    }
                };
                if !entry.file_type().is_some_and(|t| t.is_file()) {
                    continue;
                }
                let p = entry.path();
                if p.starts_with(&index_dir) || p.components().any(|c| c.as_os_str() == ".aha") {
                    continue;
                }
                let key = self.key(p);
                seen.insert(key.clone());
                if extract::binary_by_name(p) {
                    rep.binary += 1;
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if size > MAX_FILE {
                    rep.failed
                        .push((key, format!("larger than {} MB; skipped", MAX_FILE >> 20)));
                    continue;
                }
                let bytes = match std::fs::read(p) {
                    Ok(b) => b,
                    Err(e) => {
                        rep.failed.push((key, format!("unreadable: {e}")));
                        continue;
                    }
                };
                rep.bytes += bytes.len() as u64;
                let hash = blake3::hash(&bytes).to_hex().to_string();
                if known.get(&key) == Some(&hash) {
                    rep.unchanged += 1;
                    progress(&Progress {
                        files: rep.indexed + rep.unchanged,
                        bytes: rep.bytes,
                        chunks: rep.chunks,
                        current: &key,
                    });
                    continue;
                }
                let path_term = Term::from_field_text(self.f.path, &key);
                match extract::extract(p, &bytes) {
                    Err(Skip::Binary) => {
                        rep.binary += 1;
                        if known.contains_key(&key) {
                            writer.delete_term(path_term);
                        }
                        continue;
                    }
                    Err(Skip::Failed(why)) => {
                        rep.failed.push((key.clone(), why));
                        if known.contains_key(&key) {
                            writer.delete_term(path_term);
                        }
                        continue;
                    }
                    Ok(x) => {
                        if x.lossy {
                            rep.lossy.push(key.clone());
                        }
                        writer.delete_term(path_term);
                        let chunks = chunk(&x.text, x.kind);
                        for c in &chunks {
                            writer.add_document(self.chunk_doc(&key, c))?;
                        }
                        let mut d = TantivyDocument::default();
                        d.add_text(self.f.kind, "file");
                        d.add_text(self.f.path, &key);
                        d.add_text(self.f.hash, &hash);
                        writer.add_document(d)?;
                        rep.indexed += 1;
                        rep.chunks += chunks.len();
                        pending_files += 1;
                        pending_bytes += bytes.len();
                    }
                }
                progress(&Progress {
                    files: rep.indexed + rep.unchanged,
                    bytes: rep.bytes,
                    chunks: rep.chunks,
                    current: &key,
                });
                if pending_files >= BATCH_FILES || pending_bytes >= BATCH_BYTES {
                    writer.commit()?;
                    commits += 1;
                    pending_files = 0;
                    pending_bytes = 0;
                    if opts.stop_after_commits.is_some_and(|n| commits >= n) {
                        rep.seconds = t0.elapsed().as_secs_f64();
                        return Ok(rep);
                    }
                }
            }
        }
        // Files under the walked roots that are gone (or now ignored) leave the index.
        let root_keys: Vec<String> = roots_abs.iter().map(|r| self.key(r)).collect();
        for k in known.keys() {
            let under = root_keys
                .iter()
                .any(|r| r.is_empty() || k == r || Path::new(k).starts_with(Path::new(r)));
            if under && !seen.contains(k) {
                writer.delete_term(Term::from_field_text(self.f.path, k));
                rep.removed += 1;
            }
        }
        writer.commit()?;
        writer.wait_merging_threads().ok();
        rep.seconds = t0.elapsed().as_secs_f64();
        Ok(rep)
    }

    /// Adds ready-made chunks straight to tantivy, committing every `commit_every` (benchmarks:
    /// tantivy's own `add_document` speed on our chunks, and large synthetic indexes).
    pub fn add_chunks(
        &mut self,
        chunks: impl Iterator<Item = (String, Chunk)>,
        commit_every: usize,
    ) -> Result<usize> {
        let mut writer: IndexWriter = self.index.writer_with_num_threads(1, 64 << 20)?;
        let mut n = 0;
        for (key, c) in chunks {
            writer.add_document(self.chunk_doc(&key, &c))?;
            n += 1;
            if n % commit_every.max(1) == 0 {
                writer.commit()?;
            }
        }
        writer.commit()?;
        writer.wait_merging_threads().ok();
        Ok(n)
    }

    fn chunk_doc(&self, key: &str, c: &Chunk) -> TantivyDocument {
        let mut d = TantivyDocument::default();
        d.add_text(self.f.kind, "chunk");
        d.add_text(self.f.path, key);
        d.add_text(self.f.path_text, key);
        // The innermost heading is searched (the outer ones repeat over every chunk below them);
        // the whole trail is shown.
        let own = c.heading.rsplit(" › ").next().unwrap_or("");
        d.add_text(self.f.heading, own);
        d.add_text(self.f.trail, &c.heading);
        d.add_text(self.f.body, &c.text);
        d.add_u64(self.f.start, c.start_line as u64);
        d.add_u64(self.f.end, c.end_line as u64);
        d
    }

    /// Number of files and chunks in the last commit.
    pub fn stats(&self) -> Result<(usize, usize)> {
        let files = self.hashes()?.len();
        let n = guard(&self.dir, || Ok(self.index.reader()?.searcher().num_docs()))? as usize;
        Ok((files, n.saturating_sub(files)))
    }

    /// The query: each analysed term, searched in the body, the innermost heading and the path
    /// (weighted by `opts`); "quoted text" must appear as a phrase.
    fn query(&self, q: &str, opts: &RagOptions) -> Result<Box<dyn Query>> {
        let a = self.meta.analyzer;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut loose = String::new();
        for (i, part) in q.split('"').enumerate() {
            if i % 2 == 0 {
                loose.push_str(part);
                loose.push(' ');
                continue;
            }
            // A phrase: its terms in order, in the body or a heading.
            let terms = a.terms(part);
            let mut alts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for (f, boost) in [(self.f.body, 1.0), (self.f.heading, 2.0)] {
                let q: Box<dyn Query> = match terms.len() {
                    0 => continue,
                    1 => Box::new(TermQuery::new(
                        Term::from_field_text(f, &terms[0]),
                        IndexRecordOption::WithFreqs,
                    )),
                    _ => Box::new(PhraseQuery::new(
                        terms.iter().map(|t| Term::from_field_text(f, t)).collect(),
                    )),
                };
                alts.push((Occur::Should, Box::new(BoostQuery::new(q, boost))));
            }
            if !alts.is_empty() {
                clauses.push((Occur::Must, Box::new(BooleanQuery::new(alts))));
            }
        }
        let mut uniq = HashSet::new();
        for t in a.terms(&loose) {
            if !uniq.insert(t.clone()) {
                continue;
            }
            let (hb, pb) = (opts.heading_boost, opts.path_boost);
            for (f, boost) in [
                (self.f.body, 1.0f32),
                (self.f.heading, hb),
                (self.f.path_text, pb),
            ] {
                let tq = TermQuery::new(Term::from_field_text(f, &t), IndexRecordOption::WithFreqs);
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(tq), boost)),
                ));
            }
        }
        if clauses.is_empty() {
            bail!("the query `{q}` has no searchable words");
        }
        // File records have no text fields, so only chunks can match.
        Ok(Box::new(BooleanQuery::new(clauses)))
    }

    /// The `k` best chunks for `q`, ranked with `opts`.
    pub fn search(&self, q: &str, k: usize, opts: &RagOptions) -> Result<Vec<Hit>> {
        let query = self.query(q, opts)?;
        guard(&self.dir, || {
            self.search_unguarded(&*query, k).with_context(|| {
                let d = self.dir.display();
                match damaged_files(&self.dir) {
                    bad if bad.is_empty() => format!(
                        "cannot read the document index at {d}; if it is corrupt, rebuild it with `aha index --rebuild PATH…`"
                    ),
                    bad => format!(
                        "the document index at {d} is corrupt ({}); rebuild it with `aha index --rebuild PATH…`",
                        bad.trim_start_matches("; ")
                    ),
                }
            })
        })
    }

    fn search_unguarded(&self, query: &dyn Query, k: usize) -> Result<Vec<Hit>> {
        let reader = self.index.reader()?;
        let s = reader.searcher();
        let top = s.search(query, &TopDocs::with_limit(k.max(1)))?;
        let mut gen = tantivy::snippet::SnippetGenerator::create(&s, query, self.f.body)?;
        gen.set_max_num_chars(240);
        let mut out = Vec::new();
        for (score, addr) in top {
            let d: TantivyDocument = s.doc(addr)?;
            let text = |f: Field| {
                d.get_first(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let num = |f: Field| match d.get_first(f).map(OwnedValue::from) {
                Some(OwnedValue::U64(n)) => n as usize,
                _ => 0,
            };
            let body = text(self.f.body);
            let start = num(self.f.start);
            let sn = gen.snippet(&body);
            let (snippet, first) = mark(sn.fragment(), sn.highlighted());
            // The line of the first match: where the fragment sits in the body, plus its offset.
            let line = match (body.find(sn.fragment()), first) {
                (Some(at), Some(off)) if !sn.fragment().is_empty() => {
                    start + body[..at + off].matches('\n').count()
                }
                _ => start,
            };
            let snippet = if snippet.trim().is_empty() {
                body.chars().take(200).collect::<String>()
            } else {
                snippet
            };
            out.push(Hit {
                path: text(self.f.path),
                start_line: start,
                end_line: num(self.f.end),
                line,
                score,
                heading: text(self.f.trail),
                snippet: snippet.split_whitespace().collect::<Vec<_>>().join(" "),
                text: body,
            });
        }
        Ok(out)
    }
}

/// Runs `f` on the index in `dir`, turning a panic into an error that says the index is damaged
/// and how to rebuild it. tantivy trusts its own files: flipped bytes in a segment make its
/// readers panic (out-of-bounds reads in the term dictionary, failed assertions in the decoders)
/// rather than return an error.
fn guard<T>(dir: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match aha_protocol::panic::catch_panic(f) {
        Ok(r) => r,
        Err(p) => Err(anyhow!(
            "the document index at {} is corrupt ({}{}); rebuild it with `aha index --rebuild PATH…` (the paths you indexed), or delete that folder and index again",
            dir.display(),
            p.0,
            damaged_files(dir)
        )),
    }
}

/// "; damaged: a.term, b.idx" naming the segment files whose checksums fail, when tantivy can
/// tell (only computed after a failure: it reads the whole index).
fn damaged_files(dir: &Path) -> String {
    let check = aha_protocol::panic::catch_panic(|| Index::open_in_dir(dir)?.validate_checksum());
    match check {
        Ok(Ok(bad)) if !bad.is_empty() => {
            let mut names: Vec<String> = bad.iter().map(|p| p.display().to_string()).collect();
            names.sort();
            format!("; damaged: {}", names.join(", "))
        }
        _ => String::new(),
    }
}

/// Marks the highlighted ranges (merged where they overlap, as CJK bigrams do) with `**`;
/// returns the marked text and the byte offset of the first match.
fn mark(fragment: &str, ranges: &[std::ops::Range<usize>]) -> (String, Option<usize>) {
    let mut rs: Vec<std::ops::Range<usize>> = ranges.to_vec();
    rs.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<usize>> = Vec::new();
    for r in rs {
        match merged.last_mut() {
            Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let mut out = String::new();
    let mut at = 0;
    for r in &merged {
        if r.start < at || r.end > fragment.len() {
            continue;
        }
        out.push_str(&fragment[at..r.start]);
        out.push_str("**");
        out.push_str(&fragment[r.clone()]);
        out.push_str("**");
        at = r.end;
    }
    out.push_str(&fragment[at..]);
    (out, merged.first().map(|r| r.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boost_spec_parses_like_the_old_variable() {
        let d = RagOptions::default();
        assert_eq!((d.heading_boost, d.path_boost), (1.0, 0.5));
        assert_eq!(RagOptions::from_boost_spec(""), d);
        let o = RagOptions::from_boost_spec("2,0.25");
        assert_eq!((o.heading_boost, o.path_boost), (2.0, 0.25));
        let o = RagOptions::from_boost_spec("3");
        assert_eq!((o.heading_boost, o.path_boost), (3.0, 0.5));
        // Unparsable parts are skipped, as before: the next number takes the slot.
        let o = RagOptions::from_boost_spec("x,4,5");
        assert_eq!((o.heading_boost, o.path_boost), (4.0, 5.0));
    }

    #[test]
    fn overlapping_bigram_highlights_merge_into_one_mark() {
        let f = "헌법은 국민이";
        let (m, first) = mark(f, &[0..6, 3..9]);
        assert_eq!(m, "**헌법은** 국민이");
        assert_eq!(first, Some(0));
    }
}
