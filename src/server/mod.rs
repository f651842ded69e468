//! `aha serve`: the local engine behind an OpenAI-compatible HTTP API (axum, SSE streaming).
//!
//! One engine runs on its own OS thread and takes jobs in order; HTTP handlers only translate.
//! Each job carries its own event channel, so a stream gets only its own tokens. A client that
//! goes away drops its receiver, which cancels its job (waiting or running).

pub mod openai;

use crate::engine::{Control, Engine, GenerateRequest, Prompt, ThinkMode};
use crate::protocol::Event;
use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openai::{ApiError, ChatRequest, Out, Translator};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

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
    _slot: Slot,
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
    default_sampling: crate::engine::sampler::SamplingParams,
    counters: Arc<Counters>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// Runs the engine's job loop on the current (dedicated) thread until the channel closes.
fn engine_loop(
    mut engine: Box<dyn Engine>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    c: Arc<Counters>,
) {
    while let Some(job) = jobs.blocking_recv() {
        if job.ctrl.cancelled() || job.tx.is_closed() {
            c.cancelled.fetch_add(1, Ordering::SeqCst);
            tracing::info!("job dropped before it started (client gone)");
            continue;
        }
        c.running.fetch_add(1, Ordering::SeqCst);
        let t0 = std::time::Instant::now();
        let ctrl = job.ctrl.clone();
        let tx = job.tx.clone();
        let r = engine.generate(&job.req, &job.ctrl, &mut |e| {
            if tx.send(e).is_err() {
                ctrl.cancel();
            }
        });
        c.running.fetch_sub(1, Ordering::SeqCst);
        match r {
            Ok(s) if s.finish_reason == "cancelled" => {
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
                let _ = job.tx.send(Event::Error {
                    message: format!("{e:#}"),
                });
            }
        }
    }
}

/// Serves `engine` until the process is stopped.
pub fn serve(engine: Box<dyn Engine>, opts: ServeOptions) -> Result<()> {
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
            "aha serve: {} on {device} at http://{addr}/v1 (queue {}, {})",
            state.model,
            opts.queue,
            if opts.api_key.is_some() {
                "API key required"
            } else {
                "no API key"
            }
        );
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("server error")
    })
}

fn router(state: Arc<AppState>) -> Router {
    let max_body = state.opts.max_body;
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
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
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
    Ok(GenerateRequest {
        prompt: Prompt::Chat(r.chat_messages()),
        sampling,
        max_tokens: r
            .max_completion_tokens
            .or(r.max_tokens)
            .unwrap_or(s.opts.max_tokens),
        think,
        think_budget: None,
        ignore_eos: false,
        tools: r.offered_tools(),
        assistant_prefix: None,
        constrain_tools: true,
        // `tool_choice: "none"` offers no tools; the reply is not constrained further, since a
        // client may well ask for a JSON answer.
        no_tool_calls: false,
    })
}

/// Takes a queue place and hands the job to the engine thread.
fn submit(
    s: &AppState,
    req: GenerateRequest,
) -> Result<(mpsc::UnboundedReceiver<Event>, CancelOnDrop), ApiError> {
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
    s.jobs
        .send(Job {
            req,
            ctrl: ctrl.clone(),
            tx,
            _slot: slot,
        })
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the engine has stopped",
            )
        })?;
    Ok((rx, CancelOnDrop(ctrl)))
}

async fn chat(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = check_key(&s, &headers) {
        return e.into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            let status = rej.status();
            let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "the request body is larger than {} bytes (aha serve --max-body)",
                    s.opts.max_body
                )
            } else {
                rej.body_text()
            };
            return ApiError::new(status, "invalid_request_error", msg).into_response();
        }
    };
    let r = match openai::parse_request(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let req = match to_generate(&s, &r) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let tr = Translator::new(r.stops(), req.tools.as_deref());
    let (rx, guard) = match submit(&s, req) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let id = format!("chatcmpl-{}", openai::random_id(24));
    if r.stream {
        let usage = r.stream_options.as_ref().is_some_and(|o| o.include_usage);
        stream_reply(s.model.clone(), id, rx, guard, tr, usage).into_response()
    } else {
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
    Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": tr.finish_reason(), "logprobs": null}],
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
) -> impl IntoResponse {
    let (out_tx, out_rx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
    let created = now_secs();
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
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
        if !send(chunk(json!({"role": "assistant", "content": ""}), None)).await {
            return;
        }
        while let Some(e) = rx.recv().await {
            for o in tr.event(e) {
                let delta = match o {
                    Out::Reasoning(t) => json!({"reasoning_content": t}),
                    Out::Content(t) => json!({"content": t}),
                    Out::ToolCall(c) => json!({"tool_calls": [c]}),
                };
                if !send(chunk(delta, None)).await {
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
            if !send(chunk(json!({}), Some(tr.finish_reason()))).await {
                return;
            }
            if include_usage {
                let mut u = chunk(json!({}), None);
                u["choices"] = json!([]);
                u["usage"] = tr.usage();
                let _ = send(u).await;
            }
        }
        let _ = out_tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(out_rx)).keep_alive(KeepAlive::default())
}
