//! The MCP client: the servers a user configures under `[mcp.servers.NAME]`, started and called
//! for the agent.
//!
//! [`McpHub`] owns a small tokio runtime of its own (one worker), so that the agent's thread,
//! which is synchronous, can start servers in the background and call their tools with a plain
//! blocking call. Each server has a [`State`], its tools and its last error, which `/mcp` shows.
//! Failures stay local to one server and one call: a server that does not start is a notice; a
//! call that fails, crashes the server or outlasts its timeout is a failed call whose text says
//! why, and the turn goes on. A stdio server runs in a process group of its own, so that Ctrl-C in
//! the terminal does not reach it and stopping it stops every process it started (no orphans).

use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::ServiceExt;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to start and list its tools, unless its config says otherwise.
pub const DEFAULT_START_TIMEOUT_S: u64 = 20;
/// How long one tool call may take, unless the server's config says otherwise.
pub const DEFAULT_CALL_TIMEOUT_S: u64 = 60;
/// Lines of a stdio server's stderr kept for error messages.
const STDERR_LINES: usize = 8;

/// The `[mcp]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The servers by name; the name prefixes their tools (`NAME__tool`).
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
}

/// One `[mcp.servers.NAME]` table: a command to start (stdio) or a URL (streamable HTTP).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The program to start; it speaks MCP on its stdin and stdout.
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables added to its environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The server's streamable HTTP endpoint (`http://` or `https://`), instead of a command.
    pub url: Option<String>,
    /// Headers sent with every HTTP request (an `Authorization`, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A disabled server is not started and its tools are not offered.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether a person must approve its calls (see [`Trust`]).
    #[serde(default)]
    pub trust: Trust,
    /// Seconds the server may take to start and list its tools.
    pub start_timeout_s: Option<u64>,
    /// Seconds one call may take before it fails as timed out.
    pub call_timeout_s: Option<u64>,
}

fn yes() -> bool {
    true
}

/// How far a person trusts a server's tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// A tool the server marks `readOnlyHint` counts as read-only; every other call follows the
    /// approval policy like a tool that runs code.
    #[default]
    Ask,
    /// The person vouches that every tool of the server only reads: none of them asks.
    ReadOnly,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ask => "ask",
            Self::ReadOnly => "read-only",
        }
    }
}

impl ServerConfig {
    fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_s.unwrap_or(DEFAULT_START_TIMEOUT_S))
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_s.unwrap_or(DEFAULT_CALL_TIMEOUT_S))
    }

    /// How the server is reached, in a few words for a person.
    pub fn transport(&self) -> String {
        match (&self.command, &self.url) {
            (Some(c), _) => {
                let mut s = format!("stdio: {c}");
                for a in &self.args {
                    s.push(' ');
                    s.push_str(a);
                }
                s
            }
            (None, Some(u)) => format!("http: {u}"),
            (None, None) => "nowhere".into(),
        }
    }
}

impl McpConfig {
    /// Checks what serde cannot: names, one transport per server, URLs, headers, timeouts.
    /// Errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, s) in &self.servers {
            let key = format!("mcp.servers.{name}");
            if name.is_empty()
                || name.len() > 32
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                anyhow::bail!(
                    "{key}: a server name is 1 to 32 letters, digits, `_` or `-` (it prefixes its tools' names)"
                );
            }
            match (&s.command, &s.url) {
                (Some(_), Some(_)) => anyhow::bail!(
                    "{key}: give `command` (a program that speaks MCP on stdio) or `url` (streamable HTTP), not both"
                ),
                (None, None) => anyhow::bail!(
                    "{key}: give `command` (a program that speaks MCP on stdio) or `url` (streamable HTTP)"
                ),
                (Some(c), None) => {
                    if c.trim().is_empty() {
                        anyhow::bail!("{key}.command is empty");
                    }
                    if !s.headers.is_empty() {
                        anyhow::bail!("{key}.headers: headers are for `url` servers");
                    }
                }
                (None, Some(u)) => {
                    if !(u.starts_with("http://") || u.starts_with("https://")) {
                        anyhow::bail!("{key}.url must start with http:// or https://");
                    }
                    if !s.args.is_empty() || !s.env.is_empty() {
                        anyhow::bail!("{key}: `args` and `env` are for `command` servers");
                    }
                    for (k, v) in &s.headers {
                        header(k, v).map_err(|e| anyhow::anyhow!("{key}.headers: {e}"))?;
                    }
                }
            }
            for (what, t) in [
                ("start_timeout_s", s.start_timeout_s),
                ("call_timeout_s", s.call_timeout_s),
            ] {
                if t == Some(0) {
                    anyhow::bail!("{key}.{what} must be at least 1");
                }
            }
        }
        Ok(())
    }
}

