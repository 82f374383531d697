//! One NetworkManager Wi-Fi device as a [`WifiInterface`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use tokio::sync::{broadcast, oneshot, watch};
use tracing::{debug, info, warn};
use uuid::Uuid;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

use crate::protocol::Ssid;
use crate::wifi::{
    ConnectParams, ConnectedNetwork, InterfaceError, InterfaceEvent, InterfaceId, ScanResult,
    ScannedBss, WifiInterface,
};

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

/// A host scan the device is running.
struct InFlightScan {
    /// The SSID it probes, if it is a targeted scan.
    target: Option<Ssid>,
    done: watch::Receiver<bool>,
    /// Set when a `scan()` call waits for this scan: its results then go to
    /// that caller, not out as a notification.
    waited: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    /// The access point the device is associated with, if any.
    active_ap: Option<OwnedObjectPath>,
    /// Whether observers were told (or, at start, the device was) connected,
    /// so a later disconnection is reported exactly once.
    connected: bool,
    /// Whether the device is in a link-up state (`link_up`), so leaving it
    /// is reported as a disconnection.
    link_up: bool,
    /// Bumped on every state change, so a slow "connected" lookup can tell
    /// it has been overtaken.
    state_generation: u64,
    scan: Option<InFlightScan>,
}

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
    id: Uuid,
    name: String,
    path: OwnedObjectPath,
    /// The bus connection the device was found on (a new connection finds
    /// the devices again).
    conn: zbus::Connection,
    shared: Arc<Shared>,
    me: Weak<NmDevice>,
    gone: AtomicBool,
    inner: Mutex<Inner>,
    last_scan: watch::Sender<Option<i64>>,
    states: broadcast::Sender<StateChange>,
    /// Serializes connects and disconnects of this device.
    op_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Whether a device state has the link up: associated and authenticated
/// (IP configuration, IP check, secondaries, activated).
fn link_up(st: u32) -> bool {
    (state::IP_CONFIG..=state::ACTIVATED).contains(&st)
}

fn none_if_root(path: OwnedObjectPath) -> Option<OwnedObjectPath> {
    (path.as_str() != "/").then_some(path)
}

/// The D-Bus error name of a failed call, if it was one.
pub(crate) fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_string()),
        zbus::Error::FDO(e) => Some(zbus::DBusError::name(&**e).to_string()),
        _ => None,
    }
}

