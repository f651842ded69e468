//! `aha serve`'s connections: a cap on open sockets, a deadline for request headers, and room for
//! a new client when the cap is reached, so that a flood of slow clients can neither exhaust the
//! process's file descriptors nor keep `/health` from answering.
//!
//! Every socket counts against the cap. A newcomer at the cap closes the connection that has gone
//! longest without work in progress: one still sending its request head or body, or idle between
//! requests. Such a connection has asked for nothing yet, while a real client sends its request as
//! soon as it connects, so under a flood the attacker's sockets are the ones that go. Connections
//! whose request is being answered (queued, generating, streaming) are never closed for room;
//! when every connection is such, the newcomer gets a 503. The accept loop waits for closed sockets
//! to be gone before it accepts more, so descriptors stay within the cap whatever the flood's rate.

use axum::body::{Body, Bytes};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The largest request head (and read buffer) a connection may hold: a slow client cannot make
/// each of its sockets cost more than this.
const MAX_BUF: usize = 64 * 1024;

/// One open connection.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    /// Requests in progress that are past receiving their body: while it is above 0 the
    /// connection is doing work and is not closed for room.
    working: AtomicUsize,
    /// When it last had nothing in progress (ms since the table's start): the oldest goes first.
    idle_since: AtomicU64,
    /// Told to close to make room.
    evict: Notify,
}

/// A handle to the connection a request came on, put in the request's extensions.
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<Conn>);

impl ConnHandle {
    /// Marks the request as still receiving its body (not yet work) until the guard is dropped.
    pub fn receiving(&self) -> Receiving {
        self.0.working.fetch_sub(1, Ordering::SeqCst);
        Receiving(self.0.clone())
    }
}

/// See [`ConnHandle::receiving`].
#[derive(Debug)]
pub struct Receiving(Arc<Conn>);

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.working.fetch_add(1, Ordering::SeqCst);
    }
}

/// A request in progress, from its head until its response body is finished or dropped.
struct Working {
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Drop for Working {
    fn drop(&mut self) {
        if self.conn.working.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.conn
                .idle_since
                .store(self.table.now(), Ordering::SeqCst);
        }
    }
}

/// All open connections.
#[derive(Debug)]
struct Table {
    max: usize,
    start: Instant,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Sockets held, counting ones told to close that have not closed yet.
    open: AtomicUsize,
    /// Signalled whenever a socket closes.
    closed: Notify,
}

impl Table {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn live(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the sockets told to close are gone, so that accepting one more holds at most
    /// `max + 1` (the newcomer that makes room).
    async fn room(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open.load(Ordering::SeqCst) <= self.max {
                return;
            }
            closed.await;
        }
    }

    /// Registers a newly accepted socket, closing the longest-idle connection if the table is
    /// full. None when every connection is working: the newcomer must be turned away.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut live = self.live();
        if live.len() >= self.max {
            let oldest = live
                .values()
                .filter(|c| c.working.load(Ordering::SeqCst) == 0)
                .min_by_key(|c| c.idle_since.load(Ordering::SeqCst))
                .map(|c| c.id)?;
            if let Some(c) = live.remove(&oldest) {
                // Still counted in `open` until its task has dropped the socket.
                c.evict.notify_one();
            }
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            working: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            evict: Notify::new(),
        });
        live.insert(conn.id, conn.clone());
        self.open.fetch_add(1, Ordering::SeqCst);
        Some(Admitted {
            conn,
            table: self.clone(),
        })
    }
}

/// A connection's place in the table, given back when its task ends.
struct Admitted {
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.live().remove(&self.conn.id);
        self.table.open.fetch_sub(1, Ordering::SeqCst);
        self.table.closed.notify_one();
    }
}

