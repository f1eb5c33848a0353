//! The server's connections: our own accept loop in front of jsonrpsee's service, so no
//! client can hold the others out by opening connections and leaving them idle.
//!
//! jsonrpsee bounds connections in all (500 here) and closes one that sends nothing in its
//! first 30 s, but a WebSocket that sent one request and then idles keeps its slot forever:
//! 500 such sockets answered every other client HTTP 429 for as long as they were held. Here
//! each connection's bytes, both ways, are its activity (a subscription receiving
//! notifications is active), and:
//! - a connection idle for [`ConnLimits::idle_timeout`] is closed;
//! - at [`ConnLimits::max_per_ip`] connections from one address, or
//!   [`ConnLimits::max_connections`] in all, a newcomer takes the place of the connection idle
//!   longest (of that address, or of all), if that one has been idle at least
//!   [`ConnLimits::evict_idle_after`]; otherwise the newcomer is refused with 429. Busy
//!   connections are never evicted, so a client that uses its connection keeps it.
//!
//! The peer's address goes into every request's extensions ([`PeerAddr`]): the model upload
//! is an operator's method and checks it.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use jsonrpsee::server::{Methods, ServerConfig, ServerHandle, StopHandle, stop_channel};
use parking_lot::Mutex;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// Where a request came from (in each request's extensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Connection bounds.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// A connection idle this long may be closed to make room for a newcomer.
    pub evict_idle_after: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 500,
            max_per_ip: 100,
            idle_timeout: Duration::from_secs(300),
            evict_idle_after: Duration::from_secs(5),
        }
    }
}

/// One open connection: its address, when it last moved a byte (ms on the table's clock),
/// and how to close it (`C`: a second handle on its socket, in the server).
struct Conn<C> {
    ip: IpAddr,
    last: Arc<AtomicU64>,
    close: C,
}

/// The open connections and the admission rule; time is passed in (ms), so the rule is
/// tested without a real clock.
pub(crate) struct ConnectionTable<C> {
    conns: HashMap<u64, Conn<C>>,
    next: u64,
}

impl<C> Default for ConnectionTable<C> {
    fn default() -> Self {
        Self {
            conns: HashMap::new(),
            next: 0,
        }
    }
}

/// Why a newcomer was refused: every connection in its way is busy.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    PerIp,
    Full,
}

impl<C> ConnectionTable<C> {
    /// Admits a connection from `ip` at `now`; returns its id and the connection it evicted
    /// (to be closed), if any.
    pub(crate) fn admit(
        &mut self,
        ip: IpAddr,
        now: u64,
        limits: &ConnLimits,
        last: Arc<AtomicU64>,
        close: C,
    ) -> Result<(u64, Option<C>), Refused> {
        let evictable = limits.evict_idle_after.as_millis() as u64;
        let idlest = |same_ip: bool| {
            self.conns
                .iter()
                .filter(|(_, c)| !same_ip || c.ip == ip)
                .map(|(id, c)| (*id, now.saturating_sub(c.last.load(Ordering::Relaxed))))
                .max_by_key(|(id, idle)| (*idle, std::cmp::Reverse(*id)))
                .filter(|(_, idle)| *idle >= evictable)
                .map(|(id, _)| id)
        };
        let from_ip = self.conns.values().filter(|c| c.ip == ip).count();
        let victim = if from_ip >= limits.max_per_ip {
            Some(idlest(true).ok_or(Refused::PerIp)?)
        } else if self.conns.len() >= limits.max_connections {
            Some(idlest(false).ok_or(Refused::Full)?)
        } else {
            None
        };
        let evicted = victim
            .and_then(|id| self.conns.remove(&id))
            .map(|c| c.close);
        let id = self.next;
        self.next += 1;
        self.conns.insert(id, Conn { ip, last, close });
        Ok((id, evicted))
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.conns.remove(&id);
    }