/// One header for the HTTP transport, or why it cannot be sent.
fn header(k: &str, v: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let n = http::HeaderName::try_from(k).map_err(|_| format!("`{k}` is not a header name"))?;
    let v = http::HeaderValue::try_from(v)
        .map_err(|_| format!("the value of `{k}` cannot be sent as a header"))?;
    Ok((n, v))
}

/// Where a server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Turned off in the config file.
    Disabled,
    /// Starting, or starting again; its tools are listed once it has.
    Starting,
    /// Running; its tools are offered.
    Ready,
    /// It did not start, or a call outlasted its timeout and it was stopped; the next call
    /// tries to start it again.
    Failed,
    /// It stopped by itself; the next call starts it again.
    Crashed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Crashed => "crashed",
        }
    }
}

/// One tool a server offers, as it listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// The server's own name for it.
    pub name: String,
    pub description: String,
    /// The JSON schema of its arguments, as the server gave it.
    pub input_schema: Value,
    /// The server marks it `readOnlyHint`.
    pub read_only: bool,
}

impl From<Tool> for McpTool {
    fn from(t: Tool) -> Self {
        let description = t
            .description
            .as_deref()
            .or(t.title.as_deref())
            .unwrap_or_default()
            .to_string();
        Self {
            read_only: t
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .unwrap_or(false),
            name: t.name.to_string(),
            description,
            input_schema: Value::Object((*t.input_schema).clone()),
        }
    }
}

/// What `/mcp` shows of one server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStatus {
    pub name: String,
    pub config: ServerConfig,
    pub state: State,
    /// The tools it listed when it last started (kept while it is down: a call restarts it).
    pub tools: Vec<McpTool>,
    pub last_error: Option<String>,
}

/// The result of one call, for the model: `ok` false when the tool failed or could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub ok: bool,
    pub text: String,
}

impl CallOutcome {
    fn failed(text: String) -> Self {
        Self { ok: false, text }
    }
}

/// Sends SIGKILL to a stdio server's process group when dropped: the server and whatever it
/// started (`npx` starts `node`, which a plain kill of `npx` would leave behind).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A running connection to one server.
struct Conn {
    service: RunningService<RoleClient, ()>,
    /// Declared after `service`, so the process group dies after the connection is closed.
    _group: Option<Group>,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.service.is_closed() || self.service.peer().is_transport_closed()
    }
}

