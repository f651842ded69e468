//! `/export --html` and `aha export --html`: a conversation as one self-contained HTML page to
//! share a trace. Inline CSS and a small inline script, nothing fetched (a Content-Security-Policy
//! forbids it, and runs only the one script by its hash). Every text is escaped: it comes from a
//! model and from documents.
//!
//! Per turn: the user's message, then each version of the reply as a pane, side by side (the
//! original and its branches, a branch's shared prefix faded). A pane holds the reasoning as one
//! `<span class="tok">` per token, coloured by confidence (`p-*`) or entropy (`h-*`, a toggle
//! that works without JavaScript), forks (`fork`) and the token where a loop was flagged
//! (`loop`) marked, the alternatives the model weighed in a hidden child shown on hover; then
//! the steps, loops, answer, tool calls and the turn's figures.

use crate::steps;
use crate::transcript::{EntryKind, Part, Reply, ReplyState, Tok, ToolState, Transcript};
use aha_protocol::trace::{self, TraceOptions};
use std::fmt::Write;

/// The confidence band of a token from its log-probability: `p-hi` (probability ≥ 90%),
/// `p-mid` (60–90%), `p-low` (30–60%), `p-vlow` (< 30%), `p-none` (not sampled).
pub fn confidence_class(logprob: Option<f32>) -> &'static str {
    match logprob.map(f32::exp).filter(|p| !p.is_nan()) {
        None => "p-none",
        Some(p) if p >= 0.9 => "p-hi",
        Some(p) if p >= 0.6 => "p-mid",
        Some(p) if p >= 0.3 => "p-low",
        Some(_) => "p-vlow",
    }
}

/// The entropy band of a token (nats): `h-lo` (< 0.5), `h-mid` (0.5–1.5), `h-hi` (1.5–3),
/// `h-vhi` (> 3), `h-none` (unknown).
pub fn entropy_class(entropy: Option<f32>) -> &'static str {
    match entropy.filter(|e| !e.is_nan()) {
        None => "h-none",
        Some(e) if e < 0.5 => "h-lo",
        Some(e) if e < 1.5 => "h-mid",
        Some(e) if e <= 3.0 => "h-hi",
        Some(_) => "h-vhi",
    }
}

/// The page's script: a tooltip that follows the mouse instead of the CSS one (which stays for
/// readers without JavaScript). It only reads the page; it never builds markup from text.
const SCRIPT: &str = r#"(function () {
  document.documentElement.classList.add("js");
  var box = document.createElement("div");
  box.id = "tipbox";
  document.body.appendChild(box);
  var cur = null;
  function place(e) {
    var w = box.offsetWidth, h = box.offsetHeight;
    var x = Math.min(e.clientX + 14, window.innerWidth - w - 8);
    var y = e.clientY + 18;
    if (y + h > window.innerHeight - 8) y = e.clientY - h - 12;
    box.style.left = Math.max(4, x) + "px";
    box.style.top = Math.max(4, y) + "px";
  }
  document.addEventListener("mouseover", function (e) {
    var t = e.target.closest ? e.target.closest(".tok") : null;
    if (t === cur) return;
    cur = t;
    var tip = t && t.querySelector(":scope > .tip");
    if (!tip) { box.style.display = "none"; return; }
    box.replaceChildren(tip.cloneNode(true));
    box.style.display = "block";
    place(e);
  });
  document.addEventListener("mousemove", function (e) { if (cur) place(e); });
})();"#;

/// SHA-256 of [`SCRIPT`], base64, for the page's Content-Security-Policy (the browser runs no
/// other script). `tests/aha/export_html.rs` checks it.
const SCRIPT_SHA256: &str = "PT4c7oquVksHcwObcVJFykoxS/rLz4nxb0vCNnh/5KY=";

