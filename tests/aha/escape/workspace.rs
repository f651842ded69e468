//! Workspace escapes (issue 14, rows 8–11): the file tools and `aha undo` must not create, change,
//! read or delete anything outside the workspace, whatever links, hard links or forged undo logs
//! the workspace holds. Each test drives the real agent through the attacker server (and the real
//! `aha undo`), then compares the folder outside the workspace byte for byte with what it held
//! before.

use crate::attacker::{self, call, Attacker};
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A temporary folder holding the workspace `ws` and a folder `outside` next to it.
struct Scene {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    outside: PathBuf,
}

fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let ws = base.join("ws");
    let outside = base.join("outside");
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "TOP SECRET\n").unwrap();
    std::fs::write(outside.join("victim.txt"), "keep me\n").unwrap();
    Scene {
        _dir: dir,
        ws,
        outside,
    }
}

/// Every entry under `dir` (links not followed), with a file's bytes or a link's target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_symlink() {
                format!("link → {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            };
            out.insert(p, what);
        }
    }
    out
}

fn undo(ws: &Path) -> std::process::Output {
    crate::common::bin()
        .args(["undo", "--workspace"])
        .arg(ws)
        .output()
        .unwrap()
}

/// Runs the scripted calls through the real agent under `full-auto`; returns the tool results.
fn agent(ws: &Path, script: Vec<String>) -> (Attacker, Vec<(bool, String)>) {
    let a = Attacker::start(script);
    let out = a.agent(ws, &["--approve", "full-auto"]);
    let r = attacker::results(&out);
    (a, r)
}

fn assert_refused(r: &(bool, String), why: &[&str]) {
    assert!(!r.0, "the tool ran: {}", r.1);
    for w in why {
        assert!(r.1.contains(w), "the result does not say `{w}`: {}", r.1);
    }
}

#[test]
fn row8_write_through_a_dangling_symlink_is_refused() {
    let s = scene();
    symlink(s.outside.join("created.txt"), s.ws.join("link.txt")).unwrap();
    symlink(s.outside.join("made.txt"), s.ws.join("link2.txt")).unwrap();
    let before = snapshot(&s.outside);
    let (_a, r) = agent(
        &s.ws,
        vec![
            call(
                "write_file",
                json!({"path": "link.txt", "content": "pwned\n"}),
            ),
            call(
                "apply_patch",
                json!({"unified_diff": "--- /dev/null\n+++ b/link2.txt\n@@ -0,0 +1 @@\n+pwned\n"}),
            ),
        ],
    );
    assert_eq!(r.len(), 2, "{r:?}");
    assert_refused(&r[0], &["link.txt", "symbolic link", "does not exist"]);
    assert_refused(&r[1], &["link2.txt", "symbolic link", "does not exist"]);
    assert_eq!(snapshot(&s.outside), before, "something outside changed");
    assert!(s
        .ws
        .join("link.txt")
        .symlink_metadata()
        .unwrap()
        .is_symlink());
}

#[test]
fn row9_a_hard_link_to_a_file_outside_is_neither_read_nor_written() {
    let s = scene();
    std::fs::hard_link(s.outside.join("secret.txt"), s.ws.join("hl.txt")).unwrap();
    let repo = git2::Repository::init(&s.ws).unwrap();
    drop(repo);
    let before = snapshot(&s.outside);
    let (a, r) = agent(
        &s.ws,
        vec![
            call("read_file", json!({"path": "hl.txt"})),
            call("list_dir", json!({"path": "hl.txt"})),
            call(
                "write_file",
                json!({"path": "hl.txt", "content": "overwritten\n"}),
            ),
            call(
                "apply_patch",
                json!({"unified_diff": "--- a/hl.txt\n+++ b/hl.txt\n@@ -1 +1 @@\n-TOP SECRET\n+patched\n"}),
            ),
            call(
                "git_commit",
                json!({"message": "steal", "paths": ["hl.txt"]}),
            ),
        ],
    );
    assert_eq!(r.len(), 5, "{r:?}");
    for x in &r {
        assert_refused(x, &["hl.txt", "hard link"]);
        assert!(!x.1.contains("TOP SECRET"), "leaked: {}", x.1);
    }
    // What the agent sent back to the model, apart from the model's own calls (the patch names
    // the line it would replace).
    for req in a.requests.lock().unwrap().iter() {
        for m in req["messages"].as_array().into_iter().flatten() {
            if m["role"] != "assistant" {
                assert!(
                    !m.to_string().contains("TOP SECRET"),
                    "sent to the model: {m}"
                );
            }
        }
    }
    assert_eq!(snapshot(&s.outside), before, "something outside changed");
    // Nothing of it was copied into the workspace or the undo store either.
    for (p, body) in snapshot(&s.ws) {
        if p != s.ws.join("hl.txt") && !p.starts_with(s.ws.join(".git")) {
            assert!(
                !body.contains("TOP SECRET"),
                "{} holds the secret",
                p.display()
            );
        }
    }
    let u = undo(&s.ws);
    assert_eq!(
        snapshot(&s.outside),
        before,
        "undo changed something outside: {u:?}"
    );
}