    /// Connections idle for `timeout` at `now`: removed, to be closed.
    pub(crate) fn expire(&mut self, now: u64, timeout: Duration) -> Vec<C> {
        let timeout = timeout.as_millis() as u64;
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last.load(Ordering::Relaxed)) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        idle.into_iter()
            .filter_map(|id| self.conns.remove(&id))
            .map(|c| c.close)
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }
}

/// The table's clock: milliseconds from the node's [`pipe_primitives::Clock`], so the
/// eviction rule is tested against a real server on a clock the test moves.
type Clock = Arc<dyn pipe_primitives::Clock>;

/// A socket that records when it last moved a byte and leaves the table when dropped.
///
/// The socket itself carries both because it outlives the HTTP service: a WebSocket is
/// handed, upgraded, to a task of its own, and lives as long as that task holds it. For the
/// same reason the table closes a connection by shutting its socket down (through a second
/// handle on it), which every holder of the socket sees as the peer leaving.
struct Tracked {
    inner: TcpStream,
    last: Arc<AtomicU64>,
    clock: Clock,
    _entry: Entry,
}

/// Removes its connection from the table when dropped.
struct Entry {
    table: Arc<Mutex<Table>>,
    id: u64,
}

/// The server's table: each connection closed through a duplicate of its socket.
type Table = ConnectionTable<std::net::TcpStream>;

/// Closes a connection from outside whoever holds it: both directions shut down, so its
/// reader sees the end of the stream and the peer sees the connection close.
fn close(socket: std::net::TcpStream) {
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.lock().remove(self.id);
    }
}

impl Tracked {
    fn touch(&self) {
        self.last.store(self.clock.now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Milliseconds since the server started.
/// jsonrpsee's per-connection service with the peer's address added to each request.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> tower::Service<http::Request<B>> for WithPeer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(PeerAddr(self.peer));
        self.inner.call(req)
    }
}

/// Binds `addr` and serves `methods` until the returned handle is stopped.
pub(crate) async fn serve(
    addr: SocketAddr,
    config: ServerConfig,
    limits: ConnLimits,
    clock: Clock,
    methods: Methods,
    metrics: Arc<crate::metrics::RpcMetrics>,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (stop, handle) = stop_channel();
    let names = methods.method_names().map(String::from);
    let middleware = jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new()
        .layer(crate::geth::GethErrorsLayer::new(names))
        .layer(crate::metrics::MeteredLayer(metrics));
    // Our table decides; jsonrpsee's own guard only backs it up.
    let builder = jsonrpsee::server::Server::builder()
        .set_config(config)
        .set_rpc_middleware(middleware)
        .to_service_builder()
        // Our table is the gate. jsonrpsee's own count is a backstop with room to spare: a
        // connection the table has closed holds its permit until its task sees the end of
        // the stream, and must not make a newcomer the table admitted answer 429.
        .max_connections(limits.max_connections.saturating_mul(2).max(2) as u32);
    let table = Arc::new(Mutex::new(Table::default()));
    tokio::spawn(accept_loop(
        listener, builder, methods, stop, table, clock, limits,
    ));
    Ok((local, handle))
}

async fn accept_loop(
    listener: TcpListener,
    builder: jsonrpsee::server::TowerServiceBuilder<
        tower::layer::util::Stack<
            crate::metrics::MeteredLayer,
            tower::layer::util::Stack<crate::geth::GethErrorsLayer, tower::layer::util::Identity>,
        >,
        tower::layer::util::Identity,
    >,
    methods: Methods,
    stop: StopHandle,
    table: Arc<Mutex<Table>>,
    clock: Clock,
    limits: ConnLimits,
) {
    let mut sweep = tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(50)));
    let stopped = stop.clone().shutdown();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = sweep.tick() => {
                let idle = table.lock().expire(clock.now_ms(), limits.idle_timeout);
                idle.into_iter().for_each(close);
            }
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(target: "pipe::rpc", error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (socket, handle) = match duplicate(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(target: "pipe::rpc", error = %e, "connection dropped");
                        continue;
                    }
                };
                let last = Arc::new(AtomicU64::new(clock.now_ms()));
                let admitted = table.lock().admit(
                    peer.ip(),
                    clock.now_ms(),
                    &limits,
                    last.clone(),
                    handle,
                );
                let id = match admitted {
                    Ok((id, evicted)) => {
                        if let Some(evicted) = evicted {
                            tracing::debug!(target: "pipe::rpc", %peer, "idle connection closed for a newcomer");
                            close(evicted);
                        }
                        id
                    }
                    Err(why) => {
                        tracing::debug!(target: "pipe::rpc", %peer, ?why, "connection refused");
                        // Best effort: the client learns why instead of seeing a reset.
                        let _ = socket.try_write(
                            b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                        continue;
                    }
                };
                let service = WithPeer {
                    inner: builder.clone().build(methods.clone(), stop.clone()),
                    peer,
                };
                let io = Tracked {
                    inner: socket,
                    last,
                    clock: clock.clone(),
                    _entry: Entry { table: table.clone(), id },
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _ = jsonrpsee::server::serve_with_graceful_shutdown(io, service, stop.shutdown()).await;
                });
            }
        }
    }
}

