//! Accepted sockets that join the runtime's reactor only when they have to
//! wait.
//!
//! Registering a socket with tokio's reactor is an `epoll_ctl` call, and
//! dropping a registered socket is another: two system calls per guest
//! connection, as many as the request's own read and write, and the first
//! of them stands between accepting a connection and reading its request.
//! A guest's request is almost always in the socket by the time its
//! connection is accepted, and the reply fits in the socket's buffer, so
//! neither has to wait: such a connection is served with plain
//! non-blocking calls and never registered. The first call that would block
//! registers the socket and from then on it waits as any tokio socket does.
//! Registering late misses nothing: the reactor registers edge-triggered,
//! and the kernel reports at registration the readiness the socket already
//! has.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected non-blocking socket of the standard library, and the tokio
/// socket it becomes once registered.
pub(crate) trait Socket: Read + Write + AsFd + Send + Unpin + Sized + 'static {
    /// The registered form.
    type Registered: AsyncRead + AsyncWrite + AsFd + Send + Unpin + 'static;
    /// Registers the socket with the current runtime's reactor.
    fn register(self) -> io::Result<Self::Registered>;
    /// Shuts the sending direction down (the end of the reply).
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Socket for std::os::unix::net::UnixStream {
    type Registered = tokio::net::UnixStream;

    fn register(self) -> io::Result<tokio::net::UnixStream> {
        tokio::net::UnixStream::from_std(self)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// A stream served with non-blocking calls until one would block, then
/// registered (see the module's documentation).
pub(crate) struct LazyStream<S: Socket> {
    state: State<S>,
}

enum State<S: Socket> {
    Unregistered(S),
    Registered(S::Registered),
    /// Registering failed; the socket is closed.
    Closed,
}

impl<S: Socket> LazyStream<S> {
    /// `socket` must be non-blocking.
    pub(crate) fn new(socket: S) -> LazyStream<S> {
        LazyStream {
            state: State::Unregistered(socket),
        }
    }

    /// The socket's descriptor; `None` once closed by a failed registration.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.state {
            State::Unregistered(socket) => Some(socket.as_fd()),
            State::Registered(socket) => Some(socket.as_fd()),
            State::Closed => None,
        }
    }

    /// The socket registered now, whatever it is to do next.
    pub(crate) fn into_registered(self) -> io::Result<S::Registered> {
        match self.state {
            State::Unregistered(socket) => socket.register(),
            State::Registered(socket) => Ok(socket),
            State::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Whether the socket joined the reactor (for tests).
    #[cfg(test)]
    fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered(_))
    }

    fn register(&mut self) -> io::Result<()> {
        if let State::Unregistered(socket) = std::mem::replace(&mut self.state, State::Closed) {
            self.state = State::Registered(socket.register()?);
        }
        Ok(())
    }

    /// What a failed call on the unregistered socket comes to: `None` to
    /// try again (interrupted, or registered because it would block).
    fn unregistered_failure(&mut self, e: io::Error) -> Option<io::Error> {
        match e.kind() {
            io::ErrorKind::Interrupted => None,
            io::ErrorKind::WouldBlock => self.register().err(),
            _ => Some(e),
        }
    }
}

fn closed<T>() -> Poll<io::Result<T>> {
    Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
}

impl<S: Socket> AsyncRead for LazyStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Unregistered(socket) => match socket.read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) => {
                        if let Some(e) = this.unregistered_failure(e) {
                            return Poll::Ready(Err(e));
                        }
                    }
                },
                State::Registered(socket) => return Pin::new(socket).poll_read(cx, buf),
                State::Closed => return closed(),
            }
        }
    }
}

impl<S: Socket> AsyncWrite for LazyStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Unregistered(socket) => match socket.write(buf) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) => {
                        if let Some(e) = this.unregistered_failure(e) {
                            return Poll::Ready(Err(e));
                        }
                    }
                },
                State::Registered(socket) => return Pin::new(socket).poll_write(cx, buf),
                State::Closed => return closed(),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Registered(socket) => Pin::new(socket).poll_flush(cx),
            // A socket buffers nothing in this process.
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Unregistered(socket) => Poll::Ready(socket.shutdown_write()),
            State::Registered(socket) => Pin::new(socket).poll_shutdown(cx),
            State::Closed => closed(),
        }
    }
}

impl Socket for std::net::TcpStream {
    type Registered = tokio::net::TcpStream;

    fn register(self) -> io::Result<tokio::net::TcpStream> {
        tokio::net::TcpStream::from_std(self)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// A non-blocking listening socket. Implemented only here, for mio's
/// listeners, which accept with `SOCK_NONBLOCK`: an accepted socket needs
/// no further call to be non-blocking.
///
/// # Safety
///
/// The implementing type owns its descriptor: `as_raw_fd` returns the same
/// open descriptor for as long as the value lives, as [`AsyncFd`]'s
/// registration requires.
pub(crate) unsafe trait Listener: AsRawFd + Send + Sync + 'static {
    /// What it accepts.
    type Stream: Socket;
    /// Who connected.
    type Peer;
    /// Accepts a waiting connection, or fails with `WouldBlock`.
    fn accept_nonblocking(&self) -> io::Result<(Self::Stream, Self::Peer)>;
}

// SAFETY: a mio listener owns its descriptor and never replaces it.
unsafe impl Listener for mio::net::UnixListener {
    type Stream = std::os::unix::net::UnixStream;
    type Peer = ();

