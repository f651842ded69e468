//! `aha serve`: the local engine behind an OpenAI-compatible HTTP API (axum on hyper, SSE
//! streaming).
//!
//! One engine runs on its own OS thread and takes jobs in order; HTTP handlers only translate.
//! Each job carries its own event channel, so a stream gets only its own tokens. A client that
//! goes away drops its receiver, which cancels its job (waiting or running). When the engine takes
//! a job it first checks that the prompt fits the context, and the handler answers 400 if not.
//! Sockets, header and body deadlines are `conns`' business.

pub mod conns;
pub mod openai;

use aha_engine::sampler::validate_max_tokens;
use aha_engine::{Control, Engine, GenerateRequest, LocalEngine, Prompt, ThinkMode};
use aha_protocol::Event;
use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openai::{ApiError, ChatRequest, Out, Translator};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

/// How long a streaming request waits for the engine's verdict on its prompt before the stream
/// opens anyway. With the engine free the verdict comes at once and a prompt too long for the
/// context is a 400; a stream queued behind others opens within this (and keeps alive), since
/// clients give up on a server that sends nothing, and a late rejection arrives as an error event.
const STREAM_VERDICT_WAIT: Duration = Duration::from_secs(5);

/// Descriptors the process needs besides client sockets: the listener, the runtime, stdio, files.
const FD_RESERVE: u64 = 64;

/// How `aha serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port (printed on start).
    pub port: u16,
    /// Require `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Requests accepted at once (the running one included); more get 503.
    pub queue: usize,
    /// Largest request body in bytes; larger ones get 413.
    pub max_body: usize,
    /// Force reasoning on for every request (a `<think>` block even for non-reasoning models).
    pub think: bool,
    /// Default max_tokens when a request gives none.
    pub max_tokens: usize,
    /// Sockets open at once; at the cap the longest-idle connection makes room.
    pub max_connections: usize,
    /// Time to send a whole request head (and the most a kept-alive connection may idle).
    pub header_timeout: Duration,
    /// Time to send a whole request body once the head is in; then 408.
    pub body_timeout: Duration,
}

/// Counters for `/health`.
#[derive(Debug, Default)]
struct Counters {
    in_flight: AtomicUsize,
    running: AtomicUsize,
    completed: AtomicUsize,
    cancelled: AtomicUsize,
    failed: AtomicUsize,
}

/// One generation waiting for the engine.
struct Job {
    req: GenerateRequest,
    ctrl: Arc<Control>,
    tx: mpsc::UnboundedSender<Event>,
    /// Whether the engine takes the prompt, sent before any event.
    verdict: oneshot::Sender<Result<(), ApiError>>,
    _slot: Slot,
}

/// A submitted job as its handler holds it.
struct Submitted {
    rx: mpsc::UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    verdict: oneshot::Receiver<Result<(), ApiError>>,
}

