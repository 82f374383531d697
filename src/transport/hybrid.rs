//! Hybrid vsock over Unix sockets (Firecracker, Cloud Hypervisor, QEMU with
//! rust-vmm's vhost-device-vsock).
//!
//! The VMM exposes the guest's vsock device as one Unix socket, `<uds>`:
//!
//! - A guest connection to host port P is forwarded by the VMM to the Unix
//!   socket `<uds>_<P>`, which the host application must listen on. The host
//!   service therefore listens on `<uds>_<request-port>`.
//! - To reach guest port P, the host connects to `<uds>`, writes
//!   `CONNECT <P>\n` and reads one line. `OK <n>\n` means the guest accepted
//!   (the number differs between VMMs and is not interpreted); a VMM that
//!   closes instead means nothing listens on that guest port.
//!
//! The guest client emulates the guest's side on the same files: requests go
//! straight to `<uds>_<request-port>`, and for notifications it plays the
//! VMM: it listens on `<uds>`, answers `CONNECT <notification-port>` with
//! `OK <n>`, and reads the message.
//!
//! Bounds: the whole handshake (connect, `CONNECT` line, reply line) must
//! complete within [`HANDSHAKE_TIMEOUT`] (1 s), and a reply or `CONNECT` line
//! longer than [`MAX_LINE`] (64 bytes, newline included) is refused. Lines are
//! read byte by byte straight from the socket, so nothing after the newline
//! is ever consumed or held in a buffer.
//!
//! Listening sockets are created owner-only (0600) from the start (the mode
//! is set on the socket before `bind`, so there is no window in which others
//! could connect), a stale socket file left by a dead process is replaced
//! (a live one, or a file that is not a socket, is never touched), and the
//! file is removed when the listener is dropped.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::unregistered::{LazyListener, LazyStream};
use super::{
    BoxStream, GuestEndpoint, HostEndpoint, NotificationConnector, NotificationListener, Peer,
    RequestConnector, RequestListener, SocketAccess, TransportConfig, TransportError,
};

/// How long the host gives the VMM to accept `<uds>` and answer the
/// `CONNECT` line (and the guest emulation gives a host to send it). VMMs
/// answer as soon as the guest accepts or refuses, well under a millisecond
/// locally; 1 s only catches a VMM that hangs, and keeps a hung VMM from
/// stalling notifications for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest handshake line accepted, newline included. `OK 4294967295\n`
/// and `CONNECT 4294967295\n` are 14 and 19 bytes.
pub const MAX_LINE: usize = 64;

/// The longest Unix socket path, in bytes: `sun_path` is 108 bytes on Linux
/// and needs a terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Backlog of the listening sockets.
const BACKLOG: i32 = 128;

/// The socket on which the VMM delivers the guest's connections to host port
/// `port`: `<path>_<port>` (byte-exact, also for paths that are not UTF-8).
pub fn port_path(path: &Path, port: u32) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Refuses a socket path that does not fit in `sockaddr_un`, with a message
/// that says which path and what to do.
pub fn check_socket_path(path: &Path, role: &str) -> Result<(), TransportError> {
    let len = path.as_os_str().len();
    if len == 0 {
        return Err(TransportError::Invalid(format!(
            "hybrid vsock: the {role} socket path is empty"
        )));
    }
    if len > MAX_SOCKET_PATH {
        return Err(TransportError::Invalid(format!(
            "hybrid vsock: the {role} socket path {} is {len} bytes long, but Unix socket \
             paths are limited to {MAX_SOCKET_PATH} bytes (the request socket is the \
             --hybrid-vsock path followed by _<port>); use a shorter path",
            path.display()
        )));
    }
    Ok(())
}

/// Why a hybrid vsock handshake failed. Carried inside the [`io::Error`] the
/// connectors return (`err.get_ref()` and `downcast_ref` to inspect it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer closed before a whole line arrived: for the host, the VMM's
    /// way of saying nothing listens on that guest port.
    #[error("the VMM closed the connection without OK: nothing listens on guest port {port}")]
    Closed {
        /// The guest port asked for.
        port: u32,
    },
    /// The VMM answered something other than `OK <n>`.
    #[error("the VMM refused CONNECT {port}: {line}")]
    NotOk {
        /// The guest port asked for.
        port: u32,
        /// What the VMM answered.
        line: String,
    },
    /// The peer sent `CONNECT` for a port nobody listens on here (guest side).
    #[error("unexpected CONNECT line: {line}")]
    BadConnect {
        /// The line received.
        line: String,
    },
    /// A line longer than [`MAX_LINE`] bytes.
    #[error("handshake line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// No complete answer within [`HANDSHAKE_TIMEOUT`].
    #[error("no handshake answer within {HANDSHAKE_TIMEOUT:?}")]
    TimedOut,
}

