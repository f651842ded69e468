//! The adversarial suite for `run_code`: each case must be contained and reported, the host
//! unharmed, and no process left behind.

use aha::tools::code::RunCode;
use aha::tools::{Tool, ToolContext, ToolOutput};
use serde_json::json;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn setup() -> (MutexGuard<'static, ()>, tempfile::TempDir, ToolContext) {
    let g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The launcher is the aha binary under test.
    std::env::set_var("AHA_SANDBOX_EXE", env!("CARGO_BIN_EXE_aha"));
    let ws = tempfile::tempdir().unwrap();
    let ctx = ToolContext::new(ws.path()).unwrap();
    (g, ws, ctx)
}

fn run(ctx: &ToolContext, lang: &str, code: &str, timeout: u64) -> (ToolOutput, Duration) {
    let t = Instant::now();
    let o = RunCode.run(
        json!({"language": lang, "code": code, "timeout_s": timeout}),
        ctx,
    );
    (o, t.elapsed())
}

/// Processes of the sandbox user still alive.
fn leftovers() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(s) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid = s.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        if uid.split_whitespace().nth(1) == Some("65534") {
            out.push(s.lines().next().unwrap_or("").to_string());
        }
    }
    out
}

fn assert_clean() {
    // The kernel tears a PID namespace down asynchronously; give it a moment.
    for _ in 0..50 {
        if leftovers().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("processes left behind: {:?}", leftovers());
}

#[test]
fn normal_program_runs_and_reports_protections() {
    let (_g, _ws, ctx) = setup();
    let (o, _) = run(
        &ctx,
        "python",
        "import sys\nprint(sum(range(10)))\nprint('oops', file=sys.stderr)\n",
        10,
    );
    assert!(o.ok, "{}", o.output);
    assert!(o.output.starts_with("exit 0"), "{}", o.output);
    assert!(
        o.output.contains("--- stdout (3 bytes) ---\n45"),
        "{}",
        o.output
    );
    assert!(o.output.contains("oops"));
    for p in [
        "network namespace",
        "pid namespace",
        "rlimits",
        "unprivileged user",
        "process group",
    ] {
        assert!(o.output.contains(p), "protection {p} missing: {}", o.output);
    }
    let (o, _) = run(&ctx, "bash", "echo hi; exit 3", 10);
    assert!(!o.ok && o.output.starts_with("exit 3"), "{}", o.output);
    let (o, _) = run(&ctx, "python", "print(input()[::-1])", 10);
    assert!(o.output.contains("--- stdout"), "{}", o.output);
    let o = RunCode.run(
        json!({"language": "python", "code": "print(input()[::-1])", "stdin": "abc\n"}),
        &ctx,
    );
    assert!(o.output.contains("cba"), "{}", o.output);
    assert_clean();
}

#[test]
fn infinite_loop_and_sleep_are_killed_at_the_timeout() {
    let (_g, _ws, ctx) = setup();
    let (o, t) = run(&ctx, "python", "while True:\n    pass\n", 1);
    assert!(
        !o.ok && o.output.contains("killed: timeout"),
        "{}",
        o.output
    );
    assert!(t < Duration::from_secs(5), "{t:?}");
    let (o, t) = run(&ctx, "bash", "sleep 30", 1);
    assert!(o.output.contains("killed: timeout"), "{}", o.output);
    assert!(t < Duration::from_secs(5), "{t:?}");
    assert_clean();
}

#[test]
fn fork_storm_is_bounded() {
    let (_g, _ws, ctx) = setup();
    let code = "import os, time\nmade = failed = 0\nfor i in range(5000):\n    try:\n        pid = os.fork()\n    except OSError:\n        failed += 1\n        continue\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n    made += 1\nprint('made', made, 'failed', failed, flush=True)\n";
    let (o, _) = run(&ctx, "python", code, 3);
    let made: usize = o
        .output
        .split("made ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(made < 100, "the process limit did not bind: {}", o.output);
    assert!(o.output.contains("failed"), "{}", o.output);
    assert_clean();
}

#[test]
fn huge_allocation_fails_inside() {
    let (_g, _ws, ctx) = setup();
    let (o, _) = run(
        &ctx,
        "python",
        "x = bytearray(64 << 30)\nprint('allocated')\n",
        10,
    );
    assert!(!o.ok && o.output.contains("MemoryError"), "{}", o.output);
    assert!(!o.output.contains("allocated\n"));
    assert_clean();
}

#[test]
fn ten_gib_of_output_is_cut_off() {
    let (_g, _ws, ctx) = setup();
    let code = "import sys\nb = b'x' * (1 << 20)\nfor i in range(10 * 1024):\n    sys.stdout.buffer.write(b)\n";
    let (o, t) = run(&ctx, "python", code, 30);
    assert!(
        o.output.contains("killed: output limit"),
        "{}",
        &o.output[..300.min(o.output.len())]
    );
    assert!(o.output.contains("bytes cut"));
    assert!(
        o.output.len() < 100_000,
        "what is kept is capped: {}",
        o.output.len()
    );
    assert!(t < Duration::from_secs(20), "{t:?}");
    assert_clean();
}

#[test]
fn writes_outside_the_run_folder_fail() {
    let (_g, ws, ctx) = setup();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let marker = format!("aha-escape-{}", std::process::id());
    let targets = [
        format!("/tmp/{marker}"),
        format!("{}/{marker}", ctx.workspace.display()),
        format!("{home}/{marker}"),
    ];
    let code = format!(
        "for p in {targets:?}:\n    try:\n        open(p, 'w').write('x')\n        print('WROTE', p)\n    except OSError as e:\n        print('denied', p, e.errno)\nopen('inside.txt', 'w').write('ok')\nprint('inside ok')\n"
    );
    let (o, _) = run(&ctx, "python", &code, 10);
    assert!(!o.output.contains("WROTE"), "{}", o.output);
    assert_eq!(o.output.matches("denied").count(), 3, "{}", o.output);
    assert!(o.output.contains("inside ok"), "{}", o.output);
    for t in &targets {
        assert!(!std::path::Path::new(t).exists(), "{t} was written");
    }
    drop(ws);
    assert_clean();
}

#[test]
fn planted_secrets_cannot_be_read() {
    let (_g, _ws, ctx) = setup();
    // A world-readable key in the home folder (Landlock must stop it) and a private one in /tmp.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let dir = std::path::PathBuf::from(&home).join(format!(".aha-test-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let open_key = dir.join("id_rsa");
    std::fs::write(&open_key, "-----BEGIN OPENSSH PRIVATE KEY----- secret-one").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tmp_key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp_key.path(), "secret-two").unwrap();
    let code = format!(
        "for p in [{:?}, {:?}]:\n    try:\n        print('READ', open(p).read())\n    except OSError as e:\n        print('denied', e.errno)\n",
        open_key.display().to_string(),
        tmp_key.path().display().to_string()
    );
    let (o, _) = run(&ctx, "python", &code, 10);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!o.output.contains("secret-"), "{}", o.output);
    assert_eq!(o.output.matches("denied").count(), 2, "{}", o.output);
    assert_clean();
}

