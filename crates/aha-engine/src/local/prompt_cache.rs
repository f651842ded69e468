//! The prompt cache on disk: the keys and values of a chat prompt's stable prefix (the system
//! prompt and the tools' schemas, the same for every request), saved after the first prefill
//! and loaded instead of computed on the next start. `aha run --agent "hi"` then prefills the
//! user's few tokens instead of some 1,300.
//!
//! An entry is named by the engine's fingerprint, the model file's SHA-256 and the prefix's
//! token ids, and holds them again with the shape and the data, under a checksum. Nothing in an
//! entry is trusted: one that does not verify (damaged, truncated, another model's, another
//! kernel set's) is deleted and rebuilt, never used and never fatal. Entries are written to a
//! temporary file and renamed into place, and the least recently used go first once the
//! entries pass the size limit.

use super::kv_cache::{KvLayout, LayerKv};
use super::model::Transformer;
use crate::options::EngineOptions;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The shortest stable prefix worth an entry, in tokens.
pub const MIN_PREFIX: usize = 32;

/// The size limit when the config names none, in MB.
pub const DEFAULT_LIMIT_MB: u64 = 2048;

/// The first bytes of an entry.
const MAGIC: &[u8; 8] = b"AHAKVPC\0";

/// The entry format; another version is a miss (and the entry is deleted).
const VERSION: u32 = 1;

/// Entries' file extension.
const EXT: &str = "kv";

/// Temporary files older than this are leftovers of a killed writer and are deleted.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// The shape of a model's keys and values: what an entry's data must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl KvShape {
    /// The shape of `model`'s cache.
    pub fn of(model: &Transformer) -> Self {
        Self {
            layers: model.cfg.n_layer,
            kv_heads: model.cfg.n_kv_head,
            head_dim: model.cfg.head_dim,
        }
    }

    /// f32 values in one layer's keys (or values) for `n` positions.
    fn per_layer(self, n: usize) -> usize {
        self.kv_heads * n * self.head_dim
    }
}

/// What makes keys and values computed by this engine differ from another's: the cache format,
/// aha's version, the CPU kernel set, the numerics, the activations' dtype, the device kind, the
/// prefill GEMM threshold and chunk size. It is part of an entry's name and header, so an entry
/// is only used where it would have been computed bit for bit the same.
pub fn engine_fingerprint(model: &Transformer, opts: &EngineOptions) -> String {
    let device = match &model.device {
        candle_core::Device::Cpu => "cpu",
        candle_core::Device::Cuda(_) => "cuda",
        candle_core::Device::Metal(_) => "metal",
    };
    format!(
        "format {VERSION}; aha {}; kernels {}; numerics {:?}; dtype {:?}; device {device}; gemm_min_rows {}; prefill_chunk {}",
        env!("CARGO_PKG_VERSION"),
        super::qkernels::current().name(),
        model.numerics,
        model.dtype,
        opts.gemm_min_rows,
        super::engine::PREFILL_CHUNK,
    )
}

/// The layout `model`'s forward pass keeps keys and values in (as `Transformer::pass` decides:
/// aha's CPU kernels for f32 on the CPU with the default numerics, candle tensors elsewhere).
pub fn kv_layout(model: &Transformer) -> KvLayout {
    if model.device.is_cpu() && model.dtype == candle_core::DType::F32 && !model.ggml_numerics() {
        KvLayout::Cpu
    } else {
        KvLayout::Tensors {
            dtype: model.dtype,
            device: model.device.clone(),
        }
    }
}

/// Where a chat prompt's stable part ends: the common prefix of its `tokens` and the `probe`'s
/// (the same system messages and tools with a placeholder user message), leaving at least the
/// last token to feed. 0 when that is under [`MIN_PREFIX`].
pub fn stable_len(tokens: &[u32], probe: &[u32]) -> usize {
    let n = tokens
        .iter()
        .zip(probe)
        .take_while(|(a, b)| a == b)
        .count()
        .min(tokens.len().saturating_sub(1));
    if n >= MIN_PREFIX {
        n
    } else {
        0
    }
}

/// The prompt cache: a folder of entries for one model file, at most `limit` bytes of them.
#[derive(Debug, Clone)]
pub struct PromptCache {
    dir: PathBuf,
    limit: u64,
    model_hash: [u8; 32],
    /// The engine's [`engine_fingerprint`], set when the cache is given to an engine.
    fingerprint: String,
}

