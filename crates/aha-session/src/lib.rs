//! Sessions: every conversation is an append-only JSONL log of the `Op`s the UI sent and the
//! `Event`s the agent reported, flushed at turn boundaries (a kill -9 loses at most the turn in
//! flight). Loading is tolerant: lines that do not parse are skipped and reported; replaying the
//! rest through [`transcript::Transcript`] rebuilds the conversation with its branches.
//!
//! What one record may hold is capped both ways: any JSON string longer than [`FIELD_MAX`] bytes
//! keeps its start and a marker saying how much was cut, as it is written and again as it is read
//! (the reader streams each line through the cap, so an old or hostile log with a 50 MB delta
//! never sits in memory whole), and a line still longer than [`LINE_MAX`] is skipped.

pub mod export;
pub mod html;
pub mod steps;
pub mod thinking;
pub mod transcript;

use aha_protocol::{Event, Op};
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Version of the log format written in each header.
pub const FORMAT: u32 = 1;

/// The most bytes one string of a record keeps (as JSON text, escapes included).
pub const FIELD_MAX: usize = 2 << 20;
/// A line longer than this once its strings are capped (a huge array) is skipped when reading.
pub const LINE_MAX: usize = 16 << 20;

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
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let needs_newline = last_byte(&f).is_some_and(|c| c != b'\n');
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
        let mut w = CapWriter {
            inner: &mut self.out,
            cap: Capper::new(FIELD_MAX),
            buf: Vec::new(),
        };
        serde_json::to_writer(&mut w, r)?;
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
        let (got, whole) = read_capped_line(&mut r, &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if got == 0 {
            break;
        }
        n += 1;
        if !whole {
            l.skipped.push((
                n,
                format!(
                    "line {n} is longer than {} MB even with its long texts cut",
                    LINE_MAX >> 20
                ),
            ));
            continue;
        }
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

/// The last byte of a file, without reading the rest.
fn last_byte(f: &File) -> Option<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::End(-1)).ok()?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).ok()?;
    Some(b[0])
}

/// Reads one line (up to and without its `\n`) into `out` through a [`Capper`], never holding
/// more than [`LINE_MAX`] bytes of it. Returns the bytes consumed (0 at the end of the file) and
/// whether the line fit.
fn read_capped_line(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    let mut cap = Capper::new(FIELD_MAX);
    let (mut consumed, mut fits) = (0usize, true);
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            break;
        }
        let (part, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], i + 1),
            None => (avail, avail.len()),
        };
        if fits {
            for &b in part {
                cap.push(b, out);
            }
            if out.len() > LINE_MAX {
                fits = false;
                out.clear();
                out.shrink_to(0);
            }
        }
        let ended = done > part.len();
        r.consume(done);
        consumed += done;
        if ended {
            break;
        }
    }
    if fits {
        cap.finish(out);
    }
    Ok((consumed, fits))
}

/// Cuts every JSON string in a stream of JSON text to at most `max` bytes, adding a marker that
/// says how many were cut. Works a byte at a time with a few bytes of state, so text of any
/// length goes through in bounded memory; it cuts only between whole characters and whole
/// escapes (a surrogate pair counts as one), so valid JSON stays valid.
struct Capper {
    max: usize,
    in_str: bool,
    /// An escape or a multi-byte character not yet complete.
    unit: Vec<u8>,
    /// The length `unit` will have when complete (0: no unit pending).
    need: usize,
    /// Bytes of the current string kept, and cut.
    kept: usize,
    cut: usize,
}

impl Capper {
    fn new(max: usize) -> Self {
        Self {
            max,
            in_str: false,
            unit: Vec::with_capacity(12),
            need: 0,
            kept: 0,
            cut: 0,
        }
    }

    fn push(&mut self, b: u8, out: &mut Vec<u8>) {
        if !self.in_str {
            out.push(b);
            if b == b'"' {
                (self.in_str, self.kept, self.cut) = (true, 0, 0);
            }
            return;
        }
        if self.need == 0 {
            self.need = match b {
                b'"' => {
                    self.close(out);
                    out.push(b);
                    self.in_str = false;
                    return;
                }
                b'\\' => 2,
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => return self.unit_done(&[b], out),
            };
            self.unit.push(b);
            return;
        }
        self.unit.push(b);
        if self.unit[0] == b'\\' {
            let len = self.unit.len();
            if len == 2 && b == b'u' {
                self.need = 6;
            } else if len == 6 && self.need == 6 && high_surrogate(&self.unit[2..6]) {
                // Its low half follows as another `\uXXXX`: the pair is one character.
                self.need = 12;
            } else if self.need == 12 && ((len == 7 && b != b'\\') || (len == 8 && b != b'u')) {
                // Not a pair after all: the first escape is a unit, the rest starts afresh.
                let rest = self.unit.split_off(6);
                let first = std::mem::take(&mut self.unit);
                self.need = 0;
                self.unit_done(&first, out);
                for r in rest {
                    self.push(r, out);
                }
                return;
            }
        }
        if self.unit.len() >= self.need {
            let u = std::mem::take(&mut self.unit);
            self.need = 0;
            self.unit_done(&u, out);
            self.unit = u;
            self.unit.clear();
        }
    }

