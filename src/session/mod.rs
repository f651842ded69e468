//! Sessions: every conversation is an append-only JSONL log of the `Op`s the UI sent and the
//! `Event`s the agent reported, flushed at turn boundaries (a kill -9 loses at most the turn in
//! flight). Loading is tolerant: lines that do not parse are skipped and reported; replaying the
//! rest through [`transcript::Transcript`] rebuilds the conversation with its branches.

pub mod export;
pub mod transcript;

use crate::protocol::{Event, Op};
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Version of the log format written in each header.
pub const FORMAT: u32 = 1;

/// One line of a session log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case")]
pub enum Record {
    /// The first line: which session, model and folder.
    Header {
        version: u32,
        id: String,
        /// Unix seconds.
        created: u64,
        model: String,
        #[serde(default)]
        cwd: String,
    },
    /// An op the UI sent; `t` is milliseconds on the session's clock.
    Op { t: u64, op: Op },
    /// An event the agent reported.
    Event { t: u64, event: Event },
}

/// aha's data folder: `$AHA_DATA_DIR`, else `<data dir>/aha` (`~/.local/share/aha` on Linux).
pub fn data_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("AHA_DATA_DIR") {
        return PathBuf::from(p);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("aha")
}

/// Where session logs live.
pub fn sessions_dir() -> PathBuf {
    data_dir().join("sessions")
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of unix seconds.
pub fn format_utc(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since 1970-01-01 to a calendar date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A new session id: the UTC time and a random suffix, e.g. `20261128-211600-3f2a`.
pub fn new_id() -> String {
    let t = format_utc(unix_now()).replace(['-', ':'], "");
    let t = t.replace(' ', "-");
    format!("{t}-{:04x}", rand::random::<u16>())
}

/// An open session log, appended to.
pub struct SessionLog {
    pub id: String,
    pub path: PathBuf,
    out: BufWriter<File>,
}

impl SessionLog {
    /// Creates a new log in `dir` with its header line.
    pub fn create(dir: &Path, id: &str, model: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the sessions folder {}", dir.display()))?;
        let path = dir.join(format!("{id}.jsonl"));
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut log = Self {
            id: id.to_string(),
            path,
            out: BufWriter::new(f),
        };
        log.write(&Record::Header {
            version: FORMAT,
            id: id.to_string(),
            created: unix_now(),
            model: model.to_string(),
            cwd: std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        })?;
        log.flush()?;
        Ok(log)
    }

    /// Opens an existing log to append to it (resuming). A last line cut short by a crash is
    /// ended first so the next record starts on its own line.
    pub fn append(path: &Path) -> Result<Self> {
        let needs_newline = std::fs::read(path)
            .map(|b| b.last().is_some_and(|c| *c != b'\n'))
            .unwrap_or(false);
        let f = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut out = BufWriter::new(f);
        if needs_newline {
            out.write_all(b"\n")?;
        }
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            id,
            path: path.to_path_buf(),
            out,
        })
    }

    fn write(&mut self, r: &Record) -> Result<()> {
        serde_json::to_writer(&mut self.out, r)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// Records an op; ops that start or end a turn are flushed at once.
    pub fn op(&mut self, t: u64, op: &Op) -> Result<()> {
        self.write(&Record::Op { t, op: op.clone() })?;
        if !matches!(op, Op::Pause | Op::Resume | Op::Step) {
            self.flush()?;
        }
        Ok(())
    }

    /// Records an event; the end of a turn (or an error) flushes.
    pub fn event(&mut self, t: u64, ev: &Event) -> Result<()> {
        self.write(&Record::Event {
            t,
            event: ev.clone(),
        })?;
        if matches!(
            ev,
            Event::TurnFinished { .. } | Event::Error { .. } | Event::ApprovalRequest { .. }
        ) {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes everything buffered to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

impl Drop for SessionLog {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// A session log read back.
#[derive(Debug, Default)]
pub struct Loaded {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub records: Vec<Record>,
    /// Lines that could not be read: (line number from 1, why).
    pub skipped: Vec<(usize, String)>,
}

impl Loaded {
    /// A sentence about what was skipped, if anything was.
    pub fn skipped_summary(&self) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let lines: Vec<String> = self
            .skipped
            .iter()
            .take(5)
            .map(|(n, _)| n.to_string())
            .collect();
        let more = if self.skipped.len() > 5 { ", …" } else { "" };
        Some(format!(
            "session {}: skipped {} unreadable line(s) ({}{more}): {}",
            self.id,
            self.skipped.len(),
            lines.join(", "),
            self.skipped[0].1
        ))
    }

    /// The session clock at the end of the log.
    pub fn last_t(&self) -> u64 {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Op { t, .. } | Record::Event { t, .. } => Some(*t),
                Record::Header { .. } => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Reads a session log, keeping every line that parses and listing the ones that do not
/// (invalid UTF-8, cut short, not a record).
pub fn load(path: &Path) -> Result<Loaded> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut l = Loaded {
        id: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..Loaded::default()
    };
    let mut r = BufReader::new(f);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        let got = r
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if got == 0 {
            break;
        }
        n += 1;
        let Ok(line) = std::str::from_utf8(&buf) else {
            l.skipped.push((n, "not UTF-8".into()));
            continue;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(Record::Header {
                id, model, created, ..
            }) => {
                l.id = id;
                l.model = model;
                l.created = created;
            }
            Ok(rec) => l.records.push(rec),
            Err(e) => l.skipped.push((n, format!("line {n}: {e}"))),
        }
    }
    Ok(l)
}

/// A session on disk, for listings.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub path: PathBuf,
    pub modified: std::time::SystemTime,
}

/// Sessions in `dir`, newest first.
pub fn list(dir: &Path) -> Vec<SessionInfo> {
    let mut out: Vec<SessionInfo> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
                .map(|e| SessionInfo {
                    id: e
                        .path()
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    modified: e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH),
                    path: e.path(),
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.id.cmp(&a.id)));
    out
}

/// Finds a session by id (or a unique prefix of one) in `dir`.
pub fn find(dir: &Path, id: &str) -> Result<PathBuf> {
    let all = list(dir);
    if let Some(s) = all.iter().find(|s| s.id == id) {
        return Ok(s.path.clone());
    }
    let hits: Vec<&SessionInfo> = all.iter().filter(|s| s.id.starts_with(id)).collect();
    match hits.as_slice() {
        [one] => Ok(one.path.clone()),
        [] => Err(anyhow!(
            "no session `{id}` in {} ({} sessions there)",
            dir.display(),
            all.len()
        )),
        many => Err(anyhow!(
            "`{id}` matches {} sessions: {}",
            many.len(),
            many.iter()
                .take(5)
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The most recently written session in `dir`.
pub fn last(dir: &Path) -> Result<PathBuf> {
    list(dir)
        .into_iter()
        .next()
        .map(|s| s.path)
        .ok_or_else(|| anyhow!("no sessions yet in {}", dir.display()))
}

/// Rebuilds the transcript of a loaded session. A reply still streaming when the log ends
/// (the app was killed mid-turn) is marked interrupted.
pub fn replay(l: &Loaded) -> transcript::Transcript {
    let mut t = transcript::Transcript::default();
    for r in &l.records {
        match r {
            Record::Op { t: ms, op } => t.apply_op(op, *ms),
            Record::Event { t: ms, event } => t.apply_event(event, *ms),
            Record::Header { .. } => {}
        }
    }
    t.interrupt_live();
    t
}

#[cfg(test)]
mod tests;
