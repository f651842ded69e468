//! Row 13 and the server's smaller findings: the real `aha serve` (smollm2-135m, the smallest real
//! model) on 127.0.0.1, attacked over raw TCP as the attack run did. A flood of clients that never
//! finish their headers must not exhaust the server's descriptors nor keep `/health` from
//! answering; an unfinished header or body is cut off after its timeout; bad requests are 400s
//! that say what is wrong; `aha run` refuses the same out-of-range sampling values.

use crate::common::{bin, heavy, model};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MODEL: &str = "smollm2-135m";

/// A running `aha serve`, killed on drop.
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `aha serve` on a free port; `nofile` caps its open files (soft and hard), as a
    /// smaller machine's limit would.
    fn start(extra: &[&str], nofile: Option<u64>) -> Server {
        model(MODEL);
        let mut cmd = match nofile {
            // The shell lowers the limit (soft and hard) and becomes aha.
            Some(n) => {
                let mut c = std::process::Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                    .arg(bin().get_program());
                c
            }
            None => bin(),
        };
        cmd.args(["serve", "--port", "0", "--threads", "2", "-m", MODEL])
            .args(extra);
        let (child, port, log) = crate::common::spawn_serve(cmd);
        Server { child, port, log }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Open descriptors of the server process.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What came back for one request: the status (0 if none), the headers and body as text.
struct Reply {
    code: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.code, self.body))
    }
}

fn parse_reply(out: &str) -> Reply {
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out, ""));
    Reply {
        code,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Sends `request` as is on a fresh connection and reads until the server closes it or
/// `timeout` passes.
fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> std::io::Result<Reply> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = timeout.saturating_sub(t.elapsed());
        if left.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "no complete answer in {timeout:?}; got {:?}",
                    String::from_utf8_lossy(&out)
                ),
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !out.is_empty() => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(parse_reply(&String::from_utf8_lossy(&out)))
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, req.as_bytes(), Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

fn health(addr: SocketAddr, timeout: Duration) -> std::io::Result<Reply> {
    exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        timeout,
    )
}

/// Raises this process's open-file limit as far as the hard limit allows; returns the soft limit.
fn raise_own_nofile(want: u64) -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let target = want.min(hard).max(soft);
    if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        return target;
    }
    soft
}

/// A client that opened a connection and is sending its request one byte at a time: the head,
/// or (`body`) the body of a chat request whose head is complete.
fn slow_client(addr: SocketAddr, body: bool) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_nonblocking(true).ok()?;
    let start: &[u8] = if body {
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"messages\": \""
    } else {
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
    };
    s.write_all(start).ok()?;
    Some(s)
}

/// Whether the server still holds this connection open (it has neither closed nor answered it).
fn still_open(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => s.write(b"a").is_ok(),
        _ => false,
    }
}

