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

use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};
use zbus::fdo::NameOwnerChangedStream;
use zbus::names::OwnedUniqueName;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use crate::wifi::dbus::station::{HostStation, Stations};
use crate::wifi::dbus::{self, Following};
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
    /// The bus connection now; replaced when the bus connection is lost and
    /// made again. A device keeps the connection it was found on.
    conn: Mutex<zbus::Connection>,
    pub(crate) hub: Arc<EventHub>,
    pub(crate) config: NmConfig,
    /// The proxy's profile on each device (device path -> profile path).
    profiles: Mutex<HashMap<OwnedObjectPath, OwnedObjectPath>>,
    health: watch::Sender<BackendHealth>,
}

impl Shared {
    pub(crate) fn conn(&self) -> zbus::Connection {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_conn(&self, conn: zbus::Connection) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    fn set_health(&self, health: BackendHealth) {
        self.health.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        });
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

/// The Wi-Fi devices of one NetworkManager session.
type Devices = Arc<Stations<NmDevice>>;

/// NetworkManager as seen while it owns its bus name: its devices.
type Session = dbus::Session<Devices>;

type SessionSlot = Arc<tokio::sync::Mutex<Option<Session>>>;

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
        let conn = connect_bus(&bus, &config).await?;
        let (health, _) = watch::channel(BackendHealth::ServiceDown(
            "NetworkManager not seen yet".into(),
        ));
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            hub: Arc::new(EventHub::new()),
            config,
            profiles: Mutex::new(HashMap::new()),
            health,
        });
        let (owners, owner) = follow_name(&shared.conn()).await?;
        let following = Following::new();
        let session = following.session.clone();
        let mut pending = None;
        match owner {
            // The first attempt is made here, so a running NetworkManager's
            // devices are there when `start` returns; later ones in the
            // background.
            Some(owner) => match try_start_session(&shared, owner.clone()).await {
                Ok(s) => {
                    shared.set_health(BackendHealth::Up);
                    *session.lock().await = Some(s);
                }
                Err(e) => {
                    debug!("NetworkManager not ready ({e}); retrying in the background");
                    pending = Some(owner);
                }
            },
            None => {
                warn!("NetworkManager is not running; serving without host Wi-Fi until it appears");
                shared.set_health(BackendHealth::ServiceDown(
                    "NetworkManager is not on the bus".into(),
                ));
            }
        }
        following.supervise(tokio::spawn(supervise(
            shared.clone(),
            session,
            bus,
            owners,
            pending,
        )));
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
        self.shared.health.subscribe()
    }
}

/// Opens a bus connection.
async fn connect_bus(bus: &BusAddress, config: &NmConfig) -> Result<zbus::Connection, NmError> {
    dbus::connect(bus, config.call_timeout)
        .await
        .map_err(NmError::Bus)
}

/// Follows NetworkManager's bus name on `conn` (see [`dbus::follow_name`]).
async fn follow_name(
    conn: &zbus::Connection,
) -> Result<(NameOwnerChangedStream, Option<OwnedUniqueName>), NmError> {
    dbus::follow_name(conn, NM_BUS_NAME)
        .await
        .map_err(NmError::DBus)
}

/// Follows NetworkManager for the backend's life: owner changes (it
/// appears, restarts, goes away) and the bus connection itself (lost: made
/// again with backoff). Runs until the backend shuts down.
async fn supervise(
    shared: Arc<Shared>,
    session: SessionSlot,
    bus: BusAddress,
    mut owners: NameOwnerChangedStream,
    mut pending: Option<OwnedUniqueName>,
) {
    loop {
        if let Some(owner) = pending.take() {
            let mut current = session.lock().await;
            if let Some(old) = current.take() {
                stop_session(&shared, old);
            }
            *current = start_session(&shared, owner).await;
        }
        let Some(signal) = owners.next().await else {
            warn!("lost the D-Bus connection; reconnecting");
            if let Some(old) = session.lock().await.take() {
                stop_session(&shared, old);
            }
            (owners, pending) = reconnect(&shared, &bus).await;
            continue;
        };
        let Ok(new_owner) = dbus::new_owner(&signal) else {
            continue;
        };
        match new_owner {
            Some(owner) => {
                if session
                    .lock()
                    .await
                    .as_ref()
                    .is_some_and(|s| s.owner == owner)
                {
                    continue;
                }
                info!("NetworkManager appeared on the bus");
                pending = Some(owner);
            }
            None => {
                if let Some(old) = session.lock().await.take() {
                    warn!(
                        "NetworkManager went away; host Wi-Fi interfaces are gone until it returns"
                    );
                    stop_session(&shared, old);
                }
                shared.set_health(BackendHealth::ServiceDown(
                    "NetworkManager is not on the bus".into(),
                ));
            }
        }
    }
}

