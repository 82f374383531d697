//! The host's Wi-Fi through iwd, over the system D-Bus (`net.connman.iwd`).
//!
//! [`IwdWifi`] is a [`HostWifi`] backend: every iwd station (a device in
//! station mode) is a [`WifiInterface`](crate::wifi::WifiInterface), added
//! and removed as iwd reports objects (`InterfacesAdded`/`Removed` of its
//! object manager) and as iwd itself comes and goes on the bus
//! (`NameOwnerChanged`). While iwd is absent the backend has no interfaces
//! and waits for it.
//!
//! All of iwd's signals reach the backend through one ordered message
//! stream (a match rule on iwd's unique name), which a dispatcher routes to
//! the stations: `State`, `Scanning`. Signal strength comes from a
//! `SignalLevelAgent` the backend exports and registers on each station.
//!
//! The BSSes a guest sees come from the kernel's scan cache ([`bss`]): iwd
//! 2.3 does not publish BSSIDs, channels or elements over D-Bus.
//!
//! Guest-directed connections: iwd's agent rejects a 64-hex PMK as a
//! passphrase, so the proxy writes a provisioning file (`<SSID>.psk` with
//! `PreSharedKey=`, or `<SSID>.open`, never autoconnecting, `Hidden=true`
//! for a network that does not show its SSID) in iwd's state directory,
//! waits for iwd to know the network and calls `Network.Connect`. Files
//! carry a marker ([`profile::MARKER`]); the backend removes its own on
//! guest disconnect, on failure, when iwd goes away, at shutdown, and
//! leftovers bearing the marker whenever iwd appears. A network the host
//! already knows keeps the host's file untouched (see [`station`]).

pub mod bss;
pub mod profile;
mod proxies;
mod station;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};
use zbus::names::OwnedUniqueName;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

use crate::wifi::dbus::station::{HostStation, Stations};
use crate::wifi::dbus::{self, Backoff, BusLink, FollowedService, Following};
use crate::wifi::{BackendHealth, EventHub, HostWifi, InterfaceEvent, WifiInterface};

pub use bss::{BssCache, KernelBssCache};
use proxies::{
    DaemonProxy, DeviceProxy, Iwd, ObjectManagerProxy, StationProxy, DAEMON_PATH, DEVICE_IFACE,
    IWD_BUS_NAME, OBJECT_MANAGER_IFACE, STATION_IFACE,
};
use station::{IwdStation, StationInfo};

pub use crate::wifi::dbus::BusAddress;

/// Where iwd keeps its network files when it does not say (`GetInfo`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/iwd";

/// The object path of the backend's signal level agent.
const AGENT_PATH: &str = "/org/proxy_wifi/iwd/SignalLevelAgent";

/// Signal thresholds given to iwd, in dBm, strongest first: iwd reports the
/// range the signal is in, as an index into this list.
const SIGNAL_LEVELS: [i16; 6] = [-50, -58, -66, -74, -82, -90];

/// Settings and time bounds of the backend. The defaults suit real hosts;
/// tests shorten them and give their own BSS source.
#[derive(Clone)]
pub struct IwdConfig {
    /// iwd's state directory, where provisioning files go. `None`: what iwd
    /// reports (`Daemon.GetInfo`), else [`DEFAULT_STATE_DIR`].
    pub state_dir: Option<PathBuf>,
    /// How long a host scan may take (below the handler's 10 s bound).
    pub scan_timeout: Duration,
    /// How long a guest connection may take, provisioning included (below
    /// the handler's 10 s bound, so the backend cleans up a failure itself).
    pub connect_timeout: Duration,
    /// How long iwd may take to notice a provisioning file.
    pub known_network_wait: Duration,
    /// Bound of every D-Bus call.
    pub call_timeout: Duration,
    /// Where BSS details come from.
    pub bss_cache: Arc<dyn BssCache>,
}

impl Default for IwdConfig {
    fn default() -> Self {
        IwdConfig {
            state_dir: None,
            scan_timeout: Duration::from_secs(8),
            connect_timeout: Duration::from_millis(9500),
            known_network_wait: Duration::from_secs(3),
            call_timeout: Duration::from_secs(8),
            bss_cache: Arc::new(KernelBssCache),
        }
    }
}

/// Why the backend could not start.
pub type IwdError = crate::wifi::dbus::BusError;

/// State shared by the backend, its stations and its agent.
pub(crate) struct Shared {
    /// The bus connection now, replaced when it is lost and made again (a
    /// station keeps the connection it was found on), and the health.
    link: BusLink,
    pub(crate) hub: Arc<EventHub>,
    pub(crate) config: IwdConfig,
    /// iwd's unique name while it is on the bus.
    owner: Mutex<Option<OwnedUniqueName>>,
    /// iwd's state directory, once known.
    state_dir: Mutex<PathBuf>,
    stations: Stations<IwdStation>,
    /// The proxy's provisioning file on each station (station path -> file).
    provisioned: Mutex<HashMap<OwnedObjectPath, PathBuf>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn conn(&self) -> zbus::Connection {
        self.link.conn()
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        locked(&self.state_dir).clone()
    }

