//! The control socket: how `proxy-wifi ctl` acts on a running service.
//!
//! A Unix socket, owner-only (0600), one JSON request per line and one JSON
//! response per line:
//!
//! ```text
//! {"command":"host-connect","ssid":"FakeOpen"}
//! {"ok":true}
//! {"command":"signal","percent":80,"guest":"vm1"}
//! {"ok":false,"error":"no guest named vm1"}
//! ```
//!
//! Commands drive simulated mode's host events, and ask the daemon for
//! `status` (the answer's `data`) or a `reload`. Every request may name a
//! `guest`; the daemon's handler ([`crate::daemon::DaemonControl`]) says
//! what that means per command. New commands are new [`ControlCommand`]
//! variants.

#![warn(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::daemon::config::GuestSpec;
use crate::protocol::{Ssid, SsidError};
use crate::transport::SocketAccess;
use crate::wifi::{HostEvent, HostWifi, ScanMode, SimulatedError};

/// How long a client waits for the service's answer.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Control connections served at once; past it the oldest idle one is
/// closed (each costs a descriptor and a task).
#[cfg(unix)]
const MAX_CONNECTIONS: usize = 64;
/// How long a control connection may wait for its next request line, or
/// take to read its answer, before it is closed.
#[cfg(unix)]
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer a client reads. A `status` answer is under 2 KiB per
/// guest and the daemon runs at most one guest per 2 descriptors
/// ([`crate::daemon::fds`]), so this covers any fleet up to a descriptor
/// limit of 256 Ki (the unit sets 64 Ki).
#[cfg(unix)]
const MAX_ANSWER: u64 = 256 * 1024 * 1024;
/// Longest request line accepted.
#[cfg(unix)]
const MAX_LINE: usize = 64 * 1024;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ControlCommand {
    /// The simulated host connects to a network.
    HostConnect {
        /// The network's SSID.
        ssid: String,
    },
    /// The simulated host disconnects.
    HostDisconnect,
    /// The link quality of the simulated host's connection changes.
    Signal {
        /// Link quality, 0 to 100.
        percent: u8,
    },
    /// A host scan nobody waited for delivers results.
    ScanResults,
    /// Scans answer synchronously or asynchronously.
    ScanMode {
        /// The mode from now on.
        mode: ScanMode,
    },
    /// Per-guest status (daemon): the answer's `data` is a list of
    /// [`GuestStatus`](crate::daemon::GuestStatus).
    Status,
    /// Re-read the daemon's configuration file; the answer's `data` is a
    /// [`ReloadSummary`](crate::daemon::ReloadSummary).
    Reload,
    /// Add a guest at run time (not written to the configuration file);
    /// the answer's `data` is its [`GuestStatus`](crate::daemon::GuestStatus).
    AddGuest {
        /// The guest, as a `[[guest]]` table would describe it.
        spec: Box<GuestSpec>,
    },
    /// Stop and remove a guest.
    RemoveGuest {
        /// The guest's name.
        name: String,
    },
}

/// For logs: the command as `ctl` spells it.
impl std::fmt::Display for ControlCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlCommand::HostConnect { ssid } => write!(f, "host-connect {ssid}"),
            ControlCommand::HostDisconnect => f.write_str("host-disconnect"),
            ControlCommand::Signal { percent } => write!(f, "signal {percent}"),
            ControlCommand::ScanResults => f.write_str("scan-results"),
            ControlCommand::ScanMode { mode } => write!(f, "scan-mode {}", mode.name()),
            ControlCommand::Status => f.write_str("status"),
            ControlCommand::Reload => f.write_str("reload"),
            ControlCommand::AddGuest { spec } => write!(f, "add-guest {}", spec.name),
            ControlCommand::RemoveGuest { name } => write!(f, "remove-guest {name}"),
        }
    }
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControlRequest {
    /// Which guest's service to act on; `None` for a single-guest service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// What to do.
    #[serde(flatten)]
    pub command: ControlCommand,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControlResponse {
    /// Whether the command was carried out.
    pub ok: bool,
    /// Why not, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the command answers (status, reload summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl ControlResponse {
    /// Done, nothing to say.
    pub fn ok() -> ControlResponse {
        ControlResponse {
            ok: true,
            error: None,
            data: None,
        }
    }
    /// Done, with an answer.
    pub fn ok_with(data: serde_json::Value) -> ControlResponse {
        ControlResponse {
            ok: true,
            error: None,
            data: Some(data),
        }
    }
    /// Not done, and why.
    pub fn error(message: impl Into<String>) -> ControlResponse {
        ControlResponse {
            ok: false,
            error: Some(message.into()),
            data: None,
        }
    }
}

/// Carries out control requests.
#[async_trait]
pub trait ControlHandler: Send + Sync + 'static {
    /// Carries out one request.
    async fn handle(&self, request: ControlRequest) -> ControlResponse;
}