/// Makes the bus connection again, retrying with backoff (0.25 s doubling
/// to 10 s) until it succeeds; the backend's health says so meanwhile.
async fn reconnect(
    shared: &Shared,
    bus: &BusAddress,
) -> (NameOwnerChangedStream, Option<OwnedUniqueName>) {
    const MAX_DELAY: Duration = Duration::from_secs(10);
    let mut delay = Duration::from_millis(250);
    let mut attempts: u32 = 0;
    let mut last_error = None;
    loop {
        shared.set_health(BackendHealth::Reconnecting {
            attempts,
            last_error: last_error.clone(),
        });
        let attempt = async {
            let conn = connect_bus(bus, &shared.config).await?;
            let (owners, owner) = follow_name(&conn).await?;
            Ok::<_, NmError>((conn, owners, owner))
        };
        match attempt.await {
            Ok((conn, owners, owner)) => {
                shared.set_conn(conn);
                info!("reconnected to the D-Bus bus after {attempts} failed attempt(s)");
                if owner.is_none() {
                    warn!("NetworkManager is not running; serving without host Wi-Fi until it appears");
                    shared.set_health(BackendHealth::ServiceDown(
                        "NetworkManager is not on the bus".into(),
                    ));
                }
                return (owners, owner);
            }
            Err(e) => {
                attempts = attempts.saturating_add(1);
                if attempts == 1 {
                    warn!("cannot reconnect to the D-Bus bus ({e}); retrying with backoff");
                } else {
                    debug!("cannot reconnect to the D-Bus bus ({e}); retrying in {delay:?}");
                }
                last_error = Some(e.to_string());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
    }
}

/// Starts following NetworkManager at `owner`, retrying with backoff (0.25 s
/// doubling to 5 s) for as long as `owner` holds NetworkManager's name;
/// `None` once it no longer does (it went away or restarted: the supervisor
/// hears of that) or the bus connection is lost.
///
/// NetworkManager takes its bus name before it exports its objects; on a
/// slow or loaded host the gap was seen (VM test) to last several seconds,
/// and a NetworkManager stuck there is worth waiting for rather than giving
/// up on until it restarts. The health says what is going on meanwhile.
async fn start_session(shared: &Arc<Shared>, owner: OwnedUniqueName) -> Option<Session> {
    const MAX_DELAY: Duration = Duration::from_secs(5);
    let mut delay = Duration::from_millis(250);
    let mut attempts: u32 = 0;
    loop {
        match try_start_session(shared, owner.clone()).await {
            Ok(session) => {
                shared.set_health(BackendHealth::Up);
                return Some(session);
            }
            Err(e) => {
                attempts = attempts.saturating_add(1);
                let still_owner = match zbus::fdo::DBusProxy::new(&shared.conn()).await {
                    Ok(dbus) => dbus
                        .get_name_owner(dbus::bus_name(NM_BUS_NAME))
                        .await
                        .is_ok_and(|o| *o == *owner),
                    Err(_) => false,
                };
                if !still_owner {
                    debug!("NetworkManager {owner} no longer owns its name ({e})");
                    return None;
                }
                if attempts == 5 {
                    warn!("NetworkManager is on the bus but does not answer ({e}); still retrying");
                } else {
                    debug!("NetworkManager not ready ({e}); retrying in {delay:?}");
                }
                shared.set_health(BackendHealth::ServiceDown(format!(
                    "NetworkManager does not answer yet: {e}"
                )));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
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