    pub(crate) fn set_provisioned(&self, station: &OwnedObjectPath, file: PathBuf) {
        locked(&self.provisioned).insert(station.clone(), file);
    }

    pub(crate) fn take_provisioned(&self, station: &OwnedObjectPath) -> Option<PathBuf> {
        locked(&self.provisioned).remove(station)
    }

    /// Whether another station uses the proxy's file at `path`.
    pub(crate) fn file_in_use(&self, path: &Path) -> bool {
        locked(&self.provisioned).values().any(|p| p == path)
    }

    fn find(&self, path: &ObjectPath<'_>) -> Option<Arc<IwdStation>> {
        self.stations.find(path)
    }
}

/// iwd's name in logs and in the backend's health.
const IWD_NAME: &str = "iwd";

#[async_trait::async_trait]
impl FollowedService for Shared {
    type State = ();
    const BUS_NAME: &'static str = IWD_BUS_NAME;
    const NAME: &'static str = IWD_NAME;
    /// 0.5 s doubling to 5 s, for as long as iwd owns its name. (Before,
    /// three attempts 0.5 s apart and then nothing until iwd restarted: a
    /// backend without interfaces that looked as if iwd were absent.)
    const START_RETRY: Backoff = Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(5),
    };

    fn link(&self) -> &BusLink {
        &self.link
    }

    /// Exports the signal level agent: iwd calls it on the connection the
    /// backend registered it from, so each new connection needs it (the
    /// stations, read again on it, register it again).
    async fn on_new_connection(me: &Arc<Self>, conn: &zbus::Connection) -> zbus::Result<()> {
        let agent = SignalAgent {
            shared: Arc::downgrade(me),
        };
        conn.object_server().at(AGENT_PATH, agent).await?;
        Ok(())
    }

    async fn try_start_session(me: &Arc<Self>, owner: OwnedUniqueName) -> zbus::Result<Session> {
        try_start_session(me, owner).await
    }

    async fn stop_session(&self, session: Session) {
        stop_session(self, session).await
    }
}

/// Removes one of the proxy's provisioning files (blocking file I/O off the
/// runtime). Never touches a file without the marker.
pub(crate) async fn remove_file(path: PathBuf) {
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || profile::remove(&path)).await {
        Ok(Ok(true)) => debug!(file = %shown, "removed the proxy's provisioning file"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!(file = %shown, "cannot remove the proxy's provisioning file: {e}"),
        Err(e) => warn!(file = %shown, "cannot remove the proxy's provisioning file: {e}"),
    }
}

/// iwd as seen while it owns its bus name (its stations are in [`Shared`]).
type Session = dbus::Session<()>;

/// The host's Wi-Fi through iwd. See the module documentation.
pub struct IwdWifi {
    shared: Arc<Shared>,
    following: Following<()>,
}

/// Receives iwd's signal level reports.
struct SignalAgent {
    shared: std::sync::Weak<Shared>,
}

#[zbus::interface(name = "net.connman.iwd.SignalLevelAgent")]
impl SignalAgent {
    fn release(&self, _device: OwnedObjectPath) {}

    fn changed(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        device: OwnedObjectPath,
        level: u8,
    ) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        // Only iwd may report levels.
        let from_iwd = {
            let owner = locked(&shared.owner);
            match (header.sender(), owner.as_ref()) {
                (Some(sender), Some(owner)) => sender.as_str() == owner.as_str(),
                _ => false,
            }
        };
        if !from_iwd {
            return;
        }
        if let Some(station) = shared.find(&device.as_ref()) {
            station.on_signal_level(level_to_percent(level));
        }
    }
}

/// A level iwd reports (an index into [`SIGNAL_LEVELS`]) as link quality in
/// percent: the middle of the range in dBm, mapped as `2 × (dBm + 100)`.
pub fn level_to_percent(level: u8) -> u8 {
    let l = usize::from(level);
    let n = SIGNAL_LEVELS.len();
    let dbm = if l == 0 {
        i32::from(SIGNAL_LEVELS[0])
    } else if l >= n {
        i32::from(SIGNAL_LEVELS[n - 1]) - 4
    } else {
        (i32::from(SIGNAL_LEVELS[l - 1]) + i32::from(SIGNAL_LEVELS[l])) / 2
    };
    (2 * (dbm + 100)).clamp(0, 100) as u8
}