/// Row 13. The server may open 512 files (as on a machine with a low limit); three times that
/// many clients connect and send their headers (a third of them, their body) one byte at a time,
/// and whichever connections the server closes are opened again, for 8 s. Throughout, `/health`,
/// asked every 100 ms, must answer within 2 s every time and the server's descriptors must stay
/// under its limit. Before the fix, every descriptor went to the slow clients and `/health` went
/// unanswered until they left.
#[test]
fn slow_client_flood_leaves_health_answering() {
    let _g = heavy();
    let server_files = 512u64;
    let own = raise_own_nofile(4096);
    let flood = 1500usize.min(own.saturating_sub(300) as usize);
    assert!(
        flood as u64 > server_files + 200,
        "this test needs about {} open files and the limit here is {own}",
        server_files + 500
    );
    let s = Server::start(&[], Some(server_files));
    let addr = s.addr();
    assert_eq!(health(addr, Duration::from_secs(5)).unwrap().code, 200);

    // The flood runs on its own thread while this one checks /health every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut clients: Vec<Option<TcpStream>> = (0..flood).map(|_| None).collect();
            let (mut opened, mut most) = (0usize, 0usize);
            while !stop.load(Ordering::SeqCst) {
                // A server that stops accepting makes each connect wait out its timeout: stop
                // refilling after a second so the round still ends.
                let round = Instant::now();
                for (i, c) in clients.iter_mut().enumerate() {
                    if !c.as_mut().is_some_and(still_open)
                        && round.elapsed() < Duration::from_secs(1)
                    {
                        *c = slow_client(addr, i % 3 == 2);
                        opened += c.is_some() as usize;
                    }
                }
                most = most.max(clients.iter().filter(|c| c.is_some()).count());
                std::thread::sleep(Duration::from_millis(50));
            }
            (opened, most)
        })
    };
    let (mut checks, mut worst, mut most_fds) = (0usize, Duration::ZERO, 0);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let r = health(addr, Duration::from_secs(2));
        let took = t.elapsed();
        let failed = match r {
            Ok(r) if r.code == 200 && r.json()["status"] == "ok" => None,
            Ok(r) => Some(format!("/health answered {} {}", r.code, r.body)),
            Err(e) => Some(format!("/health did not answer within 2 s: {e}")),
        };
        if let Some(f) = failed {
            stop.store(true, Ordering::SeqCst);
            panic!(
                "{f} (check {checks}, {:.1} s into a flood of {flood} slow clients)\nserver log:\n{}",
                t0.elapsed().as_secs_f64(),
                s.log()
            );
        }
        checks += 1;
        worst = worst.max(took);
        let fds = s.fds();
        most_fds = most_fds.max(fds);
        if fds as u64 >= server_files {
            stop.store(true, Ordering::SeqCst);
            panic!("the server holds {fds} descriptors, at its limit of {server_files}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let (opened, most) = flooding.join().unwrap();
    eprintln!(
        "slow-client flood: {flood} clients ({most} connected at once), {opened} connections \
         opened in {:.1} s; /health answered {checks} times, slowest {:.0} ms; server \
         descriptors at most {most_fds}",
        t0.elapsed().as_secs_f64(),
        worst.as_secs_f64() * 1000.0
    );
    assert!(checks >= 40, "only {checks} checks of /health");
    assert!(opened > flood, "the server never closed a slow client");
    assert_eq!(health(addr, Duration::from_secs(5)).unwrap().code, 200);
}

/// A request head that never ends, and a body that stops halfway, are each cut off once their
/// timeout (10 s by default) passes, with no help from other traffic. Before the fix neither
/// was: the attack run waited 35 s for an answer to a partial body.
#[test]
fn unfinished_headers_and_bodies_are_cut_off() {
    let _g = heavy();
    let s = Server::start(&[], None);
    let addr = s.addr();
    let head = std::thread::spawn(move || {
        let t = Instant::now();
        let r = exchange(
            addr,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: applic",
            Duration::from_secs(20),
        );
        (t.elapsed(), r)
    });
    let t = Instant::now();
    let r = exchange(
        addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"messages\": [",
        Duration::from_secs(20),
    );
    let body_took = t.elapsed();
    let r = r.unwrap_or_else(|e| panic!("a partial body got no answer: {e}\n{}", s.log()));
    assert_eq!(r.code, 408, "{} {}", r.head, r.body);
    let v = r.json();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("body") && m.contains("10 s")),
        "{v}"
    );
    assert!(
        r.head.to_ascii_lowercase().contains("connection: close"),
        "{}",
        r.head
    );
    assert!(
        body_took >= Duration::from_secs(9) && body_took < Duration::from_secs(13),
        "408 after {body_took:?}"
    );
    let (head_took, r) = head.join().unwrap();
    let r = r.unwrap_or_else(|e| panic!("an unfinished header was never cut off: {e}"));
    assert!(
        head_took >= Duration::from_secs(9) && head_took < Duration::from_secs(13),
        "closed after {head_took:?}: {} {}",
        r.code,
        r.body
    );
    eprintln!(
        "partial body → {} after {:.1} s; unfinished header → closed after {:.1} s",
        408,
        body_took.as_secs_f64(),
        head_took.as_secs_f64()
    );
    assert_eq!(health(addr, Duration::from_secs(5)).unwrap().code, 200);
}

fn error_of(r: &Reply) -> (String, Value) {
    let v = r.json();
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (msg, v["error"]["param"].clone())
}

