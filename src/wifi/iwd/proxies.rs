//! The parts of iwd's D-Bus API (`net.connman.iwd`, iwd's doc/*-api.txt)
//! this backend uses. Proxies are built without property caching: the
//! backend follows changes through one stream of iwd's signals.
//!
//! No call may start iwd (D-Bus activation): one racing iwd's exit made the
//! bus start a second iwd where iwd is activatable (Debian ships
//! `net.connman.iwd.service`). Every call goes to the unique name of the
//! iwd the session follows ([`Iwd`]), which the bus never activates and
//! which fails once that iwd is gone rather than reach the next one; the
//! methods also carry zbus's `no_autostart` flag, which alone would not do:
//! zbus reads properties with `Properties.Get` calls it sends without flags
//! (zbus 5.19, `Proxy::get_property`).

use std::collections::HashMap;

use zbus::names::{BusName, OwnedUniqueName};
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

pub const IWD_BUS_NAME: &str = "net.connman.iwd";
pub const DEVICE_IFACE: &str = "net.connman.iwd.Device";
pub const STATION_IFACE: &str = "net.connman.iwd.Station";
pub const OBJECT_MANAGER_IFACE: &str = "org.freedesktop.DBus.ObjectManager";
pub const DAEMON_PATH: &str = "/net/connman/iwd";

/// Every object of iwd with its interfaces and their properties.
pub type ManagedObjects = HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>>;

#[zbus::proxy(
    interface = "org.freedesktop.DBus.ObjectManager",
    default_service = "net.connman.iwd",
    default_path = "/"
)]
pub trait ObjectManager {
    #[zbus(no_autostart)]
    fn get_managed_objects(&self) -> zbus::Result<ManagedObjects>;
}

#[zbus::proxy(
    interface = "net.connman.iwd.Daemon",
    default_service = "net.connman.iwd",
    default_path = "/net/connman/iwd"
)]
pub trait Daemon {
    /// `StateDirectory`, `Version`, `NetworkConfigurationEnabled`.
    #[zbus(no_autostart)]
    fn get_info(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
}

#[zbus::proxy(
    interface = "net.connman.iwd.Device",
    default_service = "net.connman.iwd"
)]
pub trait Device {
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn address(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "net.connman.iwd.Station",
    default_service = "net.connman.iwd"
)]
pub trait Station {
    #[zbus(no_autostart)]
    fn scan(&self) -> zbus::Result<()>;

    #[zbus(no_autostart)]
    fn disconnect(&self) -> zbus::Result<()>;

    /// Networks with their signal in 100 × dBm, strongest first.
    #[zbus(no_autostart)]
    fn get_ordered_networks(&self) -> zbus::Result<Vec<(OwnedObjectPath, i16)>>;

    #[zbus(no_autostart)]
    fn register_signal_level_agent(
        &self,
        path: &ObjectPath<'_>,
        levels: &[i16],
    ) -> zbus::Result<()>;

    #[zbus(no_autostart)]
    fn unregister_signal_level_agent(&self, path: &ObjectPath<'_>) -> zbus::Result<()>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;

    /// Absent (an error) when not connected.
    #[zbus(property)]
    fn connected_network(&self) -> zbus::Result<OwnedObjectPath>;

    #[zbus(property)]
    fn scanning(&self) -> zbus::Result<bool>;
}

#[zbus::proxy(
    interface = "net.connman.iwd.StationDiagnostic",
    default_service = "net.connman.iwd"
)]
pub trait StationDiagnostic {
    /// `ConnectedBss` (address string), `Frequency` (MHz), `RSSI`, ...
    #[zbus(no_autostart)]
    fn get_diagnostics(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
}

#[zbus::proxy(
    interface = "net.connman.iwd.Network",
    default_service = "net.connman.iwd"
)]
pub trait Network {
    #[zbus(no_autostart)]
    fn connect(&self) -> zbus::Result<()>;

    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property, name = "Type")]
    fn kind(&self) -> zbus::Result<String>;

    /// Absent (an error) when the network is not known.
    #[zbus(property)]
    fn known_network(&self) -> zbus::Result<OwnedObjectPath>;
}

/// One running iwd: the bus connection and the unique name a session's
/// calls go to (see the module documentation).
#[derive(Clone)]
pub struct Iwd {
    pub conn: zbus::Connection,
    pub owner: OwnedUniqueName,
}

impl Iwd {
    /// An uncached proxy of type `P` for this iwd's object at `path`.
    pub async fn at<P>(&self, path: &ObjectPath<'_>) -> zbus::Result<P>
    where
        P: From<zbus::Proxy<'static>> + zbus::proxy::Defaults,
    {
        let owner = BusName::Unique(self.owner.clone().into_inner());
        crate::wifi::dbus::proxy_at(&self.conn, owner, path).await
    }
}