fn iface_err(what: &'static str, e: zbus::Error) -> InterfaceError {
    match error_name(&e).as_deref() {
        Some("org.freedesktop.DBus.Error.ServiceUnknown")
        | Some("org.freedesktop.DBus.Error.NameHasNoOwner")
        | Some("org.freedesktop.DBus.Error.NoReply") => {
            InterfaceError::Unavailable(format!("{what}: {e}"))
        }
        Some("org.freedesktop.DBus.Error.UnknownObject") => InterfaceError::Gone,
        _ => InterfaceError::HostServiceError {
            call: what,
            message: e.to_string(),
        },
    }
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
        Arc::new_cyclic(|me| NmDevice {
            id,
            name: info.interface,
            path: info.path,
            conn: shared.conn(),
            shared,
            me: me.clone(),
            gone: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                active_ap: info.active_ap,
                connected: info.state == state::ACTIVATED,
                link_up: link_up(info.state),
                ..Inner::default()
            }),
            last_scan,
            states,
            op_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub(crate) fn path(&self) -> &OwnedObjectPath {
        &self.path
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device went away (removed, or NetworkManager stopped): every later
    /// call fails with [`InterfaceError::Gone`] and no more events are sent.
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
        debug!(iface = %self.name, new, old, reason, "device state changed");
        let _ = self.states.send((new, old, reason));
        let generation = {
            let mut inner = self.inner();
            inner.state_generation += 1;
            // A guest connect succeeds once the link is up (see
            // `wait_link_up`): leaving the link-up states from there is a
            // disconnection too, even if ACTIVATED was never reached.
            if link_up(new) {
                inner.link_up = true;
            } else if inner.connected || inner.link_up {
                inner.connected = false;
                inner.link_up = false;
                self.publish(InterfaceEvent::Disconnected { iface: self.id });
            }
            inner.state_generation
        };
        if new == state::ACTIVATED {
            let Some(me) = self.me.upgrade() else { return };
            tokio::spawn(async move {
                let network = match me.current_network(false).await {
                    Ok(Some(n)) => n,
                    Ok(None) => return,
                    Err(e) => {
                        debug!(iface = %me.name, "cannot read the new connection: {e}");
                        return;
                    }
                };
                let mut inner = me.inner();
                // A later state change makes this one stale.
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
            self.inner().active_ap = none_if_root(v.into());
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
        let active = self
            .inner()
            .active_ap
            .as_ref()
            .is_some_and(|a| a.as_ref() == *ap);
        if active {
            self.publish(InterfaceEvent::SignalQuality {
                iface: self.id,
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
                        debug!(iface = %self.name, ap = %path.as_str(), "skipping malformed access point")
                    }
                },
                Err(e) => {
                    debug!(iface = %self.name, ap = %path.as_str(), "access point unreadable: {e}")
                }
            }
        }
        Ok(out)
    }

    async fn cached_bss(&self) -> Result<Vec<ScannedBss>, InterfaceError> {
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

    /// Makes a scan for `target` the device's running scan, unless one is
    /// running already.
    fn begin_scan(&self, target: Option<Ssid>) -> Option<(watch::Sender<bool>, Arc<AtomicBool>)> {
        let mut inner = self.inner();
        if inner.scan.is_some() {
            return None;
        }
        let (done_tx, done_rx) = watch::channel(false);
        let waited = Arc::new(AtomicBool::new(false));
        inner.scan = Some(InFlightScan {
            target,
            done: done_rx,
            waited: waited.clone(),
        });
        Some((done_tx, waited))
    }

    /// Runs a host scan for `target` as soon as no other scan runs (a queued
    /// targeted scan, or the retry of a dropped one). Its results go out as
    /// a notification.
    ///
    /// Boxed: it and `run_scan` start each other.
    fn scan_when_idle(
        self: Arc<Self>,
        target: Option<Ssid>,
        attempt: u32,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move { self.scan_when_idle_inner(target, attempt).await })
    }

    async fn scan_when_idle_inner(self: Arc<Self>, target: Option<Ssid>, attempt: u32) {
        loop {
            if self.gone.load(Ordering::SeqCst) {
                return;
            }
            let running = self.inner().scan.as_ref().map(|s| s.done.clone());
            match running {
                Some(mut done) => {
                    let _ = done.wait_for(|d| *d).await;
                }
                None => {
                    if let Some((done, waited)) = self.begin_scan(target) {
                        self.run_scan(target, done, waited, attempt).await;
                        return;
                    }
                }
            }
        }
    }

    /// Runs one host scan to its end and hands out its results. A scan
    /// NetworkManager accepted but that never ends (wpa_supplicant may
    /// refuse it: "one is already pending") is retried once.
    async fn run_scan(
        self: Arc<Self>,
        target: Option<Ssid>,
        done: watch::Sender<bool>,
        waited: Arc<AtomicBool>,
        attempt: u32,
    ) {
        let config = &self.shared.config;
        let mut dropped = false;
        let mut last_scan = self.last_scan.subscribe();
        let before = *last_scan.borrow_and_update();
        let fresh = match self.request_scan(target).await {
            Err(e) => {
                // Rate limited, not allowed, radio off...: the guest keeps
                // the cached results.
                debug!(iface = %self.name, "host scan request refused: {e}");
                false
            }
            Ok(()) => match before {
                Some(before) => {
                    let changed = last_scan.wait_for(|v| *v != Some(before));
                    match tokio::time::timeout(config.scan_timeout, changed).await {
                        Ok(Ok(_)) => true,
                        _ => {
                            debug!(iface = %self.name, attempt, "host scan did not finish in time");
                            dropped = true;
                            false
                        }
                    }
                }
                None => {
                    tokio::time::sleep(config.scan_fallback_wait).await;
                    true
                }
            },
        };
        // Close the scan before announcing it: a scan() arriving from now on
        // starts a new one rather than joining this one.
        self.inner().scan = None;
        let _ = done.send(true);
        if self.gone.load(Ordering::SeqCst) {
            return;
        }
        let bss = if fresh {
            match self.cached_bss().await {
                Ok(bss) => Some(bss),
                Err(e) => {
                    debug!(iface = %self.name, "cannot read fresh scan results: {e}");
                    None
                }
            }
        } else {
            None
        };
        // A targeted scan whose SSID did not show was most likely rejected
        // by wpa_supplicant ("one is already pending": NetworkManager runs
        // periodic scans of its own, and LastScan changes with those, seen
        // in the VM test): retry it, a bounded number of times.
        let missed_target = match (target, &bss) {
            (Some(t), Some(list)) => !list.iter().any(|b| b.ssid == t),
            _ => false,
        };
        if (dropped && attempt == 1) || (missed_target && attempt < TARGETED_SCAN_ATTEMPTS) {
            debug!(iface = %self.name, attempt, missed_target, "retrying the host scan");
            tokio::spawn(self.clone().scan_when_idle(target, attempt + 1));
        }
        if let Some(bss) = bss.filter(|_| !waited.load(Ordering::SeqCst)) {
            self.publish(InterfaceEvent::ScanResults {
                iface: self.id,
                result: ScanResult {
                    bss,
                    complete: true,
                },
            });
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
            .cached_bss()
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
    async fn activate(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        let psk = convert::profile_secret(params);
        let uuid = Uuid::new_v4().to_string();
        let id = convert::profile_id(&params.ssid);
        let build = || {
            convert::profile_settings(
                params,
                &self.name,
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
            warn!(iface = %self.name, ssid = %params.ssid, "WPA2/WPA3 transition networks cannot be joined with a PMK through NetworkManager; refusing");
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
        info!(iface = %self.name, ssid = %params.ssid, profile = %profile.as_str(), "activating a guest connection");
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
            if self.gone.load(Ordering::SeqCst) {
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
impl WifiInterface for NmDevice {
    fn id(&self) -> InterfaceId {
        self.id
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    async fn connected_network(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        self.check()?;
        // The proxy's own connection counts once its link is up, as its
        // connect did (see `wait_link_up`): the handler asks this to tell a
        // stale disconnection event (the old network's, after a switch)
        // from a real one, and the VM test saw a switch answered at link-up
        // be dropped because the device was still in IP configuration.
        let ours = self.shared.has_profile(&self.path);
        self.current_network(ours).await
    }

    async fn scan(&self, target: Option<&Ssid>) -> Result<ScanResult, InterfaceError> {
        self.check()?;
        enum Plan {
            Join(watch::Receiver<bool>),
            Start(watch::Sender<bool>, Arc<AtomicBool>),
            /// A targeted scan while a scan that does not probe its SSID
            /// runs: joining it would never probe the SSID.
            Queue,
        }
        let target = target.copied().filter(|s| !s.is_empty());
        let plan = {
            let running = self
                .inner()
                .scan
                .as_ref()
                .map(|running| (running.target, running.done.clone(), running.waited.clone()));
            match running {
                Some((running_target, _, _)) if target.is_some() && running_target != target => {
                    Plan::Queue
                }
                Some((_, done, waited)) => {
                    waited.store(true, Ordering::SeqCst);
                    Plan::Join(done)
                }
                None => match self.begin_scan(target) {
                    Some((done, waited)) => Plan::Start(done, waited),
                    // Another caller began one in between: wait for it.
                    None => match self.inner().scan.as_ref() {
                        Some(running) => {
                            running.waited.store(true, Ordering::SeqCst);
                            Plan::Join(running.done.clone())
                        }
                        None => Plan::Queue,
                    },
                },
            }
        };
        match plan {
            Plan::Join(mut done) => {
                // The running scan ends within its own bound.
                let _ = done.wait_for(|d| *d).await;
                self.check()?;
                Ok(ScanResult {
                    bss: self.cached_bss().await?,
                    complete: true,
                })
            }
            Plan::Start(done, waited) => {
                let cached = self.cached_bss().await;
                match self.me.upgrade() {
                    Some(me) => {
                        tokio::spawn(me.run_scan(target, done, waited, 1));
                    }
                    None => {
                        self.inner().scan = None;
                    }
                }
                Ok(ScanResult {
                    bss: cached?,
                    complete: true,
                })
            }
            Plan::Queue => {
                debug!(iface = %self.name, "a targeted scan waits for the running host scan");
                let cached = self.cached_bss().await;
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(me.scan_when_idle(target, 1));
                }
                Ok(ScanResult {
                    bss: cached?,
                    complete: true,
                })
            }
        }
    }

    async fn connect(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        self.check()?;
        let me = self.me.upgrade().ok_or(InterfaceError::Gone)?;
        let params = params.clone();
        let (tx, rx) = oneshot::channel();
        // The work runs in its own task so that a caller giving up (the
        // handler's 10 s bound) cannot leave a half-made profile behind.
        tokio::spawn(async move {
            let _op = me.op_lock.clone().lock_owned().await;
            // A new guest connection replaces the proxy's earlier one.
            me.delete_profile().await;
            let result = me.activate(&params).await;
            if let Err(e) = &result {
                warn!(iface = %me.name, ssid = %params.ssid, "guest connection failed: {e}");
            }
            if let Err(result) = tx.send(result) {
                if result.is_ok() {
                    info!(iface = %me.name, "connect finished after the caller gave up; undoing it");
                    me.delete_profile().await;
                }
            }
        });
        rx.await.unwrap_or(Err(InterfaceError::TaskEnded))
    }

    async fn disconnect(&self) -> Result<(), InterfaceError> {
        self.check()?;
        let _op = self.op_lock.lock().await;
        let device = self
            .device_proxy()
            .await
            .map_err(|e| iface_err("device", e))?;
        let result = match device.disconnect().await {
            Ok(()) => Ok(()),
            // Already disconnected.
            Err(e)
                if error_name(&e).as_deref()
                    == Some("org.freedesktop.NetworkManager.Device.NotActive") =>
            {
                Ok(())
            }
            Err(e) => Err(iface_err("disconnect", e)),
        };
        self.delete_profile().await;
        result
    }
}
