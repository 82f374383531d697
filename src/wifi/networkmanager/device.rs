//! One NetworkManager Wi-Fi device as a [`WifiInterface`](crate::wifi::WifiInterface).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};
use uuid::Uuid;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

use crate::protocol::Ssid;
use crate::wifi::dbus::station::{
    self, HostScan, HostStation, ScanPolicy, StationCore, StationStart,
};
use crate::wifi::dbus::{call_error as iface_err, error_name};
use crate::wifi::{ConnectParams, ConnectedNetwork, InterfaceError, InterfaceEvent, ScannedBss};

use super::convert::{self, state};
use super::proxies::{
    self, ActiveConnectionProxy, DeviceProxy, NetworkManagerProxy, SettingsConnectionProxy,
    WirelessProxy, AP_IFACE, WIRELESS_IFACE,
};
use super::Shared;

/// How many host scans a targeted scan gets when its SSID does not show.
const TARGETED_SCAN_ATTEMPTS: u32 = 3;

/// A device state change: (new state, old state, reason).
type StateChange = (u32, u32, u32);

/// What the backend read about a device when it appeared.
pub(crate) struct DeviceInfo {
    pub path: OwnedObjectPath,
    pub interface: String,
    pub perm_hw_address: Option<String>,
    pub state: u32,
    pub active_ap: Option<OwnedObjectPath>,
    /// `None` when the device has no `LastScan` property (NetworkManager
    /// older than 1.12).
    pub last_scan: Option<i64>,
}

pub(crate) struct NmDevice {
    core: StationCore<NmDevice>,
    path: OwnedObjectPath,
    /// The bus connection the device was found on (a new connection finds
    /// the devices again).
    conn: zbus::Connection,
    shared: Arc<Shared>,
    /// The access point the device is associated with, if any.
    active_ap: Mutex<Option<OwnedObjectPath>>,
    last_scan: watch::Sender<Option<i64>>,
    states: broadcast::Sender<StateChange>,
}

/// Whether a device state has the link up: associated and authenticated
/// (IP configuration, IP check, secondaries, activated).
fn link_up(st: u32) -> bool {
    (state::IP_CONFIG..=state::ACTIVATED).contains(&st)
}

fn none_if_root(path: OwnedObjectPath) -> Option<OwnedObjectPath> {
    (path.as_str() != "/").then_some(path)
}

fn is_unknown(e: &zbus::Error) -> bool {
    matches!(
        error_name(e).as_deref(),
        Some("org.freedesktop.DBus.Error.UnknownMethod")
            | Some("org.freedesktop.DBus.Error.UnknownObject")
            | Some("org.freedesktop.DBus.Error.UnknownInterface")
    )
}

impl NmDevice {
    pub(crate) fn new(shared: Arc<Shared>, info: DeviceInfo) -> Arc<NmDevice> {
        let id = convert::interface_id(info.perm_hw_address.as_deref(), &info.interface);
        let (last_scan, _) = watch::channel(info.last_scan);
        let (states, _) = broadcast::channel(64);
        // Connected at start only when activated: a device still in IP
        // configuration is announced when it gets there.
        let start = StationStart {
            id,
            name: info.interface,
            path: info.path.clone(),
            connected: info.state == state::ACTIVATED,
            link_up: link_up(info.state),
        };
        Arc::new_cyclic(|me| NmDevice {
            core: StationCore::new(me.clone(), shared.hub.clone(), start),
            path: info.path,
            conn: shared.conn(),
            shared,
            active_ap: Mutex::new(info.active_ap),
            last_scan,
            states,
        })
    }

    fn active_ap(&self) -> MutexGuard<'_, Option<OwnedObjectPath>> {
        self.active_ap.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conn(&self) -> &zbus::Connection {
        &self.conn
    }