const STYLE: &str = r#"
:root{--ink:#1d2330;--muted:#667085;--line:#e3e6ec;--bg:#f6f7f9;--card:#fff;--accent:#5b4bd6;
--p-hi:#d9f2df;--p-mid:#fdf0b0;--p-low:#ffd2a6;--p-vlow:#ffaaa8;
--h-lo:#e1ebfd;--h-mid:#c9d9ff;--h-hi:#a9b8ff;--h-vhi:#c79bff}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",Helvetica,Arial,sans-serif}
code,.mono{font-family:ui-monospace,"SF Mono",Menlo,Consolas,"DejaVu Sans Mono","Liberation Mono",monospace;font-size:.9em}
.mode{position:absolute;opacity:0;pointer-events:none}
.bar{position:sticky;top:0;z-index:30;background:rgba(255,255,255,.96);border-bottom:1px solid var(--line);padding:10px 24px;display:flex;flex-wrap:wrap;align-items:center;gap:10px 22px;box-shadow:0 1px 6px rgba(16,24,40,.05)}
.bar h1{font-size:17px;margin:0;font-weight:650}
.bar .meta{color:var(--muted);font-size:13px}
.switch{display:inline-flex;border:1px solid var(--line);border-radius:8px;overflow:hidden;font-size:13px}
.switch span{padding:4px 8px;color:var(--muted);background:var(--bg)}
.switch label{padding:4px 10px;cursor:pointer;user-select:none}
#by-p:checked~.bar label[for=by-p],#by-h:checked~.bar label[for=by-h]{background:var(--accent);color:#fff}
#by-p:focus-visible~.bar label[for=by-p],#by-h:focus-visible~.bar label[for=by-h]{outline:2px solid var(--accent);outline-offset:-2px}
.legend{display:flex;flex-wrap:wrap;gap:6px;font-size:12.5px;align-items:center}
.legend .sw{padding:1px 7px;border-radius:4px;border:1px solid rgba(0,0,0,.06)}
.sw.h-lo{background:var(--h-lo)}.sw.h-mid{background:var(--h-mid)}.sw.h-hi{background:var(--h-hi)}.sw.h-vhi{background:var(--h-vhi)}
.legend-h{display:none}
#by-h:checked~.bar .legend-h{display:flex}
#by-h:checked~.bar .legend-p{display:none}
.keys{font-size:12.5px;color:var(--muted);display:flex;gap:14px;flex-wrap:wrap}
main{padding:18px 24px 60px;max-width:1800px;margin:0 auto}
.user{background:var(--card);border:1px solid var(--line);border-left:4px solid #98a2b3;border-radius:10px;padding:10px 16px;margin:22px 0 12px;white-space:pre-wrap;overflow-wrap:anywhere}
.who{display:block;font-size:12px;font-weight:650;letter-spacing:.04em;text-transform:uppercase;color:var(--muted);margin-bottom:2px;white-space:normal}
.turn>h2{font-size:13px;font-weight:650;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;margin:0 0 8px}
.versions{display:grid;grid-auto-flow:column;grid-auto-columns:minmax(380px,1fr);gap:16px;overflow-x:auto;padding-bottom:4px;align-items:start}
.branch-pane{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;min-width:0}
.branch-pane:only-child{max-width:1100px}
.branch-pane.active{border-top:3px solid var(--accent)}
.pane-h{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 10px;margin-bottom:6px}
.pane-h:empty{display:none}
.pane-h b{font-size:15px}
.pane-h .from{color:var(--muted);font-size:13px}
.badge{font-size:11.5px;padding:1px 7px;border-radius:10px;background:#eeebff;color:var(--accent);font-weight:600}
.badge.warn{background:#fff1e0;color:#b54708}
.ins-text{background:#e0f2fe;border-radius:3px;padding:0 3px}
.stats{display:flex;flex-wrap:wrap;gap:4px 14px;margin:0 0 8px;font-size:12.5px;color:var(--muted)}
.stats div{display:flex;gap:4px}.stats dt{margin:0}.stats dd{margin:0;color:var(--ink);font-weight:600;font-variant-numeric:tabular-nums}
details>summary{cursor:pointer;color:var(--muted);font-size:13px;font-weight:600;margin:6px 0}
.reasoning{white-space:pre-wrap;overflow-wrap:anywhere;font-size:15px;line-height:1.8;padding:8px 10px;background:#fcfcfd;border:1px solid var(--line);border-radius:8px}
.tok{position:relative;border-radius:2px;box-shadow:inset -1px 0 0 rgba(255,255,255,.85)}
.p-hi{background:var(--p-hi)}.p-mid{background:var(--p-mid)}.p-low{background:var(--p-low)}.p-vlow{background:var(--p-vlow)}
.p-none,.h-none-key{color:#7a8394;background:repeating-linear-gradient(135deg,transparent 0 3px,#eef0f3 3px 6px)}
#by-h:checked~main .tok{background:none;color:inherit}
#by-h:checked~main .tok.h-lo{background:var(--h-lo)}#by-h:checked~main .tok.h-mid{background:var(--h-mid)}#by-h:checked~main .tok.h-hi{background:var(--h-hi)}#by-h:checked~main .tok.h-vhi{background:var(--h-vhi)}
#by-h:checked~main .tok.h-none{color:#7a8394;background:repeating-linear-gradient(135deg,transparent 0 3px,#eef0f3 3px 6px)}
.tok.fork,.key-fork{text-decoration:underline 2px #7a2ff7;text-underline-offset:3px;font-weight:600}
.tok.inh,.key-inh{opacity:.45}
.tok.ins{opacity:1;outline:2px solid #0ea5e9;outline-offset:0}
.tok.loop::after{content:"\27F3";color:#d92d20;font-weight:700;margin-left:1px}
.key-loop{color:#d92d20;font-weight:700}
.tok:hover{outline:1px solid #344054}
.tip{display:none;position:absolute;left:0;top:calc(100% + 4px);z-index:40}
.tok:hover>.tip{display:grid}
html.js .tok:hover>.tip{display:none}
.tip,#tipbox .tip{grid-template-columns:auto auto;gap:1px 14px;min-width:150px;max-width:340px;white-space:nowrap;font:12.5px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;font-weight:400;color:#f2f4f7;background:#1d2330;border-radius:7px;padding:7px 10px;box-shadow:0 6px 18px rgba(16,24,40,.25);text-decoration:none;opacity:1}
#tipbox{display:none;position:fixed;z-index:50;pointer-events:none}
#tipbox .tip{display:grid;position:static}
.tip-h{grid-column:1/-1;color:#d0d5dd;border-bottom:1px solid #344054;padding-bottom:3px;margin-bottom:2px}
.alt-t{font-family:ui-monospace,"DejaVu Sans Mono",monospace;overflow:hidden;text-overflow:ellipsis}
.alt-p{text-align:right;font-variant-numeric:tabular-nums;color:#d0d5dd}
.alt-t.me{color:#a6f4c5;font-weight:700}
.sn{display:inline-block;font:600 10.5px/1.45 system-ui,sans-serif;color:#475467;background:#eaecf0;border-radius:8px;padding:0 5px;margin-right:3px;vertical-align:1px;white-space:nowrap}
.sn.corr{background:#fde8d4;color:#b54708}
.step:target{outline:2px dashed var(--accent);outline-offset:2px}
.bp{font:600 11px/1.4 system-ui,sans-serif;color:#0369a1;background:#e0f2fe;border-radius:8px;padding:0 5px;margin:0 2px;vertical-align:1px;white-space:nowrap}
table.steps{border-collapse:collapse;width:100%;font-size:13px;margin:2px 0 6px}
table.steps th{text-align:left;white-space:nowrap;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);padding:3px 6px}
table.steps td{border-bottom:1px solid #f0f1f4;padding:3px 6px;vertical-align:top}
table.steps td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.steps td.txt{overflow-wrap:anywhere}
table.steps a{color:inherit;text-decoration:none}table.steps a:hover{text-decoration:underline}
.corr-mark{color:#b54708;font-weight:600;white-space:nowrap}
ul.loops{margin:4px 0 8px;padding-left:20px;font-size:13px}
ul.loops li::marker{content:"\27F3  ";color:#d92d20}
.answer{white-space:pre-wrap;overflow-wrap:anywhere;border-top:1px solid var(--line);margin-top:8px;padding-top:8px}
.answer .who{color:var(--accent)}
.tool{border:1px solid var(--line);border-radius:8px;margin:8px 0;padding:6px 10px;font-size:13px;background:#fcfcfd}
.tool pre{margin:6px 0 0;white-space:pre-wrap;overflow-wrap:anywhere;max-height:18em;overflow:auto;font-size:12px}
.notice,.error{color:var(--muted);font-size:13.5px;margin:8px 0;white-space:pre-wrap}
.error{color:#b42318}
.compacted{border-top:1px dashed #98a2b3;border-bottom:1px dashed #98a2b3;margin:14px 0;padding:4px 0;font-size:13.5px}
.compacted div{white-space:pre-wrap;color:var(--muted)}
.note{color:var(--muted);font-size:12.5px;font-style:italic}
footer{color:var(--muted);font-size:12px;text-align:center;margin:30px 0}
"#;

/// The transcript as one self-contained HTML page. `opts` gives the forks' share and floor
/// and the confidence window (as the engine used them).
pub fn html(t: &Transcript, title: &str, model: &str, opts: &TraceOptions) -> String {
    let mut out = String::with_capacity(64 << 10);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    // Nothing is fetched, whatever the page holds; only the page's own script runs.
    let _ = writeln!(
        out,
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'sha256-{SCRIPT_SHA256}'; base-uri 'none'; \
         form-action 'none'\">"
    );
    out.push_str("<meta name=\"generator\" content=\"aha\">\n<title>");
    esc(&mut out, title);
    out.push_str("</title>\n<style>");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n");
    out.push_str(
        "<input type=\"radio\" name=\"colour\" id=\"by-p\" class=\"mode\" checked>\
         <input type=\"radio\" name=\"colour\" id=\"by-h\" class=\"mode\">\n",
    );
    header(&mut out, t, title, model, opts);
    out.push_str("<main>\n");
    let mut turn = 0usize;
    for e in &t.entries {
        match &e.kind {
            EntryKind::User(text) => {
                out.push_str("<div class=\"user\"><span class=\"who\">You</span>");
                esc(&mut out, text.trim_end());
                out.push_str("</div>\n");
            }
            EntryKind::Reply { versions, active } => {
                reply_turn(&mut out, turn, versions, *active, opts);
                turn += 1;
            }
            EntryKind::Notice(n) => {
                out.push_str("<p class=\"notice\">");
                esc(&mut out, n.trim());
                out.push_str("</p>\n");
            }
            EntryKind::Error(n) => {
                out.push_str("<p class=\"error\">error: ");
                esc(&mut out, n.trim());
                out.push_str("</p>\n");
            }
            EntryKind::Compacted { line, summary } => {
                out.push_str("<details class=\"compacted\"><summary>");
                esc(&mut out, line);
                out.push_str("</summary><div>");
                esc(&mut out, summary.trim());
                out.push_str("</div></details>\n");
            }
        }
    }
    out.push_str("</main>\n<footer>exported by aha · one file, nothing loaded from elsewhere</footer>\n<script>");
    out.push_str(SCRIPT);
    out.push_str("</script>\n</body>\n</html>\n");
    out
}

fn header(out: &mut String, t: &Transcript, title: &str, model: &str, opts: &TraceOptions) {
    let turns = t.turns.len();
    out.push_str("<header class=\"bar\"><h1>");
    esc(out, title);
    out.push_str("</h1><span class=\"meta\">model <code>");
    esc(out, model);
    let _ = write!(
        out,
        "</code> · {turns} turn{}</span>",
        if turns == 1 { "" } else { "s" }
    );
    out.push_str(
        "<span class=\"switch\" role=\"group\" aria-label=\"colour by\"><span>colour by</span>\
         <label for=\"by-p\">confidence</label><label for=\"by-h\">entropy</label></span>",
    );
    out.push_str(
        "<span class=\"legend legend-p\">\
         <span class=\"sw p-hi\">≥ 90%</span><span class=\"sw p-mid\">60–90%</span>\
         <span class=\"sw p-low\">30–60%</span><span class=\"sw p-vlow\">&lt; 30%</span>\
         <span class=\"sw p-none\">not sampled</span></span>",
    );
    out.push_str(
        "<span class=\"legend legend-h\">\
         <span class=\"sw h-lo\">&lt; 0.5 nats</span>\
         <span class=\"sw h-mid\">0.5–1.5</span>\
         <span class=\"sw h-hi\">1.5–3</span>\
         <span class=\"sw h-vhi\">&gt; 3</span>\
         <span class=\"sw h-none-key\">unknown</span></span>",
    );
    let _ = write!(
        out,
        "<span class=\"keys\"><span><span class=\"key-fork\">fork</span>: entropy in the top {:.0}% \
         of the reply, ≥ {:.1} nats</span><span><span class=\"key-loop\">⟳</span> loop flagged</span>\
         <span><span class=\"key-inh\">faded</span>: kept from the parent</span>\
         <span>hover a token for the alternatives</span></span>",
        opts.fork_share * 100.0,
        opts.fork_min_nats
    );
    out.push_str("</header>\n");
}

fn reply_turn(out: &mut String, turn: usize, versions: &[Reply], active: usize, o: &TraceOptions) {
    let _ = writeln!(
        out,
        "<section class=\"turn\" id=\"t{turn}\"><h2>aha · turn {}{}</h2><div class=\"versions\">",
        turn + 1,
        if versions.len() > 1 {
            format!(" · {} versions side by side", versions.len())
        } else {
            String::new()
        }
    );
    for (v, r) in versions.iter().enumerate() {
        // Where other versions branched off this one.
        let children: Vec<(usize, usize)> = versions
            .iter()
            .enumerate()
            .filter_map(|(w, c)| {
                c.branch
                    .as_ref()
                    .filter(|b| b.parent == v)
                    .map(|b| (b.kept, w))
            })
            .collect();
        pane(
            out,
            (turn, v),
            r,
            (v == active, versions.len() > 1),
            &children,
            o,
        );
    }
    out.push_str("</div></section>\n");
}

/// One version of a turn. `(active, several)`: whether it is the version the conversation goes
/// on from, and whether the turn has other versions; `children`: (parent tokens kept, version)
/// of the versions that branched off this one.
fn pane(
    out: &mut String,
    (turn, v): (usize, usize),
    r: &Reply,
    (active, several): (bool, bool),
    children: &[(usize, usize)],
    o: &TraceOptions,
) {
    let id = format!("t{turn}v{v}");
    let _ = write!(
        out,
        "<section class=\"branch-pane{}\" id=\"{id}\" data-version=\"{}\">",
        if active { " active" } else { "" },
        v + 1
    );
    out.push_str("<div class=\"pane-h\">");
    if several {
        let _ = write!(out, "<b>v{}</b>", v + 1);
    }
    match &r.branch {
        None if several => out.push_str("<span class=\"from\">original</span>"),
        None => {}
        Some(b) => {
            let _ = write!(
                out,
                "<span class=\"from\">branch of v{} after {} token{}",
                b.parent + 1,
                b.kept,
                if b.kept == 1 { "" } else { "s" }
            );
            if !b.inserted.is_empty() {
                out.push_str(", inserted <span class=\"ins-text mono\">");
                esc(out, &visible(&b.inserted));
                out.push_str("</span>");
            }
            out.push_str("</span>");
        }
    }
    if active && several {
        out.push_str(
            "<span class=\"badge\" title=\"the version the conversation goes on from\">shown</span>",
        );
    }
    let state = match r.state {
        ReplyState::Done => None,
        ReplyState::Streaming => Some("still streaming"),
        ReplyState::Cancelled => Some("stopped"),
        ReplyState::Failed => Some("failed"),
        ReplyState::Interrupted => Some("interrupted"),
    };
    if let Some(s) = state {
        let _ = write!(out, "<span class=\"badge warn\">{s}</span>");
    }
    out.push_str("</div>\n");

    let entropies: Vec<Option<f32>> = r.tokens.iter().map(|t| t.entropy).collect();
    let forks = trace::forks(&entropies, o.fork_share, o.fork_min_nats);
    let mut is_fork = vec![false; r.tokens.len()];
    for &i in &forks {
        is_fork[i] = true;
    }
    stats(out, r, forks.len(), o);

    let steps = steps::steps(&r.tokens);
    let kept = r.branch.as_ref().map_or(0, |b| b.kept);
    let typed = r
        .branch
        .as_ref()
        .filter(|b| !b.inserted.is_empty())
        .map(|_| kept);
    // The token where each loop was flagged: the last one that had come when the event did.
    let loop_at: Vec<usize> = r
        .loops
        .iter()
        .map(|m| m.at.saturating_sub(1).min(r.tokens.len().saturating_sub(1)))
        .collect();

    if !r.tokens.is_empty() || !r.reasoning.is_empty() {
        let secs = r.thought_secs(r.ended_ms.unwrap_or(r.started_ms));
        let _ = write!(
            out,
            "<details open><summary>Reasoning · {} token{} · {secs:.1} s</summary><div class=\"reasoning\">",
            r.tokens.len(),
            if r.tokens.len() == 1 { "" } else { "s" }
        );
        if r.tokens.is_empty() {
            esc(out, &r.reasoning);
        }
        let mut step = 0usize;
        let mut open = false;
        for (i, t) in r.tokens.iter().enumerate() {
            while step < steps.len() && steps[step].tok_start <= i {
                if open {
                    out.push_str("</span>");
                }
                let s = &steps[step];
                let _ = write!(
                    out,
                    "<span class=\"step{}\" id=\"{id}s{step}\">",
                    if s.correction { " corr" } else { "" }
                );
                if step > 0 && s.tok_end > s.tok_start {
                    let _ = write!(
                        out,
                        "<span class=\"sn{}\" title=\"step {}\">{}{}</span>",
                        if s.correction { " corr" } else { "" },
                        step + 1,
                        if s.correction { "↺ " } else { "" },
                        step + 1
                    );
                }
                open = true;
                step += 1;
            }
            for &(_, w) in children.iter().filter(|(k, _)| *k == i) {
                let _ = write!(
                    out,
                    "<span class=\"bp\" title=\"v{} branches here\">↳ v{}</span>",
                    w + 1,
                    w + 1
                );
            }
            let mut class = String::from("tok ");
            class.push_str(confidence_class(t.logprob));
            class.push(' ');
            class.push_str(entropy_class(t.entropy));
            if is_fork[i] {
                class.push_str(" fork");
            }
            if typed == Some(i) {
                class.push_str(" ins");
            } else if r.branch.is_some() && i < kept {
                class.push_str(" inh");
            }
            let looped = loop_at.contains(&i);
            if looped {
                class.push_str(" loop");
            }
            let _ = write!(out, "<span class=\"{class}\"");
            if looped {
                let _ = write!(out, " id=\"{id}k{i}\"");
            }
            if let Some(lp) = t.logprob.filter(|x| x.is_finite()) {
                let _ = write!(out, " data-lp=\"{lp:.4}\"");
            }
            if let Some(h) = t.entropy.filter(|x| x.is_finite()) {
                let _ = write!(out, " data-h=\"{h:.4}\"");
            }
            out.push('>');
            esc(out, &t.text);
            tip(
                out,
                t,
                is_fork[i],
                typed == Some(i),
                r.branch.as_ref().filter(|_| i < kept).map(|b| b.parent),
            );
            out.push_str("</span>");
        }
        if open {
            out.push_str("</span>");
        }
        for &(_, w) in children.iter().filter(|(k, _)| *k >= r.tokens.len()) {
            let _ = write!(
                out,
                "<span class=\"bp\" title=\"v{} branches here\">↳ v{}</span>",
                w + 1,
                w + 1
            );
        }
        out.push_str("</div></details>\n");
    }

    if steps.len() > 1 {
        step_table(out, r, &steps, &forks, &id);
    }

    if !r.loops.is_empty() {
        out.push_str("<details open><summary>Loops</summary><ul class=\"loops\">");
        for (m, at) in r.loops.iter().zip(&loop_at) {
            let _ = write!(out, "<li><a href=\"#{id}k{at}\">token {}</a>: ", at + 1);
            esc(out, &m.line());
            out.push_str("</li>");
        }
        out.push_str("</ul></details>\n");
    }

    if let Some((sources, tokens)) = &r.sources {
        let _ = write!(
            out,
            "<p class=\"note\">sources in the prompt ({tokens} tokens): "
        );
        let cited: Vec<String> = sources.iter().map(|s| s.cite()).collect();
        esc(out, &cited.join(", "));
        out.push_str("</p>\n");
    }

    let mut answer_open = false;
    for p in &r.parts {
        match p {
            Part::Answer(a) => {
                if !answer_open {
                    out.push_str("<div class=\"answer\"><span class=\"who\">Answer</span>");
                    answer_open = true;
                }
                esc(out, a.trim_end());
            }
            Part::Tool(c) => {
                if answer_open {
                    out.push_str("</div>");
                    answer_open = false;
                }
                let status = c.state.outcome();
                out.push_str("<div class=\"tool\">tool <code>");
                esc(out, &c.name);
                out.push_str("</code> <code>");
                esc(out, &c.arguments);
                let _ = write!(out, "</code> — {status}");
                if let ToolState::Done { output, .. } = &c.state {
                    if !output.trim().is_empty() {
                        out.push_str("<pre>");
                        esc(out, output.trim_end());
                        out.push_str("</pre>");
                    }
                }
                out.push_str("</div>");
            }
        }
    }
    if answer_open {
        out.push_str("</div>");
    }
    out.push('\n');
    if !r.citations.is_empty() {
        out.push_str("<ul class=\"note\">");
        for c in &r.citations {
            let _ = write!(out, "<li>{} ", if c.ok { "✓" } else { "✗" });
            esc(out, &c.cite());
            out.push_str(": ");
            esc(out, &c.reason);
            out.push_str("</li>");
        }
        out.push_str("</ul>\n");
    }
    if let Some(c) = &r.check {
        let verdict = if c.abstained {
            "the answer abstained"
        } else if c.supported {
            "the answer is supported by its sources"
        } else {
            "the answer is not fully supported by its sources"
        };
        let _ = writeln!(out, "<p class=\"note\">{verdict}</p>");
    }
    if let Some(e) = &r.error {
        out.push_str("<p class=\"error\">error: ");
        esc(out, e);
        out.push_str("</p>\n");
    }
    let later = r
        .later
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::User(_)))
        .count();
    if later > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">{later} more turn{} followed this version before a branch replaced \
             it (not shown).</p>",
            if later == 1 { "" } else { "s" }
        );
    }
    out.push_str("</section>\n");
}

/// The turn's figures: tokens, speed, forks, confidence.
fn stats(out: &mut String, r: &Reply, forks: usize, o: &TraceOptions) {
    let mut items: Vec<(String, String, &str)> = Vec::new();
    let shared = r.branch.as_ref().map_or(0, |b| b.kept.min(r.tokens.len()));
    items.push((
        "reasoning".into(),
        if shared > 0 {
            format!("{} tok ({shared} kept)", r.tokens.len())
        } else {
            format!("{} tok", r.tokens.len())
        },
        "",
    ));
    items.push(("answer".into(), format!("{} tok", r.answer_tokens), ""));
    if let Some(s) = &r.stats {
        if s.decode_tok_s > 0.0 {
            items.push(("decode".into(), format!("{:.1} tok/s", s.decode_tok_s), ""));
        }
        if s.ttft_ms > 0.0 {
            items.push((
                "first token".into(),
                format!("{:.2} s", s.ttft_ms / 1000.0),
                "",
            ));
        }
    }
    items.push((
        "forks".into(),
        forks.to_string(),
        "tokens whose entropy is in the reply's top share and above the floor",
    ));
    let conf = r
        .stats
        .as_ref()
        .and_then(|s| s.min_group_confidence)
        .or_else(|| {
            let c: Vec<Option<f32>> = r
                .tokens
                .iter()
                .map(|t| {
                    let top: Vec<f32> = t
                        .top
                        .iter()
                        .take(trace::CONFIDENCE_K)
                        .map(|a| a.logprob)
                        .collect();
                    trace::token_confidence(&top)
                })
                .collect();
            trace::min_group_confidence(&c, o.confidence_window)
        });
    if let Some(c) = conf {
        items.push((
            "min group confidence".into(),
            format!("{c:.2}"),
            "DeepConf: the lowest mean confidence over a window of tokens; low flags a weak trace",
        ));
    }
    if let Some(s) = &r.stats {
        items.push(("finish".into(), s.finish_reason.as_str().to_string(), ""));
    }
    out.push_str("<dl class=\"stats\">");
    for (k, v, title) in items {
        out.push_str("<div");
        if !title.is_empty() {
            let _ = write!(out, " title=\"{title}\"");
        }
        let _ = write!(out, "><dt>{k}</dt><dd>");
        esc(out, &v);
        out.push_str("</dd></div>");
    }
    out.push_str("</dl>\n");
}

fn step_table(out: &mut String, r: &Reply, steps: &[steps::Step], forks: &[usize], id: &str) {
    let _ = write!(
        out,
        "<details open><summary>Steps · {} · {} self-correction{}</summary>\
         <table class=\"steps\"><thead><tr><th>#</th><th>step</th><th>tokens</th>\
         <th>mean p</th><th>forks</th></tr></thead><tbody>",
        steps.len(),
        steps.iter().filter(|s| s.correction).count(),
        if steps.iter().filter(|s| s.correction).count() == 1 {
            ""
        } else {
            "s"
        }
    );
    for (k, s) in steps.iter().enumerate() {
        let range = s.tok_start.min(r.tokens.len())..s.tok_end.min(r.tokens.len());
        let text: String = r.tokens[range.clone()]
            .iter()
            .map(|t| t.text.as_str())
            .collect();
        let st = steps::stats(&r.tokens, s, r.started_ms);
        let f = forks.iter().filter(|i| range.contains(i)).count();
        let _ = write!(
            out,
            "<tr><td class=\"n\">{}</td><td class=\"txt\"><a href=\"#{id}s{k}\">",
            k + 1
        );
        if s.correction {
            out.push_str("<span class=\"corr-mark\">↺ </span>");
        }
        esc(out, &snippet(&text, 90));
        let _ =
            write!(
            out,
            "</a></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            s.tokens(),
            st.confidence.map_or("–".to_string(), |c| pct(c).replace('<', "&lt;")),
            if f == 0 { "–".to_string() } else { f.to_string() }
        );
    }
    out.push_str("</tbody></table></details>\n");
}

/// The hover card of a token: its probability and entropy, and the alternatives.
fn tip(out: &mut String, t: &Tok, fork: bool, typed: bool, kept_from: Option<usize>) {
    if t.logprob.is_none() && t.entropy.is_none() && t.top.is_empty() && !typed {
        return;
    }
    out.push_str("<span class=\"tip\"><span class=\"tip-h\">");
    let mut head = Vec::new();
    match t.logprob {
        Some(lp) => head.push(format!("p {}", pct(lp.exp()))),
        None => head.push("not sampled".to_string()),
    }
    if let Some(h) = t.entropy {
        head.push(format!("H {h:.2} nats"));
    }
    if fork {
        head.push("fork".into());
    }
    if typed {
        head.push("typed in".into());
    } else if let Some(p) = kept_from {
        head.push(format!("kept from v{}", p + 1));
    }
    esc(out, &head.join(" · "));
    out.push_str("</span>");
    for a in &t.top {
        let me = if a.text == t.text { " me" } else { "" };
        let _ = write!(out, "<span class=\"alt-t{me}\">");
        esc(out, &visible(&a.text));
        out.push_str("</span><span class=\"alt-p\">");
        esc(out, &pct(a.logprob.exp()));
        out.push_str("</span>");
    }
    out.push_str("</span>");
}

/// A probability as a percentage a person reads.
fn pct(p: f32) -> String {
    if !p.is_finite() {
        "–".into()
    } else if p > 0.0 && p < 0.001 {
        "<0.1%".into()
    } else {
        format!("{:.1}%", p * 100.0)
    }
}

/// Whitespace made visible (a token's text in the hover card).
fn visible(s: &str) -> String {
    if s.is_empty() {
        return "∅".into();
    }
    s.chars()
        .map(|c| match c {
            ' ' => '␣',
            '\n' => '⏎',
            '\t' => '⇥',
            c => c,
        })
        .collect()
}

/// The start of a step's text on one line, cut to `n` characters.
fn snippet(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one.chars().take(n).collect();
    if one.chars().count() > n {
        out.push('…');
    }
    out
}

/// Appends `s` escaped for HTML text and attribute values. Control characters other than tab
/// and line breaks become their visible pictures (U+2400…).
fn esc(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('?')),
            '\u{7f}' => out.push('␡'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aha_protocol::{Event, LoopAction, Op, TopToken, TurnStats};

    fn tok(text: &str, p: Option<f32>, h: Option<f32>, top: &[(&str, f32)]) -> Event {
        Event::ThinkingDelta {
            text: text.into(),
            logprob: p.map(f32::ln),
            entropy: h,
            top: top
                .iter()
                .map(|(t, p)| TopToken {
                    text: t.to_string(),
                    logprob: p.ln(),
                })
                .collect(),
        }
    }

    fn transcript(user: &str, events: &[Event]) -> Transcript {
        let mut t = Transcript::default();
        t.apply_op(
            &Op::UserMessage {
                text: user.into(),
                turn_id: None,
            },
            0,
        );
        t.apply_event(
            &Event::TurnStarted {
                turn: 0,
                branch_of: None,
                prefix: String::new(),
            },
            1,
        );
        for (i, e) in events.iter().enumerate() {
            t.apply_event(e, 2 + i as u64);
        }
        t.apply_event(&finished(), 100);
        t
    }

    fn finished() -> Event {
        Event::TurnFinished {
            stats: TurnStats {
                decode_tok_s: 12.5,
                ..TurnStats::default()
            },
            tokens: Vec::new(),
        }
    }

    fn answer(text: &str) -> Event {
        Event::AnswerDelta {
            text: text.into(),
            logprob: None,
            entropy: None,
            top: Vec::new(),
        }
    }

    /// The class attribute of every token span, in order.
    fn token_classes(page: &str) -> Vec<String> {
        page.split("<span class=\"tok ")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].to_string())
            .collect()
    }

    fn page(t: &Transcript) -> String {
        html(t, "aha session x", "test-model", &TraceOptions::default())
    }

    #[test]
    fn text_from_the_model_and_documents_stays_text() {
        let t = transcript(
            "<img src=x onerror=alert(1)> & 'q' \"r\"",
            &[
                tok(
                    "</script><script>alert(1)</script>",
                    Some(0.5),
                    Some(1.0),
                    &[("<b onmouseover=x>", 0.2)],
                ),
                tok("\u{1}\u{0}", None, None, &[]),
                answer("</details></main><style>body{display:none}</style>"),
            ],
        );
        let p = html(
            &t,
            "</title><script>x()</script>",
            "m\"><b>",
            &TraceOptions::default(),
        );
        assert_eq!(
            p.matches("<script").count(),
            1,
            "only the page's own script"
        );
        assert_eq!(p.matches("</script>").count(), 1);
        assert!(!p.contains("<img") && !p.contains("<b onmouseover"));
        assert_eq!(p.matches("<style>").count(), 1);
        assert!(p.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &#39;q&#39; &quot;r&quot;"));
        assert!(p.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(p.contains("<title>&lt;/title&gt;&lt;script&gt;x()&lt;/script&gt;</title>"));
        assert!(p.contains("m&quot;&gt;&lt;b&gt;"));
        assert!(
            p.contains("&lt;b␣onmouseover=x&gt;"),
            "alternatives are escaped too"
        );
        assert!(
            p.contains(">␁␀<"),
            "control characters become their pictures"
        );
    }

    #[test]
    fn one_span_per_token_coloured_by_its_band() {
        let t = transcript(
            "q",
            &[
                tok("a", Some(0.95), Some(0.1), &[]),
                tok(" b", Some(0.75), Some(0.7), &[]),
                tok(" c", Some(0.45), Some(2.0), &[]),
                tok(" d", Some(0.1), Some(3.5), &[]),
                tok(" e", None, None, &[]),
                answer("done"),
            ],
        );
        let p = page(&t);
        let c = token_classes(&p);
        assert_eq!(c.len(), 5, "{c:?}");
        let bands: Vec<String> = c
            .iter()
            .map(|s| s.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            bands,
            [
                "p-hi h-lo",
                "p-mid h-mid",
                "p-low h-hi",
                "p-vlow h-vhi",
                "p-none h-none"
            ]
        );
        assert!(p.contains(&format!("data-lp=\"{:.4}\"", 0.95f32.ln())));
        assert!(p.contains("data-h=\"3.5000\""));
        // Exact band edges.
        assert_eq!(confidence_class(Some(0.9f32.ln() + 1e-7)), "p-hi");
        assert_eq!(confidence_class(Some(0.3f32.ln() + 1e-7)), "p-low");
        assert_eq!(confidence_class(Some(f32::NAN)), "p-none");
        assert_eq!(entropy_class(Some(0.5)), "h-mid");
        assert_eq!(entropy_class(Some(3.0)), "h-hi");
        assert!(p.contains("<div class=\"answer\"><span class=\"who\">Answer</span>done</div>"));
        assert!(p.contains("<dt>decode</dt><dd>12.5 tok/s</dd>"));
    }

    #[test]
    fn high_entropy_tokens_are_forks_and_loops_are_marked_and_listed() {
        let mut evs: Vec<Event> = (0..19)
            .map(|i| tok(&format!(" w{i}"), Some(0.9), Some(0.1), &[]))
            .collect();
        evs.insert(7, tok(" fork", Some(0.3), Some(2.5), &[]));
        evs.insert(
            12,
            Event::ReasoningLoop {
                count: 3,
                text: "round and <round>".into(),
                action: LoopAction::Warn,
            },
        );
        let t = transcript("q", &evs);
        let p = page(&t);
        let c = token_classes(&p);
        assert_eq!(c.len(), 20);
        let forks: Vec<usize> = (0..20).filter(|&i| c[i].contains("fork")).collect();
        assert_eq!(forks, [7]);
        // The loop event came after 12 tokens: the twelfth is marked and the list links to it.
        let loops: Vec<usize> = (0..20).filter(|&i| c[i].contains("loop")).collect();
        assert_eq!(loops, [11]);
        assert!(p.contains("id=\"t0v1k11\"") || p.contains("id=\"t0v0k11\""));
        assert!(p.contains("<a href=\"#t0v0k11\">token 12</a>"), "{p}");
        assert!(p.contains("(3×): “round and &lt;round&gt;”"));
        assert!(p.contains("<dt>forks</dt><dd>1</dd>"));
    }

    #[test]
    fn the_alternatives_are_in_each_token_for_the_hover_card() {
        let t = transcript(
            "capital?",
            &[tok(
                " Paris",
                Some(0.93),
                Some(0.3),
                &[(" Paris", 0.93), (" Lyon", 0.05), ("\n", 0.0004)],
            )],
        );
        let p = page(&t);
        let span = &p[p.find("<span class=\"tok ").unwrap()..];
        let span = &span[..span.find("</div>").unwrap()];
        assert!(span.contains("<span class=\"tip\">"), "{span}");
        assert!(span
            .contains("<span class=\"alt-t me\">␣Paris</span><span class=\"alt-p\">93.0%</span>"));
        assert!(
            span.contains("<span class=\"alt-t\">␣Lyon</span><span class=\"alt-p\">5.0%</span>")
        );
        assert!(
            span.contains("<span class=\"alt-t\">⏎</span><span class=\"alt-p\">&lt;0.1%</span>")
        );
        assert!(span.contains("p 93.0% · H 0.30 nats"));
    }

    #[test]
    fn the_versions_of_a_turn_are_panes_side_by_side_with_the_shared_prefix_faded() {
        let mut t = transcript(
            "q",
            &[
                tok("First.", Some(0.9), Some(0.2), &[]),
                tok("\n\n", Some(0.9), Some(0.2), &[]),
                tok("Wait", Some(0.4), Some(1.8), &[("Wait", 0.4), ("So", 0.35)]),
                tok(", no.", Some(0.9), Some(0.2), &[]),
                answer("A1"),
            ],
        );
        t.apply_event(
            &Event::TurnStarted {
                turn: 0,
                branch_of: Some(0),
                prefix: "<think>\nFirst.\n\nSo".into(),
            },
            200,
        );
        t.apply_event(&tok(" yes.", Some(0.8), Some(0.5), &[]), 201);
        t.apply_event(&answer("A2"), 202);
        t.apply_event(&finished(), 203);
        let p = page(&t);
        assert_eq!(p.matches("<section class=\"branch-pane").count(), 2);
        assert!(p.contains("class=\"versions\""));
        assert!(p.contains("2 versions side by side"));
        let b = &p[p.find("id=\"t0v1\"").unwrap()..];
        assert!(b.contains(
            "branch of v1 after 2 tokens, inserted <span class=\"ins-text mono\">So</span>"
        ));
        assert!(
            b.contains("goes on from\">shown</span>"),
            "the branch is active"
        );
        assert!(b.contains("<dt>reasoning</dt><dd>4 tok (2 kept)</dd>"));
        let c = token_classes(b);
        assert_eq!(c.len(), 4, "two kept, the typed one, one new: {c:?}");
        assert!(c[0].ends_with(" inh") && c[1].ends_with(" inh"));
        // "So" was an alternative the parent weighed: it keeps that probability, and the
        // entropy of the parent's distribution there (a fork).
        assert_eq!(c[2], "p-low h-hi fork ins");
        assert!(!c[3].contains("inh") && !c[3].contains("ins"));
        let a = &p[p.find("id=\"t0v0\"").unwrap()..p.find("id=\"t0v1\"").unwrap()];
        assert!(a.contains("<span class=\"bp\" title=\"v2 branches here\">↳ v2</span>"));
        assert!(a.contains("A1") && b.contains("A2"));
        assert_eq!(token_classes(&p).len(), 8);
    }

    #[test]
    fn steps_are_listed_with_tokens_confidence_and_corrections() {
        let t = transcript(
            "q",
            &[
                tok("Let", Some(0.9), Some(0.2), &[]),
                tok(" x=1.", Some(0.5), Some(0.2), &[]),
                tok("\n\n", Some(0.9), Some(0.2), &[]),
                tok("Wait", Some(0.5), Some(0.2), &[]),
                tok(", no.", Some(0.5), Some(0.2), &[]),
            ],
        );
        let p = page(&t);
        assert!(p.contains("Steps · 2 · 1 self-correction<"), "{p}");
        assert!(p.contains("<a href=\"#t0v0s1\"><span class=\"corr-mark\">↺ </span>Wait, no.</a></td><td class=\"n\">2</td><td class=\"n\">50.0%</td>"));
        assert!(p.contains("<span class=\"step corr\" id=\"t0v0s1\"><span class=\"sn corr\""));
    }

    #[test]
    fn the_page_loads_nothing_from_anywhere() {
        let t = transcript(
            "q",
            &[tok("a", Some(0.9), Some(0.1), &[("a", 0.9)]), answer("b")],
        );
        let p = page(&t);
        for bad in [
            "http://", "https://", "src=", "url(", "@import", "<link", "<iframe", "<img",
        ] {
            assert!(!p.contains(bad), "{bad}");
        }
        assert!(p.contains("default-src 'none'"));
        assert!(p.starts_with("<!DOCTYPE html>"));
        // Readable without the script: the colour switch is two radio buttons and CSS.
        assert!(p.contains("id=\"by-h\"") && p.contains("#by-h:checked~main .tok.h-lo"));
    }
}
