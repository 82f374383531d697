//! One daemon for many VMs: a configuration file with one `[[guest]]` per
//! VM, one shared host backend, per-guest policy, a control socket and
//! metrics.
//!
//! Each guest is one [`Service`]: its own listener, notification sender,
//! handler (session counter, connection state) and observer queue. Only the
//! host backend is shared, so one guest's slow or hostile traffic never
//! waits in front of another guest's requests. Policy is a per-guest
//! [`GuestPolicy`] observer over a daemon-wide [`Registry`] (see
//! [`policy`]).
//!
//! [`Daemon::reload`] re-reads the configuration file: guests that are gone
//! are stopped, new ones started, changed ones restarted; unchanged guests
//! keep running untouched (listener, session counter, connection). A file
//! with an error, or a change to a global setting, changes nothing.
//!
//! Guests can also be added and removed at run time ([`Daemon::add_guest`],
//! [`Daemon::remove_guest`]; `proxy-wifi ctl add-guest` / `remove-guest`),
//! for VMs whose address is only known when they start (libvirt's
//! `<cid auto='yes'/>`, orchestrators). A run-time guest is checked exactly
//! as a `[[guest]]` table is, lives in memory only (it is never written to
//! the file, and a restart of the service forgets it), and a reload leaves
//! it alone unless the file names a guest of the same name, which then
//! takes its place.

pub mod config;
#[cfg(windows)]
mod console;
mod fds;
mod policy;
mod sd;
mod signals;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::wifi::BackendKind;
pub use config::{
    check_connect_timeout, ConfigError, DaemonConfig, GuestConfig, GuestSpec, PolicyConfig,
};
pub(crate) use policy::{GuestPolicy, Policy, Registry};
pub use sd::{notify_ready, notify_reloading, notify_stopping};

use crate::control::{
    ControlCommand, ControlError, ControlHandler, ControlRequest, ControlResponse, ControlServer,
};
use crate::handler::HandlerSettings;
use crate::metrics::{Metrics, MetricsError};
use crate::service::{NotificationReach, Service, ServiceError};
use crate::wifi::{BackendError, BackendSettings, HostWifi};

/// Why the daemon could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    /// The configuration is invalid.
    Config(#[from] ConfigError),
    #[error(transparent)]
    /// The host Wi-Fi backend could not be opened.
    Backend(#[from] BackendError),
    #[error(transparent)]
    /// The control socket could not be served.
    Control(#[from] ControlError),
    #[error(transparent)]
    /// The metrics endpoint could not be served.
    Metrics(#[from] MetricsError),
    #[error("guest {guest}: {source}")]
    /// A guest's service could not start.
    Guest {
        /// The guest's name.
        guest: String,
        #[source]
        /// Why its service could not start.
        source: ServiceError,
    },
    #[error("{0}: restart the daemon to apply it; nothing was changed")]
    /// A reload changed a daemon-wide setting (named) that needs a restart.
    GlobalChanged(String),
    #[error(transparent)]
    /// Too few file descriptors for the guests.
    DescriptorLimit(#[from] fds::DescriptorLimitError),
    #[error("the daemon was started without a configuration file; there is nothing to reload")]
    /// `reload` without a configuration file.
    NoConfigFile,
    /// A guest's name or endpoint is taken by another guest.
    #[error("{0}")]
    Conflict(String),
    /// No guest has that name.
    #[error("{0}")]
    UnknownGuest(String),
}

/// One guest's line of `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestStatus {
    /// The guest's name.
    pub name: String,
    /// The configured transport.
    pub transport: String,
    /// Where requests are accepted (the bound port with port 0).
    pub listening: Option<String>,
    /// The network the guest is connected to.
    pub connected_ssid: Option<String>,
    /// `host-mirroring` or `guest-directed`, when connected.
    pub connection: Option<String>,
    /// The session id of the last connect response (0: none yet).
    pub session_id: u64,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered INVALID.
    pub invalid_requests: u64,
    /// Notifications delivered.
    pub notifications_sent: u64,
    /// Notifications dropped (queue full, no guest listening, undeliverable).
    pub notifications_dropped: u64,
    /// Added at run time (`ctl add-guest`), not from the file.
    #[serde(default)]
    pub runtime: bool,
    /// The host backend's health (one backend serves every guest, so every
    /// guest's line carries the same). Absent from older services' answers.
    #[serde(default)]
    pub backend: BackendStatus,
}

/// The host backend's health as `status` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendStatus {
    /// The configured backend (`networkmanager`, `auto`, ...).
    pub kind: String,
    /// `up`, `service-down` or `reconnecting` (see
    /// [`BackendHealth::label`](crate::wifi::BackendHealth::label)).
    pub state: String,
    /// The state and why, in a line.
    pub detail: String,
}

/// For logs: `added=a,b removed=- restarted=c unchanged=d`.
impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "-".to_string()
            } else {
                names.join(",")
            }
        };
        write!(
            f,
            "added={} removed={} restarted={} unchanged={}",
            list(&self.added),
            list(&self.removed),
            list(&self.restarted),
            list(&self.unchanged)
        )
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadSummary {
    /// Guests started.
    pub added: Vec<String>,
    /// Guests stopped.
    pub removed: Vec<String>,
    /// Guests whose configuration changed, stopped and started again.
    pub restarted: Vec<String>,
    /// Guests left running as they were.
    pub unchanged: Vec<String>,
}

