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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::protocol::{Ssid, SsidError};
use crate::wifi::{HostEvent, HostWifi, ScanMode, SimulatedError};

/// How long a client waits for the service's answer.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line accepted.
#[cfg(unix)]
const MAX_LINE: usize = 64 * 1024;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ControlCommand {
    /// The simulated host connects to a network.
    HostConnect { ssid: String },
    /// The simulated host disconnects.
    HostDisconnect,
    /// The link quality of the simulated host's connection changes.
    Signal { percent: u8 },
    /// A host scan nobody waited for delivers results.
    ScanResults,
    /// Scans answer synchronously or asynchronously.
    ScanMode { mode: ScanMode },
    /// Per-guest status (daemon): the answer's `data` is a list of
    /// [`GuestStatus`](crate::daemon::GuestStatus).
    Status,
    /// Re-read the daemon's configuration file; the answer's `data` is a
    /// [`ReloadSummary`](crate::daemon::ReloadSummary).
    Reload,
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
        }
    }
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControlRequest {
    /// Which guest's service to act on; `None` for a single-guest service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    #[serde(flatten)]
    pub command: ControlCommand,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the command answers (status, reload summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl ControlResponse {
    pub fn ok() -> ControlResponse {
        ControlResponse {
            ok: true,
            error: None,
            data: None,
        }
    }
    pub fn ok_with(data: serde_json::Value) -> ControlResponse {
        ControlResponse {
            ok: true,
            error: None,
            data: Some(data),
        }
    }
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
    async fn handle(&self, request: ControlRequest) -> ControlResponse;
}

/// Why a control command could not be applied as a simulated host event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostEventError {
    /// `status` and `reload` act on the daemon, not on the host.
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
    #[error("another service is already using the control socket {0}")]
    InUse(PathBuf),
    #[error("cannot set up the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot reach the service at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the service did not answer: {0}")]
    Exchange(String),
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

    /// Binds a Unix socket at `path` that is owner-only from the moment it
    /// appears there: it is bound inside a fresh 0700 directory beside
    /// `path`, set to 0600, then renamed into place (a rename keeps the
    /// listening socket), so no one else can ever reach it in between.
    fn bind_private(path: &Path) -> io::Result<UnixListener> {
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
            std::fs::rename(&inner, path)?;
            Ok(listener)
        })();
        let _ = std::fs::remove_file(&inner);
        let _ = std::fs::remove_dir(&dir);
        result
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
            let bind_err = |source| ControlError::Bind {
                path: path.to_path_buf(),
                source,
            };
            if path.exists() {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(ControlError::InUse(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            let listener = bind_private(path).map_err(bind_err)?;
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
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = self.listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(serve_connection(
                                stream,
                                self.handler.clone(),
                                shutdown.clone(),
                            ));
                        }
                        Err(e) => {
                            tracing::warn!("control socket accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
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

    /// One client: requests in, answers out, until it leaves or shutdown
    /// comes between two requests.
    async fn serve_connection(
        stream: UnixStream,
        handler: Arc<dyn ControlHandler>,
        shutdown: CancellationToken,
    ) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read.take(MAX_LINE as u64 * 64));
        let mut line = String::new();
        loop {
            line.clear();
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                read = lines.read_line(&mut line) => read,
            };
            match read {
                Ok(0) => return,
                Ok(_) if line.len() > MAX_LINE => {
                    let _ = write
                        .write_all(b"{\"ok\":false,\"error\":\"request too long\"}\n")
                        .await;
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("control connection: {e}");
                    return;
                }
            }
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
            if write.write_all(out.as_bytes()).await.is_err() {
                return;
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
            BufReader::new(read.take(MAX_LINE as u64 * 16))
                .read_line(&mut answer)
                .await
                .map_err(|e| ControlError::Exchange(e.to_string()))?;
            serde_json::from_str(answer.trim())
                .map_err(|e| ControlError::Exchange(format!("unreadable answer {answer:?}: {e}")))
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| ControlError::Exchange("timed out".into()))?
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
        // A stale file is replaced.
        std::fs::write(&path, b"stale").unwrap();
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