/// A place in the queue, given back when dropped.
struct Slot(Arc<Counters>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Cancels its job when the response (stream or future) holding it is dropped.
struct CancelOnDrop(Arc<Control>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

struct AppState {
    opts: ServeOptions,
    model: String,
    reasoning: bool,
    default_sampling: aha_engine::sampler::SamplingParams,
    counters: Arc<Counters>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// Whether the engine can take this request's prompt: it renders, and it fits the context.
/// The engine renders it again when it generates; that costs milliseconds against a generation,
/// and keeps the check exactly what the engine will read.
fn check_prompt(engine: &LocalEngine, req: &GenerateRequest) -> Result<(), ApiError> {
    let prompt = engine.prepare(req).map_err(|e| {
        ApiError::bad_request(
            format!("the messages cannot be put through the model's chat template: {e:#}"),
            Some("messages".into()),
        )
    })?;
    let (n, n_ctx) = (prompt.tokens.len(), engine.context_length());
    if n == 0 {
        return Err(ApiError::bad_request(
            "the prompt is empty",
            Some("messages".into()),
        ));
    }
    if n >= n_ctx {
        let mut e = ApiError::bad_request(
            format!(
                "the prompt is {n} tokens but the context of {} holds {n_ctx}; shorten the messages and leave room for the reply",
                engine.name
            ),
            Some("messages".into()),
        );
        e.code = Some("context_length_exceeded");
        return Err(e);
    }
    Ok(())
}

/// Runs the engine's job loop on the current (dedicated) thread until the channel closes.
fn engine_loop(mut engine: LocalEngine, mut jobs: mpsc::UnboundedReceiver<Job>, c: Arc<Counters>) {
    while let Some(job) = jobs.blocking_recv() {
        let Job {
            req,
            ctrl,
            tx,
            verdict,
            _slot,
        } = job;
        if ctrl.cancelled() || tx.is_closed() {
            c.cancelled.fetch_add(1, Ordering::SeqCst);
            tracing::info!("job dropped before it started (client gone)");
            continue;
        }
        let checked = check_prompt(&engine, &req);
        let fits = checked.is_ok();
        let _ = verdict.send(checked);
        if !fits {
            continue;
        }
        c.running.fetch_add(1, Ordering::SeqCst);
        let t0 = std::time::Instant::now();
        let cancel = ctrl.clone();
        let events = tx.clone();
        let r = engine.generate(&req, &ctrl, &mut |e| {
            if events.send(e).is_err() {
                cancel.cancel();
            }
        });
        c.running.fetch_sub(1, Ordering::SeqCst);
        match r {
            Ok(s) if s.finish_reason == aha_protocol::FinishReason::Cancelled => {
                c.cancelled.fetch_add(1, Ordering::SeqCst);
                eprintln!(
                    "aha serve: request cancelled after {} tokens, {:.2} s",
                    s.thinking_tokens + s.answer_tokens,
                    t0.elapsed().as_secs_f64()
                );
            }
            Ok(_) => {
                c.completed.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(Event::Error {
                    message: format!("{e:#}"),
                });
            }
        }
    }
}

/// Raises the open-file limit as far as `want` connections need (up to the hard limit) and
/// returns how many connections fit under it.
fn fit_connections(want: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return want;
    };
    // One more than the cap: the newcomer that makes room is open while the one it replaces closes.
    let need = (want as u64).saturating_add(FD_RESERVE + 1);
    let mut limit = soft;
    if need > soft && setrlimit(Resource::RLIMIT_NOFILE, need.min(hard), hard).is_ok() {
        limit = need.min(hard);
    }
    let fits = limit.saturating_sub(FD_RESERVE + 1).max(1);
    if fits < want as u64 {
        eprintln!(
            "aha serve: the open-file limit is {limit}, so at most {fits} connections instead of {want} (raise it with `ulimit -n`)"
        );
        return fits as usize;
    }
    want
}

/// Serves `engine` until the process is stopped.
pub fn serve(engine: LocalEngine, mut opts: ServeOptions) -> Result<()> {
    opts.max_connections = fit_connections(opts.max_connections);
    let counters = Arc::new(Counters::default());
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let state = Arc::new(AppState {
        model: engine.model_name(),
        reasoning: engine.is_reasoning(),
        default_sampling: engine.default_sampling(),
        opts: opts.clone(),
        counters: counters.clone(),
        jobs: jobs_tx,
    });
    let device = engine.device();
    std::thread::Builder::new()
        .name("aha-engine".into())
        .spawn(move || engine_loop(engine, jobs_rx, counters))
        .context("cannot start the engine thread")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "aha serve: {} on {device} at http://{addr}/v1 (queue {}, {} connections, {})",
            state.model,
            opts.queue,
            opts.max_connections,
            if opts.api_key.is_some() {
                "API key required"
            } else {
                "no API key"
            }
        );
        let limits = conns::Limits {
            max_connections: opts.max_connections,
            header_timeout: opts.header_timeout,
        };
        conns::serve(listener, router(state), limits, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        Ok(())
    })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such endpoint",
            )
        })
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

/// 405 with a body that says which method the endpoint takes (axum's own has no body).
async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let (allow, path) = if uri.path() == "/v1/chat/completions" {
        ("POST", "/v1/chat/completions")
    } else {
        ("GET", uri.path())
    };
    let mut r = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{path} takes {allow}, not {method}"),
    )
    .into_response();
    r.headers_mut()
        .insert(axum::http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn check_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.opts.api_key else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or wrong API key: send Authorization: Bearer <the key given to aha serve --api-key>",
        );
        e.code = Some("invalid_api_key");
        Err(e)
    }
}