    fn unit_done(&mut self, u: &[u8], out: &mut Vec<u8>) {
        if self.cut == 0 && self.kept + u.len() <= self.max {
            out.extend_from_slice(u);
            self.kept += u.len();
        } else {
            self.cut += u.len();
        }
    }

    /// The end of a string: the marker, if anything was cut.
    fn close(&mut self, out: &mut Vec<u8>) {
        if self.cut > 0 {
            out.extend_from_slice(format!(" [… {} bytes cut …]", self.cut).as_bytes());
            self.cut = 0;
        }
    }

    /// The end of the text: a string left open (a line cut short) still says what was cut.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.in_str {
            self.close(out);
        }
    }
}

/// `\uD800`–`\uDBFF`, given the four hex digits.
fn high_surrogate(hex: &[u8]) -> bool {
    std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u16::from_str_radix(h, 16).ok())
        .is_some_and(|v| (0xD800..=0xDBFF).contains(&v))
}

/// A writer that sends JSON text through a [`Capper`] (records as they are written).
struct CapWriter<'a, W: Write> {
    inner: &'a mut W,
    cap: Capper,
    buf: Vec<u8>,
}

impl<W: Write> Write for CapWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.clear();
        for &b in data {
            self.cap.push(b, &mut self.buf);
        }
        self.inner.write_all(&self.buf)?;
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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

#[cfg(test)]
mod cap_tests {
    use super::*;
    use proptest::prelude::*;

    fn cap_text(json: &str, max: usize) -> String {
        let mut c = Capper::new(max);
        let mut out = Vec::new();
        for &b in json.as_bytes() {
            c.push(b, &mut out);
        }
        c.finish(&mut out);
        String::from_utf8(out).expect("capped text stays UTF-8")
    }

    #[test]
    fn long_strings_keep_their_start_and_a_marker_and_the_json_stays_valid() {
        let json =
            r#"{"a":"0123456789","b":["x\"y\\z"],"c":"\ud83d\ude00\ud83d\ude00\u00e9ééé","d":5}"#;
        let v: serde_json::Value = serde_json::from_str(&cap_text(json, 8)).unwrap();
        assert_eq!(v["a"], "01234567 [… 2 bytes cut …]");
        assert_eq!(v["b"][0], "x\"y\\z", "escapes count as written (7 bytes)");
        // A surrogate pair is one unit of 12 bytes: it does not fit in 8 and is not split.
        assert!(v["c"].as_str().unwrap().starts_with(" [… "), "{}", v["c"]);
        assert_eq!(v["d"], 5);
        let v: serde_json::Value = serde_json::from_str(&cap_text(json, 14)).unwrap();
        assert_eq!(v["c"], "😀 [… 24 bytes cut …]");
        assert_eq!(cap_text(json, 100), json, "short strings pass unchanged");
    }

    #[test]
    fn a_line_is_read_through_the_cap_across_buffer_boundaries() {
        let long = "é".repeat(FIELD_MAX);
        let text = format!("{{\"t\":\"{long}\"}}\r\n{{\"t\":\"b\"}}");
        let mut r = BufReader::with_capacity(7, text.as_bytes());
        let mut buf = Vec::new();
        let (n, fits) = read_capped_line(&mut r, &mut buf).unwrap();
        assert!(fits);
        assert_eq!(n, text.find('\n').unwrap() + 1);
        let v: serde_json::Value = serde_json::from_slice(buf.trim_ascii()).unwrap();
        let t = v["t"].as_str().unwrap();
        assert!(t.starts_with("éé") && t.ends_with(&format!("[… {FIELD_MAX} bytes cut …]")));
        buf.clear();
        read_capped_line(&mut r, &mut buf).unwrap();
        assert_eq!(buf, br#"{"t":"b"}"#);
        buf.clear();
        assert_eq!(read_capped_line(&mut r, &mut buf).unwrap().0, 0);
    }

    proptest! {
        #[test]
        fn any_record_text_capped_still_parses(s in any::<String>(), t in "[\\x00-\\x7f😀é\"\\\\]{0,40}", max in 1usize..40) {
            let json = serde_json::json!({"a": s, "b": [t, 1, {"c": s}]}).to_string();
            let capped = cap_text(&json, max);
            let v: serde_json::Value = serde_json::from_str(&capped).unwrap();
            for (got, orig) in [(&v["a"], &s), (&v["b"][0], &t), (&v["b"][2]["c"], &s)] {
                let got = got.as_str().unwrap();
                match got.find(" [… ") {
                    Some(at) if got.ends_with(" bytes cut …]") && got != orig => {
                        prop_assert!(orig.starts_with(&got[..at]));
                    }
                    _ => prop_assert_eq!(got, orig.as_str()),
                }
            }
        }
    }
}