impl PromptCache {
    /// The cache in `dir` (created when needed) for the model at `model`, keeping at most
    /// `limit_bytes` of entries. Hashes the model, or reads its hash from the memo in `dir`
    /// when the file's path, size and modification time are unchanged.
    pub fn open(dir: &Path, limit_bytes: u64, model: &Path) -> io::Result<Self> {
        let hash = model_sha256(model, &dir.join("model-sha256"))?;
        Ok(Self::with_model_hash(dir, limit_bytes, hash))
    }

    /// The cache in `dir` for a model whose SHA-256 is `model_hash`.
    pub fn with_model_hash(dir: &Path, limit_bytes: u64, model_hash: [u8; 32]) -> Self {
        Self {
            dir: dir.join("prompts"),
            limit: limit_bytes,
            model_hash,
            fingerprint: String::new(),
        }
    }

    /// Sets the engine fingerprint entries are made and checked with.
    pub fn set_fingerprint(&mut self, fingerprint: String) {
        self.fingerprint = fingerprint;
    }

    /// The folder that holds the entries.
    pub fn entries_dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `tokens` lives.
    pub fn entry_path(&self, tokens: &[u32]) -> PathBuf {
        let mut h = blake3::Hasher::new();
        h.update(&(self.fingerprint.len() as u64).to_le_bytes());
        h.update(self.fingerprint.as_bytes());
        h.update(&self.model_hash);
        for t in tokens {
            h.update(&t.to_le_bytes());
        }
        let name = h.finalize().to_hex();
        self.dir.join(format!("{}.{EXT}", &name[..32]))
    }

    /// The keys and values of `tokens` for a model of `shape`, if a valid entry holds them. An
    /// entry that does not verify is deleted (with a warning) and is a miss; a hit counts as a
    /// use for the least-recently-used order.
    pub fn load(&self, tokens: &[u32], shape: KvShape) -> Option<Vec<LayerKv>> {
        let path = self.entry_path(tokens);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("prompt cache: cannot read {}: {e}", path.display());
                return None;
            }
        };
        match self.decode(&bytes, tokens, shape) {
            Ok(layers) => {
                touch(&path);
                Some(layers)
            }
            Err(why) => {
                tracing::warn!(
                    "prompt cache: {} is not a valid entry ({why}); deleted, it will be rebuilt",
                    path.display()
                );
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Saves the keys and values of `tokens` (`layers`, each `(kv_heads, n, head_dim)`) as an
    /// entry, then deletes the least recently used entries past the limit. An entry larger than
    /// the whole limit is not written. Never leaves a partial entry behind.
    pub fn save(&self, tokens: &[u32], shape: KvShape, layers: &[LayerKv]) -> io::Result<()> {
        let size = entry_size(&self.fingerprint, shape, tokens.len());
        if size > self.limit {
            tracing::debug!("prompt cache: an entry of {size} bytes is over the limit");
            return Ok(());
        }
        let bad = layers.len() != shape.layers
            || layers.iter().any(|l| {
                l.keys.len() != shape.per_layer(tokens.len())
                    || l.values.len() != shape.per_layer(tokens.len())
            });
        if bad {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "keys and values do not match the shape",
            ));
        }
        fs::create_dir_all(&self.dir)?;
        let path = self.entry_path(tokens);
        write_atomic(&path, |w| self.encode(w, tokens, shape, layers))?;
        self.evict(&path);
        Ok(())
    }

    /// Writes an entry: magic, version, fingerprint, model hash, shape, tokens, data (f32 LE,
    /// layer by layer, keys then values), then the BLAKE3 of all of that.
    fn encode(
        &self,
        w: &mut dyn Write,
        tokens: &[u32],
        shape: KvShape,
        layers: &[LayerKv],
    ) -> io::Result<()> {
        let mut w = HashWriter {
            inner: w,
            hash: blake3::Hasher::new(),
        };
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(self.fingerprint.len() as u32).to_le_bytes())?;
        w.write_all(self.fingerprint.as_bytes())?;
        w.write_all(&self.model_hash)?;
        for v in [shape.layers, shape.kv_heads, shape.head_dim, tokens.len()] {
            w.write_all(&(v as u32).to_le_bytes())?;
        }
        let ids: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        w.write_all(&ids)?;
        for l in layers {
            for part in [&l.keys, &l.values] {
                let bytes: Vec<u8> = part.iter().flat_map(|f| f.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
        }
        let sum = w.hash.finalize();
        w.inner.write_all(sum.as_bytes())
    }

    /// Reads and checks an entry's `bytes`: the checksum, then that every field is the one
    /// asked for. The error says which check failed.
    fn decode(&self, bytes: &[u8], tokens: &[u32], shape: KvShape) -> Result<Vec<LayerKv>, String> {
        let Some(body_len) = bytes.len().checked_sub(32) else {
            return Err("truncated".into());
        };
        let (body, sum) = bytes.split_at(body_len);
        if blake3::hash(body).as_bytes() != sum {
            return Err("checksum mismatch".into());
        }
        let mut r = Reader { rest: body };
        if r.take(8)? != MAGIC {
            return Err("not a prompt cache entry".into());
        }
        if r.u32()? != VERSION {
            return Err("another format version".into());
        }
        let fp_len = r.u32()? as usize;
        if r.take(fp_len)? != self.fingerprint.as_bytes() {
            return Err("made by another engine configuration".into());
        }
        if r.take(32)? != self.model_hash {
            return Err("made for another model file".into());
        }
        let dims = [r.u32()?, r.u32()?, r.u32()?, r.u32()?].map(|v| v as usize);
        if dims != [shape.layers, shape.kv_heads, shape.head_dim, tokens.len()] {
            return Err(format!("shape {dims:?} does not match the model"));
        }
        let ids = r.take(4 * tokens.len())?;
        if !ids.chunks_exact(4).map(le_u32).eq(tokens.iter().copied()) {
            return Err("holds other tokens".into());
        }
        let n = shape.per_layer(tokens.len());
        let mut layers = Vec::with_capacity(shape.layers);
        for _ in 0..shape.layers {
            let keys = r.f32s(n)?;
            let values = r.f32s(n)?;
            layers.push(LayerKv { keys, values });
        }
        if !r.rest.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(layers)
    }

    /// Deletes the least recently used entries until the rest fit the limit (never `keep`, the
    /// entry just written), and temporary files a killed writer left.
    fn evict(&self, keep: &Path) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        for e in rd.flatten() {
            let (path, Ok(meta)) = (e.path(), e.metadata()) else {
                continue;
            };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if is_tmp(&path) {
                if now.duration_since(mtime).is_ok_and(|age| age > STALE_TMP) {
                    let _ = fs::remove_file(&path);
                }
            } else if path.extension().is_some_and(|x| x == EXT) && meta.is_file() {
                entries.push((mtime, meta.len(), path));
            }
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        for (_, len, path) in entries {
            if total <= self.limit {
                break;
            }
            if path != keep && fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }
}

/// The size in bytes of an entry of `n` tokens.
fn entry_size(fingerprint: &str, shape: KvShape, n: usize) -> u64 {
    let header = 8 + 4 + 4 + fingerprint.len() + 32 + 16 + 4 * n;
    (header + 8 * shape.layers * shape.per_layer(n) + 32) as u64
}

/// Marks `path` as just used (its modification time is the least-recently-used order).
fn touch(path: &Path) {
    if let Ok(f) = fs::OpenOptions::new().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Whether `path` is one of this module's temporary files.
fn is_tmp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".tmp-"))
}

