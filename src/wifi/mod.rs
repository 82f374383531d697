//! The host's Wi-Fi, as the layers above know it: [`WifiInterface`] (one
//! interface) and [`HostWifi`] (a backend: its interfaces, their events,
//! its shutdown and, for a simulated host, the [`HostSimulator`]
//! capability).
//!
//! Backends are built here and only here: [`open`] takes a [`BackendKind`]
//! and returns an `Arc<dyn HostWifi>`, and [`fake_networks`] turns the
//! client's fake networks into one more interface. Nothing above `wifi/`
//! names a backend, and every `cfg(target_os)` stays in this module's
//! adapters. One backend may serve many guests.

mod backend;
#[cfg(target_os = "linux")]
mod dbus;
#[cfg(target_os = "linux")]
mod detect;
mod fake;
mod hub;
#[cfg(target_os = "linux")]
pub mod iwd;
#[cfg(target_os = "linux")]
pub mod networkmanager;
mod security;
pub mod simulated;
mod simulator;
// Live only on Windows; elsewhere its platform-independent parts are
// compiled for their unit tests.
#[cfg_attr(not(windows), allow(dead_code, unused_imports))]
mod wlanapi;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use backend::{open, BackendError, BackendKind, BackendSettings, UnknownBackend};
pub use fake::{fake_networks, FakeNetworkProvider, FAKE_INTERFACE_ID};
pub use hub::EventHub;
pub use security::{
    guest_bss, is_sae_password, AuthAlgorithm, AuthType, CipherAlgorithm, ConnectRefusal, Security,
    DEFAULT_BEACON_INTERVAL_TU, STATUS_UNSUPPORTED_AUTH_ALGORITHM,
};
pub use simulator::{HostEvent, HostSimulator, ScanMode, SimulatedError};

use crate::protocol::{Key, MacAddr, Ssid};

/// A stable identifier of a host Wi-Fi interface, reported to the observer.
pub type InterfaceId = uuid::Uuid;

/// One BSS as an interface sees it, before it is shaped for the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedBss {
    /// The BSS's MAC address.
    pub bssid: MacAddr,
    /// The network's name.
    pub ssid: Ssid,
    /// 802.11 Capability Information, if the host reports it; `None` makes
    /// the handler derive ESS (and Privacy for a secured network).
    pub capabilities: Option<u16>,
    /// Signal strength in dBm.
    pub rssi_dbm: i32,
    /// In TU; `None` when the host does not know it (the guest is then told
    /// the common 100 TU rather than a meaningless 0).
    pub beacon_interval: Option<u16>,
    /// Channel centre frequency in kHz.
    pub freq_khz: u32,
    /// The network's security as the host sees it.
    pub security: Security,
    /// The BSS's own information elements, when the host has them. Empty
    /// means "build an SSID element and, for WPA2-PSK, an RSN element".
    pub ies: Vec<u8>,
}

/// The outcome of asking an interface to scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// The BSSs found.
    pub bss: Vec<ScannedBss>,
    /// `false` when the interface is still scanning: more results will come
    /// as an [`InterfaceEvent::ScanResults`].
    pub complete: bool,
}

/// The network an interface is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedNetwork {
    /// The network's name.
    pub ssid: Ssid,
    /// The BSS joined.
    pub bssid: MacAddr,
    /// The security as the host sees it; the observer is told the guest's view.
    pub security: Security,
}

/// What the handler asks an interface to connect to: only networks the
/// guest can use (open, or WPA2-PSK or WPA3-SAE with CCMP/GCMP) ever get
/// here.
#[derive(Debug, PartialEq, Eq)]
pub struct ConnectParams {
    /// The network to join.
    pub ssid: Ssid,
    /// The BSS to join; `None`: any.
    pub bssid: Option<MacAddr>,
    /// The security to use (the network's, checked by the handler).
    pub security: Security,
    /// For WPA2-PSK, the 32-byte PMK; for WPA3-SAE, the SAE password (8 to
    /// 63 printable ASCII bytes). Zeroized on drop; never log it.
    pub key: Option<Key>,
}

