//! `aha __sandbox …`: the launcher that sets up isolation in a fresh, single-threaded process and
//! then starts the program as the first process of a new PID namespace. Every step is a safe
//! call (no code between fork and exec): namespaces, rlimits and Landlock are applied to the
//! launcher itself and inherited; the user switch is done by `Command::uid`.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Command;

struct Args {
    dir: PathBuf,
    report: PathBuf,
    cpu: u64,
    mem: u64,
    nproc: u64,
    fsize: u64,
    nofile: u64,
    program: Vec<String>,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::new(),
        report: PathBuf::new(),
        cpu: 10,
        mem: 2 << 30,
        nproc: 64,
        fsize: 64 << 20,
        nofile: 128,
        program: Vec::new(),
    };
    let mut i = 0;
    let num = |s: Option<&String>| -> Result<u64, String> {
        s.and_then(|v| v.parse().ok())
            .ok_or_else(|| "a number was expected".to_string())
    };
    while i < argv.len() {
        match argv[i].as_str() {
            "--dir" => a.dir = PathBuf::from(argv.get(i + 1).ok_or("--dir needs a value")?),
            "--report" => {
                a.report = PathBuf::from(argv.get(i + 1).ok_or("--report needs a value")?)
            }
            "--cpu" => a.cpu = num(argv.get(i + 1))?,
            "--mem" => a.mem = num(argv.get(i + 1))?,
            "--nproc" => a.nproc = num(argv.get(i + 1))?,
            "--fsize" => a.fsize = num(argv.get(i + 1))?,
            "--nofile" => a.nofile = num(argv.get(i + 1))?,
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
            "usage: aha __sandbox --dir DIR --report FILE [limits] -- PROGRAM ARGS…".into(),
        );
    }
    Ok(a)
}

/// Runs the launcher; returns the exit code (the program's, or 128+signal).
pub fn main(argv: &[String]) -> i32 {
    let a = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("aha __sandbox: {e}");
            return 125;
        }
    };
    let mut report = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.report)
        .ok();
    let mut say = |line: String| {
        if let Some(f) = report.as_mut() {
            let _ = writeln!(f, "{line}");
            let _ = f.flush();
        }
    };
    let root = nix::unistd::geteuid().is_root();

    // Namespaces: no network (only a loopback that is down), and a PID namespace whose first
    // process is the program, so everything it starts dies with it.
    use nix::sched::{unshare, CloneFlags};
    let ns = if root {
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWPID
    } else {
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWPID
    };
    match unshare(ns) {
        Ok(()) => {
            say("protection network namespace (no network)".into());
            say("protection pid namespace".into());
            if !root {
                say("protection user namespace".into());
            }
        }
        Err(e) => say(format!("error no namespaces ({e}): network not isolated")),
    }

    // Limits, inherited by the program.
    use nix::sys::resource::{setrlimit, Resource};
    let mut limited = Vec::new();
    for (r, v, name) in [
        (Resource::RLIMIT_CPU, a.cpu, "cpu"),
        (Resource::RLIMIT_AS, a.mem, "memory"),
        (Resource::RLIMIT_NPROC, a.nproc, "processes"),
        (Resource::RLIMIT_FSIZE, a.fsize, "file size"),
        (Resource::RLIMIT_NOFILE, a.nofile, "open files"),
        (Resource::RLIMIT_CORE, 0, "core"),
    ] {
        if setrlimit(r, v, v).is_ok() {
            limited.push(name);
        }
    }
    say(format!("protection rlimits ({})", limited.join(", ")));

    // Files: writes only in the run's folder; reads only of system folders.
    let landlock = restrict_files(&a.dir, &a.report);
    match &landlock {
        Ok(s) => say(format!("protection landlock ({s})")),
        Err(e) => say(format!("error landlock not applied: {e}")),
    }

    let mut cmd = Command::new(&a.program[0]);
    cmd.args(&a.program[1..]).current_dir(&a.dir);
    if root {
        // RLIMIT_NPROC does not bind root: run as nobody, which also cannot read root's files.
        cmd.uid(65534).gid(65534);
        say("protection unprivileged user (uid 65534)".into());
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

/// Landlock: full access under `dir`, read-only access to system folders, nothing else.
fn restrict_files(dir: &std::path::Path, report: &std::path::Path) -> Result<String, String> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, ABI,
    };
    let abi = ABI::V2;
    let read: Vec<&str> = [
        "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/proc", "/sys", "/opt", "/dev",
    ]
    .into_iter()
    .filter(|p| std::path::Path::new(p).exists())
    .collect();
    let mut writable = vec![dir.to_path_buf(), PathBuf::from("/dev/null")];
    if let Some(p) = report.parent() {
        writable.push(p.to_path_buf());
    }
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?
        .add_rules(path_beneath_rules(&read, AccessFs::from_read(abi)))
        .map_err(|e| e.to_string())?
        .add_rules(path_beneath_rules(&writable, AccessFs::from_all(abi)))
        .map_err(|e| e.to_string())?
        .restrict_self()
        .map_err(|e| e.to_string())?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok("fully enforced".into()),
        RulesetStatus::PartiallyEnforced => Ok("partially enforced".into()),
        RulesetStatus::NotEnforced => Err("the kernel does not enforce Landlock".into()),
    }
}