impl IwdWifi {
    /// Connects to the bus and starts following iwd. Succeeds when iwd is
    /// absent (it is picked up when it appears); fails only when the bus
    /// cannot be reached.
    ///
    /// Once started, the backend never gives up (as NetworkManager's, see
    /// `wifi::dbus::follow`): an iwd that owns its name but does not answer yet
    /// is retried while it owns the name, and a lost bus connection is made
    /// again with backoff, the agent exported on the new one; meanwhile
    /// [`HostWifi::health`] says what is going on.
    pub async fn start(bus: BusAddress, config: IwdConfig) -> Result<Arc<IwdWifi>, IwdError> {
        let link = BusLink::connect(bus, config.call_timeout, IWD_NAME).await?;
        let state_dir = config
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let hub = Arc::new(EventHub::new());
        let shared = Arc::new(Shared {
            link,
            hub: hub.clone(),
            config,
            owner: Mutex::new(None),
            state_dir: Mutex::new(state_dir),
            stations: Stations::new(hub.clone()),
            provisioned: Mutex::new(HashMap::new()),
        });
        let following = dbus::follow(&shared).await?;
        Ok(Arc::new(IwdWifi { shared, following }))
    }

    /// Whether iwd is on the bus now.
    pub async fn is_available(&self) -> bool {
        self.following.is_up().await
    }

    /// The state directory the backend provisions files in.
    pub fn state_dir(&self) -> PathBuf {
        self.shared.state_dir()
    }

    /// Stops following iwd, disconnects what the guests started, removes the
    /// interfaces and every provisioning file of the proxy.
    pub async fn shutdown(&self) {
        self.following.stop_supervisor();
        if let Some(session) = self.following.take().await {
            stop_session(&self.shared, session).await;
        }
        let _ = self
            .shared
            .conn()
            .object_server()
            .remove::<SignalAgent, _>(AGENT_PATH)
            .await;
    }
}

#[async_trait::async_trait]
impl HostWifi for IwdWifi {
    fn subscribe(&self) -> broadcast::Receiver<InterfaceEvent> {
        self.shared.hub.subscribe()
    }

    fn interfaces(&self) -> Vec<Arc<dyn WifiInterface>> {
        self.shared.hub.interfaces()
    }

    async fn shutdown(&self) {
        IwdWifi::shutdown(self).await
    }

    fn health(&self) -> watch::Receiver<BackendHealth> {
        self.shared.link.health()
    }
}

async fn try_start_session(shared: &Arc<Shared>, owner: OwnedUniqueName) -> zbus::Result<Session> {
    *locked(&shared.owner) = Some(owner.clone());
    let iwd = Iwd {
        conn: shared.conn(),
        owner: owner.clone(),
    };
    let stream = dbus::signals_from(&iwd.conn, &owner, None).await?;

    // iwd says where its files are, unless the configuration does.
    if shared.config.state_dir.is_none() {
        let daemon: DaemonProxy<'_> = iwd
            .at(&ObjectPath::from_static_str_unchecked(DAEMON_PATH))
            .await?;
        match daemon.get_info().await {
            Ok(info) => {
                if let Some(dir) = info
                    .get("StateDirectory")
                    .and_then(|v| String::try_from(v.clone()).ok())
                {
                    *locked(&shared.state_dir) = PathBuf::from(dir);
                }
            }
            Err(e) => debug!(
                "iwd GetInfo failed ({e}); using {}",
                shared.state_dir().display()
            ),
        }
    }
    remove_leftovers(shared).await;

    let objects = iwd
        .at::<ObjectManagerProxy<'_>>(&ObjectPath::from_static_str_unchecked("/"))
        .await?
        .get_managed_objects()
        .await?;
    for (path, interfaces) in objects {
        if interfaces.contains_key(STATION_IFACE) {
            add_station(shared, &iwd, path, interfaces.get(DEVICE_IFACE)).await;
        }
    }
    info!(
        state_dir = %shared.state_dir().display(),
        "following iwd: {} station(s)",
        shared.stations.all().len()
    );
    let dispatcher = {
        let shared = shared.clone();
        tokio::spawn(dbus::route_signals(stream, IWD_NAME, move |signal| {
            route(shared.clone(), iwd.clone(), signal)
        }))
    };
    Ok(Session {
        owner,
        dispatcher,
        state: (),
    })
}

async fn stop_session(shared: &Shared, session: Session) {
    session.dispatcher.abort();
    *locked(&shared.owner) = None;
    let stations = shared.stations.clear();
    // Disconnect what the guests started while iwd may still answer.
    let guest_stations: Vec<_> = {
        let provisioned = locked(&shared.provisioned);
        stations
            .into_iter()
            .filter(|s| provisioned.contains_key(s.core().path()))
            .collect()
    };
    for station in guest_stations {
        station.disconnect_quietly().await;
    }
    let files: Vec<PathBuf> = locked(&shared.provisioned)
        .drain()
        .map(|(_, f)| f)
        .collect();
    for file in files {
        remove_file(file).await;
    }
}

