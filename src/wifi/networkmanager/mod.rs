//! The host's Wi-Fi through NetworkManager, over the system D-Bus.
//!
//! [`NetworkManagerWifi`] is a [`HostWifi`] backend: every NetworkManager
//! device of type Wi-Fi that NetworkManager manages is a
//! [`WifiInterface`](crate::wifi::WifiInterface), added and removed as
//! NetworkManager reports devices (`DeviceAdded`, `DeviceRemoved`, a device
//! entering or leaving the `unmanaged` state) and as NetworkManager itself
//! comes and goes on the bus (`NameOwnerChanged`). While NetworkManager is absent the backend has no
//! interfaces and keeps waiting for it.
//!
//! All NetworkManager signals reach the backend through one ordered message
//! stream (a match rule on NetworkManager's unique bus name), which a
//! dispatcher task routes to the devices: state changes, `LastScan` and
//! `ActiveAccessPoint` of a device, `Strength` of its access point.
//!
//! Guest-directed connections become NetworkManager profiles that the proxy
//! owns: named `proxy-wifi-<ssid>`, marked in their `user` setting
//! (`org.proxy-wifi.managed=1`), never autoconnecting, added with
//! `AddAndActivateConnection2` as volatile (NetworkManager drops them on
//! deactivation) and bound to the service's bus connection (NetworkManager
//! deactivates them if the service dies). The backend deletes them itself on
//! guest disconnect, failure and shutdown, and deletes leftovers bearing its
//! marker when NetworkManager appears. Profiles of the host are never
//! touched.

pub mod convert;
mod device;
mod proxies;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};
use zbus::names::OwnedUniqueName;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use crate::wifi::dbus::station::{HostStation, Stations};
use crate::wifi::dbus::{self, Backoff, BusLink, FollowedService, Following};
use crate::wifi::{BackendHealth, EventHub, HostWifi, InterfaceEvent, WifiInterface};

use device::{DeviceInfo, NmDevice};
use proxies::{
    DeviceProxy, NetworkManagerProxy, NmSettingsProxy, SettingsConnectionProxy, WirelessProxy,
    AP_IFACE, DEVICE_IFACE, NM_BUS_NAME, NM_IFACE, NM_PATH,
};

pub use crate::wifi::dbus::BusAddress;

/// Time bounds of the backend. The defaults suit real hosts; tests shorten
/// them.
#[derive(Debug, Clone)]
pub struct NmConfig {
    /// How long a host scan may take before its results are taken as they
    /// are (its `LastScan` did not change). A guest scan never waits for it:
    /// this bounds when its results reach the guest as a notification.
    pub scan_timeout: Duration,
    /// How long a host scan is given when the device has no `LastScan`
    /// property (NetworkManager older than 1.12).
    pub scan_fallback_wait: Duration,
    /// How long a guest-directed connection may take to activate. At the
    /// handler's whole connect budget (18 s), so an activation the handler
    /// was configured to wait for (`connect_timeout_ms`) is never cut short
    /// here; one that ends after the handler gave up is undone.
    pub connect_timeout: Duration,
    /// Bound of every D-Bus call.
    pub call_timeout: Duration,
}

impl Default for NmConfig {
    fn default() -> Self {
        NmConfig {
            scan_timeout: Duration::from_secs(8),
            scan_fallback_wait: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(18),
            call_timeout: Duration::from_secs(8),
        }
    }
}

/// Why the backend could not start.
pub type NmError = crate::wifi::dbus::BusError;

/// State shared by the backend and its devices.
pub(crate) struct Shared {
    /// The bus connection now, replaced when it is lost and made again (a
    /// device keeps the connection it was found on), and the health.
    link: BusLink,
    pub(crate) hub: Arc<EventHub>,
    pub(crate) config: NmConfig,
    /// The proxy's profile on each device (device path -> profile path).
    profiles: Mutex<HashMap<OwnedObjectPath, OwnedObjectPath>>,
}

impl Shared {
    pub(crate) fn conn(&self) -> zbus::Connection {
        self.link.conn()
    }

    fn profiles(&self) -> MutexGuard<'_, HashMap<OwnedObjectPath, OwnedObjectPath>> {
        self.profiles.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_profile(&self, device: &OwnedObjectPath, profile: OwnedObjectPath) {
        self.profiles().insert(device.clone(), profile);
    }

    /// Whether the proxy has a profile of its own on `device`.
    pub(crate) fn has_profile(&self, device: &OwnedObjectPath) -> bool {
        self.profiles().contains_key(device)
    }

    pub(crate) fn take_profile(&self, device: &OwnedObjectPath) -> Option<OwnedObjectPath> {
        self.profiles().remove(device)
    }
}

/// NetworkManager's name in logs and in the backend's health.
const NM_NAME: &str = "NetworkManager";