    async fn device_proxy(&self) -> zbus::Result<DeviceProxy<'static>> {
        proxies::at(self.conn(), &self.path).await
    }

    async fn wireless_proxy(&self) -> zbus::Result<WirelessProxy<'static>> {
        proxies::at(self.conn(), &self.path).await
    }

    // --- events routed here by the backend's signal dispatcher -------------

    pub(crate) fn on_state_changed(&self, new: u32, old: u32, reason: u32) {
        debug!(iface = %self.core.name(), new, old, reason, "device state changed");
        let _ = self.states.send((new, old, reason));
        let Some(me) = self.core.me() else { return };
        // A guest connect succeeds once the link is up (see `wait_link_up`):
        // leaving the link-up states from there is a disconnection too,
        // even if ACTIVATED was never reached.
        station::link_changed(&me, link_up(new), new == state::ACTIVATED);
    }

    pub(crate) fn on_properties_changed(
        &self,
        interface: &str,
        changed: &HashMap<String, OwnedValue>,
    ) {
        if interface != WIRELESS_IFACE {
            return;
        }
        if let Some(v) = changed
            .get("LastScan")
            .and_then(|v| i64::try_from(&**v).ok())
        {
            self.last_scan.send_replace(Some(v));
        }
        if let Some(v) = changed
            .get("ActiveAccessPoint")
            .and_then(|v| ObjectPath::try_from(&**v).ok())
        {
            *self.active_ap() = none_if_root(v.into());
        }
    }

    /// Properties of an access point changed: forward the signal strength if
    /// it is the one the device is associated with.
    pub(crate) fn on_ap_properties_changed(
        &self,
        ap: &ObjectPath<'_>,
        changed: &HashMap<String, OwnedValue>,
    ) {
        let Some(percent) = changed
            .get("Strength")
            .and_then(|v| u8::try_from(&**v).ok())
        else {
            return;
        };
        let active = self.active_ap().as_ref().is_some_and(|a| a.as_ref() == *ap);
        if active {
            self.core.publish(InterfaceEvent::SignalQuality {
                iface: self.core.id(),
                percent: percent.min(100),
            });
        }
    }

    // --- scanning ----------------------------------------------------------

    async fn ap_properties(
        &self,
        ap: &ObjectPath<'_>,
    ) -> zbus::Result<HashMap<String, OwnedValue>> {
        let props: PropertiesProxy<'_> = proxies::at(self.conn(), ap).await?;
        Ok(props
            .get_all(InterfaceName::from_static_str_unchecked(AP_IFACE))
            .await?)
    }

    /// Every access point NetworkManager knows for this device, with the
    /// object path and the `RsnFlags` of each.
    async fn access_points(
        &self,
    ) -> Result<Vec<(OwnedObjectPath, ScannedBss, u32)>, InterfaceError> {
        let wireless = self
            .wireless_proxy()
            .await
            .map_err(|e| iface_err("access points", e))?;
        let paths = wireless
            .get_all_access_points()
            .await
            .map_err(|e| iface_err("access points", e))?;
        let reads = paths.iter().map(|p| self.ap_properties(p));
        let results = futures::future::join_all(reads).await;
        let mut out = Vec::with_capacity(paths.len());
        for (path, props) in paths.into_iter().zip(results) {
            // An access point may vanish between the list and the read.
            match props {
                Ok(props) => match convert::bss_from_properties(&props) {
                    Some(bss) => {
                        let rsn = convert::rsn_flags(&props);
                        out.push((path, bss, rsn))
                    }
                    None => {
                        debug!(iface = %self.core.name(), ap = %path.as_str(), "skipping malformed access point")
                    }
                },
                Err(e) => {
                    debug!(iface = %self.core.name(), ap = %path.as_str(), "access point unreadable: {e}")
                }
            }
        }
        Ok(out)
    }

    async fn listed_bss(&self) -> Result<Vec<ScannedBss>, InterfaceError> {
        Ok(self
            .access_points()
            .await?
            .into_iter()
            .map(|(_, b, _)| b)
            .collect())
    }

    async fn request_scan(&self, target: Option<Ssid>) -> zbus::Result<()> {
        let wireless = self.wireless_proxy().await?;
        let mut options: HashMap<&str, Value<'_>> = HashMap::new();
        if let Some(ssid) = target.filter(|s| !s.is_empty()) {
            options.insert("ssids", Value::from(vec![ssid.as_bytes().to_vec()]));
        }
        wireless.request_scan(options).await
    }

    /// One host scan: `RequestScan`, then the device's `LastScan` changing
    /// (or, without `LastScan`, a fixed wait).
    async fn run_host_scan(&self, target: Option<Ssid>) -> HostScan {
        let config = &self.shared.config;
        let mut last_scan = self.last_scan.subscribe();
        let before = *last_scan.borrow_and_update();
        if let Err(e) = self.request_scan(target).await {
            // Rate limited, not allowed, radio off...: the guest keeps the
            // cached results.
            debug!(iface = %self.core.name(), "host scan request refused: {e}");
            return HostScan::Refused;
        }
        let Some(before) = before else {
            tokio::time::sleep(config.scan_fallback_wait).await;
            return HostScan::Fresh;
        };
        let changed = last_scan.wait_for(|v| *v != Some(before));
        let ended = matches!(
            tokio::time::timeout(config.scan_timeout, changed).await,
            Ok(Ok(_))
        );
        if ended {
            HostScan::Fresh
        } else {
            debug!(iface = %self.core.name(), "host scan did not finish in time");
            HostScan::Unfinished
        }
    }

    // --- connections -------------------------------------------------------

    /// The network the device is associated with, from its active access
    /// point, or else from its active connection's SSID. With `link_is_enough`
    /// a device whose link is up but whose IP configuration is not finished
    /// counts (a guest connect); otherwise only an activated one does (the
    /// host's own connections, for mirroring).
    async fn current_network(
        &self,
        link_is_enough: bool,
    ) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        let device = self
            .device_proxy()
            .await
            .map_err(|e| iface_err("device", e))?;
        let st = device
            .state()
            .await
            .map_err(|e| iface_err("device state", e))?;
        let up = if link_is_enough {
            link_up(st)
        } else {
            st == state::ACTIVATED
        };
        if !up {
            return Ok(None);
        }
        let wireless = self
            .wireless_proxy()
            .await
            .map_err(|e| iface_err("device", e))?;
        if let Some(ap) = wireless
            .active_access_point()
            .await
            .ok()
            .and_then(none_if_root)
        {
            if let Ok(props) = self.ap_properties(&ap).await {
                if let Some(bss) = convert::bss_from_properties(&props) {
                    return Ok(Some(ConnectedNetwork {
                        ssid: bss.ssid,
                        bssid: bss.bssid,
                        security: bss.security,
                    }));
                }
            }
        }
        // No usable active access point: take the SSID of the active
        // connection and the strongest access point that carries it.
        let Some(active) = device.active_connection().await.ok().and_then(none_if_root) else {
            return Ok(None);
        };
        let active: ActiveConnectionProxy<'_> = proxies::at(self.conn(), &active)
            .await
            .map_err(|e| iface_err("active connection", e))?;
        let Some(profile) = active.connection().await.ok().and_then(none_if_root) else {
            return Ok(None);
        };
        let profile: SettingsConnectionProxy<'_> = proxies::at(self.conn(), &profile)
            .await
            .map_err(|e| iface_err("connection", e))?;
        let settings = profile
            .get_settings()
            .await
            .map_err(|e| iface_err("connection settings", e))?;
        let Some(ssid) = convert::profile_ssid(&settings) else {
            return Ok(None);
        };
        let best = self
            .listed_bss()
            .await?
            .into_iter()
            .filter(|b| b.ssid == ssid)
            .max_by_key(|b| b.rssi_dbm);
        Ok(best.map(|b| ConnectedNetwork {
            ssid,
            bssid: b.bssid,
            security: b.security,
        }))
    }

    /// What the activation needs to know of the target network: the access
    /// point to name as the activation's specific object (the one with the
    /// requested BSSID and SSID, if NetworkManager sees it), and whether the
    /// network offers WPA3-SAE besides WPA2-PSK (transition mode).
    async fn target_network(&self, params: &ConnectParams) -> (OwnedObjectPath, bool) {
        let root = OwnedObjectPath::from(ObjectPath::from_static_str_unchecked("/"));
        let bssid = params.bssid.filter(|b| !b.is_zero());
        let Ok(aps) = self.access_points().await else {
            return (root, false);
        };
        let mut specific = None;
        let mut transition = false;
        for (path, bss, rsn_flags) in aps {
            if bss.ssid != params.ssid || bssid.is_some_and(|b| b != bss.bssid) {
                continue;
            }
            transition |= convert::is_psk_sae_transition(rsn_flags);
            if bssid.is_some() && specific.is_none() {
                specific = Some(path);
            }
        }
        (specific.unwrap_or(root), transition)
    }

    /// Adds the guest's profile and activates it, then waits for the device
    /// to be activated or to fail.
    async fn add_and_activate(
        &self,
        params: &ConnectParams,
    ) -> Result<ConnectedNetwork, InterfaceError> {
        let psk = convert::profile_secret(params);
        let uuid = Uuid::new_v4().to_string();
        let id = convert::profile_id(&params.ssid);
        let build = || {
            convert::profile_settings(
                params,
                self.core.name(),
                &uuid,
                &id,
                psk.as_ref().map(|p| p.as_str()),
            )
            .map_err(|e| InterfaceError::UnusableKey(e.to_string()))
        };
        let (specific, transition) = self.target_network(params).await;
        // A WPA2/WPA3 transition network cannot be joined with the guest's
        // PMK through NetworkManager 1.42: for `key-mgmt=wpa-psk` it always
        // offers wpa_supplicant `SAE` too (even with `pmf=disable`, shown by
        // the VM test), wpa_supplicant prefers SAE on such a network, and
        // SAE needs the password, which the guest never sends. The
        // activation would only fail after the connect bound; refuse at
        // once with a status that says why.
        if transition && params.key.is_some() {
            warn!(iface = %self.core.name(), ssid = %params.ssid, "WPA2/WPA3 transition networks cannot be joined with a PMK through NetworkManager; refusing");
            return Err(InterfaceError::Rejected {
                status: convert::STATUS_INVALID_AKMP,
            });
        }
        let nm = NetworkManagerProxy::builder(self.conn())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| iface_err("NetworkManager", e))?;
        // Subscribe before activating, so no state change is missed.
        let mut states = self.states.subscribe();
        let mut options: HashMap<&str, Value<'_>> = HashMap::new();
        // Volatile: NetworkManager deletes the profile itself when it is
        // deactivated; bound to this D-Bus client: deactivated if the
        // service dies without cleaning up.
        options.insert("persist", Value::from("volatile"));
        options.insert("bind-activation", Value::from("dbus-client"));
        let added = match nm
            .add_and_activate_connection2(build()?, &self.path, &specific, options)
            .await
        {
            Ok((profile, active, _)) => Ok((profile, active)),
            Err(e) if is_unknown(&e) => {
                debug!("AddAndActivateConnection2 unavailable, using AddAndActivateConnection");
                nm.add_and_activate_connection(build()?, &self.path, &specific)
                    .await
            }
            Err(e) => Err(e),
        };
        drop(psk);
        let (profile, active) = added.map_err(|e| iface_err("activation", e))?;
        info!(iface = %self.core.name(), ssid = %params.ssid, profile = %profile.as_str(), "activating a guest connection");
        self.shared.set_profile(&self.path, profile.clone());

        let wait = self.wait_link_up(&mut states, &active);
        let outcome = match tokio::time::timeout(self.shared.config.connect_timeout, wait).await {
            Ok(Ok(())) => match self.current_network(true).await {
                Ok(Some(network)) => return Ok(network),
                Ok(None) => Err(InterfaceError::UnknownAccessPoint),
                Err(e) => Err(e),
            },
            Ok(Err(reason)) => Err(convert::activation_failure(reason, &params.ssid)),
            Err(_) => Err(InterfaceError::ConnectTimeout {
                limit: self.shared.config.connect_timeout,
            }),
        };
        // Failed: leave nothing behind.
        self.delete_profile().await;
        outcome
    }

    /// Waits until the device's link is up with `active` (associated and
    /// authenticated: state IP_CONFIG or later), or fails. The error is the
    /// device state reason.
    ///
    /// Why not wait for ACTIVATED: the guest asked to join a Wi-Fi network,
    /// which is done once the 4-way handshake completes. The host's IP
    /// configuration (DHCP, then NetworkManager's IP check) comes on top, a
    /// few seconds measured in the VM test, and took activations past the
    /// connect bound. If it fails later, NetworkManager drops the
    /// connection and the guest is told like for any host disconnection.
    async fn wait_link_up(
        &self,
        states: &mut broadcast::Receiver<StateChange>,
        active: &OwnedObjectPath,
    ) -> Result<(), u32> {
        let mut activating = false;
        loop {
            let (new, _old, reason) = match states.recv().await {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Err(0),
            };
            if self.core.is_gone() {
                return Err(0);
            }
            match new {
                s if link_up(s) => {
                    let ours = match self.device_proxy().await {
                        Ok(d) => d.active_connection().await.ok(),
                        Err(_) => None,
                    };
                    if ours.as_ref() == Some(active) {
                        return Ok(());
                    }
                }
                state::FAILED => return Err(reason),
                state::DISCONNECTED if activating => return Err(reason),
                s if (state::PREPARE..state::IP_CONFIG).contains(&s) => activating = true,
                _ => {}
            }
        }
    }

    /// Deletes the profile the proxy made on this device, if any. A volatile
    /// profile NetworkManager already removed is fine.
    pub(crate) async fn delete_profile(&self) {
        if let Some(profile) = self.shared.take_profile(&self.path) {
            delete_profile(self.conn(), &profile).await;
        }
    }
}