/// Why a control command could not be applied as a simulated host event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostEventError {
    /// `status`, `reload`, `add-guest` and `remove-guest` act on the
    /// daemon, not on the host.
    #[error("{0} is a daemon command, not a simulated host event")]
    NotAHostEvent(&'static str),
    /// The backend has no simulator capability.
    #[error("the backend is not simulated")]
    NotSimulated,
    /// The SSID of `host-connect` is not one.
    #[error("ssid: {0}")]
    Ssid(#[from] SsidError),
    /// The simulated host refused the event.
    #[error(transparent)]
    Simulated(#[from] SimulatedError),
}

impl ControlCommand {
    /// The command as a simulated host event, if it is one.
    pub fn host_event(&self) -> Result<HostEvent, HostEventError> {
        Ok(match self {
            ControlCommand::HostConnect { ssid } => HostEvent::Connect(Ssid::new(ssid.as_bytes())?),
            ControlCommand::HostDisconnect => HostEvent::Disconnect,
            ControlCommand::Signal { percent } => HostEvent::Signal(*percent),
            ControlCommand::ScanResults => HostEvent::ScanResults,
            ControlCommand::ScanMode { mode } => HostEvent::ScanMode(*mode),
            ControlCommand::Status => return Err(HostEventError::NotAHostEvent("status")),
            ControlCommand::Reload => return Err(HostEventError::NotAHostEvent("reload")),
            ControlCommand::AddGuest { .. } => {
                return Err(HostEventError::NotAHostEvent("add-guest"))
            }
            ControlCommand::RemoveGuest { .. } => {
                return Err(HostEventError::NotAHostEvent("remove-guest"))
            }
        })
    }
}

/// Applies a host-event command to `backend` through its simulator
/// capability.
pub fn apply_host_event(
    backend: &dyn HostWifi,
    command: &ControlCommand,
) -> Result<(), HostEventError> {
    let event = command.host_event()?;
    let simulator = backend.simulator().ok_or(HostEventError::NotSimulated)?;
    Ok(simulator.apply(event)?)
}

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A live service answers on the socket already.
    #[error("another service is already using the control socket {0}")]
    InUse(PathBuf),
    /// The request was sent but no answer came in time: the service may
    /// still carry it out.
    #[error("no answer within {0:?}: the command may still take effect (outcome unknown)")]
    NoAnswer(Duration),
    /// Something that is not a socket is at the path; it is left alone.
    #[error("{0} exists and is not a socket; refusing to replace it (choose another control socket path)")]
    NotASocket(PathBuf),
    /// The socket could not be created.
    #[error("cannot set up the control socket {path}: {source}")]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A client could not reach the service.
    #[error("cannot reach the service at {path}: {source}")]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The exchange failed after connecting (what went wrong).
    #[error("the service did not answer: {0}")]
    Exchange(String),
    /// Control sockets are Unix sockets.
    #[error("control sockets are not available on this platform")]
    Unsupported,
}

#[cfg(unix)]
mod unix {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{UnixListener, UnixStream};
    use tokio::task::JoinSet;
    use tokio_util::sync::CancellationToken;

    use crate::accept_backoff::AcceptBackoff;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Binds a Unix socket at `path` that is owner-only from the moment it
    /// appears there: it is bound inside a fresh 0700 directory beside
    /// `path`, set to 0600, then renamed into place (a rename keeps the
    /// listening socket), so no one else can ever reach it in between.
    fn bind_private(path: &Path, access: SocketAccess) -> io::Result<UnixListener> {
        use std::os::unix::fs::DirBuilderExt;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
        let mut staging = None;
        for attempt in 0..16u32 {
            let mut dir_name = std::ffi::OsString::from(".");
            dir_name.push(name);
            dir_name.push(format!(".{}.{attempt}", std::process::id()));
            let dir = parent.join(dir_name);
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    staging = Some(dir);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        let dir = staging.ok_or_else(|| {
            io::Error::new(io::ErrorKind::AlreadyExists, "no free staging directory")
        })?;
        let inner = dir.join("socket");
        let result = (|| {
            let listener = UnixListener::bind(&inner)?;
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
            // Still inside the 0700 directory: nobody can reach it yet.
            if !access.is_default() {
                access.apply(&inner)?;
            }
            std::fs::rename(&inner, path)?;
            Ok(listener)
        })();
        let _ = std::fs::remove_file(&inner);
        let _ = std::fs::remove_dir(&dir);
        result
    }

    /// Removes `path` only when it is a socket nobody answers on. Anything
    /// else there (a regular file, a symlink, a directory: perhaps the
    /// operator's config given by mistake) is refused, never deleted.
    async fn remove_stale(path: &Path) -> Result<(), ControlError> {
        use std::os::unix::fs::FileTypeExt;
        let bind_err = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(bind_err(e)),
        };
        if !meta.file_type().is_socket() {
            return Err(ControlError::NotASocket(path.to_path_buf()));
        }
        match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
            Ok(Ok(_)) | Err(_) => Err(ControlError::InUse(path.to_path_buf())),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::warn!(path = %path.display(), "replacing a stale control socket nobody answers on");
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(bind_err(e)),
                    _ => Ok(()),
                }
            }
            Ok(Err(e)) => Err(bind_err(e)),
        }
    }

    /// A bound control socket. [`ControlServer::serve`] answers on it until
    /// shutdown; the socket file is removed then, or when the server is
    /// dropped unserved.
    pub struct ControlServer {
        path: PathBuf,
        listener: UnixListener,
        handler: Arc<dyn ControlHandler>,
    }

    impl ControlServer {
        /// Listens on `path`: a stale socket file (nobody answering) is
        /// replaced, a live one is refused; the socket is owner-only.
        pub async fn bind(
            path: &Path,
            handler: Arc<dyn ControlHandler>,
        ) -> Result<ControlServer, ControlError> {
            ControlServer::bind_with(path, handler, SocketAccess::default()).await
        }

        /// [`ControlServer::bind`], with the socket handed to `access`'s
        /// owner and group and given its mode before anyone can connect.
        pub async fn bind_with(
            path: &Path,
            handler: Arc<dyn ControlHandler>,
            access: SocketAccess,
        ) -> Result<ControlServer, ControlError> {
            let bind_err = |source| ControlError::Bind {
                path: path.to_path_buf(),
                source,
            };
            remove_stale(path).await?;
            let listener = bind_private(path, access).map_err(bind_err)?;
            tracing::info!("control socket at {}", path.display());
            Ok(ControlServer {
                path: path.to_path_buf(),
                listener,
                handler,
            })
        }

        /// Where the socket is.
        pub fn path(&self) -> &Path {
            &self.path
        }

        /// Answers requests until `shutdown` is cancelled, then waits for
        /// the requests being handled (a reload is not cut in half) and
        /// removes the socket file.
        pub async fn serve(self, shutdown: CancellationToken) {
            let mut connections = JoinSet::new();
            // The same connections, oldest first, for eviction.
            let mut open: VecDeque<Connection> = VecDeque::new();
            let mut backoff = AcceptBackoff::new("control socket");
            let mut evicted = 0u64;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = self.listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            backoff.succeeded();
                            open.retain(|c| !c.task.is_finished());
                            if open.len() >= MAX_CONNECTIONS && !evict_idle(&mut open, &mut evicted) {
                                connections.spawn(refuse_busy(stream));
                                continue;
                            }
                            let busy = Arc::new(AtomicBool::new(false));
                            let task = connections.spawn(serve_connection(
                                stream,
                                self.handler.clone(),
                                shutdown.clone(),
                                busy.clone(),
                            ));
                            open.push_back(Connection { task, busy });
                        }
                        Err(e) => backoff.failed(&e).await,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            while connections.join_next().await.is_some() {}
            // Drop runs next and removes the file.
        }

        fn remove(&self) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {}: {e}", self.path.display());
                }
            }
        }
    }

    impl Drop for ControlServer {
        fn drop(&mut self) {
            self.remove();
        }
    }

    /// One served connection, as the accept loop tracks it.
    struct Connection {
        task: tokio::task::AbortHandle,
        /// True while a command is being carried out; an idle connection
        /// (waiting for its next request line) may be evicted.
        busy: Arc<AtomicBool>,
    }

    /// Closes the oldest idle connection; false when every one is busy.
    fn evict_idle(open: &mut VecDeque<Connection>, evicted: &mut u64) -> bool {
        let Some(i) = open.iter().position(|c| !c.busy.load(Ordering::Acquire)) else {
            return false;
        };
        if let Some(old) = open.remove(i) {
            old.task.abort();
        }
        *evicted += 1;
        if evicted.is_power_of_two() {
            tracing::warn!(
                evicted = *evicted,
                "{MAX_CONNECTIONS} control connections open; closing the oldest idle one"
            );
        }
        true
    }

    /// Tells a client past the cap, when every connection is busy, to retry.
    async fn refuse_busy(mut stream: UnixStream) {
        let _ = tokio::time::timeout(
            IDLE_TIMEOUT,
            stream.write_all(b"{\"ok\":false,\"error\":\"too many control connections busy\"}\n"),
        )
        .await;
    }

    /// What [`read_line_within`] found.
    enum Line {
        Complete,
        Eof,
        TooLong,
    }

    /// Reads one line into `line` (newline excluded), refusing it as soon
    /// as it grows past `max` bytes, so a client that never sends a newline
    /// costs at most `max` bytes of memory.
    async fn read_line_within<R: tokio::io::AsyncBufRead + Unpin>(
        reader: &mut R,
        line: &mut Vec<u8>,
        max: usize,
    ) -> io::Result<Line> {
        loop {
            let chunk = reader.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(Line::Eof);
            }
            let (take, complete) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if line.len() + take > max {
                return Ok(Line::TooLong);
            }
            line.extend_from_slice(&chunk[..take]);
            reader.consume(take + usize::from(complete));
            if complete {
                return Ok(Line::Complete);
            }
        }
    }

    /// One client: requests in, answers out, until it leaves or shutdown
    /// comes between two requests.
    async fn serve_connection(
        stream: UnixStream,
        handler: Arc<dyn ControlHandler>,
        shutdown: CancellationToken,
        busy: Arc<AtomicBool>,
    ) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            busy.store(false, Ordering::Release);
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                read = tokio::time::timeout(
                    IDLE_TIMEOUT,
                    read_line_within(&mut lines, &mut bytes, MAX_LINE),
                ) => read,
            };
            busy.store(true, Ordering::Release);
            let Ok(read) = read else {
                tracing::debug!("control connection idle for {IDLE_TIMEOUT:?}; closing it");
                return;
            };
            match read {
                Ok(Line::Eof) => return,
                Ok(Line::TooLong) => {
                    let _ = write
                        .write_all(b"{\"ok\":false,\"error\":\"request too long\"}\n")
                        .await;
                    return;
                }
                Ok(Line::Complete) => {}
                Err(e) => {
                    tracing::debug!("control connection: {e}");
                    return;
                }
            }
            let line = String::from_utf8_lossy(&bytes);
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            let response = match serde_json::from_str::<ControlRequest>(text) {
                Ok(request) => {
                    match &request.guest {
                        Some(guest) => {
                            tracing::info!(command = %request.command, %guest, "control request")
                        }
                        None => tracing::info!(command = %request.command, "control request"),
                    }
                    handler.handle(request).await
                }
                Err(e) => ControlResponse::error(format!("bad request: {e}")),
            };
            let mut out = serde_json::to_string(&response)
                .unwrap_or_else(|_| "{\"ok\":false,\"error\":\"internal error\"}".into());
            out.push('\n');
            match tokio::time::timeout(IDLE_TIMEOUT, write.write_all(out.as_bytes())).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// Sends one request to the service at `path` and returns its answer
    /// (waiting at most [`CONTROL_TIMEOUT`]).
    pub async fn request(
        path: &Path,
        request: &ControlRequest,
    ) -> Result<ControlResponse, ControlError> {
        request_within(path, request, CONTROL_TIMEOUT).await
    }

    /// [`request`] with another time limit (a reload may take longer: it
    /// lets removed guests finish their requests).
    pub async fn request_within(
        path: &Path,
        request: &ControlRequest,
        limit: Duration,
    ) -> Result<ControlResponse, ControlError> {
        let exchange = async {
            let stream =
                UnixStream::connect(path)
                    .await
                    .map_err(|source| ControlError::Connect {
                        path: path.to_path_buf(),
                        source,
                    })?;
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_string(request)
                .map_err(|e| ControlError::Exchange(e.to_string()))?;
            line.push('\n');
            write
                .write_all(line.as_bytes())
                .await
                .map_err(|e| ControlError::Exchange(e.to_string()))?;
            let mut answer = String::new();
            BufReader::new(read.take(MAX_ANSWER))
                .read_line(&mut answer)
                .await
                .map_err(|e| ControlError::Exchange(e.to_string()))?;
            serde_json::from_str(answer.trim())
                .map_err(|e| ControlError::Exchange(format!("unreadable answer {answer:?}: {e}")))
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| ControlError::NoAnswer(limit))?
    }
}

