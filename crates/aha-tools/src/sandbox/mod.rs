//! Isolation for `run_code` (Linux). The program runs under a launcher — aha itself, re-executed
//! as `aha __sandbox` — that puts it in a new session (no controlling terminal), new network,
//! PID and mount namespaces, a size-capped tmpfs as its folder, a control group for memory and
//! processes where one can be had, rlimits, an unprivileged user when aha runs as root, Landlock
//! (writes only in its folder, reads only of system folders) and a seccomp filter. The
//! environment is cleared. A wall-clock timeout, a cancel, or too much output kills it; since the
//! program is the first process of its PID namespace, everything it started (daemons included)
//! dies with it. The launcher reports through a pipe the program never holds, and each result
//! says which protections were in force.

pub mod cgroup;
pub mod launch;
mod seccomp;

use anyhow::{Context, Result};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Resource limits of one run.
#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Duration,
    /// Address space, bytes.
    pub memory: u64,
    /// Processes of the sandbox user.
    pub processes: u64,
    /// Largest file the program may write, bytes.
    pub file_size: u64,
    pub open_files: u64,
    /// Output kept per stream (head and tail), bytes.
    pub keep: usize,
    /// Output beyond which the run is killed, bytes.
    pub max_output: u64,
    /// Size of the run folder (a tmpfs), bytes.
    pub disk: u64,
    /// Files and folders the run folder may hold.
    pub inodes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            memory: 2 << 30,
            processes: 64,
            file_size: 64 << 20,
            open_files: 128,
            keep: 32 << 10,
            max_output: 64 << 20,
            disk: 64 << 20,
            inodes: 4096,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// Total bytes written to each stream (what is kept may be less).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub exit_code: Option<i32>,
    /// The signal that ended the program, if one did.
    pub signal: Option<i32>,
    /// Why the sandbox killed it (timeout, cancel, output limit), if it did.
    pub killed: Option<String>,
    pub duration: Duration,
    /// The protections in force, e.g. `process group`, `netns`, `landlock`.
    pub protections: Vec<String>,
}

/// The executable that acts as the launcher: `$AHA_SANDBOX_EXE`, else this program.
fn launcher_exe() -> Result<PathBuf> {
    match std::env::var_os("AHA_SANDBOX_EXE") {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe().context("cannot find aha's own executable"),
    }
}

/// Keeps the first and last `keep` bytes of a stream and counts the rest.
struct Capture {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    total: u64,
    keep: usize,
}

impl Capture {
    fn push(&mut self, b: &[u8]) {
        self.total += b.len() as u64;
        let room = self.keep.saturating_sub(self.head.len());
        let (h, t) = b.split_at(room.min(b.len()));
        self.head.extend_from_slice(h);
        self.tail.extend(t.iter().copied());
        while self.tail.len() > self.keep {
            let excess = self.tail.len() - self.keep;
            self.tail.drain(..excess);
        }
    }
    fn text(&self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let cut = self.total - self.head.len() as u64 - tail.len() as u64;
        if cut == 0 {
            format!("{head}{}", String::from_utf8_lossy(&tail))
        } else {
            format!(
                "{head}\n[… {cut} bytes cut …]\n{}",
                String::from_utf8_lossy(&tail)
            )
        }
    }
}

fn reader(
    mut r: impl Read + Send + 'static,
    keep: usize,
    seen: Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<Capture> {
    std::thread::spawn(move || {
        let mut c = Capture {
            head: Vec::new(),
            tail: Default::default(),
            total: 0,
            keep,
        };
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            c.push(&buf[..n]);
            seen.fetch_add(n as u64, Ordering::Relaxed);
        }
        c
    })
}

