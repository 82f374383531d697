//! VM socket transports: how guest requests arrive and notifications leave.
//!
//! Every transport has the semantics of the driver's vsock use: one request
//! per connection (read one message, write one reply, close), and one new
//! connection per notification, on which the whole message is written as soon
//! as the connection is up (the guest gives it 10 ms). Transports know the
//! framing, never the content.
//!
//! One [`TransportConfig`] describes both ends: the host binds it with
//! [`TransportConfig::bind_host`], the guest client with
//! [`TransportConfig::guest`].

pub mod framing;
#[cfg(target_os = "linux")]
pub mod hybrid;
// Live only on Windows; elsewhere compiled for its unit tests.
#[cfg_attr(not(windows), allow(dead_code))]
mod hyperv;
pub(crate) mod tcp;
#[cfg(target_os = "linux")]
mod unregistered;
#[cfg(target_os = "linux")]
pub mod vsock;

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::protocol::{DEFAULT_NOTIFICATION_PORT, DEFAULT_REQUEST_PORT};

/// Connections closed because no configured guest is their peer (a vsock
/// CID no guest has), process-wide.
static UNKNOWN_PEERS: AtomicU64 = AtomicU64::new(0);

/// How many connections the host transports have closed since the process
/// started because no configured guest is their peer (for metrics).
pub fn unknown_peer_connections() -> u64 {
    UNKNOWN_PEERS.load(Ordering::Relaxed)
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn count_unknown_peer() {
    UNKNOWN_PEERS.fetch_add(1, Ordering::Relaxed);
}

/// Who may use a guest's request socket, for transports whose listener is
/// a file (hybrid vsock); `None` fields keep the default (the service's
/// user and group, mode 0600).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketAccess {
    /// The socket file's owner (a uid).
    pub owner: Option<u32>,
    /// The socket file's group (a gid).
    pub group: Option<u32>,
    /// The socket file's permission bits (at most 0o777).
    pub mode: Option<u32>,
}

impl SocketAccess {
    /// Whether anything differs from the default.
    pub fn is_default(&self) -> bool {
        *self == SocketAccess::default()
    }

    /// The mode to set: the one given, else 0660 when a group is given
    /// (a group without group access would be pointless), else 0600.
    pub fn effective_mode(&self) -> u32 {
        self.mode
            .unwrap_or(if self.group.is_some() { 0o660 } else { 0o600 })
    }

    /// Applies ownership, then mode, to the socket file at `path` (owner
    /// first, so the file is never open to more than the owner intended).
    #[cfg(unix)]
    pub fn apply(&self, path: &std::path::Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if self.owner.is_some() || self.group.is_some() {
            std::os::unix::fs::lchown(path, self.owner, self.group)?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.effective_mode()))
    }
}

/// A user name (or a numeric uid) as a uid, for [`SocketAccess::owner`].
pub fn resolve_user(name: &str) -> Result<u32, String> {
    match name.parse::<u32>() {
        Ok(uid) => Ok(uid),
        Err(_) => lookup_user(name),
    }
}

/// A group name (or a numeric gid) as a gid, for [`SocketAccess::group`].
pub fn resolve_group(name: &str) -> Result<u32, String> {
    match name.parse::<u32>() {
        Ok(gid) => Ok(gid),
        Err(_) => lookup_group(name),
    }
}

#[cfg(unix)]
fn lookup_user(name: &str) -> Result<u32, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no user named '{name}' on this host")),
        Err(e) => Err(format!("cannot look up user '{name}': {e}")),
    }
}

#[cfg(unix)]
fn lookup_group(name: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no group named '{name}' on this host")),
        Err(e) => Err(format!("cannot look up group '{name}': {e}")),
    }
}

#[cfg(not(unix))]
fn lookup_user(_name: &str) -> Result<u32, String> {
    Err("socket owners are Unix users; this platform has none".into())
}

#[cfg(not(unix))]
fn lookup_group(_name: &str) -> Result<u32, String> {
    Err("socket groups are Unix groups; this platform has none".into())
}

/// A permission mode written in octal (`"0660"`, `"660"`), at most 0777.
pub fn parse_socket_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "'{}' is not an octal permission mode such as \"0660\" (at most 0777)",
            text.chars().take(16).collect::<String>()
        )),
    }
}