#[test]
fn no_network_even_to_localhost() {
    let (_g, _ws, ctx) = setup();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('CONNECTED')\nexcept OSError as e:\n    print('no network', e.errno)\n"
    );
    let (o, _) = run(&ctx, "python", &code, 10);
    assert!(
        o.output.contains("no network") && !o.output.contains("CONNECTED"),
        "{}",
        o.output
    );
    assert!(l.accept().is_err(), "the listener saw a connection");
    assert_clean();
}

#[test]
fn daemons_do_not_outlive_the_run() {
    let (_g, _ws, ctx) = setup();
    // Double fork + setsid: the grandchild tries to live on for 60 s.
    let code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n    os._exit(0)\ntime.sleep(0.3)\nprint('parent done')\n";
    let (o, t) = run(&ctx, "python", code, 10);
    assert!(o.output.contains("parent done"), "{}", o.output);
    assert!(
        t < Duration::from_secs(5),
        "the run waited for the daemon: {t:?}"
    );
    let bash = "( setsid sleep 60 & ) ; nohup sleep 60 >/dev/null 2>&1 & echo started";
    let (o, _) = run(&ctx, "bash", bash, 10);
    assert!(o.output.contains("started"), "{}", o.output);
    assert_clean();
}

#[test]
fn aha_undo_restores_what_write_file_changed_in_another_process() {
    let (_g, ws, ctx) = setup();
    std::fs::write(ctx.workspace.join("a.txt"), "before\n").unwrap();
    let mut c = ctx.clone();
    c.turn = 7;
    let w = aha::tools::files::WriteFile;
    assert!(w.run(json!({"path": "a.txt", "content": "after\n"}), &c).ok);
    assert!(w.run(json!({"path": "b/new.txt", "content": "x\n"}), &c).ok);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aha"))
        .args(["undo", "--workspace"])
        .arg(ws.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("restored a.txt"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(ctx.workspace.join("a.txt")).unwrap(),
        "before\n"
    );
    assert!(!ctx.workspace.join("b/new.txt").exists());
}

// ---- The attack run's rows 1–7 (issue 14): each reproduces an escape that once got through. ----

/// The first line of a run_code result: status and protections (written by aha, not the program).
fn status_line(o: &ToolOutput) -> &str {
    o.output.lines().next().unwrap_or("")
}

/// A folder anyone may enter and write, outside the run folder (where a host service would be).
fn open_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("aha-open")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Row 1: code run by the agent pushed keystrokes into the user's terminal with TIOCSTI; the
/// shell ran them after aha exited. Here aha runs in a real terminal (tmux) and the attacker
/// server makes the agent run that code; the shell must never see the command.
#[test]
fn row1_terminal_injection_never_reaches_the_shell() {
    let (_g, _ws, _ctx) = setup();
    let ws = tempfile::tempdir().unwrap();
    let marker = format!("/tmp/aha-pwned-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    let code = format!(
        r#"import fcntl, os, termios
paths = ['/dev/tty', '/proc/self/fd/0', '/proc/self/fd/1', '/proc/self/fd/2'] + ['/dev/pts/%d' % i for i in range(8)]
for p in paths:
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOCTTY)
    except OSError as e:
        print('open-denied', p, e.errno)
        continue
    try:
        for c in 'touch {marker}\n':
            fcntl.ioctl(fd, termios.TIOCSTI, c.encode())
        print('INJECTED', p)
    except OSError as e:
        print('ioctl-denied', p, e.errno)
for fd in (0, 1, 2):
    try:
        fcntl.ioctl(fd, termios.TIOCSTI, b'x')
        print('INJECTED fd', fd)
    except OSError as e:
        print('ioctl-denied fd', fd, e.errno)
"#
    );
    let a = crate::attacker::Attacker::start(vec![crate::attacker::call(
        "run_code",
        json!({"language": "python", "code": code}),
    )]);
    let t = crate::tui::Tmux::start("tiocsti", 200, 50);
    let data = tempfile::tempdir().unwrap();
    t.type_text(&format!(
        "AHA_CONFIG={} AHA_DATA_DIR={} AHA_SANDBOX_EXE={} {} run --agent --engine attacker --json --approve full-auto --workspace {} go > {}/out.jsonl; echo FINISHED-$((6*7))",
        a.config.display(),
        data.path().display(),
        env!("CARGO_BIN_EXE_aha"),
        env!("CARGO_BIN_EXE_aha"),
        ws.path().display(),
        data.path().display(),
    ));
    t.keys(&["Enter"]);
    t.wait_for("the run to end", Duration::from_secs(60), |s| {
        s.contains("FINISHED-42")
    });
    // Whatever was pushed into the terminal's queue is read by the shell now.
    std::thread::sleep(Duration::from_millis(1500));
    let all = std::fs::read_to_string(data.path().join("out.jsonl")).unwrap();
    // What the program printed (the call's arguments hold the same words).
    let out: String = all
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "tool_result")
        .filter_map(|e| e["output"].as_str().map(str::to_string))
        .collect();
    assert!(
        out.contains("ioctl-denied") || out.contains("open-denied"),
        "the program did not run: {out}"
    );
    assert!(!out.contains("INJECTED"), "{out}");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the shell ran a command the sandboxed program typed"
    );
    assert!(
        out.contains("new session (no controlling terminal)"),
        "{out}"
    );
}