/// The socket for serving, and a second handle on it for closing it from the table.
fn duplicate(socket: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std = socket.into_std()?;
    let handle = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Admitted = Result<(u64, Option<()>), Refused>;

    fn limits() -> ConnLimits {
        ConnLimits {
            max_connections: 3,
            max_per_ip: 2,
            idle_timeout: Duration::from_millis(10_000),
            evict_idle_after: Duration::from_millis(1_000),
        }
    }

    fn admit(t: &mut ConnectionTable<()>, ip: [u8; 4], now: u64) -> (Admitted, Arc<AtomicU64>) {
        let last = Arc::new(AtomicU64::new(now));
        let r = t.admit(IpAddr::from(ip), now, &limits(), last.clone(), ());
        (r, last)
    }

    #[test]
    fn a_newcomer_takes_the_place_of_the_idlest_connection_never_a_busy_one() {
        let mut t = ConnectionTable::<()>::default();
        let (a, a_last) = admit(&mut t, [10, 0, 0, 1], 0);
        let (b, _) = admit(&mut t, [10, 0, 0, 2], 100);
        let (c, _) = admit(&mut t, [10, 0, 0, 3], 200);
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        // Full, and nobody idle long enough: refused.
        assert_eq!(
            admit(&mut t, [10, 0, 0, 4], 900).0.unwrap_err(),
            Refused::Full
        );
        // `a` keeps talking; at 1500 `b` (idle 1400) is the idlest and goes.
        a_last.store(1_400, Ordering::Relaxed);
        let (d, _) = admit(&mut t, [10, 0, 0, 4], 1_500);
        let (_, evicted) = d.unwrap();
        assert!(evicted.is_some());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn one_address_is_bounded_and_evicts_only_its_own() {
        let mut t = ConnectionTable::<()>::default();
        let ip = [10, 0, 0, 9];
        admit(&mut t, ip, 0).0.unwrap();
        admit(&mut t, ip, 0).0.unwrap();
        assert_eq!(admit(&mut t, ip, 500).0.unwrap_err(), Refused::PerIp);
        // Another address is not held back by it.
        admit(&mut t, [10, 0, 0, 1], 500).0.unwrap();
        // Once its own are idle, it replaces one of them, not the other address's.
        let (_, evicted) = admit(&mut t, ip, 1_200).0.unwrap();
        assert!(evicted.is_some());
        assert_eq!(
            t.conns
                .values()
                .filter(|c| c.ip == IpAddr::from([10, 0, 0, 1]))
                .count(),
            1
        );
    }

    #[test]
    fn idle_connections_expire() {
        let mut t = ConnectionTable::<()>::default();
        let (_, busy) = admit(&mut t, [10, 0, 0, 1], 0);
        admit(&mut t, [10, 0, 0, 2], 0).0.unwrap();
        busy.store(9_000, Ordering::Relaxed);
        assert_eq!(t.expire(10_000, Duration::from_millis(10_000)).len(), 1);
        assert_eq!(t.len(), 1);
    }
}
