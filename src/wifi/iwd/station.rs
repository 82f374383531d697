//! One iwd station as a [`WifiInterface`].
//!
//! A guest connection to a network the host already knows (a file of the
//! host in iwd's state directory) never rewrites that file: for WPA2-PSK the
//! guest's PMK is checked against the host's `PreSharedKey` or
//! `Passphrase` and the network is joined with the host's profile only when
//! they match (a guest with a wrong key fails as it would on its own); an
//! unreadable host file makes the connection fail rather than be guessed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use crate::protocol::{MacAddr, Ssid};
use crate::wifi::{
    AuthAlgorithm, CipherAlgorithm, ConnectParams, ConnectedNetwork, InterfaceError,
    InterfaceEvent, InterfaceId, ScanResult, ScannedBss, Security, WifiInterface,
};

use super::bss;
use super::profile::{self, Existing, FileKind};
use super::proxies::{self, NetworkProxy, StationDiagnosticProxy, StationProxy};
use super::Shared;

/// What the backend read about a station when it appeared.
pub(crate) struct StationInfo {
    pub path: OwnedObjectPath,
    pub name: String,
    pub address: Option<String>,
    pub state: String,
    pub scanning: bool,
}

struct InFlightScan {
    done: watch::Receiver<bool>,
    /// Set when a `scan()` call waits for this scan: its results then go to
    /// that caller, not out as a notification.
    waited: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    /// Whether observers were told (or, at start, the station was)
    /// connected, so a later disconnection is reported exactly once.
    connected: bool,
    /// Whether the station's last state had a link. Leaving it is a
    /// disconnection even when the link dropped before the "connected"
    /// lookup finished (a guest-directed connection is up for the guest
    /// as soon as `Network.Connect` returns).
    link_up: bool,
    /// Bumped on every state change, so a slow "connected" lookup can tell
    /// it has been overtaken.
    state_generation: u64,
    scan: Option<InFlightScan>,
}

pub(crate) struct IwdStation {
    id: Uuid,
    name: String,
    path: OwnedObjectPath,
    shared: Arc<Shared>,
    me: Weak<IwdStation>,
    gone: AtomicBool,
    inner: Mutex<Inner>,
    scanning: watch::Sender<bool>,
    /// Serializes connects and disconnects of this station.
    op_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Station states in which the station has a link.
fn is_linked(state: &str) -> bool {
    matches!(state, "connected" | "roaming")
}

/// The D-Bus error name of a failed call, if it was one.
fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_string()),
        zbus::Error::FDO(e) => Some(zbus::DBusError::name(&**e).to_string()),
        _ => None,
    }
}

fn iface_err(what: &str, e: zbus::Error) -> InterfaceError {
    match error_name(&e).as_deref() {
        Some("org.freedesktop.DBus.Error.ServiceUnknown")
        | Some("org.freedesktop.DBus.Error.NameHasNoOwner")
        | Some("org.freedesktop.DBus.Error.NoReply") => {
            InterfaceError::Unavailable(format!("{what}: {e}"))
        }
        Some("org.freedesktop.DBus.Error.UnknownObject") => InterfaceError::Gone,
        _ => InterfaceError::Failed(format!("{what}: {e}")),
    }
}

/// What a failed `Network.Connect` means for the guest.
fn connect_failure(e: zbus::Error, ssid: &Ssid) -> InterfaceError {
    match error_name(&e).as_deref() {
        Some("net.connman.iwd.NotFound") => InterfaceError::NotFound(ssid.to_string_lossy()),
        // iwd does not pass on an 802.11 status code: a refused key is a
        // plain failure (status 1 for the guest), as with NetworkManager.
        Some("net.connman.iwd.Failed") | Some("net.connman.iwd.Aborted") => InterfaceError::Failed(
            format!("the network refused the connection (wrong key?): {e}"),
        ),
        Some("net.connman.iwd.NoAgent") => InterfaceError::Failed(
            "iwd asked for a passphrase (a WPA3 network needs it; the guest only has the PMK)"
                .into(),
        ),
        _ => iface_err("connect", e),
    }
}