/// A copy carries a copy of the key ([`Key::duplicate`], wiped on drop):
/// a backend that hands the connect to a task of its own needs one.
impl Clone for ConnectParams {
    fn clone(&self) -> ConnectParams {
        ConnectParams {
            ssid: self.ssid,
            bssid: self.bssid,
            security: self.security,
            key: self.key.as_ref().map(Key::duplicate),
        }
    }
}

/// Why an interface could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceError {
    /// The network refused the connection with an 802.11 status code (a
    /// wrong key, for instance); the guest gets that code.
    #[error("connection rejected with 802.11 status {status}")]
    Rejected {
        /// The 802.11 status code.
        status: u16,
    },
    #[error("network {0} not found")]
    /// No network (named) to connect to.
    NotFound(String),
    #[error("interface is gone")]
    /// The interface went away.
    Gone,
    #[error("host Wi-Fi service unavailable: {0}")]
    /// The host's Wi-Fi service (named, with why) cannot be used now.
    Unavailable(String),
    /// The guest asked for another security than the network has.
    #[error("the network is {}, the request is {}", .network.label(), .requested.label())]
    SecurityMismatch {
        /// The network's security.
        network: Security,
        /// What the guest asked for.
        requested: Security,
    },
    /// A configured passphrase cannot give a key (simulated networks).
    #[error("unusable passphrase: {0}")]
    UnusablePassphrase(#[source] crate::protocol::PskError),
    /// A call into the host's Wi-Fi service failed with an error code.
    #[error("{call} failed with error {code:#x}")]
    HostCall {
        /// The function called.
        call: &'static str,
        /// The code it returned.
        code: u32,
    },
    /// A call into the host's Wi-Fi service did not finish: its task
    /// panicked or was cancelled.
    #[error("a call into the host's Wi-Fi service was aborted")]
    HostCallAborted,
    /// The host's Wi-Fi service answered with data that does not parse
    /// (what is wrong given).
    #[error("the host's Wi-Fi service answered malformed data: {0}")]
    MalformedHostData(String),
    /// The network cannot be described to the host (why given): a
    /// security or key the host's profile format cannot carry.
    #[error("cannot describe the network to the host: {0}")]
    Profile(String),
    /// The WPA3-SAE password the guest sent is not text.
    #[error("the SAE password is not text")]
    SaePasswordNotText,
    /// A host scan this one waited for did not finish in time.
    #[error("the running host scan did not complete within {} s", .limit.as_secs())]
    ScanTimeout {
        /// How long it was waited for.
        limit: std::time::Duration,
    },
    /// The connect was superseded before the host reported its result.
    #[error("the connection attempt was abandoned")]
    ConnectAbandoned,
    /// The host reported no result for the connect in time.
    #[error("no connection result within {} s", .limit.as_secs())]
    ConnectTimeout {
        /// How long it was waited for.
        limit: std::time::Duration,
    },
    /// The host's connection attempt failed with a reason code of its own.
    #[error("the connection failed (host reason code {reason:#x})")]
    ConnectFailed {
        /// The host's reason code.
        reason: u32,
    },
    /// The connect completed, but on another network.
    #[error("connected to {ssid} instead")]
    ConnectedElsewhere {
        /// The network the interface is on.
        ssid: Ssid,
    },
    /// The connect completed, but the interface is not connected.
    #[error("not connected although the connection completed")]
    NotConnectedAfterConnect,
    /// The disconnect did not take: the interface is still on a network.
    #[error("still connected to {ssid}")]
    StillConnected {
        /// The network the interface is still on.
        ssid: Ssid,
    },
    /// A call to the host's Wi-Fi service failed (the service's own error
    /// text, bounded by the service).
    #[error("{call}: {message}")]
    HostServiceError {
        /// What was asked (`activation`, `device state`, ...).
        call: &'static str,
        /// The service's error.
        message: String,
    },
    /// The network (or the supplicant) refused the key; the host service
    /// gives no 802.11 status, only its own reason code.
    #[error("the network refused the key (host reason {reason})")]
    KeyRefused {
        /// The host service's reason code (NetworkManager: device state reason).
        reason: u32,
    },
    /// The host service could not activate the connection.
    #[error("the host could not activate the connection (host reason {reason})")]
    ActivationFailed {
        /// The host service's reason code (NetworkManager: device state reason).
        reason: u32,
    },
    /// The link came up but the host does not say which access point it is on.
    #[error("connected, but the host does not report the access point")]
    UnknownAccessPoint,
    /// The guest's key has the wrong shape for the network's security.
    #[error("the key does not fit the security {0}")]
    UnusableKey(String),
    /// The backend's connect task ended without an answer (it panicked).
    #[error("the connect task ended without an answer")]
    TaskEnded,
    /// The network refused the connection and the host service gives
    /// neither an 802.11 status nor a reason code (iwd): a wrong key, most
    /// likely. The service's error is given.
    #[error("the network refused the connection (wrong key?): {0}")]
    JoinRefused(String),
    /// The host service asked for a passphrase: the network needs one
    /// (WPA3), and the guest sends only the PMK.
    #[error("the host service asked for a passphrase; the guest sends only the PMK")]
    PassphraseNeeded,
    /// The guest asked for a security the backend cannot join with.
    #[error("security {} is not one a guest can ask for", .0.label())]
    UnsupportedSecurity(Security),
    /// The kernel's scan cache could not be read (why given).
    #[error("cannot read the kernel's scan cache: {0}")]
    ScanCache(String),
    /// The host's own profile of the network has another key than the
    /// guest's; it is left as it is.
    #[error("the host's own profile of this network has another key; it is not modified")]
    HostProfileKeyDiffers,
    /// The host's own profile of the network has no key the proxy can check
    /// the guest's against; it is left as it is.
    #[error(
        "the host's own profile of this network has no key the proxy can check; it is not modified"
    )]
    HostProfileKeyUnknown,
    /// The host's own profile of the network (its file named) cannot be
    /// read; it is left as it is.
    #[error("the host knows this network ({0}) but its file is unreadable; it is not modified")]
    HostProfileUnreadable(String),
    /// Another interface's guest connection uses the network's provisioning.
    #[error("another interface's guest connection uses this network")]
    NetworkInUse,
    /// The network's provisioning file could not be written (why given).
    #[error("cannot provision the network: {0}")]
    Provisioning(String),
    /// The host service did not pick up the provisioned network in time.
    #[error("the host service did not pick up the provisioned network")]
    ProvisioningIgnored,
}