/// Writes `path` through a temporary file in the same folder, renamed into place once complete
/// and flushed: a writer killed midway leaves no file at `path`. On an error the temporary file
/// is removed.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".tmp-{}-{nanos}", std::process::id()));
    let result = (|| {
        let f = fs::File::create(&tmp)?;
        let mut w = io::BufWriter::with_capacity(1 << 20, f);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A writer that hashes what passes through it.
struct HashWriter<'w> {
    inner: &'w mut dyn Write,
    hash: blake3::Hasher,
}

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads an entry's fields in order.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err("truncated".into());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.take(4).map(le_u32)
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, String> {
        let b = self.take(n.checked_mul(4).ok_or("too large")?)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_bits(le_u32(c)))
            .collect())
    }
}

/// The SHA-256 of the model at `path` (a file, or a safetensors folder: its files in name
/// order), memoized in `memo_dir` by canonical path, size and modification time, since hashing
/// a model of hundreds of MB on every start would cost seconds.
pub fn model_sha256(path: &Path, memo_dir: &Path) -> io::Result<[u8; 32]> {
    let path = fs::canonicalize(path)?;
    let files = model_files(&path)?;
    let mut key = path.display().to_string();
    for (p, meta) in &files {
        let mtime = meta
            .modified()?
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        key.push_str(&format!(
            "\n{} {} {}",
            p.display(),
            meta.len(),
            mtime.as_nanos()
        ));
    }
    let memo = memo_dir.join(&blake3::hash(key.as_bytes()).to_hex()[..32]);
    if let Some(h) = read_memo(&memo, &key) {
        return Ok(h);
    }
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (p, _) in &files {
        if files.len() > 1 {
            sha.update(p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(b""));
        }
        let mut f = fs::File::open(p)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
        }
    }
    let h: [u8; 32] = sha.finalize().into();
    let text = format!("{}\n{key}", hex::encode(h));
    let saved = fs::create_dir_all(memo_dir)
        .and_then(|()| write_atomic(&memo, |w| w.write_all(text.as_bytes())));
    if let Err(e) = saved {
        tracing::warn!("prompt cache: cannot save the model's hash: {e}");
    }
    Ok(h)
}

