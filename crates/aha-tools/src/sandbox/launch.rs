//! `aha __sandbox …`: the launcher that sets up isolation in a fresh, single-threaded process and
//! then starts the program as the first process of a new PID namespace. Every step is a safe
//! call (no code between fork and exec): the new session, namespaces, mounts, the cgroup,
//! rlimits, Landlock and seccomp are applied to the launcher itself and inherited; the user
//! switch is done by `Command::uid`.
//!
//! The launcher's standard input is the report pipe that only aha holds the other end of: what
//! it writes there (protections, the program's pid, how it died) cannot be forged by the program,
//! which never sees that pipe.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Args {
    dir: PathBuf,
    stdin: Option<PathBuf>,
    cgroups: Vec<PathBuf>,
    cpu: u64,
    mem: u64,
    nproc: u64,
    fsize: u64,
    nofile: u64,
    disk: u64,
    inodes: u64,
    program: Vec<String>,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::new(),
        stdin: None,
        cgroups: Vec::new(),
        cpu: 10,
        mem: 2 << 30,
        nproc: 64,
        fsize: 64 << 20,
        nofile: 128,
        disk: 64 << 20,
        inodes: 4096,
        program: Vec::new(),
    };
    let mut i = 0;
    let num = |s: Option<&String>| -> Result<u64, String> {
        s.and_then(|v| v.parse().ok())
            .ok_or_else(|| "a number was expected".to_string())
    };
    while i < argv.len() {
        let val = || argv.get(i + 1).ok_or(format!("{} needs a value", argv[i]));
        match argv[i].as_str() {
            "--dir" => a.dir = PathBuf::from(val()?),
            "--stdin" => a.stdin = Some(PathBuf::from(val()?)),
            "--cgroup" => a.cgroups.push(PathBuf::from(val()?)),
            "--cpu" => a.cpu = num(argv.get(i + 1))?,
            "--mem" => a.mem = num(argv.get(i + 1))?,
            "--nproc" => a.nproc = num(argv.get(i + 1))?,
            "--fsize" => a.fsize = num(argv.get(i + 1))?,
            "--nofile" => a.nofile = num(argv.get(i + 1))?,
            "--disk" => a.disk = num(argv.get(i + 1))?,
            "--inodes" => a.inodes = num(argv.get(i + 1))?,
            "--" => {
                a.program = argv[i + 1..].to_vec();
                break;
            }
            other => return Err(format!("unknown launcher option {other}")),
        }
        i += 2;
    }
    if a.program.is_empty() || a.dir.as_os_str().is_empty() {
        return Err(
            "usage: aha __sandbox --dir DIR [--stdin FILE] [--cgroup DIR]… [limits] -- PROGRAM ARGS…"
                .into(),
        );
    }
    Ok(a)
}

/// The unprivileged user the program runs as when aha runs as root.
const NOBODY: u32 = 65534;

