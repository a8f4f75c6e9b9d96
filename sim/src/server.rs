//! The accept loop and per-connection serving.
//!
//! `axum::serve` cannot close a connection without answering, and "connection reset" is a
//! failure emr-edge must handle (docs/genesys.md, the answer table), so connections are served here with hyper directly.
//! Each connection gets a [`ConnectionControl`] in its requests' extensions; a handler that asks
//! for a reset makes the connection task drop the connection with `SO_LINGER` 0, which sends a
//! TCP RST — what a crashed or overloaded upstream looks like to Envoy.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long open connections get to finish their requests at shutdown.
const DRAIN: Duration = Duration::from_secs(1);

/// Lets a request's handler reset the connection it arrived on.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionControl {
    inner: Arc<ControlInner>,
}

#[derive(Debug, Default)]
struct ControlInner {
    reset: AtomicBool,
    notify: Notify,
}

impl ConnectionControl {
    /// Asks the connection task to reset the connection now, without an answer.
    pub fn reset(&self) {
        self.inner.reset.store(true, Ordering::SeqCst);
        self.inner.notify.notify_one();
    }
}

/// A TCP stream that is reset (not closed) when dropped after [`ConnectionControl::reset`].
struct ResettableStream {
    stream: TcpStream,
    control: Arc<ControlInner>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.control.reset.load(Ordering::SeqCst) {
            // Best effort: if this fails the peer sees a FIN instead of a RST.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections until `shutdown` changes (or its sender is dropped), then drains.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Small answers must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(stream, router.clone(), shutdown.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN * 2, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.shutdown().await;
    }
}

/// Serves one connection (HTTP/1.1 or cleartext HTTP/2).
async fn serve(stream: TcpStream, router: Router, mut shutdown: watch::Receiver<bool>) {
    let control = ConnectionControl::default();
    let io = TokioIo::new(ResettableStream {
        stream,
        control: Arc::clone(&control.inner),
    });
    let request_control = control.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(request_control.clone());
        router.clone().oneshot(request)
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = control.inner.notify.notified() => {
            // Dropping the connection drops the stream, which resets it.
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, connection.as_mut()).await;
        }
    }
}