#[cfg(unix)]
pub use unix::{request, request_within, ControlServer};

/// Control sockets are Unix sockets: elsewhere binding one says so.
#[cfg(not(unix))]
pub struct ControlServer {
    never: std::convert::Infallible,
}

#[cfg(not(unix))]
impl ControlServer {
    /// Always [`ControlError::Unsupported`] on this platform.
    pub async fn bind(
        _path: &Path,
        _handler: Arc<dyn ControlHandler>,
    ) -> Result<ControlServer, ControlError> {
        Err(ControlError::Unsupported)
    }

    /// Always [`ControlError::Unsupported`] on this platform.
    pub async fn bind_with(
        _path: &Path,
        _handler: Arc<dyn ControlHandler>,
        _access: SocketAccess,
    ) -> Result<ControlServer, ControlError> {
        Err(ControlError::Unsupported)
    }

    /// Never called: no server can be bound here.
    pub async fn serve(self, _shutdown: tokio_util::sync::CancellationToken) {
        match self.never {}
    }
}

/// Sends one request (unavailable on this platform).
#[cfg(not(unix))]
pub async fn request(
    _path: &Path,
    _request: &ControlRequest,
) -> Result<ControlResponse, ControlError> {
    Err(ControlError::Unsupported)
}

/// Sends one request (unavailable on this platform).
#[cfg(not(unix))]
pub async fn request_within(
    _path: &Path,
    _request: &ControlRequest,
    _limit: Duration,
) -> Result<ControlResponse, ControlError> {
    Err(ControlError::Unsupported)
}