impl HandshakeError {
    fn kind(&self) -> io::ErrorKind {
        match self {
            HandshakeError::Closed { .. } => io::ErrorKind::ConnectionRefused,
            HandshakeError::NotOk { .. } => io::ErrorKind::ConnectionRefused,
            HandshakeError::BadConnect { .. } => io::ErrorKind::InvalidData,
            HandshakeError::LineTooLong => io::ErrorKind::InvalidData,
            HandshakeError::TimedOut => io::ErrorKind::TimedOut,
        }
    }
}

impl From<HandshakeError> for io::Error {
    fn from(e: HandshakeError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// A line as printable text for logs and errors (escapes control bytes).
fn printable(line: &[u8]) -> String {
    line.escape_ascii().to_string()
}

enum Line {
    /// A whole line, without its newline.
    Complete(Vec<u8>),
    /// The peer closed before the newline.
    Closed,
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes, one byte
/// per read, so that not a byte past the newline leaves the socket.
async fn read_line<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Line> {
    let mut line = Vec::with_capacity(MAX_LINE);
    loop {
        let mut byte = [0u8; 1];
        if r.read(&mut byte).await? == 0 {
            return Ok(Line::Closed);
        }
        if byte[0] == b'\n' {
            return Ok(Line::Complete(line));
        }
        line.push(byte[0]);
        if line.len() >= MAX_LINE {
            return Err(HandshakeError::LineTooLong.into());
        }
    }
}

/// The host side of the handshake on a connection to `<uds>`: asks for guest
/// port `port` and waits for `OK`. On success the stream is positioned right
/// after the `OK` line, ready for the message.
pub async fn client_handshake(stream: &mut UnixStream, port: u32) -> io::Result<()> {
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await?;
    match read_line(stream).await? {
        Line::Closed => Err(HandshakeError::Closed { port }.into()),
        Line::Complete(line) if line.starts_with(b"OK ") => Ok(()),
        Line::Complete(line) => Err(HandshakeError::NotOk {
            port,
            line: printable(&line),
        }
        .into()),
    }
}

/// Parses `CONNECT <port>` (without the newline).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let digits = line.strip_prefix(b"CONNECT ")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The VMM's side of the handshake (used by the guest emulation and
/// available to tests): reads `CONNECT <port>`, and if `port` is the
/// expected one answers `OK <local_port>`; otherwise closes without `OK`
/// (returns the error; dropping the stream closes it).
pub async fn server_handshake(
    stream: &mut UnixStream,
    expected_port: u32,
    local_port: u32,
) -> io::Result<()> {
    match read_line(stream).await? {
        Line::Closed => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before the CONNECT line",
        )),
        Line::Complete(line) => match parse_connect(&line) {
            Some(port) if port == expected_port => {
                stream
                    .write_all(format!("OK {local_port}\n").as_bytes())
                    .await
            }
            _ => Err(HandshakeError::BadConnect {
                line: printable(&line),
            }
            .into()),
        },
    }
}

/// Runs `f` under [`HANDSHAKE_TIMEOUT`].
async fn bounded<T>(f: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::TimedOut.into()),
    }
}

/// A listening Unix socket created owner-only, whose file is removed on drop
/// (if it is still the one this listener created).
pub struct SocketFile {
    listener: LazyListener<mio::net::UnixListener>,
    path: PathBuf,
    identity: (u64, u64),
}

impl fmt::Debug for SocketFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketFile")
            .field("path", &self.path)
            .finish()
    }
}

impl SocketFile {
    /// Binds `path` with mode 0600, replacing a stale socket file. Refuses
    /// a path on which a process listens, or that is not a socket.
    pub async fn bind(path: &Path, role: &str) -> Result<SocketFile, TransportError> {
        SocketFile::bind_with(path, role, SocketAccess::default()).await
    }

    /// [`SocketFile::bind`], then hands the file to `access`'s owner and
    /// group and sets its mode (a socket for a VMM running as another
    /// user). The file is 0600 and the service's until then.
    pub async fn bind_with(
        path: &Path,
        role: &str,
        access: SocketAccess,
    ) -> Result<SocketFile, TransportError> {
        check_socket_path(path, role)?;
        let bind_err = |source: io::Error| TransportError::Bind {
            address: path.display().to_string(),
            source,
        };
        remove_stale(path).await.map_err(bind_err)?;
        let fd = bind_owner_only(path).map_err(bind_err)?;
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let listener =
            LazyListener::new(mio::net::UnixListener::from_std(std_listener)).map_err(bind_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
        let file = SocketFile {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        };
        if !access.is_default() {
            // On failure `file` is dropped, which removes the socket.
            access.apply(path).map_err(|source| TransportError::Bind {
                address: format!("{} (owner, group or mode)", path.display()),
                source,
            })?;
        }
        Ok(file)
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the next connection, registered with the reactor.
    pub async fn accept(&self) -> io::Result<UnixStream> {
        let (stream, ()) = self.listener.accept().await?;
        stream.into_registered()
    }

    /// Accepts the next connection, registered only if it has to wait
    /// (see [`LazyStream`]): for the request path.
    pub(crate) async fn accept_lazy(
        &self,
    ) -> io::Result<LazyStream<std::os::unix::net::UnixStream>> {
        let (stream, ()) = self.listener.accept().await?;
        Ok(stream)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Only remove the file if it is still ours: another process may have
        // replaced it since.
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove socket file");
                }
            }
            Ok(_) => tracing::debug!(
                path = %self.path.display(),
                "socket file replaced by someone else; leaving it"
            ),
            Err(_) => {}
        }
    }
}