/// Row 2: a host service listening on a unix socket path was reachable.
#[test]
fn row2_host_unix_socket_is_unreachable() {
    let (_g, _ws, ctx) = setup();
    let d = open_dir();
    let sock = d.path().join("service.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    l.set_nonblocking(true).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let code = format!(
        "import socket\ntry:\n    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n    s.connect({:?})\n    s.sendall(b'hello')\n    print('CONNECTED')\nexcept OSError as e:\n    print('denied', e.errno)\na, b = socket.socketpair()\na.sendall(b'pair ok')\nprint(b.recv(16).decode())\n",
        sock.display().to_string()
    );
    let (o, _) = run(&ctx, "python", &code, 10);
    assert!(o.output.contains("denied"), "{}", o.output);
    assert!(!o.output.contains("CONNECTED"), "{}", o.output);
    assert!(
        o.output.contains("pair ok"),
        "socketpair must still work: {}",
        o.output
    );
    assert!(l.accept().is_err(), "the service saw a connection");
    assert_clean();
}

/// Row 3: truncate(2) on a world-writable file outside the run folder cut it (opening it for
/// writing was already denied).
#[test]
fn row3_truncate_outside_the_run_folder_fails() {
    let (_g, _ws, ctx) = setup();
    let d = open_dir();
    let victim = d.path().join("victim.txt");
    std::fs::write(&victim, "0123456789").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o666)).unwrap();
    let code = format!(
        "import os\ntry:\n    os.truncate({:?}, 5)\n    print('TRUNCATED')\nexcept OSError as e:\n    print('denied', e.errno)\n",
        victim.display().to_string()
    );
    let (o, _) = run(&ctx, "python", &code, 10);
    assert!(o.output.contains("denied"), "{}", o.output);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "0123456789");
    assert!(status_line(&o).contains("truncate"), "{}", status_line(&o));
    assert_clean();
}