/// The environment variable naming the control socket (for `serve` and
/// `ctl`; `--control` wins over it).
pub const CONTROL_ENV: &str = "PROXY_WIFI_CONTROL";

/// The system service's control socket.
pub const SYSTEM_CONTROL_SOCKET: &str = "/run/proxy-wifi/control.sock";

/// Where a daemon puts its control socket when neither `--control`,
/// [`CONTROL_ENV`] nor the file names one: `$RUNTIME_DIRECTORY/control.sock`
/// under systemd (`RuntimeDirectory=proxy-wifi`: /run/proxy-wifi for the
/// system unit, $XDG_RUNTIME_DIR/proxy-wifi for a user unit), else
/// [`SYSTEM_CONTROL_SOCKET`] for root, else
/// `$XDG_RUNTIME_DIR/proxy-wifi/control.sock`; `None` when a user has no
/// runtime directory.
pub fn default_server_path() -> Option<PathBuf> {
    server_path_from(&|k| std::env::var_os(k), is_root())
}

/// Where `ctl` looks when neither `--control` nor [`CONTROL_ENV`] says:
/// the user's own service (`$XDG_RUNTIME_DIR/proxy-wifi/control.sock`) if
/// one is there, else the system service's.
pub fn default_client_path() -> PathBuf {
    client_path_from(&|k| std::env::var_os(k), is_root(), &|p| p.exists())
}

