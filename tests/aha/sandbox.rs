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
