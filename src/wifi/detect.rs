//! Which Linux backend manages the host's Wi-Fi: NetworkManager or iwd.
//!
//! NetworkManager may itself drive iwd (`wifi.backend=iwd`): both are then
//! on the bus and NetworkManager owns the devices, so NetworkManager wins
//! whenever it lists a Wi-Fi device. The order:
//!
//! 1. NetworkManager lists a Wi-Fi device: NetworkManager.
//! 2. iwd has a station: iwd.
//! 3. Only one of them is running: that one (its devices may come later).
//! 4. Neither, or no bus: NetworkManager, which the backend then waits for
//!    (the long-standing default).

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use crate::wifi::networkmanager::BusAddress;

/// A Linux Wi-Fi backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinuxBackend {
    NetworkManager,
    Iwd,
}

/// What was found on the bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Findings {
    /// `None`: NetworkManager is not running; else its Wi-Fi device count.
    pub nm_wifi_devices: Option<usize>,
    /// `None`: iwd is not running; else its station count.
    pub iwd_stations: Option<usize>,
}

/// The rule of the module documentation, with the reason in words.
pub fn choose(f: Findings) -> (LinuxBackend, String) {
    match (f.nm_wifi_devices, f.iwd_stations) {
        (Some(n), _) if n > 0 => (
            LinuxBackend::NetworkManager,
            format!("NetworkManager manages {n} Wi-Fi device(s)"),
        ),
        (_, Some(n)) if n > 0 => (
            LinuxBackend::Iwd,
            format!(
                "iwd manages {n} Wi-Fi station(s){}",
                if f.nm_wifi_devices.is_some() {
                    " and NetworkManager none"
                } else {
                    ", NetworkManager is not running"
                }
            ),
        ),
        (Some(_), None) => (
            LinuxBackend::NetworkManager,
            "NetworkManager is running (no Wi-Fi device yet), iwd is not".into(),
        ),
        (None, Some(_)) => (
            LinuxBackend::Iwd,
            "iwd is running (no station yet), NetworkManager is not".into(),
        ),
        (Some(_), Some(_)) => (
            LinuxBackend::NetworkManager,
            "neither NetworkManager nor iwd has a Wi-Fi device yet; NetworkManager preferred"
                .into(),
        ),
        (None, None) => (
            LinuxBackend::NetworkManager,
            "neither NetworkManager nor iwd is running; waiting for NetworkManager".into(),
        ),
    }
}

async fn nm_wifi_devices(conn: &zbus::Connection) -> Option<usize> {
    const NM: &str = "org.freedesktop.NetworkManager";
    let reply = conn
        .call_method(
            Some(NM),
            "/org/freedesktop/NetworkManager",
            Some(NM),
            "GetDevices",
            &(),
        )
        .await
        .ok()?;
    let devices: Vec<OwnedObjectPath> = reply.body().deserialize().ok()?;
    let mut wifi = 0;
    for device in devices {
        let kind = conn
            .call_method(
                Some(NM),
                device.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.NetworkManager.Device", "DeviceType"),
            )
            .await
            .ok()
            .and_then(|r| r.body().deserialize::<OwnedValue>().ok())
            .and_then(|v| u32::try_from(v).ok());
        if kind == Some(2) {
            wifi += 1;
        }
    }
    Some(wifi)
}

async fn iwd_stations(conn: &zbus::Connection) -> Option<usize> {
    type Objects = HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>>;
    let reply = conn
        .call_method(
            Some("net.connman.iwd"),
            "/",
            Some("org.freedesktop.DBus.ObjectManager"),
            "GetManagedObjects",
            &(),
        )
        .await
        .ok()?;
    let objects: Objects = reply.body().deserialize().ok()?;
    Some(
        objects
            .values()
            .filter(|i| i.contains_key("net.connman.iwd.Station"))
            .count(),
    )
}

async fn has_owner(conn: &zbus::Connection, name: &str) -> bool {
    conn.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "NameHasOwner",
        &(name,),
    )
    .await
    .ok()
    .and_then(|r| r.body().deserialize::<bool>().ok())
    .unwrap_or(false)
}

/// Looks at the bus. A service that owns its name but does not answer in
/// time counts as running with no device, never as absent.
pub async fn detect(bus: &BusAddress) -> Result<Findings, String> {
    let builder = match bus {
        BusAddress::System => zbus::connection::Builder::system(),
        BusAddress::Address(a) => zbus::connection::Builder::address(a.as_str()),
    }
    .map_err(|e| e.to_string())?;
    let conn = builder
        .method_timeout(Duration::from_secs(5))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let (nm_running, iwd_running) = futures::join!(
        has_owner(&conn, "org.freedesktop.NetworkManager"),
        has_owner(&conn, "net.connman.iwd")
    );
    let nm = async {
        if nm_running {
            Some(nm_wifi_devices(&conn).await.unwrap_or(0))
        } else {
            None
        }
    };
    let iwd = async {
        if iwd_running {
            Some(iwd_stations(&conn).await.unwrap_or(0))
        } else {
            None
        }
    };
    let (nm_wifi_devices, iwd_stations) = futures::join!(nm, iwd);
    Ok(Findings {
        nm_wifi_devices,
        iwd_stations,
    })
}

/// The backend for this host's system bus, with the reason.
pub async fn linux_backend() -> (LinuxBackend, String) {
    match detect(&BusAddress::System).await {
        Ok(findings) => choose(findings),
        Err(e) => (
            LinuxBackend::NetworkManager,
            format!("the system bus is unreachable ({e}); NetworkManager, the default"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(nm: Option<usize>, iwd: Option<usize>) -> LinuxBackend {
        choose(Findings {
            nm_wifi_devices: nm,
            iwd_stations: iwd,
        })
        .0
    }

    #[test]
    fn the_owner_of_the_devices_wins() {
        use LinuxBackend::*;
        assert_eq!(f(Some(1), Some(1)), NetworkManager);
        assert_eq!(f(Some(0), Some(1)), Iwd);
        assert_eq!(f(None, Some(2)), Iwd);
        assert_eq!(f(Some(0), None), NetworkManager);
        assert_eq!(f(None, Some(0)), Iwd);
        assert_eq!(f(Some(0), Some(0)), NetworkManager);
        assert_eq!(f(None, None), NetworkManager);
        assert!(choose(Findings::default()).1.contains("neither"));
    }
}