/// The smaller findings: a prompt longer than the context was a 500, an empty body a 405, and
/// out-of-range sampling values were accepted. Each must be a 400 that says what is wrong.
#[test]
fn bad_requests_get_400_that_name_the_problem() {
    let _g = heavy();
    let s = Server::start(&[], None);
    let addr = s.addr();
    let chat = "/v1/chat/completions";

    // Longer than smollm2-135m's 8192-token context, well within the 4 MB body limit.
    let long = "lorem ipsum dolor sit amet ".repeat(8000);
    for stream in [false, true] {
        let r = post(
            addr,
            chat,
            &json!({"messages": [{"role": "user", "content": long}], "stream": stream}).to_string(),
        );
        assert_eq!(r.code, 400, "stream {stream}: {} {}", r.head, r.body);
        let (msg, param) = error_of(&r);
        assert_eq!(param, "messages", "{msg}");
        assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
        let numbers: Vec<usize> = msg
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        assert!(
            numbers.iter().any(|&n| n > 8192) && numbers.contains(&8192),
            "the message should give both lengths: {msg}"
        );
    }

    // An empty body, with and without a Content-Length.
    for req in [
        format!("POST {chat} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        format!("POST {chat} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("POST {chat} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"),
    ] {
        let r = exchange(addr, req.as_bytes(), Duration::from_secs(10)).unwrap();
        assert_eq!(r.code, 400, "{req:?} → {} {}", r.head, r.body);
        let (msg, _) = error_of(&r);
        assert!(msg.contains("empty"), "{msg}");
    }

    // A wrong method is a 405 that says which one to use.
    let r = exchange(
        addr,
        format!("GET {chat} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.code, 405, "{} {}", r.head, r.body);
    assert!(error_of(&r).0.contains("POST"), "{}", r.body);

    let hi = json!([{"role": "user", "content": "hi"}]);
    let bad: &[(&str, Value)] = &[
        ("temperature", json!(-1)),
        ("temperature", json!(1e308)),
        ("temperature", json!(2.5)),
        ("top_p", json!(-1)),
        ("top_p", json!(0)),
        ("top_p", json!(1.5)),
        ("top_k", json!(-1)),
        ("min_p", json!(-0.1)),
        ("min_p", json!(1.5)),
        ("repetition_penalty", json!(0)),
        ("repetition_penalty", json!(-2)),
        ("repetition_penalty", json!(1e300)),
        ("max_tokens", json!(0)),
        ("max_completion_tokens", json!(0)),
        ("presence_penalty", json!(3)),
        ("frequency_penalty", json!(-2.5)),
    ];
    for (field, value) in bad {
        let mut body = json!({"messages": hi, "max_tokens": 4});
        body[*field] = value.clone();
        let r = post(addr, chat, &body.to_string());
        assert_eq!(r.code, 400, "{field}={value} → {} {}", r.code, r.body);
        let (msg, param) = error_of(&r);
        assert_eq!(param, *field, "{field}={value}: {msg}");
        assert!(msg.contains(field), "{field}={value}: {msg}");
    }

    // The edges of every range are still fine.
    let ok = json!({"messages": hi, "max_tokens": 2, "temperature": 0, "top_p": 1, "top_k": 0,
        "min_p": 0, "repetition_penalty": 1, "presence_penalty": 2, "frequency_penalty": -2});
    let r = post(addr, chat, &ok.to_string());
    assert_eq!(r.code, 200, "{}", r.body);
    let ok = json!({"messages": hi, "max_tokens": 1, "temperature": 2, "top_p": 1e-9, "min_p": 1});
    let r = post(addr, chat, &ok.to_string());
    assert_eq!(r.code, 200, "{}", r.body);
}

/// `aha run` refuses the same values, naming the flag, before it loads a model.
#[test]
fn aha_run_refuses_out_of_range_sampling_flags() {
    let cases: &[(&str, &str)] = &[
        ("--temperature", "-1"),
        ("--temperature", "1e308"),
        ("--temperature", "NaN"),
        ("--top-p", "-1"),
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--min-p", "2"),
        ("--repeat-penalty", "0"),
        ("--repeat-penalty", "inf"),
        ("--max-tokens", "0"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in cases {
        let out = bin()
            .args(["run", flag, value, "x"])
            .env("AHA_MODEL", dir.path().join("no-such-model.gguf"))
            .env("HOME", dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted: {err}");
        assert!(err.contains(flag), "{flag} {value}: {err}");
        assert!(
            !err.contains("no-such-model"),
            "{flag} {value} reached the model: {err}"
        );
    }
}