struct Guest {
    config: GuestConfig,
    service: Service,
    /// Retires the guest's policy observer when the guest is removed.
    retired: Arc<std::sync::atomic::AtomicBool>,
    /// Added at run time, not named by the file.
    runtime: bool,
}

struct State {
    config: DaemonConfig,
    /// The file's guests in configuration order, then run-time guests in
    /// the order they were added.
    guests: Vec<Guest>,
}

/// Settings given on the command line that override the file's (and keep
/// overriding it across reloads).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces the file's `control_socket`.
    pub control_socket: Option<PathBuf>,
    /// Replaces the file's `metrics`.
    pub metrics: Option<SocketAddr>,
}

impl Overrides {
    fn apply(&self, mut config: DaemonConfig) -> DaemonConfig {
        if let Some(c) = &self.control_socket {
            config.control_socket = Some(c.clone());
        }
        if let Some(m) = self.metrics {
            config.metrics = Some(m);
        }
        config
    }
}

/// The running daemon: the host backend and one service per guest.
pub struct Daemon {
    config_path: Option<PathBuf>,
    overrides: Overrides,
    host: Arc<dyn HostWifi>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    state: tokio::sync::Mutex<State>,
    /// Keeps the backend health metrics current; aborted by `stop`.
    backend_health: JoinHandle<()>,
}

impl Daemon {
    /// The whole life of a daemon: starts it from `config`, serves until
    /// `shutdown` is cancelled or the operating system asks it to stop
    /// (SIGHUP reloads), then stops everything once. `config_path` is what
    /// a reload re-reads.
    pub async fn serve(
        config: DaemonConfig,
        config_path: Option<PathBuf>,
        overrides: Overrides,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        let daemon = Daemon::start(config, config_path, overrides).await?;
        daemon.run(shutdown).await
    }

    /// Serves a started daemon: its control socket and metrics endpoint,
    /// readiness for the service manager, signals. Every task it starts
    /// watches `shutdown`, the daemon's one shutdown primitive; whatever
    /// ends the run (cancellation, a signal, a socket that cannot be
    /// bound), teardown is the same single path: cancel, wait for the
    /// tasks, stop every guest (their observers get every event they are
    /// owed), shut the backend down.
    pub async fn run(self: &Arc<Self>, shutdown: CancellationToken) -> Result<(), DaemonError> {
        let tasks = TaskTracker::new();
        let result = self.serve_until(&shutdown, &tasks).await;
        tracing::info!("shutting down");
        notify_stopping();
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        self.stop().await;
        tracing::info!("stopped");
        // A console close, logoff or shutdown handler holds the process
        // open until now.
        #[cfg(windows)]
        console::stopped();
        result
    }