async fn health(State(s): State<Arc<AppState>>) -> Json<Value> {
    let c = &s.counters;
    let in_flight = c.in_flight.load(Ordering::SeqCst);
    let running = c.running.load(Ordering::SeqCst);
    Json(json!({
        "status": "ok",
        "model": s.model,
        "running": running,
        "waiting": in_flight.saturating_sub(running),
        "capacity": s.opts.queue,
        "completed": c.completed.load(Ordering::SeqCst),
        "cancelled": c.cancelled.load(Ordering::SeqCst),
        "failed": c.failed.load(Ordering::SeqCst),
    }))
}

async fn models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_key(&s, &headers) {
        return e.into_response();
    }
    Json(json!({"object": "list", "data": [{
        "id": s.model, "object": "model", "created": 0, "owned_by": "aha",
    }]}))
    .into_response()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks a request and turns it into an engine request.
fn to_generate(s: &AppState, r: &ChatRequest) -> Result<GenerateRequest, ApiError> {
    if let Some(m) = r.model.as_deref() {
        if m != s.model {
            let mut e = ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "the model `{m}` does not exist here; this server has `{}`",
                    s.model
                ),
            );
            e.param = Some("model".into());
            e.code = Some("model_not_found");
            return Err(e);
        }
    }
    if r.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request(
            "only n=1 is supported",
            Some("n".into()),
        ));
    }
    if r.messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages must not be empty",
            Some("messages".into()),
        ));
    }
    let mut sampling = s.default_sampling.clone();
    if let Some(t) = r.temperature {
        sampling.temperature = t;
    }
    if let Some(p) = r.top_p {
        sampling.top_p = p;
    }
    if let Some(k) = r.top_k {
        sampling.top_k = k;
    }
    if let Some(m) = r.min_p {
        sampling.min_p = m;
    }
    if let Some(p) = r.repetition_penalty {
        sampling.repeat_penalty = p;
    }
    if let Some(seed) = r.seed {
        sampling.seed = seed;
    }
    sampling.validate().map_err(|e| {
        // The request names the penalty as OpenAI-compatible servers do.
        let field = match e.field {
            "repeat_penalty" => "repetition_penalty",
            f => f,
        };
        ApiError::bad_request(e.message_for(field), Some(field.into()))
    })?;
    r.check_penalties()?;
    let (max_field, max_tokens) = match (r.max_completion_tokens, r.max_tokens) {
        (Some(n), _) => ("max_completion_tokens", n),
        (None, Some(n)) => ("max_tokens", n),
        (None, None) => ("max_tokens", s.opts.max_tokens),
    };
    validate_max_tokens(max_tokens)
        .map_err(|e| ApiError::bad_request(e.message_for(max_field), Some(max_field.into())))?;
    let enable = r
        .chat_template_kwargs
        .as_ref()
        .and_then(|k| k["enable_thinking"].as_bool());
    let think = match enable {
        Some(false) => ThinkMode::Off,
        Some(true) => ThinkMode::On,
        None if s.opts.think => ThinkMode::On,
        None => ThinkMode::Auto,
    };
    let _ = s.reasoning;
    let top_logprobs = match (r.logprobs, r.top_logprobs) {
        (_, Some(n)) if n as usize > aha_protocol::trace::MAX_TOP_LOGPROBS => {
            return Err(ApiError::bad_request(
                format!(
                    "top_logprobs {n} is out of range: it must be from 0 to {}",
                    aha_protocol::trace::MAX_TOP_LOGPROBS
                ),
                Some("top_logprobs".into()),
            ))
        }
        (Some(true), n) => n.unwrap_or(0) as usize,
        (_, Some(n)) if n > 0 => {
            return Err(ApiError::bad_request(
                "top_logprobs needs logprobs: true",
                Some("top_logprobs".into()),
            ))
        }
        _ => 0,
    };
    Ok(GenerateRequest {
        prompt: Prompt::Chat(r.chat_messages()),
        sampling,
        max_tokens,
        think,
        think_budget: None,
        ignore_eos: false,
        tools: r.offered_tools(),
        assistant_prefix: None,
        constrain_tools: true,
        // `tool_choice: "none"` offers no tools; the reply is not constrained further, since a
        // client may well ask for a JSON answer.
        no_tool_calls: false,
        trace: aha_protocol::TraceOptions {
            top_logprobs,
            ..aha_protocol::TraceOptions::default()
        },
    })
}

