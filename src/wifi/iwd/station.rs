//! One iwd station as a [`WifiInterface`](crate::wifi::WifiInterface).
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
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use crate::protocol::{MacAddr, Ssid};
use crate::wifi::dbus::station::{
    self, HostScan, HostStation, ScanPolicy, StationCore, StationStart,
};
use crate::wifi::dbus::{call_error as iface_err, error_name};
use crate::wifi::{
    AuthAlgorithm, CipherAlgorithm, ConnectParams, ConnectedNetwork, InterfaceError,
    InterfaceEvent, ScannedBss, Security,
};

use super::bss;
use super::profile::{self, Existing, FileKind};
use super::proxies::{Iwd, NetworkProxy, StationDiagnosticProxy, StationProxy};
use super::Shared;

/// What the backend read about a station when it appeared.
pub(crate) struct StationInfo {
    pub path: OwnedObjectPath,
    pub name: String,
    pub address: Option<String>,
    pub state: String,
    pub scanning: bool,
}

pub(crate) struct IwdStation {
    core: StationCore<IwdStation>,
    path: OwnedObjectPath,
    shared: Arc<Shared>,
    /// The iwd that reported the station: its calls go there only.
    iwd: Iwd,
    scanning: watch::Sender<bool>,
}

/// Station states in which the station has a link.
fn is_linked(state: &str) -> bool {
    matches!(state, "connected" | "roaming")
}