    async fn serve_until(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<(), DaemonError> {
        let config = self.config().await;
        if let Some(path) = &config.control_socket {
            let handler = Arc::new(DaemonControl::new(self.clone()));
            let server =
                ControlServer::bind_with(path, handler, config.control_socket_access).await?;
            tasks.spawn(server.serve(shutdown.clone()));
        }
        if let Some(address) = config.metrics {
            let listener = crate::metrics::bind(address).await?;
            let bound = listener.local_addr().map_or(address, |a| a);
            tracing::info!("metrics on http://{bound}/metrics");
            tasks.spawn(crate::metrics::serve(
                listener,
                self.metrics.clone(),
                shutdown.clone(),
            ));
        }
        notify_ready();
        tracing::info!("ready");
        let mut signals = signals::Signals::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                signal = signals.next() => match signal {
                    signals::Signal::Stop => return Ok(()),
                    signals::Signal::Reload => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        if let Err(e) = self.reload().await {
                            tracing::error!("reload failed: {e}");
                        }
                    }
                },
            }
        }
    }

    /// Starts the backend and every guest (all or nothing). `config_path`
    /// is what [`Daemon::reload`] re-reads.
    pub async fn start(
        config: DaemonConfig,
        config_path: Option<PathBuf>,
        overrides: Overrides,
    ) -> Result<Arc<Daemon>, DaemonError> {
        let config = overrides.apply(config);
        fds::ensure(config.guests.len())?;
        if config.guests.is_empty() {
            tracing::warn!("no guests configured; add [[guest]] tables and reload");
        }
        let settings = BackendSettings {
            simulated_networks: config.simulated_networks.clone(),
            iwd_state_dir: config.iwd_state_dir.clone(),
        };
        let host = crate::wifi::open(config.backend, &settings).await?;
        let metrics = Arc::new(Metrics::new());
        let backend_health = tokio::spawn(follow_backend_health(
            host.clone(),
            config.backend.name(),
            metrics.clone(),
        ));
        let daemon = Daemon {
            config_path,
            overrides,
            host,
            backend_health,
            metrics,
            registry: Registry::new(),
            state: tokio::sync::Mutex::new(State {
                config: config.clone(),
                guests: Vec::new(),
            }),
        };
        tracing::info!(
            backend = config.backend.name(),
            guests = config.guests.len(),
            "starting"
        );
        let mut started = Vec::new();
        for g in &config.guests {
            match daemon.start_guest(g).await {
                Ok(guest) => started.push(guest),
                Err(e) => {
                    daemon.stop_guests(started).await;
                    daemon.backend_health.abort();
                    daemon.host.shutdown().await;
                    return Err(e);
                }
            }
        }
        daemon.metrics.set_guests(started.len());
        daemon.state.lock().await.guests = started;
        Ok(Arc::new(daemon))
    }

    fn build_service(&self, g: &GuestConfig) -> (Service, Arc<std::sync::atomic::AtomicBool>) {
        let defaults = HandlerSettings::default();
        let settings = HandlerSettings {
            scan_layout: g.scan_layout,
            scan_min_latency: g.scan_min_latency.unwrap_or(defaults.scan_min_latency),
            notify_guest_on_host_disconnect: g.notify_host_disconnect,
            connect_timeout: g.connect_timeout.unwrap_or(defaults.connect_timeout),
            ..defaults
        };
        let observer = GuestPolicy::new(
            g.name.clone(),
            Policy::from_config(&g.policy),
            self.registry.clone(),
        );
        let retired = observer.retired_flag();
        let mut builder = Service::builder(g.transport.clone(), self.host.clone())
            .settings(settings)
            .notification_deadline(
                g.notification_deadline
                    .unwrap_or(crate::service::DEFAULT_NOTIFICATION_DEADLINE),
            )
            .observer(Arc::new(observer))
            .name(g.name.clone())
            .socket_access(g.socket_access)
            .metrics(self.metrics.clone());
        if !g.fake_networks.is_empty() {
            let list = g.fake_networks.clone();
            builder = builder.fake_networks(move || list.clone());
        }
        (builder.build(), retired)
    }

    async fn start_guest(&self, g: &GuestConfig) -> Result<Guest, DaemonError> {
        let (service, retired) = self.build_service(g);
        service.start().await.map_err(|source| DaemonError::Guest {
            guest: g.name.clone(),
            source,
        })?;
        for (ssid, bssid) in &g.fake_networks {
            tracing::info!(guest = %g.name, %ssid, %bssid, "fake network");
        }
        let at = service.local_description().await.unwrap_or_default();
        tracing::info!(guest = %g.name, transport = %g.transport, "guest {} listening on {at}", g.name);
        Ok(Guest {
            config: g.clone(),
            service,
            retired,
            runtime: false,
        })
    }

    async fn stop_guest(&self, guest: Guest) {
        guest.service.stop().await;
        // Observer calls may still be running on the blocking pool: retire
        // the policy first, so none of them re-creates a hold afterwards.
        guest
            .retired
            .store(true, std::sync::atomic::Ordering::Release);
        self.registry.forget(&guest.config.name);
        self.metrics.forget_guest(&guest.config.name);
        tracing::info!(guest = %guest.config.name, "guest stopped");
    }

    async fn stop_guests(&self, guests: Vec<Guest>) {
        futures::future::join_all(guests.into_iter().map(|g| self.stop_guest(g))).await;
    }

    /// The shared Prometheus registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configuration in force (with command-line overrides).
    pub async fn config(&self) -> DaemonConfig {
        self.state.lock().await.config.clone()
    }

    /// The shared host backend.
    pub fn host(&self) -> &Arc<dyn HostWifi> {
        &self.host
    }

    /// Names of the guests, in configuration order.
    pub async fn guest_names(&self) -> Vec<String> {
        let state = self.state.lock().await;
        state.guests.iter().map(|g| g.config.name.clone()).collect()
    }

    /// For a host event that notifies guests (`signal`, `scan-results`):
    /// the guests (all, or the one named) that can receive its
    /// notification now. A signal change goes to a guest connected through
    /// one of the backend's interfaces; scan results to a guest that does
    /// not use the legacy layout; either only once the guest has made a
    /// request. `None` for other commands.
    pub async fn notification_recipients(
        &self,
        command: &ControlCommand,
        only: Option<&str>,
    ) -> Option<Vec<String>> {
        let host_interfaces: Vec<_> = self.host.interfaces().iter().map(|i| i.id()).collect();
        let reaches = |reach: NotificationReach| match command {
            ControlCommand::Signal { .. } => {
                reach.guest_seen
                    && reach
                        .connected_on
                        .is_some_and(|id| host_interfaces.contains(&id))
            }
            _ => reach.guest_seen && reach.takes_scan_results,
        };
        if !matches!(
            command,
            ControlCommand::Signal { .. } | ControlCommand::ScanResults
        ) {
            return None;
        }
        let state = self.state.lock().await;
        let mut recipients = Vec::new();
        for g in state
            .guests
            .iter()
            .filter(|g| only.is_none_or(|n| n == g.config.name))
        {
            if g.service.notification_reach().await.is_some_and(&reaches) {
                recipients.push(g.config.name.clone());
            }
        }
        Some(recipients)
    }

    /// Status of every guest, or of the one named.
    pub async fn status(&self, only: Option<&str>) -> Result<Vec<GuestStatus>, String> {
        let state = self.state.lock().await;
        if let Some(name) = only {
            if !state.guests.iter().any(|g| g.config.name == name) {
                return Err(unknown_guest(name));
            }
        }
        let health = self.host.health().borrow().clone();
        let backend = BackendStatus {
            kind: state.config.backend.name().to_string(),
            state: health.label().to_string(),
            detail: health.to_string(),
        };
        let mut out = Vec::new();
        for g in state
            .guests
            .iter()
            .filter(|g| only.is_none_or(|n| n == g.config.name))
        {
            let stats = g.service.stats();
            let handler = g.service.handler_status().await.unwrap_or_default();
            let link = handler.connection;
            out.push(GuestStatus {
                name: g.config.name.clone(),
                transport: g.config.transport.to_string(),
                listening: g.service.local_description().await,
                connected_ssid: link.as_ref().map(|l| l.ssid.to_string_lossy()),
                connection: link.as_ref().map(|l| l.kind.to_string()),
                session_id: handler.session_id,
                requests: stats.requests,
                invalid_requests: stats.invalid_requests,
                notifications_sent: stats.notifications_sent,
                notifications_dropped: stats.notifications_dropped,
                runtime: g.runtime,
                backend: backend.clone(),
            });
        }
        Ok(out)
    }

    /// Adds and starts a guest at run time, checked as a `[[guest]]` table
    /// of the file would be (and against every guest running). It is not
    /// written to the file; see the module documentation.
    pub async fn add_guest(&self, spec: &GuestSpec) -> Result<GuestStatus, DaemonError> {
        let g = spec.check()?;
        let mut state = self.state.lock().await;
        if let Some(why) = config::guest_conflict(state.guests.iter().map(|g| &g.config), &g) {
            return Err(DaemonError::Conflict(why));
        }
        fds::ensure(state.guests.len() + 1)?;
        let mut guest = self.start_guest(&g).await?;
        guest.runtime = true;
        state.guests.push(guest);
        self.metrics.set_guests(state.guests.len());
        drop(state);
        tracing::info!(guest = %g.name, "guest added at run time (not written to the configuration file)");
        let mut status = self
            .status(Some(&g.name))
            .await
            .map_err(DaemonError::UnknownGuest)?;
        status
            .pop()
            .ok_or_else(|| DaemonError::UnknownGuest(unknown_guest(&g.name)))
    }

    /// Stops and removes a guest (its in-flight requests finish first). A
    /// guest the file names comes back at the next reload.
    pub async fn remove_guest(&self, name: &str) -> Result<(), DaemonError> {
        let mut state = self.state.lock().await;
        let Some(i) = state.guests.iter().position(|g| g.config.name == name) else {
            return Err(DaemonError::UnknownGuest(unknown_guest(name)));
        };
        let guest = state.guests.remove(i);
        self.metrics.set_guests(state.guests.len());
        self.stop_guest(guest).await;
        Ok(())
    }

    /// Re-reads the configuration file and applies the guest changes; see
    /// the module documentation. Tells the service manager RELOADING=1 and
    /// READY=1 around it.
    pub async fn reload(&self) -> Result<ReloadSummary, DaemonError> {
        let path = self.config_path.clone().ok_or(DaemonError::NoConfigFile)?;
        notify_reloading();
        let result = self.reload_from(&path).await;
        notify_ready();
        match &result {
            Ok(summary) => tracing::info!(%summary, "configuration reloaded"),
            Err(e) => tracing::warn!("reload refused: {e}"),
        }
        result
    }

    async fn reload_from(&self, path: &std::path::Path) -> Result<ReloadSummary, DaemonError> {
        let new = self.overrides.apply(DaemonConfig::load(path)?);
        let mut state = self.state.lock().await;
        let old = &state.config;
        // Daemon-wide settings a running daemon cannot take over.
        let globals = [
            ("backend", new.backend != old.backend),
            ("iwd_state_dir", new.iwd_state_dir != old.iwd_state_dir),
            (
                "simulated_network",
                new.simulated_networks != old.simulated_networks,
            ),
            ("control_socket", new.control_socket != old.control_socket),
            (
                "control_socket_owner/group/mode",
                new.control_socket_access != old.control_socket_access,
            ),
            ("metrics", new.metrics != old.metrics),
            ("log_level", new.log_level != old.log_level),
            ("threads", new.threads != old.threads),
        ];
        let changed: Vec<&str> = globals
            .iter()
            .filter(|(_, differs)| *differs)
            .map(|(name, _)| *name)
            .collect();
        if !changed.is_empty() {
            return Err(DaemonError::GlobalChanged(format!(
                "global setting(s) changed ({})",
                changed.join(", ")
            )));
        }

        let wanted: HashMap<&str, &GuestConfig> =
            new.guests.iter().map(|g| (g.name.as_str(), g)).collect();
        // Run-time guests the file does not name stay as they are; the
        // file's new or changed guests must not collide with them.
        let staying: Vec<&GuestConfig> = state
            .guests
            .iter()
            .filter(|g| g.runtime && !wanted.contains_key(g.config.name.as_str()))
            .map(|g| &g.config)
            .collect();
        for g in &new.guests {
            let unchanged = state.guests.iter().any(|old| old.config == *g);
            if unchanged {
                continue;
            }
            if let Some(why) = config::guest_conflict(staying.iter().copied(), g) {
                return Err(DaemonError::Conflict(format!(
                    "{why} (added at run time; remove-guest it first)"
                )));
            }
        }
        fds::ensure(new.guests.len() + staying.len())?;
        let mut summary = ReloadSummary::default();
        let mut keep: HashMap<String, Guest> = HashMap::new();
        let mut retired: Vec<Guest> = Vec::new();
        let mut runtime_kept: Vec<Guest> = Vec::new();
        for guest in std::mem::take(&mut state.guests) {
            match wanted.get(guest.config.name.as_str()) {
                Some(g) if **g == guest.config => {
                    summary.unchanged.push(guest.config.name.clone());
                    keep.insert(guest.config.name.clone(), guest);
                }
                Some(_) => {
                    summary.restarted.push(guest.config.name.clone());
                    retired.push(guest);
                }
                None if guest.runtime => runtime_kept.push(guest),
                None => {
                    summary.removed.push(guest.config.name.clone());
                    retired.push(guest);
                }
            }
        }
        // Stop first: a new or changed guest may take over an endpoint.
        let retired_configs: Vec<(GuestConfig, bool)> = retired
            .iter()
            .map(|g| (g.config.clone(), g.runtime))
            .collect();
        self.stop_guests(retired).await;
        let mut started: Vec<Guest> = Vec::new();
        let mut failure = None;
        for g in new.guests.iter().filter(|g| !keep.contains_key(&g.name)) {
            match self.start_guest(g).await {
                Ok(guest) => started.push(guest),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            // Put back what was there (the restarted ones start afresh).
            self.stop_guests(started).await;
            let mut restored = Vec::new();
            for (g, runtime) in &retired_configs {
                match self.start_guest(g).await {
                    Ok(mut guest) => {
                        guest.runtime = *runtime;
                        restored.push(guest)
                    }
                    Err(e) => tracing::error!("cannot restore guest {}: {e}", g.name),
                }
            }
            // Back as it was: the file's guests in its order, then the
            // run-time ones.
            let mut by_name: HashMap<String, Guest> = keep;
            by_name.extend(restored.into_iter().map(|g| (g.config.name.clone(), g)));
            let mut guests: Vec<Guest> = state
                .config
                .guests
                .iter()
                .filter_map(|g| by_name.remove(&g.name))
                .collect();
            let mut runtime: Vec<Guest> = by_name.into_values().collect();
            runtime.extend(guests.extract_if(.., |g| g.runtime));
            guests.extend(runtime);
            guests.extend(runtime_kept);
            state.guests = guests;
            self.metrics.set_guests(state.guests.len());
            return Err(e);
        }
        for g in &started {
            if !summary.restarted.contains(&g.config.name) {
                summary.added.push(g.config.name.clone());
            }
        }
        let mut by_name = keep;
        by_name.extend(started.into_iter().map(|g| (g.config.name.clone(), g)));
        // The file names them all now: they are the file's.
        for guest in by_name.values_mut() {
            guest.runtime = false;
        }
        let mut guests: Vec<Guest> = new
            .guests
            .iter()
            .filter_map(|g| by_name.remove(&g.name))
            .collect();
        guests.extend(runtime_kept);
        state.guests = guests;
        self.metrics.set_guests(state.guests.len());
        state.config = new;
        Ok(summary)
    }

    /// Stops every guest (gracefully, all at once) and the backend (the
    /// NetworkManager backend deletes the profiles it created).
    pub async fn stop(&self) {
        let guests = std::mem::take(&mut self.state.lock().await.guests);
        self.stop_guests(guests).await;
        self.backend_health.abort();
        self.host.shutdown().await;
        self.metrics.set_guests(0);
    }
}