type Env<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

fn user_path(env: Env<'_>) -> Option<PathBuf> {
    let dir = PathBuf::from(env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty())?);
    dir.is_absolute()
        .then(|| dir.join("proxy-wifi").join("control.sock"))
}

fn server_path_from(env: Env<'_>, root: bool) -> Option<PathBuf> {
    if let Some(dirs) = env("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd lists one directory per RuntimeDirectory= entry, by ':'.
        let first = dirs.to_string_lossy().split(':').next().map(PathBuf::from);
        if let Some(dir) = first.filter(|d| d.is_absolute()) {
            return Some(dir.join("control.sock"));
        }
    }
    if root {
        return Some(PathBuf::from(SYSTEM_CONTROL_SOCKET));
    }
    user_path(env)
}

fn client_path_from(env: Env<'_>, root: bool, exists: &dyn Fn(&Path) -> bool) -> PathBuf {
    if !root {
        if let Some(path) = user_path(env).filter(|p| exists(p)) {
            return path;
        }
    }
    PathBuf::from(SYSTEM_CONTROL_SOCKET)
}

#[cfg(unix)]
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

/// Creates the directory a default control socket lives in (owner-only),
/// when it is missing.
pub fn create_parent(path: &Path) -> io::Result<()> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(parent)
}