/// Takes a queue place and hands the job to the engine thread.
fn submit(s: &AppState, req: GenerateRequest) -> Result<Submitted, ApiError> {
    let c = &s.counters;
    if c.in_flight.fetch_add(1, Ordering::SeqCst) >= s.opts.queue {
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!(
                "the queue is full ({} requests); try again shortly",
                s.opts.queue
            ),
        );
        e.code = Some("queue_full");
        return Err(e);
    }
    let slot = Slot(c.clone());
    let ctrl = Arc::new(Control::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let (verdict_tx, verdict) = oneshot::channel();
    s.jobs
        .send(Job {
            req,
            ctrl: ctrl.clone(),
            tx,
            verdict: verdict_tx,
            _slot: slot,
        })
        .map_err(|_| engine_stopped())?;
    Ok(Submitted {
        rx,
        guard: CancelOnDrop(ctrl),
        verdict,
    })
}

fn engine_stopped() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "the engine has stopped",
    )
}

/// The engine's verdict on a prompt, or the engine is gone (it drops a job only when its
/// client has gone, or when its thread has ended).
fn verdict_of(v: Result<Result<(), ApiError>, oneshot::error::RecvError>) -> Result<(), ApiError> {
    v.unwrap_or_else(|_| Err(engine_stopped()))
}

fn too_large(max_body: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!("the request body is larger than {max_body} bytes (aha serve --max-body)"),
    )
    .into_response()
}

/// Reads a whole request body within the size limit and the body deadline.
async fn read_body(
    opts: &ServeOptions,
    headers: &HeaderMap,
    body: Body,
    conn: Option<&conns::ConnHandle>,
) -> Result<Bytes, Response> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > opts.max_body as u64) {
        return Err(too_large(opts.max_body));
    }
    // Until its body is in, a request has asked for nothing: a client that trickles it may have
    // its connection closed to make room for others.
    let _receiving = conn.map(conns::ConnHandle::receiving);
    let read = async {
        let mut data = body.into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(format!("cannot read the request body: {e}"), None)
                    .into_response()
            })?;
            if buf.len() + chunk.len() > opts.max_body {
                return Err(too_large(opts.max_body));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(opts.body_timeout, read).await {
        Ok(r) => r,
        Err(_) => {
            let mut r = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                format!(
                    "the request body did not arrive within {} s (aha serve --body-timeout)",
                    opts.body_timeout.as_secs_f64()
                ),
            )
            .into_response();
            // The rest of the body may still come; it is not read, so the connection ends here.
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            Err(r)
        }
    }
}

