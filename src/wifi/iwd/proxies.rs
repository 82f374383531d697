//! The parts of iwd's D-Bus API (`net.connman.iwd`, iwd's doc/*-api.txt)
//! this backend uses. Proxies are built without property caching: the
//! backend follows changes through one stream of iwd's signals.

use std::collections::HashMap;

use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

pub const IWD_BUS_NAME: &str = "net.connman.iwd";
pub const DEVICE_IFACE: &str = "net.connman.iwd.Device";
pub const STATION_IFACE: &str = "net.connman.iwd.Station";
pub const OBJECT_MANAGER_IFACE: &str = "org.freedesktop.DBus.ObjectManager";

#[zbus::proxy(
    interface = "net.connman.iwd.Daemon",
    default_service = "net.connman.iwd",
    default_path = "/net/connman/iwd"
)]
pub trait Daemon {
    /// `StateDirectory`, `Version`, `NetworkConfigurationEnabled`.
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
    fn scan(&self) -> zbus::Result<()>;

    fn disconnect(&self) -> zbus::Result<()>;

    /// Networks with their signal in 100 × dBm, strongest first.
    fn get_ordered_networks(&self) -> zbus::Result<Vec<(OwnedObjectPath, i16)>>;

    fn register_signal_level_agent(
        &self,
        path: &ObjectPath<'_>,
        levels: &[i16],
    ) -> zbus::Result<()>;

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
    fn get_diagnostics(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
}

#[zbus::proxy(
    interface = "net.connman.iwd.Network",
    default_service = "net.connman.iwd"
)]
pub trait Network {
    fn connect(&self) -> zbus::Result<()>;

    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property, name = "Type")]
    fn kind(&self) -> zbus::Result<String>;

    /// Absent (an error) when the network is not known.
    #[zbus(property)]
    fn known_network(&self) -> zbus::Result<OwnedObjectPath>;
}

/// Builds an uncached proxy of type `P` for the iwd object at `path`.
pub async fn at<P>(conn: &zbus::Connection, path: &ObjectPath<'_>) -> zbus::Result<P>
where
    P: From<zbus::Proxy<'static>> + zbus::proxy::Defaults,
{
    crate::wifi::dbus::proxy_at(conn, IWD_BUS_NAME, path).await
}