/// Row 4: every host process's command line (secrets passed on it) and the host's network
/// interfaces were readable.
#[test]
fn row4_host_processes_and_interfaces_are_hidden() {
    let (_g, _ws, ctx) = setup();
    let secret = format!("--api-key=aha-secret-{}", std::process::id());
    let mut victim = std::process::Command::new("python3")
        .args(["-c", "import time; time.sleep(30)", &secret])
        .spawn()
        .unwrap();
    let code = "import os\nfound = []\ntry:\n    for d in os.listdir('/proc'):\n        try:\n            c = open('/proc/%s/cmdline' % d, 'rb').read()\n        except OSError:\n            continue\n        if b'aha-secret' in c:\n            found.append(c.replace(b'\\0', b' ').decode())\n    print('listed /proc')\nexcept OSError as e:\n    print('proc hidden', e.errno)\nprint('FOUND', found)\ntry:\n    print('NET', os.listdir('/sys/class/net'))\nexcept OSError as e:\n    print('sys hidden', e.errno)\n";
    let (o, _) = run(&ctx, "python", code, 10);
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(!o.output.contains("aha-secret"), "{}", o.output);
    assert!(o.output.contains("FOUND []"), "{}", o.output);
    assert!(!o.output.contains("NET ["), "{}", o.output);
    assert_clean();
}