/// Keeps `backend_up`, `backend_wifi_interfaces` and `backend_healthy`
/// current. Wakes only on the backend's interface events and health changes.
async fn follow_backend_health(host: Arc<dyn HostWifi>, name: &'static str, metrics: Arc<Metrics>) {
    let mut events = host.subscribe();
    let mut health = host.health();
    // A backend without health changes drops its sender: stop watching it.
    let mut health_open = true;
    loop {
        metrics.set_backend_interfaces(name, host.interfaces().len());
        let changed = {
            let now = health.borrow_and_update();
            metrics.set_backend_healthy(name, now.is_up());
            now.clone()
        };
        tracing::debug!(backend = name, health = %changed, "backend health");
        tokio::select! {
            event = events.recv() => match event {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            result = health.changed(), if health_open => {
                if result.is_err() {
                    health_open = false;
                }
            }
        }
    }
}

fn unknown_guest(name: &str) -> String {
    // A control request's name may be up to a line long: echo a bounded part.
    match name.char_indices().nth(64) {
        Some((i, _)) => format!("no guest named {:?}...", &name[..i]),
        None => format!("no guest named {name:?}"),
    }
}

/// A command's result as the control answer: its value as JSON, or the
/// error's words.
fn answer<T: serde::Serialize, E: std::fmt::Display>(result: Result<T, E>) -> ControlResponse {
    match result.map(serde_json::to_value) {
        Ok(Ok(v)) => ControlResponse::ok_with(v),
        Ok(Err(e)) => ControlResponse::error(e.to_string()),
        Err(e) => ControlResponse::error(e.to_string()),
    }
}

/// The refusal of a command that acts on the whole daemon (`why`) but was
/// given `--guest`.
fn refuse_guest(guest: Option<&str>, why: &str) -> Option<ControlResponse> {
    guest.map(|_| ControlResponse::error(format!("{why}; leave out --guest")))
}

/// The daemon's control socket handler.
///
/// Events of the simulated host (`host-connect`, `host-disconnect`,
/// `signal`, `scan-results`, `scan-mode`) act on the one simulated radio
/// that every guest shares, so every guest sees them, with or without
/// `--guest`: a host connection changes the host for all guests, and a
/// signal change or spontaneous scan results reach each guest for which
/// they are relevant (signal only to guests connected through the
/// simulated interface, as the handler's rules say). `--guest NAME` is
/// checked (an unknown name is an error) and restricts `status`; `reload`
/// acts on the whole daemon and refuses `--guest`.
pub(crate) struct DaemonControl {
    daemon: Arc<Daemon>,
}

impl DaemonControl {
    /// Serves control commands for `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> DaemonControl {
        DaemonControl { daemon }
    }
}