/// Runs the launcher; returns the exit code (the program's, or 128+signal).
pub fn main(argv: &[String]) -> i32 {
    let a = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("aha __sandbox: {e}");
            return 125;
        }
    };
    // The report pipe is our standard input; reopen it for writing (a pipe opened through
    // /proc is the same pipe), then let the program have nothing of it.
    let mut report = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/fd/0")
        .ok();
    let mut say = |line: String| {
        if let Some(f) = report.as_mut() {
            let _ = writeln!(f, "{line}");
            let _ = f.flush();
        }
    };
    let root = nix::unistd::geteuid().is_root();
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());

    // A new session: no controlling terminal, so /dev/tty cannot be opened and TIOCSTI on the
    // user's terminal is refused even before Landlock and seccomp look at it.
    match nix::unistd::setsid() {
        Ok(_) => say("protection new session (no controlling terminal)".into()),
        Err(e) => say(format!(
            "error setsid failed ({e}): the terminal is reachable"
        )),
    }
    let stdin = match &a.stdin {
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Stdio::from(f),
            Err(e) => {
                say(format!("error cannot open the program's input: {e}"));
                return 125;
            }
        },
        None => Stdio::null(),
    };

    // The program's files, to put back once the run folder is a size-capped tmpfs.
    let files = read_files(&a.dir);

    // Namespaces: no network (only a loopback that is down), a PID namespace whose first
    // process is the program (everything it starts dies with it), and a mount namespace for the
    // run folder's tmpfs. Without root, a user namespace gives the rights to make them.
    use nix::sched::{unshare, CloneFlags};
    let mut ns = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS;
    if !root {
        ns |= CloneFlags::CLONE_NEWUSER;
    }
    let mut mount_ns = true;
    let unshared = unshare(ns).or_else(|_| {
        mount_ns = false;
        unshare(ns - CloneFlags::CLONE_NEWNS)
    });
    match unshared {
        Ok(()) => {
            say("protection network namespace (no network)".into());
            say("protection pid namespace".into());
            if !root {
                map_ids(uid.as_raw(), gid.as_raw());
                say("protection user namespace".into());
            }
        }
        Err(e) => {
            mount_ns = false;
            say(format!("error no namespaces ({e}): network not isolated"));
        }
    }
    let owner = if root { NOBODY } else { uid.as_raw() };
    let owner_gid = if root { NOBODY } else { gid.as_raw() };
    let quota = if mount_ns {
        run_folder_tmpfs(&a.dir, a.disk, a.inodes, owner, owner_gid, &files)
    } else {
        Err("no mount namespace".into())
    };
    match quota {
        Ok(()) => say(format!(
            "protection run folder quota (tmpfs {} MiB, {} files)",
            a.disk >> 20,
            a.inodes
        )),
        Err(e) => {
            // The folder stays on disk: make it the sandbox user's alone.
            if root {
                let _ = chown_tree(&a.dir, NOBODY, NOBODY);
            }
            say(format!(
                "error no run folder quota ({e}): only the file size limit holds"
            ))
        }
    }

    // The run's control group (made by aha), for memory and processes across all its processes.
    let mut grouped = !a.cgroups.is_empty();
    for g in &a.cgroups {
        if std::fs::write(g.join("cgroup.procs"), std::process::id().to_string()).is_err() {
            grouped = false;
        }
    }
    if !a.cgroups.is_empty() && !grouped {
        say("error could not join the run's cgroup".into());
    }
    // Without a group, a smaller process count keeps processes × address space bounded.
    let nproc = if grouped { a.nproc } else { a.nproc.min(16) };

    // Limits, inherited by the program.
    use nix::sys::resource::{setrlimit, Resource};
    let mut limited = Vec::new();
    for (r, v, name) in [
        (Resource::RLIMIT_CPU, a.cpu, "cpu"),
        (Resource::RLIMIT_AS, a.mem, "memory"),
        (Resource::RLIMIT_NPROC, nproc, "processes"),
        (Resource::RLIMIT_FSIZE, a.fsize, "file size"),
        (Resource::RLIMIT_NOFILE, a.nofile, "open files"),
        (Resource::RLIMIT_CORE, 0, "core"),
    ] {
        if setrlimit(r, v, v).is_ok() {
            limited.push(name);
        }
    }
    say(format!("protection rlimits ({})", limited.join(", ")));
    if !grouped {
        say(format!(
            "protection per-process memory only ({} MiB each, at most {nproc} processes): no cgroup",
            a.mem >> 20
        ));
    }

    // Files: writes only in the run's folder; reads only of system folders.
    match restrict_files(&a.dir) {
        Ok(s) => say(format!("protection landlock ({s})")),
        Err(e) => say(format!("error landlock not applied: {e}")),
    }
    // System calls: the terminal, other processes' memory, kernel interfaces, new namespaces.
    match super::seccomp::apply() {
        Ok(s) => say(format!("protection seccomp ({s})")),
        Err(e) => say(format!("error seccomp not applied: {e}")),
    }

    let mut cmd = Command::new(&a.program[0]);
    cmd.args(&a.program[1..]).current_dir(&a.dir).stdin(stdin);
    if root {
        // RLIMIT_NPROC does not bind root: run as nobody, which also cannot read root's files.
        cmd.uid(NOBODY).gid(NOBODY);
        say(format!("protection unprivileged user (uid {NOBODY})"));
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            say(format!("error cannot start {}: {e}", a.program[0]));
            eprintln!("cannot start {}: {e}", a.program[0]);
            return 127;
        }
    };
    say(format!("pid {}", child.id()));
    match child.wait() {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => c,
            (None, Some(sig)) => {
                say(format!("signal {sig}"));
                128 + sig
            }
            _ => 126,
        },
        Err(_) => 126,
    }
}