/// One configured server and what is known of it.
struct Slot {
    name: String,
    cfg: ServerConfig,
    status: Mutex<ServerStatus>,
    /// Held while the server starts and during each call, so they never overlap.
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// The last lines a stdio server wrote to stderr.
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Slot {
    /// Records that the server is down (`state`) and why.
    fn failed(&self, state: State, why: &str) {
        self.update(|st| {
            st.state = state;
            st.last_error = Some(why.to_string());
        });
    }

    fn update(&self, f: impl FnOnce(&mut ServerStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    fn state(&self) -> State {
        self.status.lock().map(|s| s.state).unwrap_or(State::Failed)
    }

    /// `; it said: …` with the server's last stderr lines, or nothing.
    fn last_words(&self) -> String {
        let lines: Vec<String> = self
            .stderr
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        if lines.is_empty() {
            String::new()
        } else {
            format!("; it said on stderr: {}", lines.join(" | "))
        }
    }

    /// Starts the server and lists its tools, within its start timeout.
    /// Connects into `conn`, recording the outcome in the server's state (ready with its
    /// tools, or failed with why).
    async fn start(&self, conn: &mut Option<Conn>) -> Result<(), String> {
        match self.connect().await {
            Ok((c, tools)) => {
                *conn = Some(c);
                self.update(|st| {
                    st.state = State::Ready;
                    st.tools = tools;
                });
                Ok(())
            }
            Err(e) => {
                self.failed(State::Failed, &e);
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<(Conn, Vec<McpTool>), String> {
        let limit = self.cfg.start_timeout();
        match tokio::time::timeout(limit, self.open()).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "it did not start and list its tools within {} s (start_timeout_s){}",
                limit.as_secs(),
                self.last_words()
            )),
        }
    }

    async fn open(&self) -> Result<(Conn, Vec<McpTool>), String> {
        let (service, group) = match (&self.cfg.command, &self.cfg.url) {
            (Some(c), _) => self.open_stdio(c).await?,
            (None, Some(u)) => (self.open_http(u).await?, None),
            (None, None) => return Err("it has neither `command` nor `url`".into()),
        };
        let tools = service
            .list_all_tools()
            .await
            .map_err(|e| format!("it did not list its tools: {e}"))?;
        let conn = Conn {
            service,
            _group: group,
        };
        Ok((conn, tools.into_iter().map(McpTool::from).collect()))
    }

    async fn open_stdio(
        &self,
        command: &str,
    ) -> Result<(RunningService<RoleClient, ()>, Option<Group>), String> {
        if let Ok(mut l) = self.stderr.lock() {
            l.clear();
        }
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(&self.cfg.args)
            .envs(&self.cfg.env)
            .kill_on_drop(true)
            // Its own process group: Ctrl-C in aha's terminal is not for it, and the whole group
            // can be stopped at once.
            .process_group(0);
        let (proc, stderr) = TokioChildProcess::builder(cmd)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "cannot run `{command}`: no such program (is it installed and on PATH?)"
                    )
                } else {
                    format!("cannot run `{command}`: {e}")
                }
            })?;
        let group = proc.id().map(Group);
        if let Some(err) = stderr {
            tokio::spawn(keep_stderr(err, self.stderr.clone()));
        }
        match ().serve(proc).await {
            Ok(s) => Ok((s, group)),
            Err(e) => {
                // Let the stderr reader catch the server's last words.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(format!(
                    "it did not answer MCP's initialize ({}){}",
                    init_error(&e),
                    self.last_words()
                ))
            }
        }
    }

    async fn open_http(&self, url: &str) -> Result<RunningService<RoleClient, ()>, String> {
        install_crypto();
        let mut headers = HashMap::new();
        for (k, v) in &self.cfg.headers {
            let (n, v) = header(k, v)?;
            headers.insert(n, v);
        }
        let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers);
        let transport = StreamableHttpClientTransport::from_config(config);
        ().serve(transport).await.map_err(|e| {
            format!(
                "it did not answer MCP's initialize at {url} ({})",
                init_error(&e)
            )
        })
    }
}

/// Why the MCP handshake failed, in words for a person: for a transport error its innermost
/// cause, without the layers of transport type names around it.
fn init_error(e: &ClientInitializeError) -> String {
    match e {
        ClientInitializeError::TransportError { error, .. } => {
            let mut cause: &(dyn std::error::Error + 'static) = error;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            let why = cause.to_string();
            // reqwest's cause sits below rmcp's HTTP error, which does not expose it.
            if why.contains("error sending request") {
                "could not connect: is the server running there?".into()
            } else {
                why
            }
        }
        other => other.to_string(),
    }
}

/// rustls needs one process-wide crypto provider before reqwest makes a TLS connection: ring's,
/// as ureq uses (aws-lc would not cross-compile for aarch64 here).
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Keeps the last lines a server writes to stderr (aha owns the terminal; they must not reach it).
async fn keep_stderr(err: tokio::process::ChildStderr, keep: Arc<Mutex<VecDeque<String>>>) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(err).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        tracing::debug!("mcp server stderr: {line}");
        if let Ok(mut k) = keep.lock() {
            if k.len() == STDERR_LINES {
                k.pop_front();
            }
            k.push_back(line.chars().take(300).collect());
        }
    }
}