/// A response body that keeps its request counted as work until it is sent or dropped.
struct Tracked {
    inner: Body,
    _working: Working,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How connections are limited.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sockets open at once.
    pub max_connections: usize,
    /// Time a client has to send a whole request head (also the idle time allowed between
    /// requests on a kept-alive connection).
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let table = Arc::new(Table {
        max: limits.max_connections.max(1),
        start: Instant::now(),
        next_id: AtomicU64::new(0),
        live: Mutex::new(HashMap::new()),
        open: AtomicUsize::new(0),
        closed: Notify::new(),
    });
    let accept = async {
        loop {
            table.room().await;
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors or a socket reset before it was accepted: both pass, so
                    // try again shortly rather than stop serving.
                    tracing::warn!("aha serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            match table.admit() {
                Some(admitted) => {
                    tokio::spawn(connection(stream, admitted, router.clone(), limits));
                }
                None => refuse(stream),
            }
        }
    };
    tokio::select! {
        () = accept => {}
        () = stop => {}
    }
}

/// Turns away a client when every connection is busy with a request.
fn refuse(stream: TcpStream) {
    let body = r#"{"error":{"message":"the server has no free connection (aha serve --max-connections); try again shortly","type":"server_error","param":null,"code":"too_many_connections"}}"#;
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    // A fresh socket's send buffer takes this whole; a client that cannot take it loses nothing.
    let _ = stream.try_write(reply.as_bytes());
}

/// Serves one connection until it closes, times out or is told to make room.
async fn connection(stream: TcpStream, admitted: Admitted, router: Router, limits: Limits) {
    let _ = stream.set_nodelay(true);
    let (conn, table) = (admitted.conn.clone(), admitted.table.clone());
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        conn.working.fetch_add(1, Ordering::SeqCst);
        let working = Working {
            conn: conn.clone(),
            table: table.clone(),
        };
        req.extensions_mut().insert(ConnHandle(conn.clone()));
        let answer = router.call(req);
        async move {
            let res = answer.await?;
            Ok::<_, Infallible>(res.map(|inner| Tracked {
                inner,
                _working: working,
            }))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF);
    let serving = http.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        r = serving => {
            if let Err(e) = r {
                tracing::debug!("aha serve: connection ended: {e}");
            }
        }
        () = admitted.conn.evict.notified() => {
            tracing::debug!("aha serve: closed an idle connection to make room");
        }
    }
    drop(admitted);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> Arc<Table> {
        Arc::new(Table {
            max,
            start: Instant::now(),
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
        })
    }

    /// Whether `c` holds an eviction notice (which this takes).
    fn told_to_close(c: &Conn) -> bool {
        let n = std::pin::pin!(c.evict.notified());
        n.poll(&mut Context::from_waker(std::task::Waker::noop()))
            .is_ready()
    }

    #[test]
    fn a_full_table_closes_the_longest_idle_connection_and_spares_working_ones() {
        let t = table(3);
        let a = t.admit().unwrap();
        let b = t.admit().unwrap();
        let c = t.admit().unwrap();
        // `a` is answering a request; `b` went idle before `c`.
        a.conn.working.store(1, Ordering::SeqCst);
        b.conn.idle_since.store(5, Ordering::SeqCst);
        c.conn.idle_since.store(9, Ordering::SeqCst);
        let d = t.admit().unwrap();
        assert!(told_to_close(&b.conn));
        assert!(!told_to_close(&a.conn) && !told_to_close(&c.conn));
        assert_eq!(t.live().len(), 3);
        // Until `b`'s socket is gone, four are open and the accept loop waits.
        assert_eq!(t.open.load(Ordering::SeqCst), 4);
        drop(b);
        assert_eq!(t.open.load(Ordering::SeqCst), 3);
        // A request still receiving its body has asked for nothing: it may go too.
        c.conn.working.store(1, Ordering::SeqCst);
        let receiving = ConnHandle(c.conn.clone()).receiving();
        d.conn.working.store(1, Ordering::SeqCst);
        let _e = t.admit().unwrap();
        assert!(told_to_close(&c.conn));
        drop(receiving);
        drop(c);
        // Every connection working: the newcomer is refused and nothing is closed.
        for x in t.live().values() {
            x.working.store(1, Ordering::SeqCst);
        }
        assert!(t.admit().is_none());
        assert_eq!(t.open.load(Ordering::SeqCst), 3);
        assert!(!told_to_close(&a.conn) && !told_to_close(&d.conn));
    }
}
