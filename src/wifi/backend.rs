//! Choosing and opening a host backend: the one place that knows every
//! backend by name, and the only place above the backends' own modules that
//! carries `cfg(target_os)`.
//!
//! Adding a backend means a module under `wifi/`, a [`BackendKind`] variant
//! with its name in [`BackendKind::name`] and [`BackendKind::ALL`], and an
//! arm in [`open`]. Configuration files, flags and the daemon take the kind
//! by name and get an `Arc<dyn HostWifi>` back, so nothing else changes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::simulated::{SimulatedNetwork, SimulatedWifi};
use super::HostWifi;

/// Which host Wi-Fi a service proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// NetworkManager over the system D-Bus (Linux).
    NetworkManager,
    /// iwd over the system D-Bus (Linux).
    Iwd,
    /// Whichever of NetworkManager and iwd manages the Wi-Fi devices,
    /// decided when the backend is opened (Linux).
    Auto,
    /// Simulated networks, no host Wi-Fi touched.
    Simulated,
    /// WlanAPI (Windows).
    WlanApi,
}

impl BackendKind {
    /// Every backend, in the order help texts list them.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Auto,
        BackendKind::NetworkManager,
        BackendKind::Iwd,
        BackendKind::Simulated,
        BackendKind::WlanApi,
    ];

    /// The backend of normal mode on this platform.
    pub fn platform_default() -> BackendKind {
        if cfg!(windows) {
            BackendKind::WlanApi
        } else {
            BackendKind::Auto
        }
    }

    /// The name configuration files and flags use.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::NetworkManager => "networkmanager",
            BackendKind::Iwd => "iwd",
            BackendKind::Auto => "auto",
            BackendKind::Simulated => "simulated",
            BackendKind::WlanApi => "wlanapi",
        }
    }

    /// The names of every backend.
    pub fn names() -> impl Iterator<Item = &'static str> {
        BackendKind::ALL.into_iter().map(BackendKind::name)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that is not one of [`BackendKind::names`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend '{0}' (expected one of: {names})", names = BackendKind::names().collect::<Vec<_>>().join(", "))]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<BackendKind, UnknownBackend> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownBackend(s.to_string()))
    }
}

impl<'de> serde::Deserialize<'de> for BackendKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BackendKind, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for BackendKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What opening a backend may need besides its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSettings {
    /// The simulated backend's networks; empty: the reference's three.
    pub simulated_networks: Vec<SimulatedNetwork>,
    /// The iwd backend's state directory; `None`: the one iwd reports.
    pub iwd_state_dir: Option<std::path::PathBuf>,
}

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend does not exist on this platform.
    #[error("the {0} backend is not available on this platform")]
    Unavailable(BackendKind),
    /// NetworkManager's bus could not be used.
    #[cfg(target_os = "linux")]
    #[error("cannot start the networkmanager backend: {0}")]
    NetworkManager(#[source] super::networkmanager::NmError),
    /// iwd's bus could not be used.
    #[cfg(target_os = "linux")]
    #[error("cannot start the iwd backend: {0}")]
    Iwd(#[source] super::iwd::IwdError),
    /// WlanAPI could not be opened.
    #[cfg(windows)]
    #[error("cannot start the wlanapi backend: {0}")]
    WlanApi(#[from] super::wlanapi::WlanError),
}

/// Opens the backend `kind`. Every guest of a daemon shares the one it
/// returns; [`HostWifi::shutdown`] releases what it holds on the host.
pub async fn open(
    kind: BackendKind,
    settings: &BackendSettings,
) -> Result<Arc<dyn HostWifi>, BackendError> {
    #[cfg(target_os = "linux")]
    let kind = match kind {
        BackendKind::Auto => {
            let (picked, reason) = super::detect::linux_backend().await;
            let kind = match picked {
                super::detect::LinuxBackend::NetworkManager => BackendKind::NetworkManager,
                super::detect::LinuxBackend::Iwd => BackendKind::Iwd,
            };
            tracing::info!(backend = kind.name(), "picked the {kind} backend: {reason}");
            kind
        }
        other => other,
    };
    match kind {
        BackendKind::Simulated => Ok(simulated(settings)),
        #[cfg(target_os = "linux")]
        BackendKind::Iwd => {
            use super::iwd::{BusAddress, IwdConfig, IwdWifi};
            let config = IwdConfig {
                state_dir: settings.iwd_state_dir.clone(),
                ..IwdConfig::default()
            };
            let iwd = IwdWifi::start(BusAddress::System, config)
                .await
                .map_err(BackendError::Iwd)?;
            Ok(iwd)
        }
        #[cfg(target_os = "linux")]
        BackendKind::NetworkManager => {
            use super::networkmanager::{BusAddress, NetworkManagerWifi};
            let nm = NetworkManagerWifi::start(BusAddress::System)
                .await
                .map_err(BackendError::NetworkManager)?;
            Ok(nm)
        }
        #[cfg(windows)]
        BackendKind::WlanApi => Ok(super::wlanapi::WlanApiWifi::start()?),
        #[allow(unreachable_patterns)]
        other => Err(BackendError::Unavailable(other)),
    }
}

/// The simulated backend: the configured networks, or the reference's three
/// when none are configured.
fn simulated(settings: &BackendSettings) -> Arc<dyn HostWifi> {
    if settings.simulated_networks.is_empty() {
        SimulatedWifi::reference()
    } else {
        SimulatedWifi::new(settings.simulated_networks.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>(), Ok(kind));
        }
        let e = "iwd2".parse::<BackendKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown backend 'iwd2' (expected one of: auto, networkmanager, iwd, simulated, wlanapi)"
        );
    }

    #[tokio::test]
    async fn the_simulated_backend_is_a_simulator_and_others_are_not_everywhere() {
        let backend = open(BackendKind::Simulated, &BackendSettings::default())
            .await
            .unwrap();
        assert_eq!(backend.interfaces().len(), 1);
        assert!(backend.simulator().is_some());
        if !cfg!(windows) {
            assert!(matches!(
                open(BackendKind::WlanApi, &BackendSettings::default()).await,
                Err(BackendError::Unavailable(BackendKind::WlanApi))
            ));
        }
    }
}
