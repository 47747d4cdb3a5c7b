//! Stream helpers: replaying bytes read for protocol detection, detecting HTTP, and copying
//! both ways with an idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A stream that first yields `prefix` (bytes already read from `inner`), then `inner`.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`, replaying `prefix` first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self { prefix, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x request line.
    Http1,
    /// HTTP/2 connection preface.
    Http2,
    /// Anything else, or nothing within the detection time (server-speaks-first protocols).
    Opaque,
    /// The peer closed the connection without sending a byte (a port check): nothing to decide.
    Closed,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes detection reads at most before it calls the connection not HTTP: a request line's
/// method starts within the first few bytes, so more than this (e.g. a stream of empty lines)
/// is refused instead of being read and rescanned until the detection time runs out.
const MAX_DETECT_BYTES: usize = 256;

/// Classifies a prefix; `None` when more bytes are needed to tell.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    // HTTP/1: a method token (upper-case letters) followed by a space, after any empty lines
    // (RFC 9112 2.2: servers skip CRLFs before a request line, and hyper does).
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    for (i, b) in buf[start..].iter().enumerate() {
        match b {
            b'A'..=b'Z' if i < 16 => continue,
            b' ' if i > 0 => return Some(Protocol::Http1),
            _ => return Some(Protocol::Opaque),
        }
    }
    if buf.len() - start >= 16 { Some(Protocol::Opaque) } else { None }
}

/// [`classify`], with a bound: past [`MAX_DETECT_BYTES`] undecided bytes it is not HTTP.
fn classify_bounded(buf: &[u8]) -> Option<Protocol> {
    classify(buf).or_else(|| (buf.len() >= MAX_DETECT_BYTES).then_some(Protocol::Opaque))
}

/// Reads until the protocol is known or `wait` passes; returns it with the bytes read.
pub async fn detect<S: AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> io::Result<(Protocol, Vec<u8>)> {
    let mut buf = Vec::with_capacity(64);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut chunk = [0u8; 64];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
        match read {
            Err(_) => return Ok((Protocol::Opaque, buf)),
            Ok(Ok(0)) if buf.is_empty() => return Ok((Protocol::Closed, buf)),
            Ok(Ok(0)) => return Ok((Protocol::Opaque, buf)),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
        if let Some(p) = classify_bounded(&buf) {
            return Ok((p, buf));
        }
    }
}

/// Copies between `a` and `b` both ways until either side closes, or until no byte has moved in
/// either direction for `idle` (checked every `idle`, so a dead connection goes within 2 x
/// `idle`). Errors: `"idle timeout"`, or `"copy failed"` for an I/O error on either side.
pub async fn copy_bidirectional_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Result<(), &'static str>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut counted = Counted::new(a);
    let moved = counted.moved();
    let copy = tokio::io::copy_bidirectional(&mut counted, b);
    tokio::select! {
        result = copy => result.map(|_| ()).map_err(|_| "copy failed"),
        () = idle_for(moved, idle) => Err("idle timeout"),
    }
}

/// Resolves once `moved` has not changed for a whole `idle` period (checked every `idle`).
pub async fn idle_for(moved: Arc<AtomicU64>, idle: Duration) {
    let mut last = moved.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(idle).await;
        let now = moved.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

/// A stream that counts the bytes read from and written to it (for idle timeouts).
pub struct Counted<S> {
    inner: S,
    moved: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    /// Wraps `inner`, counting from 0.
    pub fn new(inner: S) -> Self {
        Self { inner, moved: Arc::new(AtomicU64::new(0)) }
    }

    /// The byte counter, for [`idle_for`].
    pub fn moved(&self) -> Arc<AtomicU64> {
        self.moved.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_http_and_the_rest() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"DELETE /x"), Some(Protocol::Http1));
        assert_eq!(classify(b"GE"), None, "needs more bytes");
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        assert_eq!(classify(b"\x16\x03\x01"), Some(Protocol::Opaque));
        assert_eq!(classify(b"hello world"), Some(Protocol::Opaque), "lower case is no method");
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRS"), Some(Protocol::Opaque), "methods are short");
        assert_eq!(classify(b"\r\n\r\nGET / HTTP/1.1\r\n"), Some(Protocol::Http1), "empty lines before the request line");
        assert_eq!(classify(b"\r\n\r\n"), None, "only empty lines so far");
    }

    #[tokio::test]
    async fn a_stream_of_empty_lines_is_refused_after_a_few_hundred_bytes_not_read_on() {
        let (mut caller, mut sidecar) = tokio::io::duplex(4096);
        tokio::io::AsyncWriteExt::write_all(&mut caller, &b"\r\n".repeat(1024)).await.unwrap();
        // The caller keeps the connection open: only the byte bound can end detection early.
        let (protocol, read) = tokio::time::timeout(Duration::from_secs(5), detect(&mut sidecar, Duration::from_secs(3600))).await.expect("decided without waiting").unwrap();
        assert_eq!(protocol, Protocol::Opaque);
        assert!(read.len() <= MAX_DETECT_BYTES + 64, "read {} bytes", read.len());
        let (protocol, _) = detect(&mut &b"\r\n\r\nGET / HTTP/1.1\r\n"[..], Duration::from_secs(1)).await.unwrap();
        assert_eq!(protocol, Protocol::Http1, "a few empty lines before a request are still HTTP");
    }

    #[tokio::test]
    async fn prefixed_replays_then_continues() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"world").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(b"hello ".to_vec(), b);
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_ends_when_nothing_moves_for_the_idle_timeout_and_not_before() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut near) = tokio::io::duplex(64);
        let (mut far, mut server) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        let copy = tokio::spawn(async move { copy_bidirectional_idle(&mut near, &mut far, Duration::from_secs(60)).await });
        // Traffic every 50 s keeps it open for 5 minutes.
        let mut buf = [0u8; 4];
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            client.write_all(b"ping").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
        }
        assert!(!copy.is_finished(), "traffic keeps the connection");
        // Then silence: closed within two idle periods.
        assert_eq!(copy.await.unwrap(), Err("idle timeout"));
        let silent = started.elapsed() - Duration::from_secs(300);
        assert!(silent >= Duration::from_secs(60) && silent <= Duration::from_secs(120), "{silent:?}");
    }
}
