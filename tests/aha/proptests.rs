//! Property tests of every parser that reads outside input (issue 14), so CI keeps checking what
//! the fuzz targets in `fuzz/` explored: GGUF headers, the `<think>` parser, tool calls, session
//! logs, the remote engine's SSE reader, the document chunker and query parser, and `aha serve`'s
//! request decoder. Each asserts a property of the output, not only the absence of a panic; the
//! case counts keep each one to a few seconds in release.

use aha::agent::parse::parse;
use aha::engine::local::load::GgufFile;
use aha::engine::reasoning::{split_reasoning, ReasoningParser, Segment};
use aha::engine::remote::decode_sse;
use aha::protocol::{Event, Op};
use aha::rag::analyzer::Analyzer;
use aha::rag::chunk::{chunk, Kind};
use aha::rag::index::DocIndex;
use aha::server::openai::{parse_request, Piece, ToolCallFilter};
use aha::session::{self, Record, SessionLog};
use candle_core::quantized::gguf_file::{self, Value as GValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Cut points (as fractions of the length) turned into pieces of `s` at char boundaries.
fn pieces<'a>(s: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    let mut at: Vec<usize> = cuts.iter().map(|c| bounds[c % bounds.len()]).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at {
        out.push(&s[prev..a]);
        prev = a;
    }
    out.push(&s[prev..]);
    out
}

/// Cut points turned into pieces of `b` anywhere (inside UTF-8 characters too).
fn byte_pieces<'a>(b: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (b.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at {
        out.push(&b[prev..a]);
        prev = a;
    }
    out.push(&b[prev..]);
    out
}

/// Text made of the pieces that matter to a parser, mixed with arbitrary characters.
fn text_of(fragments: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(fragments).prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
        ],
        0..max,
    )
    .prop_map(|v| v.concat())
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// A small valid GGUF: metadata of several types and F32 / Q8_0 tensors, written by candle.
fn gguf_bytes(meta: &[(String, u32, f32, String)], tensors: &[(usize, bool)]) -> Vec<u8> {
    let mut values: Vec<(String, GValue)> = vec![(
        "general.architecture".into(),
        GValue::String("qwen2".into()),
    )];
    for (i, (k, u, f, s)) in meta.iter().enumerate() {
        values.push((format!("{k}.{i}.u"), GValue::U32(*u)));
        values.push((format!("{k}.{i}.f"), GValue::F32(*f)));
        values.push((format!("{k}.{i}.s"), GValue::String(s.clone())));
    }
    let qs: Vec<(String, QTensor)> = tensors
        .iter()
        .enumerate()
        .map(|(i, &(rows, q8))| {
            let vals: Vec<f32> = (0..rows * 32).map(|x| x as f32 / 7.0).collect();
            let t = Tensor::from_vec(vals, (rows, 32), &Device::Cpu).expect("tensor");
            let dt = if q8 { GgmlDType::Q8_0 } else { GgmlDType::F32 };
            (
                format!("t{i}"),
                QTensor::quantize(&t, dt).expect("quantize"),
            )
        })
        .collect();
    let mut out = std::io::Cursor::new(Vec::new());
    let mv: Vec<(&str, &GValue)> = values.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tv: Vec<(&str, &QTensor)> = qs.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut out, &mv, &tv).expect("write gguf");
    out.into_inner()
}

fn open_bytes(dir: &std::path::Path, bytes: &[u8]) -> anyhow::Result<GgufFile> {
    let p = dir.join("m.gguf");
    std::fs::write(&p, bytes)?;
    GgufFile::open(&p)
}