/// Removes files the proxy left behind (a crash, a kill). Only files with
/// the marker are touched.
async fn remove_leftovers(shared: &Shared) {
    if !locked(&shared.provisioned).is_empty() {
        return;
    }
    let dir = shared.state_dir();
    let shown = dir.display().to_string();
    match tokio::task::spawn_blocking(move || profile::remove_leftovers(&dir)).await {
        Ok(Ok(removed)) => {
            for file in removed {
                info!(file = %file.display(), "removed a leftover proxy-wifi provisioning file");
            }
        }
        Ok(Err(e)) => warn!(state_dir = %shown, "cannot look for leftover provisioning files: {e}"),
        Err(e) => warn!("cannot look for leftover provisioning files: {e}"),
    }
}

fn string_prop(props: Option<&HashMap<String, OwnedValue>>, name: &str) -> Option<String> {
    props?
        .get(name)
        .and_then(|v| String::try_from(v.clone()).ok())
}

async fn add_station(
    shared: &Arc<Shared>,
    iwd: &Iwd,
    path: OwnedObjectPath,
    device_props: Option<&HashMap<String, OwnedValue>>,
) {
    let info = async {
        let device: DeviceProxy<'_> = iwd.at(&path).await?;
        let name = match string_prop(device_props, "Name") {
            Some(n) => n,
            None => device.name().await?,
        };
        let address = match string_prop(device_props, "Address") {
            Some(a) => Some(a),
            None => device.address().await.ok(),
        };
        let station: StationProxy<'_> = iwd.at(&path).await?;
        let state = station.state().await?;
        let scanning = station.scanning().await.unwrap_or(false);
        Ok::<_, zbus::Error>(StationInfo {
            path: path.clone(),
            name,
            address,
            state,
            scanning,
        })
    };
    let info = match info.await {
        Ok(info) => info,
        Err(e) => {
            debug!(station = %path.as_str(), "cannot read station: {e}");
            return;
        }
    };
    let station = IwdStation::new(shared.clone(), iwd.clone(), info);
    let (name, id) = (station.name(), station.id());
    if !shared.stations.add(station) {
        return;
    }
    info!(iface = %name, id = %id, "iwd station added");
    // Signal levels: best effort, a station works without them.
    let iwd = iwd.clone();
    tokio::spawn(async move {
        let result = async {
            let proxy: StationProxy<'_> = iwd.at(&path).await?;
            proxy
                .register_signal_level_agent(
                    &ObjectPath::from_static_str_unchecked(AGENT_PATH),
                    &SIGNAL_LEVELS,
                )
                .await
        };
        if let Err(e) = result.await {
            debug!(station = %path.as_str(), "signal level agent not registered: {e}");
        }
    });
}

fn remove_station(shared: &Shared, path: &ObjectPath<'_>) {
    if let Some(station) = shared.stations.remove(path) {
        info!(iface = %station.name(), "iwd station removed");
        if let Some(file) = shared.take_provisioned(station.core().path()) {
            tokio::spawn(remove_file(file));
        }
    }
}

/// Routes one of iwd's signals to the stations.
async fn route(shared: Arc<Shared>, iwd: Iwd, signal: dbus::Signal) {
    if let Some((iface, changed)) = signal.changed_properties() {
        if iface == STATION_IFACE {
            if let Some(station) = shared.find(&signal.path.as_ref()) {
                station.on_properties_changed(&changed);
            }
        }
        return;
    }
    match (signal.interface.as_str(), signal.member.as_str()) {
        (OBJECT_MANAGER_IFACE, "InterfacesAdded") => {
            type Added = (
                OwnedObjectPath,
                HashMap<String, HashMap<String, OwnedValue>>,
            );
            if let Some((object, interfaces)) = signal.body::<Added>() {
                if interfaces.contains_key(STATION_IFACE) {
                    add_station(&shared, &iwd, object, interfaces.get(DEVICE_IFACE)).await;
                }
            }
        }
        (OBJECT_MANAGER_IFACE, "InterfacesRemoved") => {
            if let Some((object, interfaces)) = signal.body::<(OwnedObjectPath, Vec<String>)>() {
                if interfaces
                    .iter()
                    .any(|i| i == STATION_IFACE || i == DEVICE_IFACE)
                {
                    remove_station(&shared, &object.as_ref());
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_percent() {
        assert_eq!(level_to_percent(0), 100);
        assert_eq!(level_to_percent(1), 92);
        assert_eq!(level_to_percent(3), 60);
        assert_eq!(level_to_percent(6), 12);
        assert_eq!(level_to_percent(200), 12);
        for l in 0..7 {
            assert!(level_to_percent(l) >= level_to_percent(l + 1));
        }
    }
}
