//! Accepting gRPC connections: a bound on how many are open at once, and TCP keepalive on each.
//!
//! Past the bound the listener stops accepting (the kernel backlog holds new connections)
//! until one closes, rather than accepting and dropping.
//!
//! A peer that vanished without closing (a killed pod, a partition) is found by the kernel's
//! TCP keepalive rather than HTTP/2 PINGs: the kernel probes an idle connection at no cost to
//! the calls, where hyper's PING keepalive locks a mutex and reads the clock on every frame
//! received (about 1% of the service's instructions per call under load).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long accepting pauses after it fails.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Keepalive probes sent before the kernel gives up on a silent peer.
const KEEPALIVE_PROBES: u64 = 3;

/// The longest idle time and probe interval Linux accepts, seconds.
const KEEPALIVE_MAX_SECS: u64 = 32_767;

/// When an idle connection's peer is probed, and how long it has to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe (whole seconds, 1 to 32,767).
    pub idle: Duration,
    /// How long the peer may stay silent once probing began before the connection is dropped:
    /// three probes, a third of it apart (rounded up to whole seconds, at least one). Data
    /// left unacknowledged for `idle + timeout` drops the connection too (Linux), so a peer
    /// that vanishes while an answer is in flight is not kept for the minutes of TCP's
    /// retransmissions.
    pub timeout: Duration,
}

impl Keepalive {
    fn idle_secs(&self) -> u64 {
        self.idle.as_secs().clamp(1, KEEPALIVE_MAX_SECS)
    }

    fn probe_interval_secs(&self) -> u64 {
        self.timeout
            .as_secs()
            .div_ceil(KEEPALIVE_PROBES)
            .clamp(1, KEEPALIVE_MAX_SECS)
    }

    /// Sets the keepalive on `stream`'s socket.
    fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        let socket = SockRef::from(stream);
        let probes = TcpKeepalive::new()
            .with_time(Duration::from_secs(self.idle_secs()))
            .with_interval(Duration::from_secs(self.probe_interval_secs()))
            .with_retries(KEEPALIVE_PROBES as u32);
        socket.set_tcp_keepalive(&probes)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        socket.set_tcp_user_timeout(Some(self.unacknowledged_limit()))?;
        Ok(())
    }

    /// How long sent data may stay unacknowledged before the connection is dropped.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn unacknowledged_limit(&self) -> Duration {
        Duration::from_secs(self.idle_secs() + KEEPALIVE_PROBES * self.probe_interval_secs())
    }
}

/// A connection that holds one of the bounded slots until it is dropped.
pub struct BoundedConn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// Accepts on `listener` until `stop` is cancelled, at most `max` connections open at once,
/// each with `keepalive` (none: the kernel's defaults, normally no probes).
pub fn bounded_incoming(
    listener: TcpListener,
    max: usize,
    keepalive: Option<Keepalive>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<BoundedConn>> {
    let (tx, rx) = mpsc::channel(1);
    let slots = Arc::new(Semaphore::new(max.max(1)));
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                _ = stop.cancelled() => return,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let conn = match accepted {
                Ok((stream, _)) => {
                    // Decisions are small and latency-bound.
                    let _ = stream.set_nodelay(true);
                    if let Some(keepalive) = &keepalive
                        && let Err(e) = keepalive.apply(&stream)
                    {
                        tracing::warn!(error = %e, "setting TCP keepalive on a gRPC connection failed");
                    }
                    Ok(BoundedConn {
                        stream,
                        _slot: slot,
                    })
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            };
            if tx.send(conn).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

impl Connected for BoundedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for BoundedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;
    use tokio_stream::StreamExt;

    use super::*;

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// One connection accepted through `bounded_incoming` with `keepalive`, and its client.
    async fn accept_one(keepalive: Option<Keepalive>) -> (BoundedConn, TcpStream) {
        let (listener, addr) = listener().await;
        let mut incoming = bounded_incoming(listener, 4, keepalive, CancellationToken::new());
        let client = TcpStream::connect(addr).await.unwrap();
        let conn = incoming.next().await.unwrap().unwrap();
        (conn, client)
    }

    #[tokio::test]
    async fn accepted_connections_carry_the_keepalive_asked_for() {
        // A timeout of 10 s: probes 4 s apart (rounded up, never under the timeout asked for).
        let (conn, _client) = accept_one(Some(Keepalive {
            idle: Duration::from_secs(7),
            timeout: Duration::from_secs(10),
        }))
        .await;
        let socket = SockRef::from(&conn.stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(4)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(7 + 3 * 4))
        );
        assert!(conn.stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn without_keepalive_the_socket_is_left_alone() {
        let (conn, _client) = accept_one(None).await;
        assert!(!SockRef::from(&conn.stream).keepalive().unwrap());
    }

    #[tokio::test]
    async fn out_of_range_times_are_brought_within_what_the_kernel_takes() {
        let (conn, _client) = accept_one(Some(Keepalive {
            idle: Duration::from_millis(10),
            timeout: Duration::ZERO,
        }))
        .await;
        let socket = SockRef::from(&conn.stream);
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(1));
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(1)
        );

        let (conn, _client) = accept_one(Some(Keepalive {
            idle: Duration::from_secs(1 << 20),
            timeout: Duration::from_secs(1 << 20),
        }))
        .await;
        let socket = SockRef::from(&conn.stream);
        let most = Duration::from_secs(KEEPALIVE_MAX_SECS);
        assert_eq!(socket.tcp_keepalive_time().unwrap(), most);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), most);
    }

    #[tokio::test]
    async fn past_the_bound_a_connection_waits_until_one_closes() {
        let (listener, addr) = listener().await;
        let mut incoming = bounded_incoming(listener, 1, None, CancellationToken::new());
        let _first_client = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let second_client = TcpStream::connect(addr).await.unwrap();
        // The second connection is in the kernel's backlog, not handed over, while the first
        // holds the only slot; the stream is still pending after the accept loop has run.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let waiting = tokio::time::timeout(Duration::ZERO, incoming.next()).await;
        assert!(
            waiting.is_err(),
            "a second connection was accepted past the bound"
        );
        drop(first);
        let second = incoming.next().await.unwrap().unwrap();
        assert_eq!(
            second.stream.peer_addr().unwrap(),
            second_client.local_addr().unwrap()
        );
    }
}