proptest! {
    #![proptest_config(config(64))]

    /// Bytes that are not a GGUF (with or without its magic in front) are refused with an error
    /// that names the file, never a panic.
    #[test]
    fn gguf_refuses_random_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
        magic in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = if magic { b"GGUF\x03\x00\x00\x00".to_vec() } else { Vec::new() };
        bytes.extend(&body);
        // An all-zero count header is a valid empty GGUF; random bytes are not that.
        prop_assume!(!(magic && body.len() >= 16 && body[..16].iter().all(|&b| b == 0)));
        let e = open_bytes(dir.path(), &bytes).err().expect("random bytes must be refused");
        prop_assert!(format!("{e:#}").contains("m.gguf"), "{e:#}");
    }

    /// A valid file opens with the metadata it was written with; cut anywhere before its last
    /// tensor's end it is refused (truncated download), and cut after it every tensor still reads.
    #[test]
    fn gguf_round_trips_and_refuses_truncation(
        meta in prop::collection::vec(("[a-z]{1,8}", any::<u32>(), -1e6f32..1e6, "\\PC{0,12}"), 0..4),
        tensors in prop::collection::vec((1usize..4, any::<bool>()), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 1..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = gguf_bytes(&meta, &tensors);
        let g = open_bytes(dir.path(), &bytes).expect("a valid file opens");
        prop_assert_eq!(g.arch_name(), "qwen2");
        for (i, (k, u, f, s)) in meta.iter().enumerate() {
            prop_assert_eq!(g.get_usize(&format!("{k}.{i}.u")), Some(*u as usize));
            prop_assert_eq!(g.get_f32(&format!("{k}.{i}.f")), Some(*f));
            // GGUF strings lose trailing NULs (candle trims them, as llama.cpp writes some).
            prop_assert_eq!(g.get_str(&format!("{k}.{i}.s")), Some(s.trim_end_matches('\0')));
        }
        prop_assert_eq!(g.content.tensor_infos.len(), tensors.len());
        let needed = g
            .content
            .tensor_infos
            .values()
            .map(|t| {
                let bytes = t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size();
                g.content.tensor_data_offset + t.offset + bytes as u64
            })
            .max()
            .unwrap();
        for c in cuts {
            let len = c % bytes.len();
            let r = open_bytes(dir.path(), &bytes[..len]);
            if (len as u64) < needed {
                prop_assert!(r.is_err(), "cut at {len} of {} (needs {needed}) was accepted", bytes.len());
            } else {
                let g = r.expect("only padding was cut");
                let mut f = std::fs::File::open(dir.path().join("m.gguf")).unwrap();
                for name in g.content.tensor_infos.keys() {
                    prop_assert!(g.content.tensor(&mut f, name, &Device::Cpu).is_ok());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The streaming reasoning parser

const THINK_FRAGMENTS: &[&str] = &[
    "<think>",
    "</think>",
    "<",
    "</",
    "<thi",
    "</thin",
    "think",
    ">",
    "<thinking>",
    "word",
    "é",
    "🙂",
    " ",
    "\n",
    "\n\n",
    "\t",
    "\u{3000}",
    "a b",
];

fn run_reasoning(pieces: &[&str], started: bool) -> Vec<Segment> {
    let mut p = ReasoningParser::new(started);
    let mut out: Vec<Segment> = Vec::new();
    let segs = pieces.iter().flat_map(|x| p.push(x)).collect::<Vec<_>>();
    for s in segs.into_iter().chain(p.finish()) {
        match (out.last_mut(), s) {
            (Some(Segment::Thinking(a)), Segment::Thinking(b))
            | (Some(Segment::Answer(a)), Segment::Answer(b)) => a.push_str(&b),
            (_, s) => out.push(s),
        }
    }
    out
}

proptest! {
    #![proptest_config(config(512))]

    /// However the output is split into pushes, the reasoning and the answer come out the same,
    /// and the same as `split_reasoning` of the whole text.
    #[test]
    fn reasoning_is_independent_of_the_split(
        text in text_of(THINK_FRAGMENTS, 32),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
        started in any::<bool>(),
    ) {
        let whole = run_reasoning(&[&text], started);
        let split = run_reasoning(&pieces(&text, &cuts), started);
        prop_assert_eq!(&split, &whole);
        prop_assert!(whole.iter().all(|s| !s.text().is_empty()));
        let cat = |thinking: bool| -> String {
            whole
                .iter()
                .filter(|s| matches!(s, Segment::Thinking(_)) == thinking)
                .map(Segment::text)
                .collect()
        };
        prop_assert_eq!(split_reasoning(&text, started), (cat(true), cat(false)));
    }

    /// Text without tags passes through whole: all answer (or all reasoning when the prompt
    /// opened the block, less the whitespace at its ends).
    #[test]
    fn reasoning_without_tags_passes_through(text in "[^<]{0,64}", started in any::<bool>()) {
        let (thinking, answer) = split_reasoning(&text, started);
        if started {
            prop_assert_eq!(thinking, text.trim());
            prop_assert_eq!(answer, "");
        } else {
            prop_assert_eq!(thinking, "");
            prop_assert_eq!(answer, text);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tool calls

const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";

const CALL_FRAGMENTS: &[&str] = &[
    "<tool_call>",
    "</tool_call>",
    DS_CALLS_BEGIN,
    DS_CALLS_END,
    DS_CALL_BEGIN,
    DS_CALL_END,
    DS_SEP,
    "function",
    "```",
    "```json\n",
    "{",
    "}",
    "\"name\"",
    "\"arguments\"",
    "\"run_code\"",
    ":",
    ",",
    "\"",
    "\\",
    "[",
    "]",
    "\n",
    " ",
    "1",
    "null",
];

/// Arguments: an object of simple values under identifier keys.
fn arguments() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        "[a-z_]{1,8}",
        prop_oneof![
            "\\PC{0,16}".prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn filter_pieces(pieces: &[&str]) -> Vec<Piece> {
    let mut f = ToolCallFilter::default();
    let mut out: Vec<Piece> = Vec::new();
    let raw: Vec<Piece> = pieces.iter().flat_map(|p| f.push(p)).collect();
    for p in raw.into_iter().chain(f.finish()) {
        match (out.last_mut(), p) {
            (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    out
}

proptest! {
    #![proptest_config(config(256))]

    /// A well-formed call in each of the three syntaxes (and bare JSON) comes back with its name
    /// and arguments, and the prose around it is kept.
    #[test]
    fn tool_calls_round_trip_in_every_syntax(
        name in "[a-z][a-z_]{0,11}",
        args in arguments(),
        prose in "[A-Za-z][A-Za-z ,.]{0,30}",
        args_as_string in any::<bool>(),
    ) {
        let obj = if args_as_string {
            json!({"name": name, "arguments": args.to_string()})
        } else {
            json!({"name": name, "arguments": args})
        };
        let known = [name.as_str()];
        let qwen = format!("{prose}\n<tool_call>\n{obj}\n</tool_call>");
        let deepseek = format!(
            "{prose}{DS_CALLS_BEGIN}{DS_CALL_BEGIN}function{DS_SEP}{name}\n```json\n{args}\n```{DS_CALL_END}{DS_CALLS_END}"
        );
        let fenced = format!("{prose}\n```json\n{obj}\n```");
        for (syntax, text, known) in [
            ("qwen", qwen, &[][..]),
            ("deepseek", deepseek, &[][..]),
            ("fenced", fenced, &known[..]),
        ] {
            let p = parse(&text, known);
            prop_assert_eq!(p.calls.len(), 1, "{}: {:?}", syntax, p);
            prop_assert_eq!(&p.calls[0].name, &name);
            prop_assert_eq!(&p.calls[0].arguments, &args, "{}", syntax);
            prop_assert_eq!(p.text, prose.trim(), "{}", syntax);
            prop_assert!(p.malformed.is_empty());
        }
        let p = parse(&format!("{obj}\n{obj}"), &known);
        prop_assert_eq!(p.calls.len(), 2, "bare: {:?}", p);
        prop_assert_eq!(&p.calls[1].arguments, &args);
    }

    /// Arbitrary text around tool-call syntax never panics; every unreadable attempt says why,
    /// and the server's streaming filter releases the same text and calls however it is split.
    #[test]
    fn tool_call_parsers_take_any_text(
        text in text_of(CALL_FRAGMENTS, 40),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        for known in [&["run_code"][..], &[]] {
            let p = parse(&text, known);
            prop_assert!(p.malformed.iter().all(|m| !m.reason.is_empty()));
            prop_assert_eq!(p.text.trim(), p.text.as_str());
        }
        prop_assert_eq!(filter_pieces(&pieces(&text, &cuts)), filter_pieces(&[&text]));
    }
}

// ---------------------------------------------------------------------------------------------
// Session logs

fn record() -> impl Strategy<Value = Record> {
    let text = "\\PC{0,40}";
    prop_oneof![
        (any::<u32>(), text).prop_map(|(t, s)| Record::Op {
            t: t as u64,
            op: Op::UserMessage {
                text: s,
                turn_id: None
            },
        }),
        (any::<u32>(), text).prop_map(|(t, s)| Record::Event {
            t: t as u64,
            event: Event::ThinkingDelta {
                text: s,
                logprob: Some(-0.5),
                entropy: None,
                top: Vec::new(),
            },
        }),
        (any::<u32>(), text).prop_map(|(t, s)| Record::Event {
            t: t as u64,
            event: Event::AnswerDelta {
                text: s,
                logprob: None,
                entropy: None,
                top: Vec::new(),
            },
        }),
        (any::<u32>(), 0usize..3).prop_map(|(t, turn)| Record::Event {
            t: t as u64,
            event: Event::TurnStarted {
                turn,
                branch_of: None,
                prefix: String::new(),
            },
        }),
        (any::<u32>(), "[a-z]{1,6}", arguments()).prop_map(|(t, name, arguments)| Record::Event {
            t: t as u64,
            event: Event::ToolCall {
                id: "c1".into(),
                name,
                arguments,
            },
        }),
        any::<u32>().prop_map(|t| Record::Event {
            t: t as u64,
            event: Event::TurnFinished {
                stats: Default::default(),
                tokens: vec![],
            },
        }),
    ]
}

proptest! {
    #![proptest_config(config(64))]

    /// A log written through `SessionLog` reads back record for record; with garbage lines
    /// spliced in and the file cut anywhere, loading still succeeds, keeps the readable records
    /// in order, and replays (and exports) without a panic.
    #[test]
    fn session_logs_read_back_and_survive_damage(
        recs in prop::collection::vec(record(), 0..12),
        garbage in prop::collection::vec((any::<usize>(), prop::collection::vec(any::<u8>(), 0..40)), 0..4),
        cut in any::<usize>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SessionLog::create(dir.path(), "s", "m").unwrap();
        for r in &recs {
            match r {
                Record::Op { t, op } => log.op(*t, op).unwrap(),
                Record::Event { t, event } => log.event(*t, event).unwrap(),
                Record::Header { .. } => unreachable!(),
            }
        }
        log.flush().unwrap();
        let path = log.path.clone();
        drop(log);
        let l = session::load(&path).unwrap();
        prop_assert_eq!(&l.records, &recs);
        prop_assert!(l.skipped.is_empty());
        prop_assert_eq!(l.model.as_str(), "m");

        // Damage: garbage lines between records, then a cut.
        let good = std::fs::read(&path).unwrap();
        let mut lines: Vec<Vec<u8>> = good.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        for (at, mut g) in garbage {
            g.retain(|&b| b != b'\n');
            g.push(b'\n');
            lines.insert(at % (lines.len() + 1), g);
        }
        let damaged: Vec<u8> = lines.concat();
        let damaged = &damaged[..cut % (damaged.len() + 1)];
        std::fs::write(&path, damaged).unwrap();
        let l = session::load(&path).unwrap();
        // What was read is the written records, in order (a subsequence).
        let mut want = recs.iter();
        for r in &l.records {
            prop_assert!(want.any(|w| w == r), "a record that was never written: {r:?}");
        }
        let t = session::replay(&l);
        let _ = session::export::markdown(&t, &l.id, &l.model);
    }
}

// ---------------------------------------------------------------------------------------------
// The remote engine's SSE reader

/// One streamed delta: content, reasoning, or a tool call's fragment.
#[derive(Debug, Clone)]
enum Delta {
    Content(String),
    Reasoning(String),
    Call { name: String, args: String },
}

fn delta() -> impl Strategy<Value = Delta> {
    // No `<`: content must not open a `<think>` block of its own here.
    let text = "[^<\r\n]{1,12}|[^<]{1,6}";
    prop_oneof![
        3 => text.prop_map(Delta::Content),
        2 => text.prop_map(Delta::Reasoning),
        1 => ("[a-z_]{0,4}", "[a-z\"{}:1 ]{0,6}").prop_map(|(name, args)| Delta::Call { name, args }),
    ]
}

/// The body a server would send: one `data:` event per delta, with CRLF or LF line ends,
/// comments and other fields sprinkled in.
fn sse_body(deltas: &[Delta], crlf: bool, noise: bool) -> Vec<u8> {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    for (i, d) in deltas.iter().enumerate() {
        if noise && i % 2 == 0 {
            out.push_str(&format!(": keep-alive{nl}event: message{nl}id: {i}{nl}"));
        }
        let delta = match d {
            Delta::Content(c) => json!({"content": c}),
            Delta::Reasoning(r) => json!({"reasoning_content": r}),
            Delta::Call { name, args } => json!({"tool_calls": [{
                "index": 0, "id": "call_a", "function": {"name": name, "arguments": args}
            }]}),
        };
        let chunk = json!({"choices": [{"index": 0, "delta": delta}]});
        out.push_str(&format!("data: {chunk}{nl}{nl}"));
    }
    out.push_str(&format!("data: [DONE]{nl}{nl}"));
    out.into_bytes()
}

const SSE_FRAGMENTS: &[&[u8]] = &[
    b"data: ",
    b"data:",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"[DONE]",
    b": x",
    b"event: e",
    b"{\"choices\":[{\"delta\":{\"content\":\"",
    b"\"}}]}",
    b"{\"error\":{}}",
    b"\"reasoning_content\":\"",
    b"<think>",
    b"</think>",
    b"\xc3",
    b"\xa9",
];

proptest! {
    #![proptest_config(config(256))]

    /// Deltas sent as SSE come back as the same reasoning, answer and tool call, whatever the
    /// line ends, interleaved comments, and however the bytes are cut into socket reads.
    #[test]
    fn sse_gives_the_deltas_sent_however_the_bytes_arrive(
        deltas in prop::collection::vec(delta(), 0..16),
        crlf in any::<bool>(),
        noise in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let body = sse_body(&deltas, crlf, noise);
        let whole = decode_sse([&body[..]], false);
        let split = decode_sse(byte_pieces(&body, &cuts), false);
        prop_assert_eq!(&split.events, &whole.events);
        prop_assert!(whole.done && whole.error.is_none() && whole.malformed == 0, "{:?}", whole);

        let (mut content, mut reasoning, mut name, mut args) =
            (String::new(), String::new(), String::new(), String::new());
        for d in &deltas {
            match d {
                Delta::Content(c) => content.push_str(c),
                Delta::Reasoning(r) => reasoning.push_str(r),
                Delta::Call { name: n, args: a } => {
                    name.push_str(n);
                    args.push_str(a);
                }
            }
        }
        let (mut answer, mut thinking, mut calls) = (String::new(), String::new(), Vec::new());
        for e in &whole.events {
            match e {
                Event::AnswerDelta { text, .. } => answer.push_str(text),
                Event::ThinkingDelta { text, .. } => thinking.push_str(text),
                Event::ToolCall { name, arguments, .. } => calls.push((name.clone(), arguments.clone())),
                other => prop_assert!(false, "unexpected event {other:?}"),
            }
        }
        prop_assert_eq!(answer, content);
        prop_assert_eq!(thinking, reasoning);
        if name.is_empty() && args.is_empty() {
            prop_assert!(calls.is_empty());
        } else {
            let want = if args.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(&args).unwrap_or(Value::String(args.clone()))
            };
            prop_assert_eq!(calls, vec![(name, want)]);
        }
    }

    /// Any bytes at all: the same outcome however they are cut into reads.
    #[test]
    fn sse_reads_any_bytes_the_same_however_they_arrive(
        body in prop::collection::vec(
            prop_oneof![
                3 => prop::sample::select(SSE_FRAGMENTS).prop_map(<[u8]>::to_vec),
                1 => prop::collection::vec(any::<u8>(), 1..4),
            ],
            0..40,
        ).prop_map(|v| v.concat()),
        reasoning in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let whole = decode_sse([&body[..]], reasoning);
        let split = decode_sse(byte_pieces(&body, &cuts), reasoning);
        prop_assert_eq!(&split.events, &whole.events);
        prop_assert_eq!(split.done, whole.done);
        prop_assert_eq!(split.malformed, whole.malformed);
        prop_assert_eq!(split.error, whole.error);
    }
}

// ---------------------------------------------------------------------------------------------
// The chunker and the query parser

const DOC_FRAGMENTS: &[&str] = &[
    "# Title\n",
    "## Sub ##\n",
    "####### no\n",
    "#tag\n",
    "```rust\n",
    "~~~\n",
    "fn alpha() {\n",
    "pub struct B;\n",
    "    indented\n",
    "\n",
    "\n\n",
    "   \n",
    "\r\n",
    "word ",
    "Some prose that goes on for a while and then ends.\n",
    "헌법은 국민의 권리를 정한다.\n",
    "}\n",
];

/// Trailing whitespace is not kept by the chunker, so lines are compared without it.
fn norm<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    lines.map(str::trim_end).collect::<Vec<_>>().join("\n")
}

fn long_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => text_of(DOC_FRAGMENTS, 120),
        1 => (text_of(DOC_FRAGMENTS, 8), 1usize..5000).prop_map(|(t, n)| format!("{t}{}\n{t}", "x".repeat(n))),
    ]
}

proptest! {
    #![proptest_config(config(128))]

    /// Chunks come in order, their line numbers lie inside the text, each chunk's text is taken
    /// from its own lines, and every non-blank line is in some chunk.
    #[test]
    fn chunks_cover_the_lines_in_order(text in long_text()) {
        let lines: Vec<&str> = text.lines().collect();
        for kind in [Kind::Markdown, Kind::Text, Kind::Code] {
            let chunks = chunk(&text, kind);
            let mut covered = vec![false; lines.len() + 1];
            let mut prev = (0, 0);
            for c in &chunks {
                prop_assert!(1 <= c.start_line && c.start_line <= c.end_line && c.end_line <= lines.len(), "{kind:?}: {c:?}");
                prop_assert!((c.start_line, c.end_line) >= prev, "{kind:?}: out of order");
                prev = (c.start_line, c.end_line);
                let own = norm(lines[c.start_line - 1..c.end_line].iter().copied());
                prop_assert!(own.contains(&norm(c.text.lines())), "{kind:?}: {c:?} is not from its lines");
                covered[c.start_line..=c.end_line].fill(true);
            }
            for (i, l) in lines.iter().enumerate() {
                prop_assert!(l.trim().is_empty() || covered[i + 1], "{kind:?}: line {} is in no chunk", i + 1);
            }
        }
    }
}

/// Documents for the query tests: each has one word no other has.
const DOCS: [(&str, &str, Kind); 3] = [
    (
        "guide.md",
        "# Guide\n\nInstall the tool with cargo.\n\n## Usage\n\nRun the indexer, then search.\n\n## 헌법\n\n대한민국 헌법은 국민의 권리를 정한다.\n",
        Kind::Markdown,
    ),
    (
        "notes.txt",
        "日本語のテキストと English words.\n\nThe quick brown fox jumps over the lazy dog.\n",
        Kind::Text,
    ),
    (
        "lib.rs",
        "fn alpha() -> u32 {\n    1\n}\n\npub struct Zebra {\n    a: u8,\n}\n",
        Kind::Code,
    ),
];

const UNIQUE: [(&str, &str); 5] = [
    ("install", "guide.md"),
    ("헌법은", "guide.md"),
    ("fox", "notes.txt"),
    ("zebra", "lib.rs"),
    ("alpha", "lib.rs"),
];

fn query_index() -> &'static DocIndex {
    static IX: OnceLock<(tempfile::TempDir, DocIndex)> = OnceLock::new();
    &IX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut ix =
            DocIndex::open_or_create(dir.path(), Analyzer::Both, dir.path(), false).unwrap();
        let chunks: Vec<_> = DOCS
            .iter()
            .flat_map(|(n, t, k)| chunk(t, *k).into_iter().map(|c| (n.to_string(), c)))
            .collect();
        ix.add_chunks(chunks.into_iter(), 100).unwrap();
        (dir, ix)
    })
    .1
}

const QUERY_FRAGMENTS: &[&str] = &[
    "\"",
    "\"\"",
    " ",
    "the",
    "of",
    "install",
    "quick brown",
    "헌법",
    "日本語",
    "fox",
    "*",
    ":",
    "-",
    "AND",
    "(",
    ")",
    "\\",
];

proptest! {
    #![proptest_config(config(128))]

    /// Any query is answered or refused with a message (never a panic), and each hit's line is
    /// inside its chunk.
    #[test]
    fn any_query_is_answered_or_refused(q in text_of(QUERY_FRAGMENTS, 16)) {
        let ix = query_index();
        match ix.search(&q, 5, &Default::default()) {
            Ok(hits) => {
                for h in hits {
                    prop_assert!(h.start_line <= h.line && h.line <= h.end_line, "{h:?}");
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("no searchable words"), "{e:#}"),
        }
    }

    /// A word found in one document only, loose or quoted, amid noise words, finds that document.
    #[test]
    fn a_unique_word_finds_its_document(
        pick in 0usize..UNIQUE.len(),
        quoted in any::<bool>(),
        noise in prop::sample::subsequence(vec!["the", "a", "of", "and", "to"], 0..3),
    ) {
        let (word, path) = UNIQUE[pick];
        let w = if quoted { format!("\"{word}\"") } else { word.to_string() };
        let q = format!("{} {w}", noise.join(" "));
        let hits = query_index().search(&q, 3, &Default::default()).unwrap();
        prop_assert!(hits.first().is_some_and(|h| h.path == path), "{q}: {hits:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// `aha serve`'s request decoder

fn message() -> impl Strategy<Value = (String, String)> {
    (
        prop::sample::select(vec!["system", "user", "assistant", "tool"]),
        "\\PC{0,30}",
    )
        .prop_map(|(r, c)| (r.to_string(), c))
}

proptest! {
    #![proptest_config(config(256))]

    /// Any bytes are decoded or refused with a 400 in OpenAI's error shape, never a panic.
    #[test]
    fn openai_decoder_refuses_bad_bodies_with_400(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            text_of(&["{", "}", "[", "]", "\"messages\"", "\"role\"", "\"content\"", ":", ",", "\"user\"", "null", "1e999", "-1", "\"stream\"", "true"], 30)
                .prop_map(String::into_bytes),
        ],
    ) {
        if let Err(e) = parse_request(&body) {
            prop_assert_eq!(e.status.as_u16(), 400);
            prop_assert!(e.body()["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    /// A well-formed request decodes to its messages; cut short anywhere it is a 400; with an
    /// unknown field it is a 400 that names the field.
    #[test]
    fn openai_decoder_round_trips_and_names_unknown_fields(
        msgs in prop::collection::vec(message(), 1..5),
        stream in any::<bool>(),
        temperature in prop::option::of(0.0f32..2.0),
        cut in any::<usize>(),
        unknown in "x_[a-z]{1,8}",
    ) {
        let mut req = json!({
            "model": "m",
            "messages": msgs.iter().map(|(r, c)| json!({"role": r, "content": c})).collect::<Vec<_>>(),
            "stream": stream,
        });
        if let Some(t) = temperature {
            req["temperature"] = json!(t);
        }
        let body = serde_json::to_vec(&req).unwrap();
        let r = parse_request(&body).expect("a well-formed request decodes");
        prop_assert_eq!(r.stream, stream);
        prop_assert_eq!(r.temperature, temperature);
        let got: Vec<(String, String)> = r.chat_messages().into_iter().map(|m| (m.role.to_string(), m.content)).collect();
        prop_assert_eq!(got, msgs);

        let short = &body[..cut % body.len()];
        let e = parse_request(short).expect_err("a cut body is refused");
        prop_assert_eq!(e.status.as_u16(), 400);

        req[&unknown] = json!(1);
        let e = parse_request(&serde_json::to_vec(&req).unwrap()).expect_err("unknown field refused");
        prop_assert_eq!(e.status.as_u16(), 400);
        prop_assert_eq!(e.param.as_deref(), Some(unknown.as_str()));
    }
}