#[async_trait::async_trait]
impl FollowedService for Shared {
    type State = Devices;
    const BUS_NAME: &'static str = NM_BUS_NAME;
    const NAME: &'static str = NM_NAME;
    /// 0.25 s doubling to 5 s: NetworkManager takes its bus name before it
    /// exports its objects, a gap seen (VM test) to last several seconds.
    const START_RETRY: Backoff = Backoff {
        first: Duration::from_millis(250),
        max: Duration::from_secs(5),
    };

    fn link(&self) -> &BusLink {
        &self.link
    }

    async fn try_start_session(me: &Arc<Self>, owner: OwnedUniqueName) -> zbus::Result<Session> {
        try_start_session(me, owner).await
    }

    async fn stop_session(&self, session: Session) {
        stop_session(self, session);
    }
}

/// The Wi-Fi devices of one NetworkManager session.
type Devices = Arc<Stations<NmDevice>>;

/// NetworkManager as seen while it owns its bus name: its devices.
type Session = dbus::Session<Devices>;

/// The host's Wi-Fi through NetworkManager. See the module documentation.
pub struct NetworkManagerWifi {
    shared: Arc<Shared>,
    following: Following<Devices>,
}

impl NetworkManagerWifi {
    /// Connects to the bus and starts following NetworkManager. Succeeds when
    /// NetworkManager is absent (it is then picked up when it appears); fails
    /// only when the bus cannot be reached.
    pub async fn start(bus: BusAddress) -> Result<Arc<NetworkManagerWifi>, NmError> {
        NetworkManagerWifi::start_with(bus, NmConfig::default()).await
    }

    /// [`NetworkManagerWifi::start`] with explicit time bounds.
    ///
    /// Once started, the backend never gives up: a NetworkManager that owns
    /// its name but does not answer yet is retried with backoff for as long
    /// as it owns the name, and a lost bus connection (the bus daemon
    /// restarted) is made again with backoff, while [`HostWifi::health`]
    /// says what is going on. Why not exit and let systemd restart the
    /// service: one daemon serves many guests, whose listeners, sessions
    /// and notification channels (and a VMM's hybrid-vsock sockets) would
    /// all be torn down; the bus coming back is an event like NetworkManager
    /// coming back, and the backend already re-reads everything then.
    pub async fn start_with(
        bus: BusAddress,
        config: NmConfig,
    ) -> Result<Arc<NetworkManagerWifi>, NmError> {
        let link = BusLink::connect(bus, config.call_timeout, NM_NAME).await?;
        let shared = Arc::new(Shared {
            link,
            hub: Arc::new(EventHub::new()),
            config,
            profiles: Mutex::new(HashMap::new()),
        });
        let following = dbus::follow(&shared).await?;
        Ok(Arc::new(NetworkManagerWifi { shared, following }))
    }

    /// Whether NetworkManager is on the bus now.
    pub async fn is_available(&self) -> bool {
        self.following.is_up().await
    }

    /// Stops following NetworkManager, removes the interfaces and deletes
    /// every profile the proxy created.
    pub async fn shutdown(&self) {
        self.following.stop_supervisor();
        // Take the profiles before stopping the session, which forgets them.
        let profiles: Vec<OwnedObjectPath> =
            self.shared.profiles().drain().map(|(_, p)| p).collect();
        let conn = self.shared.conn();
        for profile in profiles {
            device::delete_profile(&conn, &profile).await;
        }
        if let Some(session) = self.following.take().await {
            stop_session(&self.shared, session);
        }
    }
}

#[async_trait::async_trait]
impl HostWifi for NetworkManagerWifi {
    fn subscribe(&self) -> broadcast::Receiver<InterfaceEvent> {
        self.shared.hub.subscribe()
    }

    fn interfaces(&self) -> Vec<Arc<dyn WifiInterface>> {
        self.shared.hub.interfaces()
    }

    async fn shutdown(&self) {
        NetworkManagerWifi::shutdown(self).await
    }

    fn health(&self) -> watch::Receiver<BackendHealth> {
        self.shared.link.health()
    }
}

async fn try_start_session(shared: &Arc<Shared>, owner: OwnedUniqueName) -> zbus::Result<Session> {
    // Every signal NetworkManager sends, in order, from before the device
    // list is read.
    let conn = shared.conn();
    let stream = dbus::signals_from(&conn, &owner, Some(NM_PATH)).await?;

    delete_leftover_profiles(shared).await;

    let nm = NetworkManagerProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let devices: Devices = Arc::new(Stations::new(shared.hub.clone()));
    for path in nm.get_devices().await? {
        add_device(shared, &devices, path).await;
    }
    info!(
        "following NetworkManager: {} Wi-Fi device(s)",
        devices.all().len()
    );
    let dispatcher = {
        let (shared, devices) = (shared.clone(), devices.clone());
        tokio::spawn(dbus::route_signals(
            stream,
            "NetworkManager",
            move |signal| route(shared.clone(), devices.clone(), signal),
        ))
    };
    Ok(Session {
        owner,
        dispatcher,
        state: devices,
    })
}