/// Row 5: with aha not running as root, the program appended `pid N` lines to the launcher's
/// report file, and aha SIGKILLed an unrelated process of the user and showed forged protection
/// lines. Here aha really runs as uid 1234, driven by the attacker server.
#[test]
fn row5_forged_report_lines_kill_nothing_and_show_nothing() {
    let (_g, _ws, _ctx) = setup();
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let uid = 1234;
    let home = tempfile::Builder::new()
        .prefix("aha-user")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The binary must be reachable for that user (/root is private).
    let exe = home.path().join("aha");
    std::fs::copy(env!("CARGO_BIN_EXE_aha"), &exe).unwrap();
    let ws = home.path().join("ws");
    let data = home.path().join("data");
    for d in [&ws, &data] {
        std::fs::create_dir(d).unwrap();
        nix::unistd::chown(
            d,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(uid)),
        )
        .unwrap();
    }
    let mut victim = std::process::Command::new("sleep")
        .arg("60")
        .uid(uid)
        .gid(uid)
        .spawn()
        .unwrap();
    let forged = format!("pid {}\\nprotection forged-by-the-program\\n", victim.id());
    let code = format!(
        r#"import glob, os
lines = "{forged}"
targets = set(glob.glob('/tmp/aha-sbx-ctl*/*'))
try:
    for d in os.listdir('/proc'):
        try:
            args = open('/proc/%s/cmdline' % d, 'rb').read().split(b'\0')
        except OSError:
            continue
        for i, a in enumerate(args[:-1]):
            if a == b'--report':
                targets.add(args[i + 1].decode())
except OSError:
    pass
done = []
for t in targets:
    try:
        open(t, 'a').write(lines)
        done.append(t)
    except OSError:
        pass
for fd in range(3, 64):
    try:
        os.write(fd, lines.encode())
        done.append(fd)
    except OSError:
        pass
print('appended to', len(done), flush=True)
# Make aha kill the run (a timeout), which is when it acts on the report's pid lines.
import time
time.sleep(60)
"#
    );
    let a = crate::attacker::Attacker::start(vec![crate::attacker::call(
        "run_code",
        json!({"language": "python", "code": code, "timeout_s": 2}),
    )]);
    let out = std::process::Command::new(&exe)
        .args([
            "run",
            "--agent",
            "--engine",
            "attacker",
            "--json",
            "--approve",
            "full-auto",
            "--workspace",
        ])
        .arg(&ws)
        .arg("go")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home.path())
        .env("AHA_CONFIG", &a.config)
        .env("AHA_DATA_DIR", &data)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    let res = crate::attacker::results(&out);
    let alive = victim.try_wait().unwrap().is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        res.iter().any(|(_, o)| o.contains("appended to")),
        "the program did not run: {} {:?}",
        String::from_utf8_lossy(&out.stderr),
        res
    );
    assert!(alive, "aha killed an unrelated process of the user");
    for (_, o) in &res {
        let first = o.lines().next().unwrap_or("");
        assert!(
            !first.contains("forged"),
            "forged protections shown: {first}"
        );
        assert!(first.contains("user namespace"), "{first}");
    }
}

/// Row 6: a memory bomb across processes: 3 processes held 4.4 GiB (the address-space limit
/// binds each process alone). Four processes of 700 MiB each may not all hold at once.
#[test]
fn row6_memory_is_limited_per_run_not_per_process() {
    let (_g, _ws, ctx) = setup();
    let code = "import os, sys, time\nkids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n        try:\n            b = b'\\x01' * (700 << 20)\n            print('held', i, flush=True)\n            time.sleep(3)\n            print('done', i, len(b) >> 20, flush=True)\n        except MemoryError:\n            print('refused', i, flush=True)\n        os._exit(0)\n    kids.append(pid)\nfor k in kids:\n    os.waitpid(k, 0)\nprint('parent done')\n";
    let (o, _) = run(&ctx, "python", code, 30);
    let done = o.output.matches("done ").count();
    assert!(
        status_line(&o).contains("memory") && status_line(&o).contains("cgroup"),
        "no per-run memory limit held: {}",
        status_line(&o)
    );
    assert!(
        done <= 2,
        "{done} processes held 700 MiB at once: {}",
        o.output
    );
    assert_clean();
}