// Unix paths: "/run/..." is not absolute on Windows.
#[cfg(all(test, unix))]
mod default_path_tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| std::ffi::OsString::from(v))
        }
    }

    #[test]
    fn the_service_picks_systemd_root_or_user_directories() {
        let systemd = env(&[
            ("RUNTIME_DIRECTORY", "/run/proxy-wifi"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ]);
        assert_eq!(
            server_path_from(&systemd, false),
            Some(PathBuf::from("/run/proxy-wifi/control.sock"))
        );
        let two = env(&[("RUNTIME_DIRECTORY", "/run/a:/run/b")]);
        assert_eq!(
            server_path_from(&two, false),
            Some(PathBuf::from("/run/a/control.sock"))
        );
        let user = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(
            server_path_from(&user, false),
            Some(PathBuf::from("/run/user/1000/proxy-wifi/control.sock"))
        );
        assert_eq!(
            server_path_from(&user, true),
            Some(PathBuf::from(SYSTEM_CONTROL_SOCKET))
        );
        assert_eq!(server_path_from(&env(&[]), false), None);
        assert_eq!(
            server_path_from(&env(&[("XDG_RUNTIME_DIR", "relative")]), false),
            None
        );
    }

    #[test]
    fn ctl_finds_the_users_service_else_the_systems() {
        let user = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        let mine = PathBuf::from("/run/user/1000/proxy-wifi/control.sock");
        assert_eq!(client_path_from(&user, false, &|p| p == mine), mine);
        assert_eq!(
            client_path_from(&user, false, &|_| false),
            PathBuf::from(SYSTEM_CONTROL_SOCKET)
        );
        assert_eq!(
            client_path_from(&user, true, &|_| true),
            PathBuf::from(SYSTEM_CONTROL_SOCKET)
        );
        assert_eq!(
            client_path_from(&env(&[]), false, &|_| true),
            PathBuf::from(SYSTEM_CONTROL_SOCKET)
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::wifi::simulated::SimulatedWifi;
    use std::os::unix::fs::PermissionsExt;

    /// Applies every request to one backend, as a single-guest service would.
    struct HostEvents(Option<Arc<dyn HostWifi>>);

    #[async_trait]
    impl ControlHandler for HostEvents {
        async fn handle(&self, request: ControlRequest) -> ControlResponse {
            if request.guest.is_some() {
                return ControlResponse::error("no guests here");
            }
            let Some(host) = &self.0 else {
                return ControlResponse::error("no backend");
            };
            match apply_host_event(&**host, &request.command) {
                Ok(()) => ControlResponse::ok(),
                Err(e) => ControlResponse::error(e.to_string()),
            }
        }
    }

    #[test]
    fn wire_format_is_pinned() {
        let r = ControlRequest {
            guest: None,
            command: ControlCommand::HostConnect {
                ssid: "FakeOpen".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"command":"host-connect","ssid":"FakeOpen"}"#
        );
        let r: ControlRequest =
            serde_json::from_str(r#"{"command":"scan-mode","mode":"async","guest":"vm1"}"#)
                .unwrap();
        assert_eq!(r.guest.as_deref(), Some("vm1"));
        assert_eq!(
            r.command,
            ControlCommand::ScanMode {
                mode: ScanMode::Async
            }
        );
        assert_eq!(
            serde_json::to_string(&ControlResponse::error("x")).unwrap(),
            r#"{"ok":false,"error":"x"}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlResponse::ok()).unwrap(),
            r#"{"ok":true}"#
        );
    }

    #[tokio::test]
    async fn socket_serves_requests_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        // A stale socket (bound, then its listener gone) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let wifi = SimulatedWifi::reference();
        let mut events = wifi.subscribe();
        let server = ControlServer::bind(
            &path,
            Arc::new(HostEvents(Some(wifi.clone() as Arc<dyn HostWifi>))),
        )
        .await
        .unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let served = tokio::spawn(server.serve(shutdown.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing is left of the private directory it was bound in.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ctl.sock")]);
        // A live one is refused.
        assert!(matches!(
            ControlServer::bind(&path, Arc::new(HostEvents(None))).await,
            Err(ControlError::InUse(_))
        ));
        let ask = |command| ControlRequest {
            guest: None,
            command,
        };
        assert_eq!(
            request(&path, &ask(ControlCommand::Signal { percent: 80 }))
                .await
                .unwrap(),
            ControlResponse::ok()
        );
        assert!(matches!(
            events.recv().await.unwrap(),
            crate::wifi::InterfaceEvent::SignalQuality { percent: 80, .. }
        ));
        let r = request(&path, &ask(ControlCommand::HostDisconnect))
            .await
            .unwrap();
        assert!(!r.ok && r.error.unwrap().contains("not connected"));
        let r = request(
            &path,
            &ControlRequest {
                guest: Some("vm1".into()),
                command: ControlCommand::ScanResults,
            },
        )
        .await
        .unwrap();
        assert!(!r.ok);
        request(
            &path,
            &ask(ControlCommand::ScanMode {
                mode: ScanMode::Async,
            }),
        )
        .await
        .unwrap();
        assert_eq!(wifi.scan_mode(), ScanMode::Async);
        shutdown.cancel();
        served.await.unwrap();
        assert!(!path.exists());
        assert!(matches!(
            request(&path, &ask(ControlCommand::ScanResults)).await,
            Err(ControlError::Connect { .. })
        ));
    }

    #[tokio::test]
    async fn refuses_to_replace_what_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("proxy-wifi.toml");
        std::fs::write(&config, b"backend = \"simulated\"\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&config, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for path in [&config, &link, &dangling, &dir.path().to_path_buf()] {
            let r = ControlServer::bind(path, Arc::new(HostEvents(None))).await;
            let e = r.map(|_| ()).unwrap_err();
            assert!(e.to_string().contains("not a socket"), "{path:?}: {e}");
        }
        assert_eq!(
            std::fs::read(&config).unwrap(),
            b"backend = \"simulated\"\n"
        );
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[tokio::test]
    async fn an_overlong_line_is_refused_while_reading() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let server = ControlServer::bind(&path, Arc::new(HostEvents(None)))
            .await
            .unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let served = tokio::spawn(server.serve(shutdown.clone()));
        let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
        // One byte past the limit, no newline: the service must not wait
        // for (and buffer) more before refusing.
        s.write_all(&vec![b'x'; MAX_LINE + 1]).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut answer))
            .await
            .expect("the service kept reading past the line limit")
            .unwrap();
        assert_eq!(answer, "{\"ok\":false,\"error\":\"request too long\"}\n");
        shutdown.cancel();
        served.await.unwrap();
    }

    #[test]
    fn host_events_need_a_simulator_and_a_host_event() {
        let hub = crate::wifi::EventHub::new();
        assert_eq!(
            apply_host_event(&hub, &ControlCommand::ScanResults),
            Err(HostEventError::NotSimulated)
        );
        let wifi = SimulatedWifi::reference();
        assert_eq!(
            apply_host_event(&*wifi, &ControlCommand::Reload),
            Err(HostEventError::NotAHostEvent("reload"))
        );
        assert!(matches!(
            apply_host_event(
                &*wifi,
                &ControlCommand::HostConnect {
                    ssid: "x".repeat(33)
                }
            ),
            Err(HostEventError::Ssid(_))
        ));
        assert_eq!(
            apply_host_event(&*wifi, &ControlCommand::Signal { percent: 101 }),
            Err(HostEventError::Simulated(SimulatedError::BadPercent(101)))
        );
    }
}