/// What a failed `Network.Connect` means for the guest.
fn connect_failure(e: zbus::Error, ssid: &Ssid) -> InterfaceError {
    match error_name(&e).as_deref() {
        Some("net.connman.iwd.NotFound") => InterfaceError::NotFound(ssid.to_string_lossy()),
        // iwd does not pass on an 802.11 status code: a refused key is a
        // plain failure (status 1 for the guest), as with NetworkManager.
        Some("net.connman.iwd.Failed") | Some("net.connman.iwd.Aborted") => {
            InterfaceError::JoinRefused(e.to_string())
        }
        Some("net.connman.iwd.NoAgent") => InterfaceError::PassphraseNeeded,
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
    pub(crate) fn new(shared: Arc<Shared>, iwd: Iwd, info: StationInfo) -> Arc<IwdStation> {
        let id = crate::wifi::dbus::interface_id(info.address.as_deref(), &info.name);
        let (scanning, _) = watch::channel(info.scanning);
        let linked = is_linked(&info.state);
        let start = StationStart {
            id,
            name: info.name,
            path: info.path.clone(),
            connected: linked,
            link_up: linked,
        };
        Arc::new_cyclic(|me| IwdStation {
            core: StationCore::new(me.clone(), shared.hub.clone(), start),
            path: info.path,
            shared,
            iwd,
            scanning,
        })
    }

    async fn station(&self) -> Result<StationProxy<'static>, InterfaceError> {
        self.iwd
            .at(&self.path)
            .await
            .map_err(|e| iface_err("station", e))
    }

    // --- events --------------------------------------------------------------

    pub(crate) fn on_signal_level(&self, percent: u8) {
        if self.core.is_connected() {
            self.core.publish(InterfaceEvent::SignalQuality {
                iface: self.core.id(),
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
        debug!(iface = %self.core.name(), state = %state, "station state changed");
        let Some(me) = self.core.me() else { return };
        if station::link_changed(&me, is_linked(&state), state == "connected") {
            self.forget_lost_guest_network();
        }
    }

    /// The link went down (access point lost, host disconnected): a
    /// network provisioned for the guest goes too, unless a connect or
    /// disconnect of this station is running (it handles its own file).
    fn forget_lost_guest_network(&self) {
        let Ok(op) = self.core.op_lock.clone().try_lock_owned() else {
            return;
        };
        if let Some(file) = self.shared.take_provisioned(&self.path) {
            info!(iface = %self.core.name(), "the guest's network is gone; removing its provisioning file");
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
        let name = self.core.name().to_string();
        tokio::task::spawn_blocking(move || cache.dump(&name))
            .await
            .map_err(|_| InterfaceError::HostCallAborted)?
            .map_err(|e| InterfaceError::ScanCache(e.to_string()))
    }

    /// The BSSes for the guest: those with an SSID, and for a targeted scan
    /// the hidden ones too, offered under the target SSID (a hidden BSS
    /// does not say its SSID; joining it under the wrong one fails).
    async fn guest_bss(&self, target: Option<&Ssid>) -> Result<Vec<ScannedBss>, InterfaceError> {
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
    async fn scan_and_wait(&self, bound: Duration) -> HostScan {
        let mut scanning = self.scanning.subscribe();
        scanning.borrow_and_update();
        let station = match self.station().await {
            Ok(s) => s,
            Err(_) => return HostScan::Refused,
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
                debug!(iface = %self.core.name(), "host scan request refused: {e}");
                return HostScan::Refused;
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
            debug!(iface = %self.core.name(), "host scan did not finish in time");
            return HostScan::Unfinished;
        }
        HostScan::Fresh
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
        let network: NetworkProxy<'_> = self
            .iwd
            .at(&network)
            .await
            .map_err(|e| iface_err("network", e))?;
        let name = network.name().await.map_err(|e| iface_err("network", e))?;
        let kind = network.kind().await.map_err(|e| iface_err("network", e))?;
        let ssid = Ssid::new(name.as_bytes())
            .map_err(|e| InterfaceError::MalformedHostData(format!("network name: {e}")))?;
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
            return Err(InterfaceError::UnknownAccessPoint);
        };
        Ok(Some(ConnectedNetwork {
            ssid,
            bssid,
            security,
        }))
    }

    async fn connected_bssid(&self) -> Option<MacAddr> {
        let diag: StationDiagnosticProxy<'_> = self.iwd.at(&self.path).await.ok()?;
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
            let Ok(network) = self.iwd.at::<NetworkProxy<'static>>(&path).await else {
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
    async fn provision_and_join(
        &self,
        params: &ConnectParams,
    ) -> Result<ConnectedNetwork, InterfaceError> {
        let deadline = Instant::now() + self.shared.config.connect_timeout;
        let kind = match (params.security.auth, &params.key) {
            (AuthAlgorithm::Open, _) => FileKind::Open,
            (AuthAlgorithm::Wpa2Psk, Some(key)) if key.len() == 32 => FileKind::Psk,
            (AuthAlgorithm::Wpa2Psk, Some(key)) => {
                return Err(InterfaceError::UnusableKey(format!(
                    "a WPA2-PSK connection needs a 32-byte PMK, got {} bytes",
                    key.len()
                )))
            }
            _ => return Err(InterfaceError::UnsupportedSecurity(params.security)),
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
                .map_err(|_| InterfaceError::HostCallAborted)?
        };
        let mut ours: Option<PathBuf> = None;
        match existing {
            Existing::Host(content) => {
                if let Some(pmk) = pmk {
                    match profile::host_key_matches(&content, &params.ssid, pmk) {
                        Some(true) => {}
                        Some(false) => return Err(InterfaceError::HostProfileKeyDiffers),
                        None => return Err(InterfaceError::HostProfileKeyUnknown),
                    }
                }
                info!(iface = %self.core.name(), ssid = %params.ssid, "joining with the host's own known network");
            }
            Existing::HostUnreadable => {
                return Err(InterfaceError::HostProfileUnreadable(
                    file.display().to_string(),
                ))
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
                    return Err(InterfaceError::NetworkInUse);
                }
                let hidden = network.is_none();
                let content = profile::contents(pmk, hidden);
                let written = {
                    let dir = dir.clone();
                    let name = profile::file_name(&params.ssid, kind);
                    tokio::task::spawn_blocking(move || profile::write(&dir, &name, &content))
                        .await
                        .map_err(|_| InterfaceError::HostCallAborted)?
                        .map_err(|e| InterfaceError::Provisioning(e.to_string()))?
                };
                info!(iface = %self.core.name(), ssid = %params.ssid, file = %written.path.display(), hidden, "provisioned a guest network");
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
                return Err(InterfaceError::ProvisioningIgnored);
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
                    debug!(iface = %self.core.name(), "iwd asked for a passphrase once more; connecting again");
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
                return Err(InterfaceError::ConnectTimeout {
                    limit: config.connect_timeout,
                });
            }
        }
        match self.current_network(false).await? {
            Some(n) => Ok(n),
            None => Err(InterfaceError::NotConnectedAfterConnect),
        }
    }

    /// Disconnects the station, ignoring "not connected"; failures logged.
    pub(crate) async fn disconnect_quietly(&self) {
        let result = match self.station().await {
            Ok(s) => s.disconnect().await.map_err(|e| iface_err("disconnect", e)),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            debug!(iface = %self.core.name(), "disconnect: {e}");
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
impl HostStation for IwdStation {
    /// `Station.Scan` takes no SSID (iwd probes the hidden networks it
    /// knows by itself), and its scans are not retried. The kernel forgets
    /// BSSes 30 s after they were last seen and iwd scans rarely when idle:
    /// with nothing cached, the answer is "still scanning" and the host
    /// scan's results follow as an event.
    const SCAN_POLICY: ScanPolicy = ScanPolicy {
        probes_ssid: false,
        attempts_if_unfinished: 1,
        attempts_for_missing_target: 1,
        empty_means_scanning: true,
    };

    const NOT_CONNECTED_ERROR: &'static str = "net.connman.iwd.NotConnected";

    fn core(&self) -> &StationCore<Self> {
        &self.core
    }

    async fn cached_bss(&self, target: Option<&Ssid>) -> Result<Vec<ScannedBss>, InterfaceError> {
        self.guest_bss(target).await
    }

    async fn host_scan(&self, _target: Option<Ssid>) -> HostScan {
        self.scan_and_wait(self.shared.config.scan_timeout).await
    }

    async fn connected_now(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        self.current_network(true).await
    }

    async fn current_connection(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        self.current_network(true).await
    }

    async fn activate(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        self.provision_and_join(params).await
    }

    async fn undo_activation(&self) {
        self.disconnect_quietly().await;
        self.remove_provisioned().await;
    }

    async fn remove_guest_connection(&self) {
        self.remove_provisioned().await;
    }

    async fn request_disconnect(&self) -> zbus::Result<()> {
        let station: StationProxy<'_> = self.iwd.at(&self.path).await?;
        station.disconnect().await
    }
}