/// What a call came to before its result is put into words.
enum Ended {
    Done(Result<CallToolResult, ServiceError>),
    TimedOut,
    Cancelled,
}

/// The configured MCP servers, started in the background and called from the agent's thread.
pub struct McpHub {
    /// Present while any server is enabled.
    rt: Option<tokio::runtime::Runtime>,
    slots: Vec<Arc<Slot>>,
    /// Said to the person at the next chance (a server that failed, stopped or timed out).
    notices: Arc<Mutex<Vec<String>>>,
}

impl McpHub {
    /// Starts every enabled server in the background and returns at once; `None` when no
    /// server is configured.
    pub fn start(cfg: &McpConfig) -> Option<Self> {
        if cfg.servers.is_empty() {
            return None;
        }
        let notices = Arc::new(Mutex::new(Vec::new()));
        let slots: Vec<Arc<Slot>> = cfg
            .servers
            .iter()
            .map(|(name, c)| {
                Arc::new(Slot {
                    name: name.clone(),
                    cfg: c.clone(),
                    status: Mutex::new(ServerStatus {
                        name: name.clone(),
                        config: c.clone(),
                        state: if c.enabled {
                            State::Starting
                        } else {
                            State::Disabled
                        },
                        tools: Vec::new(),
                        last_error: None,
                    }),
                    conn: tokio::sync::Mutex::new(None),
                    stderr: Arc::default(),
                })
            })
            .collect();
        let mut hub = Self {
            rt: None,
            slots,
            notices,
        };
        if !hub.slots.iter().any(|s| s.cfg.enabled) {
            return Some(hub);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aha-mcp")
            .enable_all()
            .build();
        match rt {
            Ok(rt) => {
                for s in hub.slots.iter().filter(|s| s.cfg.enabled) {
                    rt.spawn(start_slot(s.clone(), hub.notices.clone()));
                }
                hub.rt = Some(rt);
            }
            Err(e) => {
                let why = format!("aha could not start its MCP runtime: {e}");
                for s in hub.slots.iter().filter(|s| s.cfg.enabled) {
                    s.update(|st| {
                        st.state = State::Failed;
                        st.last_error = Some(why.clone());
                    });
                }
                hub.notice(why);
            }
        }
        Some(hub)
    }

    fn notice(&self, m: String) {
        if let Ok(mut n) = self.notices.lock() {
            n.push(m);
        }
    }

    /// Waits until no server is still starting (each gives up after its start timeout), so that
    /// the first turn is offered the tools of every server that starts.
    pub fn wait_started(&self) {
        let most = self
            .slots
            .iter()
            .map(|s| s.cfg.start_timeout())
            .max()
            .unwrap_or_default()
            + Duration::from_secs(2);
        let t0 = Instant::now();
        while t0.elapsed() < most && self.slots.iter().any(|s| s.state() == State::Starting) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every configured server, in name order, with its state, tools and last error.
    pub fn servers(&self) -> Vec<ServerStatus> {
        self.slots
            .iter()
            .filter_map(|s| s.status.lock().ok().map(|st| st.clone()))
            .collect()
    }

    /// What happened since the last time this was asked (servers that failed, stopped or timed
    /// out), for the person.
    pub fn take_notices(&self) -> Vec<String> {
        self.notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    /// Calls `tool` of server `server` with `args` (a JSON object), blocking until it answers, its
    /// call timeout passes or `cancel` is set. A server that is down is started again first.
    pub fn call(
        &self,
        server: &str,
        tool: &str,
        args: Value,
        cancel: Arc<AtomicBool>,
    ) -> CallOutcome {
        let Some(slot) = self.slots.iter().find(|s| s.name == server) else {
            return CallOutcome::failed(format!("there is no MCP server `{server}`"));
        };
        if !slot.cfg.enabled {
            return CallOutcome::failed(format!("the MCP server `{server}` is disabled"));
        }
        let Some(rt) = &self.rt else {
            return CallOutcome::failed(format!("the MCP server `{server}` is not running"));
        };
        let args = match args {
            Value::Object(o) => o,
            Value::Null => Default::default(),
            other => {
                return CallOutcome::failed(format!(
                    "the arguments must be a JSON object, not {other}"
                ))
            }
        };
        rt.block_on(self.call_async(slot, tool, args, cancel))
    }

    async fn call_async(
        &self,
        slot: &Slot,
        tool: &str,
        args: serde_json::Map<String, Value>,
        cancel: Arc<AtomicBool>,
    ) -> CallOutcome {
        let name = &slot.name;
        // Waits for a start in progress (bounded by its start timeout).
        let mut conn = slot.conn.lock().await;
        if conn.as_ref().is_some_and(Conn::is_closed) {
            *conn = None;
            let why = format!("it stopped{}", slot.last_words());
            slot.failed(State::Crashed, &why);
            self.notice(format!("MCP server `{name}`: {why}; starting it again"));
        }
        if conn.is_none() {
            slot.update(|st| st.state = State::Starting);
            if let Err(e) = slot.start(&mut conn).await {
                self.notice(format!("MCP server `{name}` failed to start: {e}"));
                return CallOutcome::failed(format!(
                    "the MCP server `{name}` is not running and did not start again: {e}. Go on without it."
                ));
            }
        }
        let Some(c) = conn.as_ref() else {
            return CallOutcome::failed(format!("the MCP server `{name}` is not running"));
        };
        let limit = slot.cfg.call_timeout();
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args);
        let ended = tokio::select! {
            r = c.service.call_tool(params) => Ended::Done(r),
            _ = tokio::time::sleep(limit) => Ended::TimedOut,
            _ = cancelled(&cancel) => Ended::Cancelled,
        };
        match ended {
            Ended::Done(Ok(r)) => CallOutcome {
                ok: !r.is_error.unwrap_or(false),
                text: render(&r),
            },
            Ended::Done(Err(ServiceError::McpError(e))) => CallOutcome::failed(format!(
                "the MCP server `{name}` refused the call: {}",
                e.message
            )),
            Ended::Done(Err(
                e @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)),
            )) => {
                // The connection went down mid-call: the server crashed or went away. Stopping
                // what is left of it makes the next call start it afresh.
                *conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let why = format!(
                    "it stopped during a call to `{tool}` ({e}){}",
                    slot.last_words()
                );
                slot.failed(State::Crashed, &why);
                self.notice(format!(
                    "MCP server `{name}`: {why}; it starts again on its next call"
                ));
                CallOutcome::failed(format!(
                    "the MCP server `{name}` crashed during the call and gave no result. Go on without it."
                ))
            }
            Ended::Done(Err(e)) => {
                CallOutcome::failed(format!("the call to the MCP server `{name}` failed: {e}"))
            }
            Ended::TimedOut => {
                // A server that does not answer one call may not answer the next either: stop
                // it, and start it afresh when it is called again.
                *conn = None;
                let why = format!(
                    "a call to `{tool}` timed out after {} s (call_timeout_s), so the server was stopped",
                    limit.as_secs()
                );
                slot.failed(State::Failed, &why);
                self.notice(format!(
                    "MCP server `{name}`: {why}; it starts again on its next call"
                ));
                CallOutcome::failed(format!(
                    "timed out: the MCP server `{name}` did not answer within {} s, so the call was abandoned. Go on without it.",
                    limit.as_secs()
                ))
            }
            Ended::Cancelled => CallOutcome::failed("cancelled".into()),
        }
    }
}