/// Maps our own ids into the new user namespace (the program keeps them; inside, no one is root).
fn map_ids(uid: u32, gid: u32) {
    let _ = std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"));
    let _ = std::fs::write("/proc/self/setgroups", "deny");
    let _ = std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"));
}

/// The regular files at the top of the run folder (the program and its runner), at most 16 MiB.
fn read_files(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            if let Ok(b) = std::fs::read(e.path()) {
                total += b.len();
                if total > 16 << 20 {
                    break;
                }
                out.push((e.file_name(), b));
            }
        }
    }
    out
}

/// Mounts a tmpfs capped at `disk` bytes and `inodes` files over the run folder (private to this
/// mount namespace, owned by the program's user, mode 0700) and puts the program's files back.
fn run_folder_tmpfs(
    dir: &Path,
    disk: u64,
    inodes: u64,
    uid: u32,
    gid: u32,
    files: &[(std::ffi::OsString, Vec<u8>)],
) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    // Nothing mounted here may propagate back to the host's mount table.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make mounts private: {e}"))?;
    let opts = format!("size={disk},nr_inodes={inodes},mode=0700,uid={uid},gid={gid}");
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| format!("cannot mount a tmpfs: {e}"))?;
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| format!("cannot restore {}: {e}", p.display()))?;
        let _ = nix::unistd::chown(
            &p,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
    }
    Ok(())
}

/// Gives the folder and its top-level files to `uid` (mode 0700 on the folder).
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> nix::Result<()> {
    use nix::unistd::{chown, Gid, Uid};
    let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        chown(&e.path(), u, g)?;
    }
    chown(dir, u, g)
}

/// Landlock at the best ABI the kernel has: full access under `dir`; read-only access to the
/// system folders (not /proc, /sys or home folders); no truncation, device ioctls or new links
/// elsewhere; no TCP; no abstract unix sockets or signals beyond the sandbox.
fn restrict_files(dir: &Path) -> Result<String, String> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset,
        RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };
    let abi = ABI::V10;
    let read: Vec<&str> = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/opt"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    // Devices a program needs, read-only, without ioctls (no terminal reachable through them).
    let devices: Vec<&str> = ["/dev/urandom", "/dev/random", "/dev/zero"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| e.to_string())?
        .handle_access(AccessNet::from_all(abi))
        .map_err(|e| e.to_string())?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?
        .add_rules(path_beneath_rules(&read, AccessFs::from_read(abi)))
        .map_err(|e| e.to_string())?
        .add_rules(path_beneath_rules(
            &devices,
            AccessFs::from_read(abi) & AccessFs::from_file(abi),
        ))
        .map_err(|e| e.to_string())?
        .add_rules(path_beneath_rules(
            ["/dev/null"],
            (AccessFs::ReadFile | AccessFs::WriteFile) & AccessFs::from_all(abi),
        ))
        .map_err(|e| e.to_string())?
        .add_rules(path_beneath_rules([dir], AccessFs::from_all(abi)))
        .map_err(|e| e.to_string())?
        .restrict_self()
        .map_err(|e| e.to_string())?;
    let kernel = match status.landlock {
        landlock::LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => kernel_abi.unwrap_or(effective_abi as i32),
        _ => 0,
    };
    let rights = match kernel {
        0 => "none".to_string(),
        n => {
            let mut r = vec!["files"];
            if n >= 3 {
                r.push("truncate");
            }
            if n >= 4 {
                r.push("tcp");
            }
            if n >= 5 {
                r.push("device ioctls");
            }
            if n >= 6 {
                r.push("abstract unix sockets and signals scoped");
            }
            if n >= 9 {
                r.push("unix socket paths");
            }
            r.join(", ")
        }
    };
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(format!("ABI {kernel}: {rights}; fully enforced")),
        RulesetStatus::PartiallyEnforced => Ok(format!("ABI {kernel}: {rights}")),
        RulesetStatus::NotEnforced => Err("the kernel does not enforce Landlock".into()),
    }
}