/// A host Wi-Fi interface (or a simulated one).
///
/// Implementations answer quickly where they can: the handler bounds every
/// call (10 s for scan and connect, 5 s for disconnect) and treats a call
/// that runs over as a failure.
#[async_trait]
pub trait WifiInterface: Send + Sync + 'static {
    /// The interface's stable id.
    fn id(&self) -> InterfaceId;

    /// A short name for logs (`wlan0`, `simulated`, ...).
    fn name(&self) -> String;

    /// The network the interface is connected to, if any.
    async fn connected_network(&self) -> Result<Option<ConnectedNetwork>, InterfaceError>;

    /// The interface's connection to `ssid`, if it has one. An interface
    /// that holds several connections at once (the fake networks) answers
    /// for each; the others answer from [`WifiInterface::connected_network`].
    async fn connection_to(&self, ssid: &Ssid) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        Ok(self
            .connected_network()
            .await?
            .filter(|network| network.ssid == *ssid))
    }

    /// Answers with the cached results at once and starts a host scan in the
    /// background. Where a host scan is already running, the WlanAPI backend
    /// waits for it (as the reference host does); the D-Bus backends
    /// (NetworkManager, iwd) never wait and leave it running. Fresh results
    /// of a background scan that no call returned are published as
    /// [`InterfaceEvent::ScanResults`].
    async fn scan(&self, target: Option<&Ssid>) -> Result<ScanResult, InterfaceError>;

    /// Connects to a network the guest chose and returns what was joined.
    async fn connect(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError>;

    /// Disconnects this interface.
    async fn disconnect(&self) -> Result<(), InterfaceError>;
}

