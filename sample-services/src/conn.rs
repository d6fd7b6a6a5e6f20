//! Accepted connections that a [`SampleServer`](crate::SampleServer) can cut off.
//!
//! tonic's graceful shutdown waits for every open stream, and a `KeepGettingCodenames` stream
//! never ends by itself; so each socket is wrapped to fail all I/O once the server's kill token
//! is cancelled. hyper then drops the connection's calls (the client sees the connection
//! close), as if the process had died.

use std::{
    io,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::stats::Stats;

/// A TCP connection whose I/O fails once `kill` is cancelled; counted in
/// `stats.open_connections` while it lives.
#[derive(Debug)]
pub(crate) struct KillableIo {
    io: TcpStream,
    stats: Arc<Stats>,
    kill: CancellationToken,
    // One future per direction, so a pending read and a pending write both get woken.
    read_killed: Pin<Box<WaitForCancellationFutureOwned>>,
    write_killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

// === impl KillableIo ===

impl KillableIo {
    pub(crate) fn new(io: TcpStream, kill: CancellationToken, stats: Arc<Stats>) -> Self {
        stats.open_connections.fetch_add(1, Ordering::SeqCst);
        stats.changed.notify_waiters();
        Self {
            io,
            stats,
            read_killed: Box::pin(kill.clone().cancelled_owned()),
            write_killed: Box::pin(kill.clone().cancelled_owned()),
            kill,
        }
    }
}

impl Drop for KillableIo {
    fn drop(&mut self) {
        self.stats.open_connections.fetch_sub(1, Ordering::SeqCst);
        self.stats.changed.notify_waiters();
    }
}

fn killed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "sample server killed")
}

impl Connected for KillableIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for KillableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read_killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.write_killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.is_cancelled() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.is_cancelled() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