async fn chat(State(s): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(e) = check_key(&s, &parts.headers) {
        return e.into_response();
    }
    let conn = parts.extensions.get::<conns::ConnHandle>();
    let body = match read_body(&s.opts, &parts.headers, body, conn).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.trim_ascii().is_empty() {
        return ApiError::bad_request(
            r#"the request body is empty: send a JSON object such as {"messages": [{"role": "user", "content": "Hello"}]}"#,
            None,
        )
        .into_response();
    }
    let r = match openai::parse_request(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let req = match to_generate(&s, &r) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let tr =
        Translator::new(r.stops(), req.tools.as_deref()).with_logprobs(r.logprobs == Some(true));
    let Submitted {
        rx,
        guard,
        mut verdict,
    } = match submit(&s, req) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let id = format!("chatcmpl-{}", openai::random_id(24));
    if r.stream {
        let usage = r.stream_options.as_ref().is_some_and(|o| o.include_usage);
        let pending = match tokio::time::timeout(STREAM_VERDICT_WAIT, &mut verdict).await {
            Ok(v) => match verdict_of(v) {
                Ok(()) => None,
                Err(e) => return e.into_response(),
            },
            Err(_) => Some(verdict),
        };
        stream_reply(s.model.clone(), id, rx, guard, tr, usage, pending).into_response()
    } else {
        if let Err(e) = verdict_of(verdict.await) {
            return e.into_response();
        }
        whole_reply(&s.model, id, rx, guard, tr).await
    }
}

/// Collects a whole reply (non-streaming).
async fn whole_reply(
    model: &str,
    id: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    mut tr: Translator,
) -> Response {
    let (mut content, mut reasoning, mut calls) = (String::new(), String::new(), Vec::new());
    while let Some(e) = rx.recv().await {
        for o in tr.event(e) {
            match o {
                Out::Reasoning(t) => reasoning.push_str(&t),
                Out::Content(t) => content.push_str(&t),
                Out::ToolCall(c) => calls.push(c),
            }
        }
        if tr.stopped() {
            guard.0.cancel();
        }
    }
    if let (Some(err), None) = (&tr.error, &tr.stats) {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            err.clone(),
        )
        .into_response();
    }
    let content = if calls.is_empty() {
        Value::String(content)
    } else {
        let t = content.trim();
        if t.is_empty() {
            Value::Null
        } else {
            Value::String(t.to_string())
        }
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if !calls.is_empty() {
        message["tool_calls"] = json!(calls);
    }
    // Every token's entry, collected by the translator over the whole reply.
    let logprobs = if tr.logprobs() {
        tr.take_logprobs().unwrap_or_else(|| json!({"content": []}))
    } else {
        Value::Null
    };
    Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": tr.finish_reason(), "logprobs": logprobs}],
        "usage": tr.usage(),
    }))
    .into_response()
}

/// Streams a reply as `chat.completion.chunk` SSE events, ending with `[DONE]`.
fn stream_reply(
    model: String,
    id: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    mut tr: Translator,
    include_usage: bool,
    verdict: Option<oneshot::Receiver<Result<(), ApiError>>>,
) -> impl IntoResponse {
    let (out_tx, out_rx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
    let created = now_secs();
    let chunk = move |delta: Value, finish: Option<&str>, logprobs: Option<Value>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                         "logprobs": logprobs.unwrap_or(Value::Null)}],
        })
    };
    tokio::spawn(async move {
        // Owned here: when the client goes, sending fails, this task ends and the job is cancelled.
        let guard = guard;
        let send = |v: Value| {
            let tx = out_tx.clone();
            async move {
                tx.send(Ok(SseEvent::default().data(v.to_string())))
                    .await
                    .is_ok()
            }
        };
        if !send(chunk(
            json!({"role": "assistant", "content": ""}),
            None,
            None,
        ))
        .await
        {
            return;
        }
        // Queued past STREAM_VERDICT_WAIT: a refused prompt is reported in the stream.
        if let Some(v) = verdict {
            let v = tokio::select! {
                v = v => v,
                // The client left while queued: returning drops the guard, which cancels the job.
                () = out_tx.closed() => return,
            };
            if let Err(e) = verdict_of(v) {
                let _ = send(e.body()).await;
                let _ = out_tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
                return;
            }
        }
        while let Some(e) = rx.recv().await {
            let outs = tr.event(e);
            let n = outs.len();
            for (i, o) in outs.into_iter().enumerate() {
                let delta = match o {
                    Out::Reasoning(t) => json!({"reasoning_content": t}),
                    Out::Content(t) => json!({"content": t}),
                    Out::ToolCall(c) => json!({"tool_calls": [c]}),
                };
                // The tokens' log-probabilities ride with the last piece they produced (text
                // a stop string holds back takes them to a later chunk).
                let lp = if i + 1 == n { tr.take_logprobs() } else { None };
                if !send(chunk(delta, None, lp)).await {
                    return;
                }
            }
            if tr.stopped() {
                guard.0.cancel();
            }
        }
        if let (Some(err), None) = (&tr.error, &tr.stats) {
            let _ = send(json!({"error": {"message": err, "type": "server_error", "param": null, "code": null}})).await;
        } else {
            let lp = tr.take_logprobs();
            if !send(chunk(json!({}), Some(tr.finish_reason()), lp)).await {
                return;
            }
            if include_usage {
                let mut u = chunk(json!({}), None, None);
                u["choices"] = json!([]);
                u["usage"] = tr.usage();
                let _ = send(u).await;
            }
        }
        let _ = out_tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(out_rx)).keep_alive(KeepAlive::default())
}
