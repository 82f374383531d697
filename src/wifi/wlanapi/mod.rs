//! The host's Wi-Fi on Windows, through WlanAPI (Native Wifi).
//!
//! [`WlanApiWifi`] is a [`HostWifi`](crate::wifi::HostWifi) backend: one
//! [`WifiInterface`](crate::wifi::WifiInterface) per wireless adapter,
//! added and removed as adapters come and go. It behaves as the reference's
//! real interface does:
//!
//! - notifications: ACM connection complete, disconnected, scan complete and
//!   scan fail, interface arrival and removal; MSM signal quality;
//! - a scan answers at once with the cached BSS list and starts a host scan
//!   (`WlanScan`) in the background; if a host scan is already running it
//!   waits for that scan's results instead; results of a scan nobody waited
//!   for are published as `InterfaceEvent::ScanResults`;
//! - a connect builds a temporary profile from SSID, auth/cipher and key
//!   (the 32-byte PMK as a hex network key) and calls `WlanConnect` in
//!   temporary-profile mode with the requested BSSID; `disconnect` calls
//!   `WlanDisconnect`;
//! - link quality (percent) is published as is; the handler turns it into
//!   dBm with the reference formula.
//!
//! Everything except the FFI calls is platform independent and tested on
//! Linux: [`profile`] (profile XML), [`convert`] (DOT11 values, the
//! `WLAN_BSS_LIST` block, signal quality), [`notify`] (notification data),
//! [`pending`] (pairing calls with their notifications) and the backend
//! logic itself, which drives the system through the [`WlanSys`] trait. The
//! Windows implementation of that trait (`ffi`, `windows-sys` calls) only
//! exists with `cfg(windows)`, as does [`WlanApiWifi::start`].

mod backend;
pub mod convert;
#[cfg(windows)]
mod ffi;
pub mod notify;
pub mod pending;
pub mod profile;

use std::io;

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::protocol::{MacAddr, Ssid};
use crate::wifi::{ConnectedNetwork, InterfaceError};

pub use backend::WlanApiWifi;
pub use convert::{BssListError, ParsedBssList};
pub use profile::ProfileError;

/// Win32 error codes the backend tells apart.
pub mod win32 {
    pub const ERROR_SERVICE_NOT_ACTIVE: u32 = 1062;
    pub const ERROR_NOT_FOUND: u32 = 1168;
    pub const ERROR_INVALID_STATE: u32 = 5023;
    pub const ERROR_NOT_SUPPORTED: u32 = 50;
    pub const ERROR_CALL_NOT_IMPLEMENTED: u32 = 120;
}

/// Why a WlanAPI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WlanError {
    /// A WlanAPI function returned a Win32 error code.
    #[error("{call} failed: {} (error {code})", io::Error::from_raw_os_error(*code as i32))]
    Api { call: &'static str, code: u32 },
    #[error("the WlanAPI backend must be started from within a tokio runtime")]
    NoRuntime,
    #[error("bad BSS list: {0}")]
    BssList(#[from] BssListError),
    #[error("cannot build a profile: {0}")]
    Profile(#[from] ProfileError),
    #[error("WlanAPI returned malformed data: {0}")]
    Malformed(&'static str),
}

impl WlanError {
    /// The call is a stub on this system (Wine's `WlanRegisterNotification`
    /// answers `ERROR_CALL_NOT_IMPLEMENTED`), as opposed to a real failure.
    pub fn is_not_implemented(&self) -> bool {
        matches!(
            self,
            WlanError::Api {
                code: win32::ERROR_CALL_NOT_IMPLEMENTED | win32::ERROR_NOT_SUPPORTED,
                ..
            }
        )
    }

    /// The error as a [`WifiInterface`](crate::wifi::WifiInterface) reports it.
    pub fn to_interface_error(&self) -> InterfaceError {
        match self {
            WlanError::Api {
                code: win32::ERROR_NOT_FOUND,
                ..
            } => InterfaceError::Gone,
            WlanError::Api {
                code: win32::ERROR_SERVICE_NOT_ACTIVE,
                ..
            } => InterfaceError::Unavailable(self.to_string()),
            WlanError::Api { call, code } => InterfaceError::HostCall { call, code: *code },
            WlanError::NoRuntime => InterfaceError::Unavailable(self.to_string()),
            WlanError::BssList(e) => InterfaceError::MalformedHostData(e.to_string()),
            WlanError::Malformed(what) => InterfaceError::MalformedHostData(what.to_string()),
            WlanError::Profile(e) => InterfaceError::Profile(e.to_string()),
        }
    }
}

/// A wireless adapter as `WlanEnumInterfaces` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub id: Uuid,
    pub description: String,
}

/// What `WlanConnect` is given: the temporary profile (it carries the key:
/// never log it), the SSID and the BSSID the guest asked for.
pub struct SysConnect {
    pub ssid: Ssid,
    pub bssid: Option<MacAddr>,
    pub profile_xml: Zeroizing<String>,
}

/// The WlanAPI calls the backend makes, blocking (the backend runs them on
/// tokio's blocking pool). On Windows the client handle implements it with
/// `windows-sys`; tests implement it with a scripted fake.
pub trait WlanSys: Send + Sync + 'static {
    /// `WlanEnumInterfaces`.
    fn interfaces(&self) -> Result<Vec<InterfaceInfo>, WlanError>;
    /// `WlanGetNetworkBssList` for infrastructure networks, parsed.
    fn bss_list(&self, iface: Uuid) -> Result<ParsedBssList, WlanError>;
    /// `WlanScan`, directed at `ssid` when given.
    fn scan(&self, iface: Uuid, ssid: Option<&Ssid>) -> Result<(), WlanError>;
    /// `WlanQueryInterface(wlan_intf_opcode_current_connection)`: the network
    /// when the interface is connected.
    fn current_connection(&self, iface: Uuid) -> Result<Option<ConnectedNetwork>, WlanError>;
    /// `WlanConnect` with a temporary profile; the outcome arrives as a
    /// connection-complete notification.
    fn connect(&self, iface: Uuid, request: &SysConnect) -> Result<(), WlanError>;
    /// `WlanDisconnect`.
    fn disconnect(&self, iface: Uuid) -> Result<(), WlanError>;
}