/// The files that make up the model at `path`, with their metadata, in name order.
fn model_files(path: &Path) -> io::Result<Vec<(PathBuf, fs::Metadata)>> {
    let meta = fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(vec![(path.to_path_buf(), meta)]);
    }
    let mut files = Vec::new();
    for e in fs::read_dir(path)? {
        let e = e?;
        let meta = e.metadata()?;
        if meta.is_file() {
            files.push((e.path(), meta));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// A memoized hash, if the memo file is for exactly `key`.
fn read_memo(memo: &Path, key: &str) -> Option<[u8; 32]> {
    let text = fs::read_to_string(memo).ok()?;
    let (hash, rest) = text.split_once('\n')?;
    if rest != key {
        return None;
    }
    hex::decode(hash).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: KvShape = KvShape {
        layers: 2,
        kv_heads: 2,
        head_dim: 4,
    };

    fn cache(dir: &Path, limit: u64, model: u8, fingerprint: &str) -> PromptCache {
        let mut c = PromptCache::with_model_hash(dir, limit, [model; 32]);
        c.set_fingerprint(fingerprint.into());
        c
    }

    fn tokens(n: usize, salt: u32) -> Vec<u32> {
        (0..n as u32).map(|i| i * 31 + salt).collect()
    }

    /// Distinct keys and values for `n` positions.
    fn layers(n: usize, salt: f32) -> Vec<LayerKv> {
        (0..SHAPE.layers)
            .map(|l| {
                let keys: Vec<f32> = (0..SHAPE.per_layer(n))
                    .map(|i| salt + l as f32 * 1e4 + i as f32 * 0.25)
                    .collect();
                let values = keys.iter().map(|k| -k - 0.5).collect();
                LayerKv { keys, values }
            })
            .collect()
    }

    fn entries(c: &PromptCache) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(c.entries_dir())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn an_entry_round_trips_and_a_hit_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 1 << 30, 1, "fp");
        let (t, kv) = (tokens(40, 0), layers(40, 0.5));
        assert!(c.load(&t, SHAPE).is_none(), "an empty cache misses");
        c.save(&t, SHAPE, &kv).unwrap();
        let path = c.entry_path(&t);
        assert_eq!(
            entries(&c),
            vec![path.clone()],
            "one entry, no temporary file"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            entry_size("fp", SHAPE, 40)
        );
        assert_eq!(c.load(&t, SHAPE), Some(kv));
        // Another prefix is another entry.
        assert!(c.load(&tokens(40, 1), SHAPE).is_none());
        assert!(c.load(&t[..39], SHAPE).is_none());
    }

    #[test]
    fn a_damaged_entry_is_deleted_and_missed() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 1 << 30, 1, "fp");
        let t = tokens(40, 0);
        c.save(&t, SHAPE, &layers(40, 0.5)).unwrap();
        let path = c.entry_path(&t);
        let good = fs::read(&path).unwrap();
        // One flipped bit anywhere (header, tokens, data, checksum), or a truncation.
        for at in [3, 20, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            assert!(c.load(&t, SHAPE).is_none(), "byte {at} flipped");
            assert!(
                !path.exists(),
                "byte {at} flipped: the entry must be deleted"
            );
        }
        fs::write(&path, &good[..good.len() - 100]).unwrap();
        assert!(c.load(&t, SHAPE).is_none());
        assert!(!path.exists());
        fs::write(&path, b"").unwrap();
        assert!(c.load(&t, SHAPE).is_none());
        assert!(!path.exists());
        // The intact bytes still load.
        fs::write(&path, &good).unwrap();
        assert!(c.load(&t, SHAPE).is_some());
    }

    #[test]
    fn another_engine_or_model_misses_even_on_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let mine = cache(dir.path(), 1 << 30, 1, "fp");
        let t = tokens(40, 0);
        mine.save(&t, SHAPE, &layers(40, 0.5)).unwrap();
        let entry = fs::read(mine.entry_path(&t)).unwrap();
        for other in [
            cache(dir.path(), 1 << 30, 1, "fp2"),
            cache(dir.path(), 1 << 30, 2, "fp"),
        ] {
            // Another fingerprint or model hash names another file…
            assert_ne!(other.entry_path(&t), mine.entry_path(&t));
            assert!(other.load(&t, SHAPE).is_none());
            // …and an entry copied under its name is refused and deleted.
            fs::write(other.entry_path(&t), &entry).unwrap();
            assert!(other.load(&t, SHAPE).is_none());
            assert!(!other.entry_path(&t).exists());
        }
        assert!(mine.load(&t, SHAPE).is_some(), "the original is untouched");
        // Another model shape refuses it too.
        let wide = KvShape {
            kv_heads: 4,
            ..SHAPE
        };
        assert!(mine.load(&t, wide).is_none());
        assert!(!mine.entry_path(&t).exists());
    }

    #[test]
    fn an_entry_under_the_name_of_other_tokens_is_refused() {
        // What a hash collision would look like: the name matches, the tokens do not.
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 1 << 30, 1, "fp");
        let (a, b) = (tokens(40, 0), tokens(40, 7));
        c.save(&a, SHAPE, &layers(40, 0.5)).unwrap();
        fs::rename(c.entry_path(&a), c.entry_path(&b)).unwrap();
        assert!(c.load(&b, SHAPE).is_none());
        assert!(!c.entry_path(&b).exists());
        // Wrong data for the shape is refused before anything is written.
        assert!(c.save(&a, SHAPE, &layers(39, 0.5)).is_err());
        assert!(entries(&c).is_empty());
    }

    #[test]
    fn the_least_recently_used_entries_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let one = entry_size("fp", SHAPE, 40);
        let c = cache(dir.path(), 3 * one + one / 2, 1, "fp");
        let ts: Vec<Vec<u32>> = (0..4).map(|i| tokens(40, 100 * i)).collect();
        let t0 = SystemTime::now() - Duration::from_secs(1000);
        for (i, t) in ts[..3].iter().enumerate() {
            c.save(t, SHAPE, &layers(40, i as f32)).unwrap();
            let f = fs::File::options()
                .write(true)
                .open(c.entry_path(t))
                .unwrap();
            f.set_modified(t0 + Duration::from_secs(10 * i as u64))
                .unwrap();
        }
        // Using the oldest makes it the newest: the second-oldest goes when a fourth comes.
        assert!(c.load(&ts[0], SHAPE).is_some());
        c.save(&ts[3], SHAPE, &layers(40, 3.0)).unwrap();
        let left: Vec<bool> = ts.iter().map(|t| c.entry_path(t).exists()).collect();
        assert_eq!(left, [true, false, true, true]);
        let total: u64 = entries(&c)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(total <= 3 * one + one / 2, "{total}");
        // An entry larger than the whole limit is not written.
        let small = cache(dir.path(), one - 1, 1, "fp");
        small.save(&tokens(40, 9), SHAPE, &layers(40, 9.0)).unwrap();
        assert!(!small.entry_path(&tokens(40, 9)).exists());
    }

    #[test]
    fn an_unwritable_folder_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let c = cache(&file, 1 << 30, 1, "fp");
        assert!(c.save(&tokens(40, 0), SHAPE, &layers(40, 0.5)).is_err());
        assert!(c.load(&tokens(40, 0), SHAPE).is_none());
    }

    #[test]
    fn the_model_hash_is_sha256_and_memoized_by_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        fs::write(&model, b"abc").unwrap();
        let memo = dir.path().join("memo");
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex::encode(model_sha256(&model, &memo).unwrap()), want);
        assert_eq!(fs::read_dir(&memo).unwrap().count(), 1);
        // The memo answers while path, size and time are unchanged: rewrite the memo's hash
        // and the lie comes back (so the file was not read again).
        let memo_file = fs::read_dir(&memo).unwrap().next().unwrap().unwrap().path();
        let text = fs::read_to_string(&memo_file).unwrap();
        fs::write(&memo_file, text.replacen(want, &"0".repeat(64), 1)).unwrap();
        assert_eq!(model_sha256(&model, &memo).unwrap(), [0; 32]);
        // A changed file (other size) is hashed again.
        fs::write(&model, b"abcd").unwrap();
        let h = hex::encode(model_sha256(&model, &memo).unwrap());
        assert_eq!(
            h,
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
    }

    #[test]
    fn the_stable_prefix_is_the_common_part_capped_and_at_least_min() {
        let a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        b[40] = 999;
        assert_eq!(stable_len(&a, &b), 40);
        // Capped so the last token is left to feed.
        assert_eq!(stable_len(&a[..40], &b), 39);
        assert_eq!(stable_len(&a, &a), 49);
        b[MIN_PREFIX - 1] = 999;
        assert_eq!(stable_len(&a, &b), 0);
        assert_eq!(stable_len(&[], &[]), 0);
    }
}