/// Removes `path` if it is a socket nobody listens on.
async fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; refusing to replace it",
        ));
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Ok(_)) | Err(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on this socket",
        )),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing stale socket file");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Ok(Err(e)) => Err(e),
    }
}

/// Creates a listening Unix socket at `path` whose file has mode 0600 from
/// the moment it exists: on Linux, `bind` gives the socket file the mode of
/// the socket's inode (minus the umask), so the mode is set before binding.
fn bind_owner_only(path: &Path) -> io::Result<OwnedFd> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let address = SockAddr::unix(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    // SAFETY: fchmod on a descriptor this function owns; no memory involved.
    if unsafe { libc::fchmod(socket.as_raw_fd(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.bind(&address)?;
    // Belt and braces, should a kernel not carry the mode over.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    socket.listen(BACKLOG)?;
    Ok(OwnedFd::from(socket))
}

fn connect_error(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot connect to {}: {e}", path.display()),
    )
}

// ---------------------------------------------------------------- host side

/// Host end: listens on `<path>_<request_port>`, sends notifications through
/// `<path>` with the `CONNECT` handshake.
pub async fn bind_host(
    path: &Path,
    request_port: u32,
    notification_port: u32,
    access: SocketAccess,
) -> Result<HostEndpoint, TransportError> {
    check_socket_path(path, "VMM")?;
    let socket = SocketFile::bind_with(&port_path(path, request_port), "request", access).await?;
    Ok(HostEndpoint {
        listener: Box::new(HybridRequestListener {
            socket,
            port: request_port,
        }),
        notifier: Arc::new(HybridNotificationConnector {
            path: path.to_path_buf(),
            port: notification_port,
        }),
    })
}

/// Host side: the guest's request connections, as forwarded by the VMM.
pub struct HybridRequestListener {
    socket: SocketFile,
    port: u32,
}

#[async_trait]
impl RequestListener for HybridRequestListener {
    /// The peer's credentials are left unread: a `getsockopt` on every
    /// request was a measurable share of the request path (BENCHMARKS.md),
    /// for lines most connections never log. [`Peer::read_from`] reads them.
    async fn accept(&self) -> io::Result<(BoxStream, Peer)> {
        let stream = self.socket.accept_lazy().await?;
        Ok((Box::new(stream), Peer::UnixProcessUnread))
    }

    fn local_description(&self) -> String {
        self.socket.path().display().to_string()
    }

    fn local_port(&self) -> Option<u32> {
        Some(self.port)
    }
}

/// Host side: opens a connection to the guest's notification port through
/// the VMM's socket.
pub struct HybridNotificationConnector {
    path: PathBuf,
    port: u32,
}

impl HybridNotificationConnector {
    /// Connects through the VMM socket at `path` to guest port `port`.
    pub fn new(path: PathBuf, port: u32) -> HybridNotificationConnector {
        HybridNotificationConnector { path, port }
    }
}

#[async_trait]
impl NotificationConnector for HybridNotificationConnector {
    /// Returns as soon as the VMM's `OK` line has been read: nothing is read
    /// past it, and the stream is the bare socket, so what the caller writes
    /// leaves at once.
    async fn connect(&self) -> io::Result<BoxStream> {
        let stream = bounded(async {
            let mut stream = UnixStream::connect(&self.path)
                .await
                .map_err(|e| connect_error(&self.path, e))?;
            client_handshake(&mut stream, self.port).await?;
            Ok(stream)
        })
        .await?;
        Ok(Box::new(stream))
    }

    fn describe(&self) -> String {
        format!("{} port {}", self.path.display(), self.port)
    }
}

// --------------------------------------------------------------- guest side

/// Guest end: request connections go to `<path>_<request_port>`.
pub fn guest(config: &TransportConfig) -> Result<GuestEndpoint, TransportError> {
    let TransportConfig::HybridVsock {
        path, request_port, ..
    } = config
    else {
        return Err(TransportError::Invalid(format!(
            "not a hybrid vsock transport: {config}"
        )));
    };
    let target = port_path(path, *request_port);
    check_socket_path(&target, "request")?;
    Ok(GuestEndpoint {
        requests: Arc::new(HybridRequestConnector { path: target }),
        config: config.clone(),
    })
}

/// Guest side: connects to the host's request socket.
pub struct HybridRequestConnector {
    path: PathBuf,
}

#[async_trait]
impl RequestConnector for HybridRequestConnector {
    async fn connect(&self) -> io::Result<BoxStream> {
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| connect_error(&self.path, e))?;
        Ok(Box::new(stream))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Guest side: plays the VMM on `<path>`, accepting the host's notification
/// connections for `notification_port`.
pub async fn bind_guest_notifications(
    path: &Path,
    notification_port: u32,
) -> Result<Box<dyn NotificationListener>, TransportError> {
    let socket = SocketFile::bind(path, "VMM").await?;
    Ok(Box::new(HybridNotificationListener {
        socket,
        port: notification_port,
        next_local_port: AtomicU32::new(FIRST_LOCAL_PORT),
    }))
}

/// The numbers the emulated VMM puts after `OK` (as a VMM would report its
/// own end's port).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

struct HybridNotificationListener {
    socket: SocketFile,
    port: u32,
    next_local_port: AtomicU32,
}

#[async_trait]
impl NotificationListener for HybridNotificationListener {
    /// Accepts connections until one completes the handshake; the others
    /// (wrong port, garbage, silence past the timeout) are closed without
    /// `OK` and logged.
    async fn accept(&self) -> io::Result<BoxStream> {
        loop {
            let mut stream = self.socket.accept().await?;
            let local_port = self.next_local_port.fetch_add(1, Ordering::Relaxed);
            match bounded(server_handshake(&mut stream, self.port, local_port)).await {
                Ok(()) => return Ok(Box::new(stream)),
                Err(e) => tracing::warn!(
                    socket = %self.socket.path().display(),
                    error = %e,
                    "refused a notification connection"
                ),
            }
        }
    }

    fn local_description(&self) -> String {
        format!("{} port {}", self.socket.path().display(), self.port)
    }

    fn local_port(&self) -> Option<u32> {
        Some(self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn port_paths_append_the_port() {
        assert_eq!(
            port_path(Path::new("/run/fc/v.sock"), 12345),
            PathBuf::from("/run/fc/v.sock_12345")
        );
        // Byte-exact for non-UTF-8 paths.
        let raw = std::ffi::OsStr::from_bytes(b"/tmp/\xff.sock");
        assert_eq!(
            port_path(Path::new(raw), 1).as_os_str().as_bytes(),
            b"/tmp/\xff.sock_1"
        );
    }

    #[test]
    fn socket_path_length_is_checked() {
        let ok = "/".to_string() + &"a".repeat(MAX_SOCKET_PATH - 1);
        assert!(check_socket_path(Path::new(&ok), "request").is_ok());
        let long = ok + "b";
        let err = check_socket_path(Path::new(&long), "request").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("108 bytes long"), "{msg}");
        assert!(msg.contains("107"), "{msg}");
        assert!(check_socket_path(Path::new(""), "request").is_err());
    }

    #[test]
    fn connect_lines_parse_strictly() {
        assert_eq!(parse_connect(b"CONNECT 12346"), Some(12346));
        assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect(b"CONNECT "), None);
        assert_eq!(parse_connect(b"CONNECT +5"), None);
        assert_eq!(parse_connect(b"CONNECT 5 "), None);
        assert_eq!(parse_connect(b"connect 5"), None);
        assert_eq!(parse_connect(b"CONNECT\t5"), None);
    }

    #[tokio::test]
    async fn lines_are_bounded_and_stop_at_the_newline() {
        let input = b"OK 7\nrest".to_vec();
        let mut r = &input[..];
        match read_line(&mut r).await.unwrap() {
            Line::Complete(l) => assert_eq!(l, b"OK 7"),
            Line::Closed => panic!("closed"),
        }
        assert_eq!(r, b"rest", "nothing past the newline is consumed");

        let mut r = &b"OK 7"[..];
        assert!(matches!(read_line(&mut r).await.unwrap(), Line::Closed));

        let long = [b'O'; MAX_LINE + 10];
        let mut r = &long[..];
        let err = read_line(&mut r).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(r.len(), 10, "stops reading at the limit");

        // 63 bytes and a newline is the longest accepted line.
        let mut max = vec![b'x'; MAX_LINE - 1];
        max.push(b'\n');
        let mut r = &max[..];
        assert!(matches!(
            read_line(&mut r).await.unwrap(),
            Line::Complete(l) if l.len() == MAX_LINE - 1
        ));
    }

    #[test]
    fn printable_escapes_control_bytes() {
        assert_eq!(printable(b"ERR\x1b[31m\r"), "ERR\\x1b[31m\\r");
    }
}