/// Row 7: a disk and inode flood: 1.3 GB in 0.6 s, 140,000 files in 8 s.
#[test]
fn row7_disk_and_file_count_are_capped() {
    let (_g, _ws, ctx) = setup();
    let code = "import os\ntotal = 0\ntry:\n    for i in range(2000):\n        with open('big%d' % i, 'wb') as f:\n            f.write(b'x' * (1 << 20))\n        total += 1 << 20\nexcept OSError as e:\n    print('disk stopped', e.errno)\nfor i in range(2000):\n    try:\n        os.remove('big%d' % i)\n    except OSError:\n        pass\nprint('total bytes', total)\nn = 0\ntry:\n    os.mkdir('many')\n    for i in range(200000):\n        open('many/%d' % i, 'w').close()\n        n += 1\nexcept OSError as e:\n    print('files stopped', e.errno)\nprint('total files', n)\n";
    let (o, t) = run(&ctx, "python", code, 30);
    let num = |k: &str| -> u64 {
        o.output
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    assert!(o.output.contains("disk stopped"), "{}", o.output);
    assert!(num("total bytes ") <= 64 << 20, "{}", o.output);
    assert!(o.output.contains("files stopped"), "{}", o.output);
    assert!(num("total files ") <= 4096, "{}", o.output);
    assert!(
        status_line(&o).contains("run folder quota"),
        "{}",
        status_line(&o)
    );
    assert!(t < Duration::from_secs(25), "{t:?}");
    assert_clean();
}

/// The run folder was 0777 and not sticky; it is the sandbox user's alone.
#[test]
fn run_folder_is_private_to_the_sandbox_user() {
    let (_g, _ws, ctx) = setup();
    let code = "import os\ns = os.stat('.')\nprint('mode %o uid %d me %d' % (s.st_mode & 0o7777, s.st_uid, os.getuid()))\n";
    let (o, _) = run(&ctx, "python", code, 10);
    let line = o
        .output
        .lines()
        .find(|l| l.starts_with("mode "))
        .unwrap_or("");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.get(1), Some(&"700"), "{}", o.output);
    assert_eq!(
        f.get(3),
        f.get(5),
        "the folder is not the program's own: {}",
        o.output
    );
    assert_clean();
}

/// The seccomp filter: calls that reach past the sandbox fail with EPERM (clone3 with ENOSYS),
/// while ordinary work (threads, subprocesses, pipes) goes on.
#[test]
fn seccomp_denies_kernel_interfaces_and_new_namespaces() {
    let (_g, _ws, ctx) = setup();
    let code = r#"import ctypes, os, platform, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
nr = {'x86_64': dict(unshare=272, ptrace=101, keyctl=250, bpf=321, userfaultfd=323, io_uring_setup=425, perf_event_open=298, process_vm_readv=310, setns=308, mount=165),
      'aarch64': dict(unshare=97, ptrace=117, keyctl=219, bpf=280, userfaultfd=282, io_uring_setup=425, perf_event_open=241, process_vm_readv=270, setns=268, mount=40)}[platform.machine()]
args = dict(unshare=(0x10000000,), ptrace=(0, 0, 0, 0), keyctl=(0, 0), bpf=(0, 0, 0), userfaultfd=(0,), io_uring_setup=(1, 0), perf_event_open=(0, 0, -1, -1, 0), process_vm_readv=(1, 0, 0, 0, 0, 0), setns=(0, 0), mount=(0, 0, 0, 0, 0))
for name, n in sorted(nr.items()):
    r = libc.syscall(n, *args[name])
    print(name, 'EPERM' if r == -1 and ctypes.get_errno() == 1 else 'ALLOWED %d %d' % (r, ctypes.get_errno()))
t = threading.Thread(target=lambda: print('thread ok')); t.start(); t.join()
print(subprocess.run(['echo', 'subprocess ok'], capture_output=True, text=True).stdout.strip())
"#;
    let (o, _) = run(&ctx, "python", code, 10);
    assert!(!o.output.contains("ALLOWED"), "{}", o.output);
    assert_eq!(o.output.matches("EPERM").count(), 10, "{}", o.output);
    assert!(
        o.output.contains("thread ok") && o.output.contains("subprocess ok"),
        "{}",
        o.output
    );
    assert!(status_line(&o).contains("seccomp"), "{}", status_line(&o));
    assert_clean();
}
