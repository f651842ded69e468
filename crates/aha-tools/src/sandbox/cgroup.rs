//! A control group per run, so memory and process counts are limited for the run as a whole (an
//! rlimit binds each process alone: 64 processes × 2 GiB each is not a limit). cgroup v2 where
//! the memory and pids controllers can be had below aha's own group, else the v1 `memory` and
//! `pids` hierarchies. Only a user who may write the cgroup file system (root, or a delegated
//! subtree) gets one; otherwise the caller falls back to rlimits and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The groups made for one run (one folder for v2, up to two for v1); removed on drop.
pub struct RunGroup {
    dirs: Vec<PathBuf>,
    /// What held, for the run's protections, e.g. `cgroup v1 (memory 2048 MiB, pids 64)`.
    pub description: String,
}

impl RunGroup {
    /// The folders whose `cgroup.procs` the launcher joins before it starts the program.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl Drop for RunGroup {
    fn drop(&mut self) {
        // The kernel empties a group a moment after its last process dies (a PID namespace is
        // torn down asynchronously): retry briefly, then leave it (it holds nothing).
        let t0 = Instant::now();
        for d in &self.dirs {
            while std::fs::remove_dir(d).is_err() && d.exists() {
                if t0.elapsed() > Duration::from_secs(2) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// This process's group path in each hierarchy: `""` for v2, the controller list for v1.
fn own_groups() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
            Some((ctrl.to_string(), path.to_string()))
        })
        .collect()
}

/// Where each cgroup file system is mounted: (type, options, mount point).
fn mounts() -> Vec<(String, String, PathBuf)> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && (f[2] == "cgroup" || f[2] == "cgroup2"))
                .then(|| (f[2].to_string(), f[3].to_string(), PathBuf::from(f[1])))
        })
        .collect()
}

fn write(p: &Path, v: &str) -> std::io::Result<()> {
    std::fs::write(p, v)
}

/// Makes a fresh group for one run with `memory` bytes (swap included where the kernel
/// accounts it) and `pids` tasks; `None` when no cgroup can be had here.
pub fn create(memory: u64, pids: u64) -> Option<RunGroup> {
    let name = format!(
        "aha-run-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let own = own_groups();
    let mounts = mounts();
    v2(&own, &mounts, &name, memory, pids).or_else(|| v1(&own, &mounts, &name, memory, pids))
}

fn v2(
    own: &[(String, String)],
    mounts: &[(String, String, PathBuf)],
    name: &str,
    memory: u64,
    pids: u64,
) -> Option<RunGroup> {
    let (_, path) = own.iter().find(|(c, _)| c.is_empty())?;
    let (_, _, mnt) = mounts.iter().find(|(t, _, _)| t == "cgroup2")?;
    let parent = mnt.join(path.trim_start_matches('/'));
    let available = std::fs::read_to_string(parent.join("cgroup.controllers")).ok()?;
    if !(available.contains("memory") && available.contains("pids")) {
        return None;
    }
    let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control")).ok()?;
    if !(enabled.contains("memory") && enabled.contains("pids")) {
        // Fails where the parent holds processes and is not the root (no internal processes).
        write(&parent.join("cgroup.subtree_control"), "+memory +pids").ok()?;
    }
    let dir = parent.join(name);
    std::fs::create_dir(&dir).ok()?;
    let g = RunGroup {
        dirs: vec![dir.clone()],
        description: format!("cgroup v2 (memory {} MiB, pids {pids})", memory >> 20),
    };
    write(&dir.join("memory.max"), &memory.to_string()).ok()?;
    let _ = write(&dir.join("memory.swap.max"), "0");
    write(&dir.join("pids.max"), &pids.to_string()).ok()?;
    Some(g)
}

fn v1(
    own: &[(String, String)],
    mounts: &[(String, String, PathBuf)],
    name: &str,
    memory: u64,
    pids: u64,
) -> Option<RunGroup> {
    let dir_of = |ctrl: &str| -> Option<PathBuf> {
        let (_, path) = own.iter().find(|(c, _)| c.split(',').any(|x| x == ctrl))?;
        let (_, _, mnt) = mounts
            .iter()
            .find(|(t, o, _)| t == "cgroup" && o.split(',').any(|x| x == ctrl))?;
        Some(mnt.join(path.trim_start_matches('/')).join(name))
    };
    let (mem_dir, pids_dir) = (dir_of("memory")?, dir_of("pids")?);
    std::fs::create_dir(&mem_dir).ok()?;
    let mut g = RunGroup {
        dirs: vec![mem_dir.clone()],
        description: format!("cgroup v1 (memory {} MiB, pids {pids})", memory >> 20),
    };
    if mem_dir != pids_dir {
        std::fs::create_dir(&pids_dir).ok()?;
        g.dirs.push(pids_dir.clone());
    }
    write(&mem_dir.join("memory.limit_in_bytes"), &memory.to_string()).ok()?;
    // Swap counts too where the kernel accounts it (memsw ≥ memory is required).
    let _ = write(
        &mem_dir.join("memory.memsw.limit_in_bytes"),
        &memory.to_string(),
    );
    write(&pids_dir.join("pids.max"), &pids.to_string()).ok()?;
    Some(g)
}