/// Deletes one of the proxy's profiles, tolerating that it is already gone.
///
/// NetworkManager removes a volatile profile itself when its activation
/// fails or ends; a `Delete` racing with that removal fails ("connection was
/// deleted") although the outcome is the one wanted. So a failed `Delete` is
/// only reported when the profile is still listed afterwards.
pub(crate) async fn delete_profile(conn: &zbus::Connection, profile: &OwnedObjectPath) {
    let result = match proxies::at::<SettingsConnectionProxy<'_>>(conn, profile).await {
        Ok(p) => p.delete().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => debug!(profile = %profile.as_str(), "deleted the proxy's connection profile"),
        Err(e) if is_unknown(&e) => {}
        Err(e) => match profile_listed(conn, profile).await {
            Ok(false) => {
                debug!(profile = %profile.as_str(), "the proxy's connection profile was already deleted ({e})")
            }
            Ok(true) | Err(_) => {
                warn!(profile = %profile.as_str(), "cannot delete the proxy's connection profile: {e}")
            }
        },
    }
}

/// Whether NetworkManager still lists a profile.
async fn profile_listed(conn: &zbus::Connection, profile: &OwnedObjectPath) -> zbus::Result<bool> {
    let settings = proxies::NmSettingsProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    Ok(settings.list_connections().await?.contains(profile))
}