/// An undo log line, as the store writes them.
fn saved(turn: &str, path: &str, blob: Option<&str>) -> String {
    json!({"kind": "saved", "turn": turn, "path": path, "existed": blob.is_some(), "blob": blob})
        .to_string()
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn row10_the_agent_cannot_write_the_undo_store() {
    let s = scene();
    // A real turn first, so the store exists.
    let (_a, r) = agent(
        &s.ws,
        vec![call(
            "write_file",
            json!({"path": "a.txt", "content": "one\n"}),
        )],
    );
    assert!(r[0].0, "{r:?}");
    let store = snapshot(&s.ws.join(".aha"));
    let victim = s.outside.join("victim.txt").display().to_string();
    let forged = format!("{}\n", saved("forged-1", &victim, None));
    let blob = sha(b"pwned\n");
    symlink(s.ws.join(".aha/checkpoints"), s.ws.join("store")).unwrap();
    let (_a, r) = agent(
        &s.ws,
        vec![
            call(
                "write_file",
                json!({"path": ".aha/checkpoints/log.jsonl", "content": forged}),
            ),
            call(
                "apply_patch",
                json!({"unified_diff": format!("--- /dev/null\n+++ b/.aha/checkpoints/blobs/{blob}\n@@ -0,0 +1 @@\n+pwned\n")}),
            ),
            // Through a link inside the workspace that points into .aha.
            call(
                "write_file",
                json!({"path": "store/log.jsonl", "content": forged}),
            ),
        ],
    );
    assert_eq!(r.len(), 3, "{r:?}");
    for x in &r {
        assert_refused(x, &[".aha"]);
    }
    assert_eq!(
        snapshot(&s.ws.join(".aha")),
        store,
        "the undo store changed"
    );
    let before = snapshot(&s.outside);
    let u = undo(&s.ws);
    assert!(u.status.success(), "{u:?}");
    assert_eq!(
        snapshot(&s.outside),
        before,
        "undo changed something outside"
    );
    assert!(!s.ws.join("a.txt").exists(), "the real turn was undone");
}

#[test]
fn row10_undo_confines_a_forged_log() {
    // A workspace that ships its own .aha (a cloned repository, an unpacked archive) or an undo
    // log changed by anyone: every path undo would touch must stay inside, without links.
    let s = scene();
    let blobs = s.ws.join(".aha/checkpoints/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let pwned = sha(b"pwned\n");
    std::fs::write(blobs.join(&pwned), "pwned\n").unwrap();
    symlink(&s.outside, s.ws.join("out")).unwrap();
    std::fs::hard_link(s.outside.join("victim.txt"), s.ws.join("hl.txt")).unwrap();
    std::fs::create_dir(s.ws.join("sub")).unwrap();
    let abs = |n: &str| s.outside.join(n).display().to_string();
    let cases: Vec<(&str, String)> = vec![
        (
            "delete through ..",
            saved("t", "../outside/victim.txt", None),
        ),
        ("delete, absolute", saved("t", &abs("victim.txt"), None)),
        (
            "write, absolute",
            saved("t", &abs("planted.txt"), Some(&pwned)),
        ),
        (
            "write through ..",
            saved("t", "sub/../../outside/planted.txt", Some(&pwned)),
        ),
        (
            "write through a link",
            saved("t", "out/planted.txt", Some(&pwned)),
        ),
        ("delete through a link", saved("t", "out/victim.txt", None)),
        (
            "write through a hard link",
            saved("t", "hl.txt", Some(&pwned)),
        ),
        (
            "blob name with a path",
            saved("t", "stolen.txt", Some("../../../../outside/secret.txt")),
        ),
        (
            "blob name absolute",
            saved("t", "stolen.txt", Some(&abs("secret.txt"))),
        ),
        (
            "blob that is not its hash",
            saved("t", "stolen.txt", Some(&sha(b"something else"))),
        ),
        (
            "into .aha",
            saved("t", ".aha/checkpoints/log.jsonl", Some(&pwned)),
        ),
    ];
    // The last case needs a blob under the wrong name.
    std::fs::write(blobs.join(sha(b"something else")), "pwned\n").unwrap();
    for (what, line) in cases {
        // A harmless entry first: nothing at all may change when a later one is refused.
        let log = format!("{}\n{line}\n", saved("t", "fine.txt", Some(&pwned)));
        std::fs::write(s.ws.join(".aha/checkpoints/log.jsonl"), &log).unwrap();
        let out_before = snapshot(&s.outside);
        let ws_before = snapshot(&s.ws);
        let u = undo(&s.ws);
        let err = String::from_utf8_lossy(&u.stderr);
        assert!(!u.status.success(), "{what}: undo succeeded: {u:?}");
        assert!(
            err.contains("undo log") && err.contains("nothing was restored"),
            "{what}: {err}"
        );
        assert_eq!(snapshot(&s.outside), out_before, "{what}: outside changed");
        assert_eq!(snapshot(&s.ws), ws_before, "{what}: the workspace changed");
    }
    // A well-formed log still works.
    let log = format!("{}\n", saved("t", "fine.txt", Some(&pwned)));
    std::fs::write(s.ws.join(".aha/checkpoints/log.jsonl"), log).unwrap();
    let u = undo(&s.ws);
    assert!(u.status.success(), "{u:?}");
    assert_eq!(
        std::fs::read_to_string(s.ws.join("fine.txt")).unwrap(),
        "pwned\n"
    );
}

#[test]
fn row11_a_linked_aha_folder_is_refused() {
    for dangling in [false, true] {
        let s = scene();
        let store = s.outside.join("store");
        if !dangling {
            std::fs::create_dir(&store).unwrap();
        }
        symlink(&store, s.ws.join(".aha")).unwrap();
        std::fs::write(s.ws.join("a.txt"), "one\n").unwrap();
        let before = snapshot(&s.outside);
        let (_a, r) = agent(
            &s.ws,
            vec![
                call("write_file", json!({"path": "a.txt", "content": "two\n"})),
                call("write_file", json!({"path": "new.txt", "content": "x\n"})),
            ],
        );
        assert_eq!(r.len(), 2, "{r:?}");
        for x in &r {
            assert_refused(x, &[".aha", "symbolic link"]);
        }
        assert_eq!(
            snapshot(&s.outside),
            before,
            "dangling={dangling}: outside changed"
        );
        assert_eq!(
            std::fs::read_to_string(s.ws.join("a.txt")).unwrap(),
            "one\n"
        );
        assert!(!s.ws.join("new.txt").exists());
        let u = undo(&s.ws);
        assert!(!u.status.success(), "{u:?}");
        assert!(String::from_utf8_lossy(&u.stderr).contains(".aha"), "{u:?}");
        assert_eq!(
            snapshot(&s.outside),
            before,
            "undo changed something outside"
        );
    }
}

#[test]
fn normal_edits_and_undo_still_work_through_the_agent() {
    use std::os::unix::fs::PermissionsExt;
    let s = scene();
    std::fs::write(s.ws.join("a.txt"), "alpha\nbeta\n").unwrap();
    // A link inside the workspace to a file inside it is still followed.
    std::fs::create_dir(s.ws.join("src")).unwrap();
    std::fs::write(s.ws.join("src/lib.txt"), "lib\n").unwrap();
    symlink("src/lib.txt", s.ws.join("lib-link.txt")).unwrap();
    let (_a, r) = agent(
        &s.ws,
        vec![
            call(
                "write_file",
                json!({"path": "new/deep/file.txt", "content": "hi\n"}),
            ),
            call(
                "apply_patch",
                json!({"unified_diff": "--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n alpha\n-beta\n+BETA\n"}),
            ),
            call(
                "write_file",
                json!({"path": "lib-link.txt", "content": "LIB\n"}),
            ),
            call("read_file", json!({"path": "new/deep/file.txt"})),
            call("list_dir", json!({"path": "new"})),
        ],
    );
    assert_eq!(r.len(), 5, "{r:?}");
    for x in &r {
        assert!(x.0, "{}", x.1);
    }
    assert!(r[3].1.contains("hi"), "{}", r[3].1);
    assert_eq!(
        std::fs::read_to_string(s.ws.join("new/deep/file.txt")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.ws.join("a.txt")).unwrap(),
        "alpha\nBETA\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.ws.join("src/lib.txt")).unwrap(),
        "LIB\n"
    );
    let mode = std::fs::metadata(s.ws.join(".aha"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, ".aha is private");
    let u = undo(&s.ws);
    assert!(u.status.success(), "{u:?}");
    assert!(!s.ws.join("new/deep/file.txt").exists());
    assert_eq!(
        std::fs::read_to_string(s.ws.join("a.txt")).unwrap(),
        "alpha\nbeta\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.ws.join("src/lib.txt")).unwrap(),
        "lib\n"
    );
    assert!(s
        .ws
        .join("lib-link.txt")
        .symlink_metadata()
        .unwrap()
        .is_symlink());
}