/// The security of a network from iwd's `Network.Type`, for when the BSS
/// itself is not in the kernel's cache.
fn security_of_type(kind: &str) -> Security {
    match kind {
        "open" => Security::OPEN,
        "psk" => Security::WPA2_PSK_CCMP,
        "8021x" => Security {
            auth: AuthAlgorithm::Wpa2,
            cipher: CipherAlgorithm::Ccmp,
        },
        "wep" => Security {
            auth: AuthAlgorithm::Open,
            cipher: CipherAlgorithm::Wep,
        },
        _ => Security {
            auth: AuthAlgorithm::Other,
            cipher: CipherAlgorithm::Other,
        },
    }
}

impl IwdStation {
    pub(crate) fn new(shared: Arc<Shared>, info: StationInfo) -> Arc<IwdStation> {
        let id =
            crate::wifi::networkmanager::convert::interface_id(info.address.as_deref(), &info.name);
        let (scanning, _) = watch::channel(info.scanning);
        Arc::new_cyclic(|me| IwdStation {
            id,
            name: info.name,
            path: info.path,
            shared,
            me: me.clone(),
            gone: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                connected: is_linked(&info.state),
                link_up: is_linked(&info.state),
                ..Inner::default()
            }),
            scanning,
            op_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub(crate) fn path(&self) -> &OwnedObjectPath {
        &self.path
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The station went away: every later call fails with
    /// [`InterfaceError::Gone`] and no more events are sent.
    pub(crate) fn mark_gone(&self) {
        self.gone.store(true, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), InterfaceError> {
        if self.gone.load(Ordering::SeqCst) {
            Err(InterfaceError::Gone)
        } else {
            Ok(())
        }
    }

    fn publish(&self, event: InterfaceEvent) {
        if !self.gone.load(Ordering::SeqCst) {
            self.shared.hub.publish(event);
        }
    }

    fn conn(&self) -> &zbus::Connection {
        &self.shared.conn
    }

    async fn station(&self) -> Result<StationProxy<'static>, InterfaceError> {
        proxies::at(self.conn(), &self.path)
            .await
            .map_err(|e| iface_err("station", e))
    }

    // --- events --------------------------------------------------------------

    pub(crate) fn on_signal_level(&self, percent: u8) {
        if self.inner().connected {
            self.publish(InterfaceEvent::SignalQuality {
                iface: self.id,
                percent,
            });
        }
    }

    pub(crate) fn on_properties_changed(&self, changed: &HashMap<String, OwnedValue>) {
        if let Some(scanning) = changed
            .get("Scanning")
            .and_then(|v| bool::try_from(v.clone()).ok())
        {
            self.scanning.send_replace(scanning);
        }
        let Some(state) = changed
            .get("State")
            .and_then(|v| String::try_from(v.clone()).ok())
        else {
            return;
        };
        debug!(iface = %self.name, state = %state, "station state changed");
        let generation = {
            let mut inner = self.inner();
            inner.state_generation += 1;
            if is_linked(&state) {
                inner.link_up = true;
            } else if inner.connected || inner.link_up {
                inner.connected = false;
                inner.link_up = false;
                self.publish(InterfaceEvent::Disconnected { iface: self.id });
                self.forget_lost_guest_network();
            }
            inner.state_generation
        };
        if state == "connected" {
            let Some(me) = self.me.upgrade() else { return };
            tokio::spawn(async move {
                let network = match me.current_network(true).await {
                    Ok(Some(n)) => n,
                    Ok(None) => return,
                    Err(e) => {
                        debug!(iface = %me.name, "cannot read the new connection: {e}");
                        return;
                    }
                };
                let mut inner = me.inner();
                if inner.state_generation == generation && !inner.connected {
                    inner.connected = true;
                    me.publish(InterfaceEvent::Connected {
                        iface: me.id,
                        network,
                    });
                }
            });
        }
    }

    /// The link went down (access point lost, host disconnected): a
    /// network provisioned for the guest goes too, unless a connect or
    /// disconnect of this station is running (it handles its own file).
    fn forget_lost_guest_network(&self) {
        let Ok(op) = self.op_lock.clone().try_lock_owned() else {
            return;
        };
        if let Some(file) = self.shared.take_provisioned(&self.path) {
            info!(iface = %self.name, "the guest's network is gone; removing its provisioning file");
            tokio::spawn(async move {
                let _op = op;
                super::remove_file(file).await;
            });
        }
    }

    // --- scanning ----------------------------------------------------------

    /// Every BSS the kernel has for this interface.
    async fn kernel_bss(&self) -> Result<Vec<ScannedBss>, InterfaceError> {
        let cache = self.shared.config.bss_cache.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || cache.dump(&name))
            .await
            .map_err(|e| InterfaceError::Failed(format!("scan cache: {e}")))?
            .map_err(|e| {
                InterfaceError::Failed(format!("cannot read the kernel's scan cache: {e}"))
            })
    }

    /// The BSSes for the guest: those with an SSID, and for a targeted scan
    /// the hidden ones too, offered under the target SSID (a hidden BSS
    /// does not say its SSID; joining it under the wrong one fails).
    async fn cached_bss(&self, target: Option<&Ssid>) -> Result<Vec<ScannedBss>, InterfaceError> {
        let target = target.filter(|t| !t.is_empty());
        Ok(self
            .kernel_bss()
            .await?
            .into_iter()
            .filter_map(|mut b| {
                if !bss::is_hidden(&b) {
                    return Some(b);
                }
                b.ssid = *target?;
                Some(b)
            })
            .collect())
    }

    /// Asks iwd to scan and waits until it has finished (or the bound).
    /// `false` when the scan was refused or did not end in time.
    async fn scan_and_wait(&self, bound: Duration) -> bool {
        let mut scanning = self.scanning.subscribe();
        scanning.borrow_and_update();
        let station = match self.station().await {
            Ok(s) => s,
            Err(_) => return false,
        };
        match station.scan().await {
            Ok(()) => {}
            // A scan is already running: wait for it.
            Err(e)
                if matches!(
                    error_name(&e).as_deref(),
                    Some("net.connman.iwd.Busy") | Some("net.connman.iwd.InProgress")
                ) => {}
            Err(e) => {
                debug!(iface = %self.name, "host scan request refused: {e}");
                return false;
            }
        }
        let work = async {
            // The Scanning property may already have been true and false
            // by now; read it when no change came.
            let started =
                tokio::time::timeout(Duration::from_millis(1500), scanning.wait_for(|s| *s))
                    .await
                    .is_ok();
            if !started && !station.scanning().await.unwrap_or(false) {
                return;
            }
            let _ = scanning.wait_for(|s| !*s).await;
        };
        if tokio::time::timeout(bound, work).await.is_err() {
            debug!(iface = %self.name, "host scan did not finish in time");
            return false;
        }
        true
    }

    async fn run_scan(
        self: Arc<Self>,
        target: Option<Ssid>,
        done: watch::Sender<bool>,
        waited: Arc<AtomicBool>,
    ) {
        let fresh = self.scan_and_wait(self.shared.config.scan_timeout).await;
        self.inner().scan = None;
        let _ = done.send(true);
        if fresh && !waited.load(Ordering::SeqCst) && !self.gone.load(Ordering::SeqCst) {
            match self.cached_bss(target.as_ref()).await {
                Ok(bss) => self.publish(InterfaceEvent::ScanResults {
                    iface: self.id,
                    result: ScanResult {
                        bss,
                        complete: true,
                    },
                }),
                Err(e) => debug!(iface = %self.name, "cannot read fresh scan results: {e}"),
            }
        }
    }

    // --- connections -------------------------------------------------------

    /// The network the station is on. With `linked_only`, `None` unless its
    /// state is connected (iwd stays "connecting" while it runs DHCP itself,
    /// though the link is up when `Network.Connect` returns).
    async fn current_network(
        &self,
        linked_only: bool,
    ) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        let station = self.station().await?;
        let state = station
            .state()
            .await
            .map_err(|e| iface_err("station state", e))?;
        if linked_only && !is_linked(&state) {
            return Ok(None);
        }
        // Absent when not connected.
        let Ok(network) = station.connected_network().await else {
            return Ok(None);
        };
        let network: NetworkProxy<'_> = proxies::at(self.conn(), &network)
            .await
            .map_err(|e| iface_err("network", e))?;
        let name = network.name().await.map_err(|e| iface_err("network", e))?;
        let kind = network.kind().await.map_err(|e| iface_err("network", e))?;
        let ssid = Ssid::new(name.as_bytes())
            .map_err(|e| InterfaceError::Failed(format!("network name: {e}")))?;
        let bssid = self.connected_bssid().await;
        let cached = self.kernel_bss().await.unwrap_or_default();
        let from_cache = match bssid {
            Some(b) => cached.into_iter().find(|c| c.bssid == b),
            None => cached
                .into_iter()
                .filter(|c| c.ssid == ssid)
                .max_by_key(|c| c.rssi_dbm),
        };
        let security = from_cache
            .as_ref()
            .map(|c| c.security)
            .unwrap_or_else(|| security_of_type(&kind));
        let Some(bssid) = bssid.or(from_cache.map(|c| c.bssid)) else {
            return Err(InterfaceError::Failed(
                "connected, but the access point is unknown".into(),
            ));
        };
        Ok(Some(ConnectedNetwork {
            ssid,
            bssid,
            security,
        }))
    }