#[async_trait]
impl HostStation for NmDevice {
    /// `RequestScan` probes the SSIDs it is given. A request is retried once
    /// when its `LastScan` never changes (wpa_supplicant rejected it: "one
    /// is already pending"), and a targeted scan whose SSID is not in the
    /// results gets 3 host scans in all: while disconnected NetworkManager
    /// runs periodic scans of its own, wpa_supplicant rejects a request
    /// arriving during one, and `LastScan` changes with the periodic scan
    /// anyway (seen in the VM test). NetworkManager keeps its access point
    /// list: an empty one is the answer.
    const SCAN_POLICY: ScanPolicy = ScanPolicy {
        probes_ssid: true,
        attempts_if_unfinished: 2,
        attempts_for_missing_target: TARGETED_SCAN_ATTEMPTS,
        empty_means_scanning: false,
    };

    const NOT_CONNECTED_ERROR: &'static str = "org.freedesktop.NetworkManager.Device.NotActive";

    fn core(&self) -> &StationCore<Self> {
        &self.core
    }

    async fn cached_bss(&self, _target: Option<&Ssid>) -> Result<Vec<ScannedBss>, InterfaceError> {
        self.listed_bss().await
    }

    async fn host_scan(&self, target: Option<Ssid>) -> HostScan {
        self.run_host_scan(target).await
    }

    async fn connected_now(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        self.current_network(false).await
    }

    async fn current_connection(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        // The proxy's own connection counts once its link is up, as its
        // connect did (see `wait_link_up`): the handler asks this to tell a
        // stale disconnection event (the old network's, after a switch)
        // from a real one, and the VM test saw a switch answered at link-up
        // be dropped because the device was still in IP configuration.
        let ours = self.shared.has_profile(&self.path);
        self.current_network(ours).await
    }

    async fn activate(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        self.add_and_activate(params).await
    }

    async fn undo_activation(&self) {
        self.delete_profile().await;
    }

    async fn remove_guest_connection(&self) {
        self.delete_profile().await;
    }

    async fn request_disconnect(&self) -> zbus::Result<()> {
        self.device_proxy().await?.disconnect().await
    }
}