    fn accept_nonblocking(&self) -> io::Result<(std::os::unix::net::UnixStream, ())> {
        let (stream, _) = self.accept()?;
        Ok((OwnedFd::from(stream).into(), ()))
    }
}

// SAFETY: as for the Unix listener.
unsafe impl Listener for mio::net::TcpListener {
    type Stream = std::net::TcpStream;
    type Peer = std::net::SocketAddr;

    fn accept_nonblocking(&self) -> io::Result<(std::net::TcpStream, std::net::SocketAddr)> {
        let (stream, peer) = self.accept()?;
        Ok((OwnedFd::from(stream).into(), peer))
    }
}

/// A listening socket, registered with the reactor (it waits for
/// connections), whose connections are [`LazyStream`]s.
pub(crate) struct LazyListener<L: Listener> {
    listener: AsyncFd<L>,
}

impl<L: Listener> LazyListener<L> {
    /// Registers `listener` with the current runtime.
    pub(crate) fn new(listener: L) -> io::Result<LazyListener<L>> {
        // SAFETY: a `Listener` owns its descriptor (the trait's contract),
        // and `AsyncFd` owns the listener: the descriptor stays open, and
        // the same, until the `AsyncFd` is dropped.
        let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }?;
        Ok(LazyListener { listener })
    }

    /// The listening socket.
    pub(crate) fn get_ref(&self) -> &L {
        self.listener.get_ref()
    }

    /// Waits for the next connection.
    pub(crate) async fn accept(&self) -> io::Result<(LazyStream<L::Stream>, L::Peer)> {
        loop {
            let mut ready = self.listener.readable().await?;
            if let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept_nonblocking()) {
                let (stream, peer) = accepted?;
                return Ok((LazyStream::new(stream), peer));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn listener(
        dir: &std::path::Path,
    ) -> (LazyListener<mio::net::UnixListener>, std::path::PathBuf) {
        let path = dir.join("lazy.sock");
        let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let listener = LazyListener::new(mio::net::UnixListener::from_std(std_listener)).unwrap();
        (listener, path)
    }

    #[tokio::test]
    async fn a_request_already_sent_is_answered_without_registering() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, path) = listener(dir.path());
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        client.write_all(b"request").await.unwrap();
        let (server, ()) = listener.accept().await.unwrap();
        answer_unregistered(server, &mut client).await;
    }

    /// Reads `request` (already sent) and answers `reply` on `server`,
    /// which must stay unregistered; `client` gets the reply and the end.
    async fn answer_unregistered<S: Socket>(
        mut server: LazyStream<S>,
        client: &mut (impl AsyncRead + Unpin),
    ) {
        let mut got = [0u8; 7];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"request");
        server.write_all(b"reply").await.unwrap();
        server.shutdown().await.unwrap();
        assert!(!server.is_registered());
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply");
    }

    #[tokio::test]
    async fn a_read_that_must_wait_registers_and_is_woken() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, path) = listener(dir.path());
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (mut server, ()) = listener.accept().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.map(|_| (got, server))
        });
        // Sent in two parts, the second after the reader had to wait.
        client.write_all(b"ab").await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(b"cd").await.unwrap();
        let (got, server) = reader.await.unwrap().unwrap();
        assert_eq!(&got, b"abcd");
        assert!(server.is_registered());
    }

    #[tokio::test]
    async fn a_socket_registered_when_already_readable_is_not_left_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, path) = listener(dir.path());
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        client.write_all(b"request").await.unwrap();
        let (server, ()) = listener.accept().await.unwrap();
        // Registered with the request already in it: the reactor must
        // still report it readable.
        let mut server = server.into_registered().unwrap();
        let mut got = [0u8; 7];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            server.read_exact(&mut got),
        )
        .await
        .expect("the readiness present at registration was reported")
        .unwrap();
        assert_eq!(&got, b"request");
    }

    #[tokio::test]
    async fn a_write_that_must_wait_registers_and_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, path) = listener(dir.path());
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (mut server, ()) = listener.accept().await.unwrap();
        // Far more than a socket buffers: the write must wait for the reader.
        let big = vec![7u8; 8 << 20];
        let expected = big.len();
        let writer = tokio::spawn(async move {
            server.write_all(&big).await?;
            server.shutdown().await?;
            Ok::<_, io::Error>(server)
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), expected);
        assert!(got.iter().all(|&b| b == 7));
        assert!(writer.await.unwrap().unwrap().is_registered());
    }

    #[tokio::test]
    async fn end_of_stream_and_errors_come_through_unregistered() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, path) = listener(dir.path());
        let client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (mut server, ()) = listener.accept().await.unwrap();
        drop(client);
        let mut got = [0u8; 4];
        assert_eq!(server.read(&mut got).await.unwrap(), 0);
        assert!(!server.is_registered());
        // The peer is gone: writing fails (EPIPE), it does not wait.
        assert!(server.write_all(b"late").await.is_err());
    }

    #[tokio::test]
    async fn tcp_connections_are_served_unregistered_and_name_their_peer() {
        let listener =
            LazyListener::new(mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap())
                .unwrap();
        let address = listener.get_ref().local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client.write_all(b"request").await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        answer_unregistered(server, &mut client).await;
    }
}