    async fn connected_bssid(&self) -> Option<MacAddr> {
        let diag: StationDiagnosticProxy<'_> = proxies::at(self.conn(), &self.path).await.ok()?;
        let info = diag.get_diagnostics().await.ok()?;
        let text = String::try_from(info.get("ConnectedBss")?.clone()).ok()?;
        MacAddr::from_str(&text).ok()
    }

    /// The network object of `ssid` with type `kind`, if iwd lists it.
    async fn find_network(
        &self,
        ssid: &Ssid,
        kind: FileKind,
    ) -> Result<Option<NetworkProxy<'static>>, InterfaceError> {
        let station = self.station().await?;
        let networks = station
            .get_ordered_networks()
            .await
            .map_err(|e| iface_err("networks", e))?;
        for (path, _) in networks {
            let Ok(network) = proxies::at::<NetworkProxy<'static>>(self.conn(), &path).await else {
                continue;
            };
            let (Ok(name), Ok(t)) = (network.name().await, network.kind().await) else {
                continue;
            };
            if name.as_bytes() == ssid.as_bytes() && t == kind.network_type() {
                return Ok(Some(network));
            }
        }
        Ok(None)
    }

    /// Provisions what iwd needs for the guest's connection and connects.
    async fn activate(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        let deadline = Instant::now() + self.shared.config.connect_timeout;
        let kind = match (params.security.auth, &params.key) {
            (AuthAlgorithm::Open, _) => FileKind::Open,
            (AuthAlgorithm::Wpa2Psk, Some(key)) if key.len() == 32 => FileKind::Psk,
            (AuthAlgorithm::Wpa2Psk, Some(key)) => {
                return Err(InterfaceError::Failed(format!(
                    "a WPA2-PSK connection needs a 32-byte PMK, got {} bytes",
                    key.len()
                )))
            }
            _ => {
                return Err(InterfaceError::Failed(format!(
                    "security {} is not one a guest can ask for",
                    params.security.label()
                )))
            }
        };
        let pmk = if kind == FileKind::Psk {
            params.key.as_ref().map(|k| k.expose())
        } else {
            None
        };
        let mut network = self.find_network(&params.ssid, kind).await?;
        let dir = self.shared.state_dir();
        let file = dir.join(profile::file_name(&params.ssid, kind));
        let existing = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || profile::existing(&file))
                .await
                .map_err(|e| InterfaceError::Failed(e.to_string()))?
        };
        let mut ours: Option<PathBuf> = None;
        match existing {
            Existing::Host(content) => {
                if let Some(pmk) = pmk {
                    match profile::host_key_matches(&content, &params.ssid, pmk) {
                        Some(true) => {}
                        Some(false) => {
                            return Err(InterfaceError::Failed(
                                "the host's own profile of this network has another key; it is not modified".into(),
                            ))
                        }
                        None => {
                            return Err(InterfaceError::Failed(
                                "the host's own profile of this network has no key the proxy can check; it is not modified".into(),
                            ))
                        }
                    }
                }
                info!(iface = %self.name, ssid = %params.ssid, "joining with the host's own known network");
            }
            Existing::HostUnreadable => {
                return Err(InterfaceError::Failed(format!(
                "the host knows this network ({}) but its file is unreadable; it is not modified",
                file.display()
            )))
            }
            Existing::Nothing | Existing::Proxy => {
                // A file removed a moment ago may still be known to iwd;
                // wait until iwd has let go of it, or the new file's
                // arrival could not be told from the old one's.
                if existing == Existing::Nothing {
                    if let Some(n) = network.as_ref() {
                        let by = Instant::now() + self.shared.config.known_network_wait;
                        while n.known_network().await.is_ok() && Instant::now() < by {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                if Existing::Proxy == existing && self.shared.file_in_use(&file) {
                    return Err(InterfaceError::Failed(
                        "another interface's guest connection uses this network".into(),
                    ));
                }
                let hidden = network.is_none();
                let content = profile::contents(pmk, hidden);
                let written = {
                    let dir = dir.clone();
                    let name = profile::file_name(&params.ssid, kind);
                    tokio::task::spawn_blocking(move || profile::write(&dir, &name, &content))
                        .await
                        .map_err(|e| InterfaceError::Failed(e.to_string()))?
                        .map_err(|e| InterfaceError::Failed(e.to_string()))?
                };
                info!(iface = %self.name, ssid = %params.ssid, file = %written.path.display(), hidden, "provisioned a guest network");
                self.shared
                    .set_provisioned(&self.path, written.path.clone());
                ours = Some(written.path);
            }
        }
        let result = self.join(params, kind, &mut network, deadline).await;
        if result.is_err() {
            if let Some(file) = ours {
                self.shared.take_provisioned(&self.path);
                super::remove_file(file).await;
            }
        }
        result
    }

    async fn join(
        &self,
        params: &ConnectParams,
        kind: FileKind,
        network: &mut Option<NetworkProxy<'static>>,
        deadline: Instant,
    ) -> Result<ConnectedNetwork, InterfaceError> {
        let config = &self.shared.config;
        if network.is_none() {
            // Hidden: iwd probes for known hidden networks when it scans.
            let bound = deadline.saturating_duration_since(Instant::now());
            self.scan_and_wait(bound.min(config.scan_timeout)).await;
            *network = self.find_network(&params.ssid, kind).await?;
        }
        let Some(network) = network.as_ref() else {
            return Err(InterfaceError::NotFound(params.ssid.to_string_lossy()));
        };
        // iwd reads the file within a moment. Connecting before would make
        // it ask an agent for a PSK network's key, and save an open network
        // as a known network of its own, in place of the proxy's file.
        let known_by = (Instant::now() + config.known_network_wait).min(deadline);
        while network.known_network().await.is_err() {
            if Instant::now() >= known_by {
                return Err(InterfaceError::Failed(
                    "iwd did not pick up the provisioned network".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let attempt = async {
            match network.connect().await {
                // After a failed handshake (a wrong key, the guest's or
                // anyone's) iwd's network object asks the agent once on
                // its next Connect, known key or not, and clears that
                // flag as it asks: with no agent, that Connect fails
                // with NoAgent and the next one uses the file. A network
                // that really needs the passphrase (WPA3) fails again.
                Err(e)
                    if kind == FileKind::Psk
                        && error_name(&e).as_deref() == Some("net.connman.iwd.NoAgent") =>
                {
                    debug!(iface = %self.name, "iwd asked for a passphrase once more; connecting again");
                    network.connect().await
                }
                other => other,
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, attempt).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(connect_failure(e, &params.ssid)),
            Err(_) => {
                self.disconnect_quietly().await;
                return Err(InterfaceError::Failed(format!(
                    "no connection within {:?}",
                    config.connect_timeout
                )));
            }
        }
        match self.current_network(false).await? {
            Some(n) => Ok(n),
            None => Err(InterfaceError::Failed(
                "iwd connected, but reports no network".into(),
            )),
        }
    }

    /// Disconnects the station, ignoring "not connected"; failures logged.
    pub(crate) async fn disconnect_quietly(&self) {
        let result = match self.station().await {
            Ok(s) => s.disconnect().await.map_err(|e| iface_err("disconnect", e)),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            debug!(iface = %self.name, "disconnect: {e}");
        }
    }

    /// Removes the proxy's file of this station, if any.
    async fn remove_provisioned(&self) {
        if let Some(file) = self.shared.take_provisioned(&self.path) {
            super::remove_file(file).await;
        }
    }
}

#[async_trait]
impl WifiInterface for IwdStation {
    fn id(&self) -> InterfaceId {
        self.id
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    async fn connected_network(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        self.check()?;
        self.current_network(true).await
    }

    async fn scan(&self, target: Option<&Ssid>) -> Result<ScanResult, InterfaceError> {
        self.check()?;
        enum Plan {
            Join(watch::Receiver<bool>),
            Start(watch::Sender<bool>, Arc<AtomicBool>),
        }
        let plan = {
            let mut inner = self.inner();
            match &inner.scan {
                Some(running) => {
                    running.waited.store(true, Ordering::SeqCst);
                    Plan::Join(running.done.clone())
                }
                None => {
                    let (done_tx, done_rx) = watch::channel(false);
                    let waited = Arc::new(AtomicBool::new(false));
                    inner.scan = Some(InFlightScan {
                        done: done_rx,
                        waited: waited.clone(),
                    });
                    Plan::Start(done_tx, waited)
                }
            }
        };
        match plan {
            Plan::Join(mut done) => {
                let _ = done.wait_for(|d| *d).await;
                self.check()?;
                Ok(ScanResult {
                    bss: self.cached_bss(target).await?,
                    complete: true,
                })
            }
            Plan::Start(done, waited) => {
                let cached = self.cached_bss(target).await;
                let started = match self.me.upgrade() {
                    Some(me) => {
                        tokio::spawn(me.run_scan(target.copied(), done, waited));
                        true
                    }
                    None => {
                        self.inner().scan = None;
                        false
                    }
                };
                let bss = cached?;
                // The kernel forgets BSSes 30 s after they were last seen and
                // iwd scans rarely when idle: with nothing cached, the answer
                // is "still scanning" and the results follow as an event.
                let complete = !(bss.is_empty() && started);
                Ok(ScanResult { bss, complete })
            }
        }
    }

    async fn connect(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        self.check()?;
        let me = self.me.upgrade().ok_or(InterfaceError::Gone)?;
        let params = params.clone();
        let (tx, rx) = oneshot::channel();
        // Its own task, so a caller giving up (the handler's 10 s bound)
        // cannot leave a half-provisioned network behind.
        tokio::spawn(async move {
            let result = {
                let _op = me.op_lock.clone().lock_owned().await;
                // A new guest connection replaces the proxy's earlier one.
                me.remove_provisioned().await;
                me.activate(&params).await
            };
            // The lock is released before the answer: a link loss right
            // after it must find the station idle to remove the file.
            if let Err(e) = &result {
                warn!(iface = %me.name, ssid = %params.ssid, "guest connection failed: {e}");
            }
            if let Err(result) = tx.send(result) {
                if result.is_ok() {
                    info!(iface = %me.name, "connect finished after the caller gave up; undoing it");
                    let _op = me.op_lock.clone().lock_owned().await;
                    me.disconnect_quietly().await;
                    me.remove_provisioned().await;
                }
            }
        });
        rx.await
            .unwrap_or_else(|_| Err(InterfaceError::Failed("connect task ended".into())))
    }

    async fn disconnect(&self) -> Result<(), InterfaceError> {
        self.check()?;
        let _op = self.op_lock.lock().await;
        let station = self.station().await?;
        let result = match station.disconnect().await {
            Ok(()) => Ok(()),
            Err(e) if error_name(&e).as_deref() == Some("net.connman.iwd.NotConnected") => Ok(()),
            Err(e) => Err(iface_err("disconnect", e)),
        };
        self.remove_provisioned().await;
        result
    }
}