#[async_trait]
impl ControlHandler for DaemonControl {
    async fn handle(&self, request: ControlRequest) -> ControlResponse {
        let guest = request.guest.as_deref();
        match &request.command {
            ControlCommand::Status => answer(self.daemon.status(guest).await),
            ControlCommand::Reload => {
                match refuse_guest(guest, "reload applies to the whole daemon") {
                    Some(refusal) => refusal,
                    None => answer(self.daemon.reload().await),
                }
            }
            ControlCommand::AddGuest { spec } => {
                match refuse_guest(guest, "add-guest names its guest itself") {
                    Some(refusal) => refusal,
                    None => answer(self.daemon.add_guest(spec).await),
                }
            }
            ControlCommand::RemoveGuest { name } => {
                match refuse_guest(guest, "remove-guest names its guest itself") {
                    Some(refusal) => refusal,
                    None => match self.daemon.remove_guest(name).await {
                        Ok(()) => ControlResponse::ok(),
                        Err(e) => ControlResponse::error(e.to_string()),
                    },
                }
            }
            event => {
                if let Some(name) = guest {
                    if !self.daemon.guest_names().await.iter().any(|n| n == name) {
                        return ControlResponse::error(unknown_guest(name));
                    }
                }
                if let Err(e) = crate::control::apply_host_event(&*self.daemon.host, event) {
                    return ControlResponse::error(e.to_string());
                }
                match self.daemon.notification_recipients(event, guest).await {
                    Some(recipients) => {
                        ControlResponse::ok_with(serde_json::json!({ "recipients": recipients }))
                    }
                    None => ControlResponse::ok(),
                }
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A backend whose health the test sets.
    struct HealthTestBackend {
        hub: crate::wifi::EventHub,
        health: tokio::sync::watch::Sender<crate::wifi::BackendHealth>,
    }

    #[async_trait::async_trait]
    impl HostWifi for HealthTestBackend {
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::wifi::InterfaceEvent> {
            self.hub.subscribe()
        }
        fn interfaces(&self) -> Vec<Arc<dyn crate::wifi::WifiInterface>> {
            self.hub.interfaces()
        }
        fn health(&self) -> tokio::sync::watch::Receiver<crate::wifi::BackendHealth> {
            self.health.subscribe()
        }
    }

    #[tokio::test]
    async fn backend_health_reaches_the_metrics() {
        use crate::wifi::BackendHealth;
        let (health, _) = tokio::sync::watch::channel(BackendHealth::Up);
        let backend = Arc::new(HealthTestBackend {
            hub: crate::wifi::EventHub::new(),
            health,
        });
        let metrics = Arc::new(Metrics::new());
        let task = tokio::spawn(follow_backend_health(
            backend.clone(),
            "networkmanager",
            metrics.clone(),
        ));
        let healthy =
            |v: u8| format!("proxy_wifi_backend_healthy{{backend=\"networkmanager\"}} {v}");
        let wait_for = |line: String| {
            let metrics = metrics.clone();
            async move {
                for _ in 0..500 {
                    if metrics.render().contains(&line) {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                panic!("no {line} in {}", metrics.render());
            }
        };
        wait_for(healthy(1)).await;
        backend.health.send_replace(BackendHealth::Reconnecting {
            attempts: 2,
            last_error: None,
        });
        wait_for(healthy(0)).await;
        backend.health.send_replace(BackendHealth::Up);
        wait_for(healthy(1)).await;
        task.abort();
    }

    fn guest(name: &str, port: u16) -> String {
        format!(
            "[[guest]]\nname = \"{name}\"\ntcp = \"127.0.0.1\"\nrequest_port = {port}\nscan_min_latency_ms = 0\n"
        )
    }

    #[tokio::test]
    async fn a_reload_that_cannot_start_a_guest_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let write = |guests: &str| {
            std::fs::write(&path, format!("backend = \"simulated\"\n{guests}")).unwrap()
        };
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port_a = free.local_addr().unwrap().port();
        drop(free);
        write(&format!("{}{}", guest("a", port_a), guest("b", 0)));
        let config = DaemonConfig::load(&path).unwrap();
        let daemon = Daemon::start(config, Some(path.clone()), Overrides::default())
            .await
            .unwrap();
        let before = daemon.status(None).await.unwrap();
        let b_at = before[1].listening.clone();

        // c's port is taken: nothing may change, b is not even touched.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port_c = taken.local_addr().unwrap().port();
        write(&format!(
            "{}{}{}",
            guest("a", port_a).replace("scan_min_latency_ms = 0", "scan_min_latency_ms = 1"),
            guest("b", 0),
            guest("c", port_c)
        ));
        let err = daemon.reload().await.unwrap_err();
        assert!(
            matches!(err, DaemonError::Guest { ref guest, .. } if guest == "c"),
            "{err}"
        );
        let after = daemon.status(None).await.unwrap();
        let names: Vec<&str> = after.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(after[1].listening, b_at);
        assert_eq!(
            after[0].listening.as_deref(),
            Some(format!("127.0.0.1:{port_a}").as_str()),
            "a restored on its port"
        );
        assert!(daemon
            .metrics()
            .render()
            .contains("proxy_wifi_guests_configured 2"));
        // The configuration in force is still the old one: once the port is
        // free, the same file goes through as a change from it.
        drop(taken);
        let summary = daemon.reload().await.unwrap();
        assert_eq!(summary.added, ["c"]);
        assert_eq!(summary.restarted, ["a"]);
        assert_eq!(summary.unchanged, ["b"]);
        daemon.stop().await;
        assert!(daemon.status(None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn run_time_guests_survive_reloads_unless_the_file_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let write = |guests: &str| {
            std::fs::write(&path, format!("backend = \"simulated\"\n{guests}")).unwrap()
        };
        write(&guest("a", 0));
        let config = DaemonConfig::load(&path).unwrap();
        let daemon = Daemon::start(config, Some(path.clone()), Overrides::default())
            .await
            .unwrap();
        let spec = |name: &str, port: u32| GuestSpec {
            name: name.into(),
            tcp: Some("127.0.0.1".into()),
            request_port: Some(port),
            scan_min_latency_ms: Some(0),
            ..Default::default()
        };
        let r = daemon.add_guest(&spec("r", 0)).await.unwrap();
        assert!(r.runtime);
        assert!(matches!(
            daemon.add_guest(&spec("a", 0)).await,
            Err(DaemonError::Conflict(_))
        ));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = u32::from(taken.local_addr().unwrap().port());
        drop(taken);
        daemon.add_guest(&spec("p", port)).await.unwrap();
        let p_at = daemon.status(Some("p")).await.unwrap()[0].listening.clone();

        // The file knows nothing of r and p: they stay, untouched.
        let summary = daemon.reload().await.unwrap();
        assert_eq!(summary.unchanged, ["a"]);
        assert!(summary.removed.is_empty());
        let names: Vec<String> = daemon
            .status(None)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, ["a", "r", "p"]);
        assert_eq!(daemon.status(Some("p")).await.unwrap()[0].listening, p_at);

        // A new file guest on p's endpoint: refused as a whole.
        write(&format!("{}{}", guest("a", 0), guest("b", port as u16)));
        let err = daemon.reload().await.unwrap_err();
        assert!(
            err.to_string().contains("already used by guest 'p'"),
            "{err}"
        );
        assert_eq!(daemon.status(None).await.unwrap().len(), 3);

        // The file names p now (same settings): it becomes the file's, and
        // a later file without it removes it.
        write(&format!(
            "{}[[guest]]\nname = \"p\"\ntcp = \"127.0.0.1\"\nrequest_port = {port}\nscan_min_latency_ms = 0\n",
            guest("a", 0)
        ));
        let summary = daemon.reload().await.unwrap();
        assert_eq!(summary.unchanged, ["a", "p"]);
        let p = &daemon.status(Some("p")).await.unwrap()[0];
        assert!(!p.runtime);
        assert_eq!(p.listening, p_at);
        write(&guest("a", 0));
        let summary = daemon.reload().await.unwrap();
        assert_eq!(summary.removed, ["p"]);
        let names: Vec<String> = daemon
            .status(None)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, ["a", "r"]);

        daemon.remove_guest("r").await.unwrap();
        assert!(matches!(
            daemon.remove_guest("r").await,
            Err(DaemonError::UnknownGuest(_))
        ));
        assert!(daemon
            .metrics()
            .render()
            .contains("proxy_wifi_guests_configured 1"));
        assert!(daemon
            .metrics()
            .render()
            .contains("proxy_wifi_unknown_peer_connections_total "));
        daemon.stop().await;
    }

    #[tokio::test]
    async fn control_checks_guest_names_and_backend() {
        let config = DaemonConfig::parse(
            "backend = \"simulated\"\n[[guest]]\nname = \"a\"\ntcp = \"127.0.0.1\"\nrequest_port = 0\n",
            "t.toml",
        )
        .unwrap();
        let daemon = Daemon::start(config, None, Overrides::default())
            .await
            .unwrap();
        let control = DaemonControl::new(daemon.clone());
        let ask = |guest: Option<&str>, command| ControlRequest {
            guest: guest.map(String::from),
            command,
        };
        let r = control
            .handle(ask(
                Some("zz"),
                ControlCommand::HostConnect {
                    ssid: "FakeOpen".into(),
                },
            ))
            .await;
        assert_eq!(r.error.as_deref(), Some("no guest named \"zz\""));
        let r = control
            .handle(ask(
                Some("a"),
                ControlCommand::HostConnect {
                    ssid: "FakeOpen".into(),
                },
            ))
            .await;
        assert!(r.ok, "{r:?}");
        let r = control.handle(ask(Some("a"), ControlCommand::Reload)).await;
        assert!(!r.ok);
        let r = control.handle(ask(None, ControlCommand::Reload)).await;
        assert!(r.error.unwrap().contains("without a configuration file"));
        let r = control.handle(ask(Some("a"), ControlCommand::Status)).await;
        let list: Vec<GuestStatus> = serde_json::from_value(r.data.unwrap()).unwrap();
        assert_eq!(list[0].name, "a");
        assert_eq!(list[0].session_id, 0);
        daemon.stop().await;
    }
}