/// Who opened a guest request connection, for logs: what the transport
/// learned when it accepted the connection, turned into text only when a
/// line that shows it is written (most requests log none: formatting an
/// address per request would be work for nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// An IP peer (TCP).
    Ip(std::net::SocketAddr),
    /// The process on the other end of a Unix socket (for hybrid vsock,
    /// the VMM that forwards the guest's connection), from the socket's
    /// peer credentials; `None` if they could not be read.
    UnixProcess(Option<UnixPeerCredentials>),
    /// A Unix-socket peer whose credentials are not read yet: reading them
    /// is a system call, and most connections are never logged, so they
    /// are read only for a line that shows them ([`Peer::read_from`]).
    UnixProcessUnread,
    /// A description the transport wrote (vsock, Hyper-V).
    Described(String),
}

/// The peer credentials of a Unix socket (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixPeerCredentials {
    /// The peer's process id, when the kernel reports one.
    pub pid: Option<i32>,
    /// The peer's user id.
    pub uid: u32,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(address) => write!(f, "{address}"),
            Peer::UnixProcess(Some(UnixPeerCredentials { pid: Some(pid), .. })) => {
                write!(f, "guest via VMM pid {pid}")
            }
            Peer::UnixProcess(Some(UnixPeerCredentials { pid: None, uid })) => {
                write!(f, "guest via VMM uid {uid}")
            }
            Peer::UnixProcess(None) | Peer::UnixProcessUnread => f.write_str("guest via VMM"),
            Peer::Described(text) => f.write_str(text),
        }
    }
}

impl Peer {
    /// The peer with what is read lazily now read from its connection
    /// (`stream`, still open): call it only for a line that shows it.
    pub fn read_from(self, stream: &BoxStream) -> Peer {
        match self {
            Peer::UnixProcessUnread => Peer::UnixProcess(unix_peer_credentials(stream)),
            resolved => resolved,
        }
    }
}

/// The peer credentials of a Unix-socket stream; `None` for any other
/// stream, or when the kernel refuses them.
#[cfg(target_os = "linux")]
fn unix_peer_credentials(stream: &BoxStream) -> Option<UnixPeerCredentials> {
    use std::os::fd::AsRawFd;
    let stream: &dyn std::any::Any = &**stream;
    let fd = stream
        .downcast_ref::<unregistered::LazyStream<std::os::unix::net::UnixStream>>()?
        .fd()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given,
    // and `fd` is open for the duration of the call.
    let done = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if done != 0 || len as usize != std::mem::size_of::<libc::ucred>() {
        return None;
    }
    Some(UnixPeerCredentials {
        pid: Some(cred.pid),
        uid: cred.uid,
    })
}

#[cfg(not(target_os = "linux"))]
fn unix_peer_credentials(_stream: &BoxStream) -> Option<UnixPeerCredentials> {
    None
}

/// A connected byte stream of any transport. `Any`, so that what only one
/// kind of stream can tell (a Unix socket's peer credentials) can be asked
/// of it when needed.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + std::any::Any {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed stream, so the service is independent of the socket type.
pub type BoxStream = Box<dyn Stream>;

/// Host side: accepts guest request connections.
#[async_trait]
pub trait RequestListener: Send + Sync {
    /// Waits for the next guest connection. Connections the transport
    /// refuses (a vsock peer that is not the configured guest) are closed and
    /// logged inside, never returned. Returns the stream and who its peer
    /// is, for logs.
    async fn accept(&self) -> io::Result<(BoxStream, Peer)>;

    /// Where it listens, for logs (`127.0.0.1:12345`, `/run/vm.sock_12345`).
    fn local_description(&self) -> String;

    /// The port actually bound, when the transport has ports (useful with
    /// port 0 in tests).
    fn local_port(&self) -> Option<u32> {
        None
    }
}

/// Host side: opens a connection to the guest's notification port.
///
/// Timing contract (the guest driver gives an accepted notification
/// connection a 10 ms receive timeout): `connect` returns the moment the
/// connection is usable, with every handshake done (for hybrid vsock, the
/// VMM's `OK` line read and nothing past it), and the returned stream neither
/// buffers nor delays writes, so the caller must write the whole message
/// (one `write_message`) immediately after `connect` returns, doing nothing
/// slow in between. Each transport's tests check this with a peer that reads
/// with a 10 ms timeout, as the driver does.
///
/// An error means the notification cannot be delivered (nobody listens, the
/// VMM refused, a handshake timed out); the caller logs it, drops that
/// notification and keeps serving.
#[async_trait]
pub trait NotificationConnector: Send + Sync {
    /// Opens a connection, ready for one whole message (see above).
    async fn connect(&self) -> io::Result<BoxStream>;
    /// Where it connects, for logs.
    fn describe(&self) -> String;
}

/// Guest side: opens request connections to the host.
#[async_trait]
pub trait RequestConnector: Send + Sync {
    /// Opens a connection for one request.
    async fn connect(&self) -> io::Result<BoxStream>;
    /// Where it connects, for logs.
    fn describe(&self) -> String;
}