/// Something that happened on the host's Wi-Fi.
#[derive(Clone)]
pub enum InterfaceEvent {
    /// A new interface appeared.
    Arrived(Arc<dyn WifiInterface>),
    /// An interface went away.
    Removed(InterfaceId),
    /// The host connected this interface to a network.
    Connected {
        /// The interface.
        iface: InterfaceId,
        /// The network it joined.
        network: ConnectedNetwork,
    },
    /// The host disconnected this interface.
    Disconnected {
        /// The interface.
        iface: InterfaceId,
    },
    /// Link quality of the interface's connection changed, in percent.
    SignalQuality {
        /// The interface.
        iface: InterfaceId,
        /// Link quality, 0 to 100.
        percent: u8,
    },
    /// Results of a host scan that no request waited for. `complete` is
    /// `false` when the interface is still scanning.
    ScanResults {
        /// The interface.
        iface: InterfaceId,
        /// What it found.
        result: ScanResult,
    },
}

impl fmt::Debug for InterfaceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// For logs: the event in a line, interfaces by id.
impl fmt::Display for InterfaceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceEvent::Arrived(i) => write!(f, "Arrived({} {})", i.name(), i.id()),
            InterfaceEvent::Removed(id) => write!(f, "Removed({id})"),
            InterfaceEvent::Connected { iface, network } => {
                write!(f, "Connected({iface}, {} {})", network.ssid, network.bssid)
            }
            InterfaceEvent::Disconnected { iface } => write!(f, "Disconnected({iface})"),
            InterfaceEvent::SignalQuality { iface, percent } => {
                write!(f, "SignalQuality({iface}, {percent}%)")
            }
            InterfaceEvent::ScanResults { iface, result } => write!(
                f,
                "ScanResults({iface}, {} BSS, complete: {})",
                result.bss.len(),
                result.complete
            ),
        }
    }
}

/// How a backend is doing now, for `ctl status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendHealth {
    /// Following the host's Wi-Fi service (which may offer no interface).
    Up,
    /// The host's Wi-Fi service is not running, or not answering yet; the
    /// backend waits for it and has no interfaces meanwhile.
    ServiceDown(String),
    /// The backend lost its connection to the host's service bus and is
    /// reconnecting with backoff; no interfaces meanwhile.
    Reconnecting {
        /// Failed reconnection attempts so far.
        attempts: u32,
        /// The last attempt's error, if one failed.
        last_error: Option<String>,
    },
}

impl BackendHealth {
    /// Whether the backend can serve guests now.
    pub fn is_up(&self) -> bool {
        matches!(self, BackendHealth::Up)
    }

    /// A short stable name: `up`, `service-down`, `reconnecting`.
    pub fn label(&self) -> &'static str {
        match self {
            BackendHealth::Up => "up",
            BackendHealth::ServiceDown(_) => "service-down",
            BackendHealth::Reconnecting { .. } => "reconnecting",
        }
    }
}

/// For `ctl status`: the state and why.
impl fmt::Display for BackendHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendHealth::Up => f.write_str("up"),
            BackendHealth::ServiceDown(why) => write!(f, "service-down: {why}"),
            BackendHealth::Reconnecting {
                attempts,
                last_error,
            } => {
                write!(
                    f,
                    "reconnecting: bus connection lost, {attempts} failed attempt(s)"
                )?;
                match last_error {
                    Some(e) => write!(f, ", last: {e}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A host backend: a source of Wi-Fi interfaces, shared by every guest of a
/// daemon.
#[async_trait]
pub trait HostWifi: Send + Sync + 'static {
    /// Subscribes to events. Subscribe before calling [`HostWifi::interfaces`]
    /// so no arrival falls between the two; arrivals of an interface already
    /// known are to be ignored by the subscriber.
    fn subscribe(&self) -> broadcast::Receiver<InterfaceEvent>;

    /// The interfaces present now, in a stable order (the order in which the
    /// handler tries them for a connect).
    fn interfaces(&self) -> Vec<Arc<dyn WifiInterface>>;

    /// Releases what the backend holds on the host (NetworkManager deletes
    /// the profiles it created). Called once, when every guest has stopped.
    async fn shutdown(&self) {}

    /// The simulator capability, for a backend that simulates its host.
    fn simulator(&self) -> Option<&dyn HostSimulator> {
        None
    }

    /// The backend's health, and its changes. By default always
    /// [`BackendHealth::Up`] (a backend with nothing that can fail apart
    /// from its interfaces).
    fn health(&self) -> tokio::sync::watch::Receiver<BackendHealth> {
        tokio::sync::watch::channel(BackendHealth::Up).1
    }
}
