//! One type for plain and TLS streams on either side.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// A session's stream to its client or its target: plain TCP, or TLS over
/// it.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<dyn AsyncStream>),
}

/// What reads a session's stream.
pub enum ReadSide {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<Box<dyn AsyncStream>>),
}

/// What writes a session's stream.
pub enum WriteSide {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<Box<dyn AsyncStream>>),
}

impl Stream {
    /// The two halves a session's two directions drive at once. A plain
    /// TCP stream splits without a lock (each half makes its own calls on
    /// the socket), so a read never waits for a write on another thread;
    /// a TLS stream's state serves both directions, so its halves share it
    /// behind tokio's lock.
    pub fn split(self) -> (ReadSide, WriteSide) {
        match self {
            Stream::Tcp(tcp) => {
                let (read, write) = tcp.into_split();
                (ReadSide::Tcp(read), WriteSide::Tcp(write))
            }
            Stream::Tls(tls) => {
                let (read, write) = tokio::io::split(tls);
                (ReadSide::Tls(read), WriteSide::Tls(write))
            }
        }
    }
}

/// Calls `$call` on whichever stream `$self` holds.
macro_rules! either {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Self::Tcp($s) => $call,
            Self::Tls($s) => $call,
        }
    };
}

/// `AsyncRead` for a type whose variants all read.
macro_rules! read_through {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                either!(self, s => Pin::new(s).poll_read(cx, buf))
            }
        }
    };
}

read_through!(Stream);
read_through!(ReadSide);

/// `AsyncWrite` for a type whose variants all write.
macro_rules! write_through {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                either!(self, s => Pin::new(s).poll_write(cx, buf))
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                either!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Tcp(s) => s.is_write_vectored(),
                    Self::Tls(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                either!(self, s => Pin::new(s).poll_flush(cx))
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                either!(self, s => Pin::new(s).poll_shutdown(cx))
            }
        }
    };
}

write_through!(Stream);
write_through!(WriteSide);