/// Resolves once `cancel` is set.
async fn cancelled(cancel: &AtomicBool) {
    while !cancel.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The background start of one server.
async fn start_slot(slot: Arc<Slot>, notices: Arc<Mutex<Vec<String>>>) {
    let mut conn = slot.conn.lock().await;
    if let Err(e) = slot.start(&mut conn).await {
        if let Ok(mut n) = notices.lock() {
            n.push(format!("MCP server `{}` failed to start: {e}", slot.name));
        }
    }
}

/// A call's result as text for the model: the text parts, and a line for each part that is not
/// text (an image, say) naming what it was.
pub fn render(r: &CallToolResult) -> String {
    let mut parts = Vec::new();
    for block in &r.content {
        let v = serde_json::to_value(block).unwrap_or_default();
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        parts.push(match v["type"].as_str().unwrap_or_default() {
            "text" => s("text"),
            "image" => format!("[an image ({}), not shown]", s("mimeType")),
            "audio" => format!("[audio ({}), not shown]", s("mimeType")),
            "resource" => {
                let res = &v["resource"];
                let uri = res["uri"].as_str().unwrap_or_default();
                match res["text"].as_str() {
                    Some(t) => format!("[resource {uri}]\n{t}"),
                    None => format!("[a binary resource {uri}, not shown]"),
                }
            }
            "resource_link" => format!("[a link to the resource {} ({})]", s("uri"), s("name")),
            other => format!("[content of type `{other}`, not shown]"),
        });
    }
    if parts.is_empty() {
        if let Some(sc) = &r.structured_content {
            parts.push(sc.to_string());
        }
    }
    if parts.is_empty() {
        return "(the tool returned nothing)".into();
    }
    parts.join("\n")
}

impl Drop for McpHub {
    fn drop(&mut self) {
        let Some(rt) = self.rt.take() else {
            return;
        };
        // Close each connection inside the runtime (rmcp's transports clean up on it); a
        // server still starting is dropped with the runtime, which kills its process group too.
        let slots = self.slots.clone();
        rt.block_on(async move {
            for s in slots {
                if let Ok(mut c) =
                    tokio::time::timeout(Duration::from_millis(500), s.conn.lock()).await
                {
                    c.take();
                }
            }
        });
        rt.shutdown_timeout(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(toml_text: &str) -> anyhow::Result<McpConfig> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            mcp: McpConfig,
        }
        let f: File = toml::from_str(toml_text)?;
        f.mcp.validate()?;
        Ok(f.mcp)
    }

    #[test]
    fn a_config_names_a_command_or_a_url() {
        let c = parse(
            r#"
[mcp.servers.fs]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
env = { DEBUG = "1" }
[mcp.servers.web]
url = "https://example.com/mcp"
headers = { Authorization = "Bearer x" }
enabled = false
trust = "read-only"
call_timeout_s = 5
"#,
        )
        .unwrap();
        let fs = &c.servers["fs"];
        assert!(fs.enabled);
        assert_eq!(fs.trust, Trust::Ask);
        assert_eq!(
            fs.start_timeout(),
            Duration::from_secs(DEFAULT_START_TIMEOUT_S)
        );
        assert_eq!(
            fs.transport(),
            "stdio: npx -y @modelcontextprotocol/server-filesystem /tmp"
        );
        let web = &c.servers["web"];
        assert!(!web.enabled);
        assert_eq!(web.trust, Trust::ReadOnly);
        assert_eq!(web.call_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn a_bad_config_says_which_key() {
        for (text, want) in [
            ("[mcp.servers.a]\n", "mcp.servers.a: give `command`"),
            (
                "[mcp.servers.a]\ncommand = \"x\"\nurl = \"http://h\"\n",
                "not both",
            ),
            (
                "[mcp.servers.a]\nurl = \"ftp://h\"\n",
                "mcp.servers.a.url must start",
            ),
            (
                "[mcp.servers.\"a.b\"]\ncommand = \"x\"\n",
                "mcp.servers.a.b: a server name is",
            ),
            (
                "[mcp.servers.a]\nurl = \"http://h\"\nheaders = { \"bad header\" = \"v\" }\n",
                "mcp.servers.a.headers: `bad header` is not a header name",
            ),
            (
                "[mcp.servers.a]\ncommand = \"x\"\ncall_timeout_s = 0\n",
                "mcp.servers.a.call_timeout_s must be at least 1",
            ),
            (
                "[mcp.servers.a]\ncommand = \"x\"\ntrust = \"yes\"\n",
                "unknown variant",
            ),
            (
                "[mcp.servers.a]\ncommand = \"x\"\ncommnd = \"y\"\n",
                "commnd",
            ),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn a_result_is_its_text_and_names_what_is_not_text() {
        let r: CallToolResult = serde_json::from_value(json!({
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "image", "data": "AAAA", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "inside"}}
            ],
            "isError": false
        }))
        .unwrap();
        assert_eq!(
            render(&r),
            "hello\n[an image (image/png), not shown]\n[resource file:///a.txt]\ninside"
        );
        let r: CallToolResult =
            serde_json::from_value(json!({"content": [], "structuredContent": {"n": 3}})).unwrap();
        assert_eq!(render(&r), "{\"n\":3}");
    }

    fn hub_with(name: &str, cfg: ServerConfig) -> McpHub {
        let mut servers = BTreeMap::new();
        servers.insert(name.to_string(), cfg);
        McpHub::start(&McpConfig { servers }).unwrap()
    }

    fn stdio(command: &str, args: &[&str]) -> ServerConfig {
        ServerConfig {
            command: Some(command.into()),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            url: None,
            headers: BTreeMap::new(),
            enabled: true,
            trust: Trust::Ask,
            start_timeout_s: Some(3),
            call_timeout_s: Some(3),
        }
    }

    #[test]
    fn a_server_that_cannot_start_is_a_notice_and_a_failed_state() {
        let hub = hub_with("nope", stdio("/nonexistent/aha-mcp-server", &[]));
        hub.wait_started();
        let s = &hub.servers()[0];
        assert_eq!(s.state, State::Failed);
        let err = s.last_error.clone().unwrap();
        assert!(err.contains("no such program"), "{err}");
        let n = hub.take_notices();
        assert_eq!(n.len(), 1);
        assert!(
            n[0].starts_with("MCP server `nope` failed to start: cannot run"),
            "{n:?}"
        );
        assert!(hub.take_notices().is_empty());
        let out = hub.call("nope", "t", json!({}), Arc::default());
        assert!(
            !out.ok && out.text.contains("did not start again"),
            "{out:?}"
        );
    }

    #[test]
    fn a_server_that_exits_at_once_says_what_it_wrote() {
        let hub = hub_with(
            "dies",
            stdio("sh", &["-c", "echo 'missing API key' >&2; exit 2"]),
        );
        hub.wait_started();
        let s = &hub.servers()[0];
        assert_eq!(s.state, State::Failed);
        let err = s.last_error.clone().unwrap();
        assert!(err.contains("missing API key"), "{err}");
    }

    #[test]
    fn a_server_that_never_answers_times_out_at_start_and_leaves_no_process() {
        // `sh` starts `sleep` in the same process group; both must be gone afterwards.
        let n = format!("7{}", std::process::id());
        let mut cfg = stdio("sh", &["-c", &format!("sleep {n}; echo {n}")]);
        cfg.start_timeout_s = Some(1);
        let hub = hub_with("mute", cfg);
        hub.wait_started();
        let s = &hub.servers()[0];
        assert_eq!(s.state, State::Failed);
        assert!(
            s.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("within 1 s"),
            "{s:?}"
        );
        drop(hub);
        std::thread::sleep(Duration::from_millis(300));
        let ps = std::process::Command::new("pgrep")
            .args(["-af", &format!("sleep {n}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        assert!(ps.trim().is_empty(), "left behind: {ps}");
    }

    #[test]
    fn disabled_servers_are_listed_and_not_started() {
        let mut c = stdio("/nonexistent", &[]);
        c.enabled = false;
        let hub = hub_with("off", c);
        assert!(hub.rt.is_none());
        hub.wait_started();
        assert_eq!(hub.servers()[0].state, State::Disabled);
        assert!(hub.take_notices().is_empty());
        assert!(!hub.call("off", "t", json!({}), Arc::default()).ok);
        assert!(McpHub::start(&McpConfig::default()).is_none());
    }
}