/// Runs `program args…` in `dir` (a fresh directory the caller made, holding the program's
/// files) under the sandbox. `cancel` stops it early.
pub fn run(
    dir: &std::path::Path,
    program: &str,
    args: &[String],
    stdin: Option<&str>,
    limits: &Limits,
    cancel: &AtomicBool,
) -> Result<Outcome> {
    let t0 = Instant::now();
    // The program's input waits in a folder only this user can read (the program gets it as
    // its standard input, never the path).
    let ctl = tempfile::Builder::new().prefix("aha-sbx-ctl").tempdir()?;
    let input = ctl.path().join("stdin");
    if let Some(text) = stdin {
        std::fs::write(&input, text)?;
    }
    // The report pipe: its write end is the launcher's standard input; the program never has it.
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("cannot make the sandbox's report pipe")?;
    let group = cgroup::create(limits.memory, limits.processes);
    let group_description = group.as_ref().map(|g| g.description.clone());
    let mut cmd = Command::new(launcher_exe()?);
    cmd.arg("__sandbox").arg("--dir").arg(dir);
    if stdin.is_some() {
        cmd.arg("--stdin").arg(&input);
    }
    for g in group.iter().flat_map(|g| g.dirs()) {
        cmd.arg("--cgroup").arg(g);
    }
    cmd.args(["--cpu", &(limits.timeout.as_secs() + 1).to_string()])
        .args(["--mem", &limits.memory.to_string()])
        .args(["--nproc", &limits.processes.to_string()])
        .args(["--fsize", &limits.file_size.to_string()])
        .args(["--nofile", &limits.open_files.to_string()])
        .args(["--disk", &limits.disk.to_string()])
        .args(["--inodes", &limits.inodes.to_string()])
        .arg("--")
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(dir)
        // The launcher makes its own session (and so its own process group) with setsid.
        .stdin(Stdio::from(report_w))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("cannot start the sandbox launcher")?;
    drop(cmd);
    let pgid = child.id() as i32;
    let report = Arc::new(Mutex::new(String::new()));
    let report_t = {
        let report = report.clone();
        let mut r = std::fs::File::from(report_r);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut rep) = report.lock() {
                    // A launcher says a few lines; anything beyond 64 KiB is not it.
                    if rep.len() < 64 << 10 {
                        rep.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
        })
    };
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let out_t = child
        .stdout
        .take()
        .map(|s| reader(s, limits.keep, seen.clone()));
    let err_t = child
        .stderr
        .take()
        .map(|s| reader(s, limits.keep, seen.clone()));
    let killed: Mutex<Option<String>> = Mutex::new(None);
    let kill_sent: std::cell::Cell<Option<Instant>> = std::cell::Cell::new(None);
    let kill_all = |why: String| {
        let mut k = killed.lock().unwrap_or_else(|e| e.into_inner());
        if k.is_none() {
            *k = Some(why);
        }
        if kill_sent.get().is_none() {
            kill_sent.set(Some(Instant::now()));
            // The program first: it is the first process of its PID namespace, so its death
            // ends everything it started, and the launcher reaps it (no zombie left over).
            kill_program(&report);
        }
    };
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t0.elapsed() > limits.timeout {
            kill_all(format!(
                "timeout: still running after {} s",
                limits.timeout.as_secs_f32()
            ));
        } else if cancel.load(Ordering::SeqCst) {
            kill_all("cancelled".into());
        } else if seen.load(Ordering::Relaxed) > limits.max_output {
            kill_all(format!(
                "output limit: more than {} MiB written",
                limits.max_output >> 20
            ));
        }
        if kill_sent
            .get()
            .is_some_and(|t| t.elapsed() > Duration::from_millis(300))
        {
            // The launcher did not finish: take the whole group down.
            kill_group(pgid, &report);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Whatever happened, nothing of the run may survive it. (Only the group now: the launcher
    // has reaped the program, so its pid may already belong to someone else.)
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let out = out_t.and_then(|t| t.join().ok());
    let err = err_t.and_then(|t| t.join().ok());
    // The launcher has exited, so its end of the pipe is closed and the reader sees the end.
    let _ = report_t.join();
    let rep = report.lock().map(|r| r.clone()).unwrap_or_default();
    drop(group);
    let mut protections = vec!["process group".to_string(), "cleared environment".into()];
    protections.extend(
        rep.lines()
            .filter_map(|l| l.strip_prefix("protection "))
            .map(str::to_string),
    );
    if let Some(g) = &group_description {
        protections.push(g.clone());
    }
    let launcher_error = rep
        .lines()
        .find_map(|l| l.strip_prefix("error "))
        .map(str::to_string);
    use std::os::unix::process::ExitStatusExt;
    let (mut exit_code, mut signal) = (status.code(), status.signal());
    // The launcher exits 128+N when the program died of signal N.
    if let Some(c) = exit_code {
        if rep.lines().any(|l| l == format!("signal {}", c - 128)) {
            signal = Some(c - 128);
            exit_code = None;
        }
    }
    let mut stderr = err.as_ref().map(Capture::text).unwrap_or_default();
    if let Some(e) = launcher_error {
        stderr.push_str(&format!("\n[sandbox: {e}]"));
    }
    Ok(Outcome {
        stdout: out.as_ref().map(Capture::text).unwrap_or_default(),
        stderr,
        stdout_bytes: out.map(|c| c.total).unwrap_or(0),
        stderr_bytes: err.map(|c| c.total).unwrap_or(0),
        exit_code,
        signal,
        killed: killed.into_inner().unwrap_or_else(|e| e.into_inner()),
        duration: t0.elapsed(),
        protections,
    })
}

/// Kills the launcher's process group and the program (which may have left the group), whose
/// death ends its PID namespace.
fn kill_group(pgid: i32, report: &Mutex<String>) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    kill_program(report);
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// Kills the program the launcher started (its pid is in the launcher's report, which only the
/// launcher can write).
fn kill_program(report: &Mutex<String>) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if let Ok(rep) = report.lock() {
        for pid in rep
            .lines()
            .filter_map(|l| l.strip_prefix("pid "))
            .filter_map(|p| p.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