/// Guest side: accepts the host's notification connections.
#[async_trait]
pub trait NotificationListener: Send + Sync {
    /// Accepts the next notification connection.
    async fn accept(&self) -> io::Result<BoxStream>;
    /// Where it listens, for logs.
    fn local_description(&self) -> String;
    /// The bound port, when the transport has ports (0 in the configuration
    /// binds an ephemeral one).
    fn local_port(&self) -> Option<u32> {
        None
    }
}

/// The host end of a transport, bound and ready.
pub struct HostEndpoint {
    /// Accepts the guest's request connections.
    pub listener: Box<dyn RequestListener>,
    /// Opens connections to the guest's notification port.
    pub notifier: Arc<dyn NotificationConnector>,
}

/// The guest end of a transport.
pub struct GuestEndpoint {
    /// Opens request connections to the host.
    pub requests: Arc<dyn RequestConnector>,
    /// The transport this end was built from.
    pub config: TransportConfig,
}

/// Which socket flavour, and its addresses. The same value describes both
/// ends of a guest's channel; each variant says what its fields mean on
/// each side.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TransportConfig {
    /// TCP, for tests and for guests that reach the host over IP. Host:
    /// listens on `address:request_port`, sends notifications to
    /// `address:notification_port`. Guest: the reverse.
    Tcp {
        /// The host's address (both ends use it).
        address: IpAddr,
        /// The host's request port.
        request_port: u16,
        /// The guest's notification port.
        notification_port: u16,
    },
    /// AF_VSOCK (QEMU/KVM vhost-vsock, crosvm). Host: `cid` is the guest's
    /// CID; requests are accepted from it alone on any local CID, and
    /// notifications go to (cid, notification_port). Guest: `cid` is the
    /// host's CID (2, or 1 for loopback).
    Vsock {
        /// The peer's context id: the guest's on the host, the host's in the guest.
        cid: u32,
        /// The host's request port.
        request_port: u32,
        /// The guest's notification port.
        notification_port: u32,
    },
    /// Hybrid vsock over Unix sockets (Firecracker, Cloud Hypervisor,
    /// vhost-device-vsock). `path` is the VMM's vsock socket; the guest's
    /// connections to host port P arrive at `<path>_<P>`. Host: listens on
    /// `<path>_<request_port>`, reaches the guest through `<path>` with the
    /// `CONNECT`/`OK` handshake. Guest (test client on the host): requests go
    /// to `<path>_<request_port>`, and for notifications it plays the VMM,
    /// listening on `<path>`. See [`hybrid`].
    HybridVsock {
        /// The VMM's Unix socket.
        path: PathBuf,
        /// The host's request port (the listener is `<path>_<port>`).
        request_port: u32,
        /// The guest's notification port (`CONNECT <port>` on the VMM's socket).
        notification_port: u32,
    },
    /// Hyper-V sockets (Windows hosts only): the VM's id, and ports mapped to
    /// service ids through the vsock template GUID.
    HyperV {
        /// The Hyper-V VM's id.
        vm_id: uuid::Uuid,
        /// The host's request port (a vsock-template service id).
        request_port: u32,
        /// The guest's notification port (a vsock-template service id).
        notification_port: u32,
    },
}

impl TransportConfig {
    /// TCP on `address` with the driver's default ports.
    pub fn tcp(address: IpAddr) -> TransportConfig {
        TransportConfig::Tcp {
            address,
            request_port: DEFAULT_REQUEST_PORT as u16,
            notification_port: DEFAULT_NOTIFICATION_PORT as u16,
        }
    }