fn stop_session(shared: &Shared, session: Session) {
    session.dispatcher.abort();
    session.state.clear();
    // The proxy's profiles went with NetworkManager (they are volatile);
    // any that survived are deleted as leftovers when it returns.
    shared.profiles().clear();
}

/// Deletes profiles the proxy left behind (a crash, or NetworkManager
/// stopping while a guest was connected). Only profiles with the proxy's
/// name prefix and marker are touched.
async fn delete_leftover_profiles(shared: &Shared) {
    let conn = shared.conn();
    let work = async {
        let settings = NmSettingsProxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        for path in settings.list_connections().await? {
            let profile: SettingsConnectionProxy<'_> = proxies::at(&conn, &path).await?;
            match profile.get_settings().await {
                Ok(s) if convert::is_proxy_profile(&s) => {
                    info!(profile = %path.as_str(), "deleting a leftover proxy-wifi profile");
                    device::delete_profile(&conn, &path).await;
                }
                Ok(_) => {}
                Err(e) => debug!(profile = %path.as_str(), "cannot read profile: {e}"),
            }
        }
        Ok::<(), zbus::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("cannot list NetworkManager profiles: {e}"),
        Err(_) => warn!("listing NetworkManager profiles took too long; leftovers kept"),
    }
}

/// Reads a device and adds it if it is a Wi-Fi device.
async fn add_device(shared: &Arc<Shared>, devices: &Devices, path: OwnedObjectPath) {
    let conn = shared.conn();
    let info = async {
        let device: DeviceProxy<'_> = proxies::at(&conn, &path).await?;
        if device.device_type().await? != convert::DEVICE_TYPE_WIFI {
            return Ok(None);
        }
        let wireless: WirelessProxy<'_> = proxies::at(&conn, &path).await?;
        let interface = device.interface().await?;
        let state = device.state().await?;
        // An unmanaged device (an access point's radio, a device the admin
        // keeps for something else) can neither scan nor connect through
        // NetworkManager: offering it to guests only costs every connect and
        // scan a failed call. It is added when it becomes managed.
        if state == convert::state::UNMANAGED {
            debug!(%interface, "ignoring an unmanaged Wi-Fi device");
            return Ok(None);
        }
        Ok::<_, zbus::Error>(Some(DeviceInfo {
            path: path.clone(),
            interface,
            perm_hw_address: wireless.perm_hw_address().await.ok(),
            state,
            active_ap: wireless
                .active_access_point()
                .await
                .ok()
                .filter(|p| p.as_str() != "/"),
            last_scan: wireless.last_scan().await.ok(),
        }))
    };
    let info = match info.await {
        Ok(Some(info)) => info,
        Ok(None) => return,
        Err(e) => {
            debug!(device = %path.as_str(), "cannot read device: {e}");
            return;
        }
    };
    let device = NmDevice::new(shared.clone(), info);
    let (name, id) = (device.name(), device.id());
    if devices.add(device) {
        info!(iface = %name, id = %id, "Wi-Fi device added");
    }
}

fn remove_device(shared: &Shared, devices: &Devices, path: &ObjectPath<'_>) {
    if let Some(device) = devices.remove(path) {
        info!(iface = %device.name(), "Wi-Fi device removed");
        shared.profiles().remove(device.core().path());
    }
}

/// Routes one of NetworkManager's signals to the devices.
async fn route(shared: Arc<Shared>, devices: Devices, signal: dbus::Signal) {
    let path = &signal.path.as_ref();
    if let Some((iface, changed)) = signal.changed_properties() {
        if let Some(device) = devices.find(path) {
            device.on_properties_changed(&iface, &changed);
        } else if iface == AP_IFACE {
            for device in devices.all() {
                device.on_ap_properties_changed(path, &changed);
            }
        }
        return;
    }
    match (signal.interface.as_str(), signal.member.as_str()) {
        (NM_IFACE, "DeviceAdded") if path.as_str() == NM_PATH => {
            if let Some(device) = signal.body::<OwnedObjectPath>() {
                add_device(&shared, &devices, device).await;
            }
        }
        (NM_IFACE, "DeviceRemoved") if path.as_str() == NM_PATH => {
            if let Some(device) = signal.body::<OwnedObjectPath>() {
                remove_device(&shared, &devices, &device.as_ref());
            }
        }
        (DEVICE_IFACE, "StateChanged") => {
            let Some((new, old, reason)) = signal.body::<(u32, u32, u32)>() else {
                return;
            };
            match devices.find(path) {
                Some(_) if new == convert::state::UNMANAGED => {
                    remove_device(&shared, &devices, path);
                }
                Some(device) => device.on_state_changed(new, old, reason),
                // A device NetworkManager starts managing: follow it if
                // it is a Wi-Fi device.
                None if old == convert::state::UNMANAGED => {
                    add_device(&shared, &devices, path.to_owned().into()).await;
                }
                None => {}
            }
        }
        _ => {}
    }
}