    /// The name of the transport kind, for logs and status.
    pub fn kind(&self) -> &'static str {
        match self {
            TransportConfig::Tcp { .. } => "tcp",
            TransportConfig::Vsock { .. } => "vsock",
            TransportConfig::HybridVsock { .. } => "hybrid-vsock",
            TransportConfig::HyperV { .. } => "hyper-v",
        }
    }

    /// Binds the host end: the request listener and the notification
    /// connector.
    pub async fn bind_host(&self) -> Result<HostEndpoint, TransportError> {
        self.bind_host_with(SocketAccess::default()).await
    }

    /// [`TransportConfig::bind_host`], with who may use the request socket
    /// when it is a file (hybrid vsock); any other transport refuses a
    /// non-default `access`.
    pub async fn bind_host_with(
        &self,
        access: SocketAccess,
    ) -> Result<HostEndpoint, TransportError> {
        if !access.is_default() && !matches!(self, TransportConfig::HybridVsock { .. }) {
            return Err(TransportError::Invalid(format!(
                "socket owner, group and mode apply to hybrid vsock request sockets, not to {}",
                self.kind()
            )));
        }
        match self {
            TransportConfig::Tcp {
                address,
                request_port,
                notification_port,
            } => tcp::bind_host(*address, *request_port, *notification_port).await,
            #[cfg(target_os = "linux")]
            TransportConfig::Vsock {
                cid,
                request_port,
                notification_port,
            } => vsock::bind_host(*cid, *request_port, *notification_port).await,
            #[cfg(target_os = "linux")]
            TransportConfig::HybridVsock {
                path,
                request_port,
                notification_port,
            } => hybrid::bind_host(path, *request_port, *notification_port, access).await,
            #[cfg(windows)]
            TransportConfig::HyperV {
                vm_id,
                request_port,
                notification_port,
            } => hyperv::bind_host(*vm_id, *request_port, *notification_port).await,
            other => Err(TransportError::Unsupported(other.kind())),
        }
    }

    /// The guest end: a request connector (nothing is bound until a request
    /// is sent).
    pub fn guest(&self) -> Result<GuestEndpoint, TransportError> {
        let requests: Arc<dyn RequestConnector> = match self {
            TransportConfig::Tcp {
                address,
                request_port,
                ..
            } => Arc::new(tcp::TcpRequestConnector::new(*address, *request_port)),
            #[cfg(target_os = "linux")]
            TransportConfig::Vsock {
                cid, request_port, ..
            } => vsock::guest_connector(*cid, *request_port)?,
            #[cfg(target_os = "linux")]
            TransportConfig::HybridVsock { .. } => return hybrid::guest(self),
            other => return Err(TransportError::Unsupported(other.kind())),
        };
        Ok(GuestEndpoint {
            requests,
            config: self.clone(),
        })
    }

    /// Guest side: binds the notification listener.
    pub async fn bind_guest_notifications(
        &self,
    ) -> Result<Box<dyn NotificationListener>, TransportError> {
        match self {
            TransportConfig::Tcp {
                address,
                notification_port,
                ..
            } => tcp::bind_guest_notifications(*address, *notification_port).await,
            #[cfg(target_os = "linux")]
            TransportConfig::Vsock {
                cid,
                notification_port,
                ..
            } => vsock::bind_guest_notifications(*cid, *notification_port).await,
            #[cfg(target_os = "linux")]
            TransportConfig::HybridVsock {
                path,
                notification_port,
                ..
            } => hybrid::bind_guest_notifications(path, *notification_port).await,
            other => Err(TransportError::Unsupported(other.kind())),
        }
    }
}

impl fmt::Display for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportConfig::Tcp {
                address,
                request_port,
                notification_port,
            } => write!(f, "tcp {address} ports {request_port}/{notification_port}"),
            TransportConfig::Vsock {
                cid,
                request_port,
                notification_port,
            } => write!(
                f,
                "vsock cid {cid} ports {request_port}/{notification_port}"
            ),
            TransportConfig::HybridVsock {
                path,
                request_port,
                notification_port,
            } => write!(
                f,
                "hybrid vsock {} ports {request_port}/{notification_port}",
                path.display()
            ),
            TransportConfig::HyperV {
                vm_id,
                request_port,
                notification_port,
            } => write!(
                f,
                "hyper-v vm {vm_id} ports {request_port}/{notification_port}"
            ),
        }
    }
}

/// Why a transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on {address}: {source}")]
    /// The host side could not bind its listener.
    Bind {
        /// What it tried to bind.
        address: String,
        #[source]
        /// The operating system's error.
        source: io::Error,
    },
    #[error("the {0} transport is not available on this platform")]
    /// The transport does not exist on this platform (its name given).
    Unsupported(&'static str),
    #[error("{0}")]
    /// A configuration that cannot work (what is wrong given).
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_read_as_before_in_logs() {
        let ip = Peer::Ip("127.0.0.1:40000".parse().unwrap());
        assert_eq!(ip.to_string(), "127.0.0.1:40000");
        let vmm = |pid, uid| Peer::UnixProcess(Some(UnixPeerCredentials { pid, uid }));
        assert_eq!(vmm(Some(4242), 0).to_string(), "guest via VMM pid 4242");
        assert_eq!(vmm(None, 1000).to_string(), "guest via VMM uid 1000");
        assert_eq!(Peer::UnixProcess(None).to_string(), "guest via VMM");
        assert_eq!(Peer::UnixProcessUnread.to_string(), "guest via VMM");
        assert_eq!(
            Peer::Described("vsock 3:1025".into()).to_string(),
            "vsock 3:1025"
        );
    }
}
