//! The simulator capability: host-side events an operator (`proxy-wifi ctl`)
//! or a test makes happen on a backend that simulates its host. Only the
//! simulated backend has it; layers above `wifi/` reach it through
//! [`HostWifi::simulator`](super::HostWifi::simulator) and never name the
//! backend.

use crate::protocol::Ssid;

/// Whether scans answer with everything at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMode {
    /// Every network in the answer, scan complete.
    #[default]
    Sync,
    /// Only the first network in the answer, scan still running; the rest
    /// arrive a little later as scan results that complete the scan.
    Async,
}

impl ScanMode {
    /// The mode's name as the control socket spells it.
    pub fn name(self) -> &'static str {
        match self {
            ScanMode::Sync => "sync",
            ScanMode::Async => "async",
        }
    }
}

/// Something the simulated host does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent {
    /// The host connects to the simulated network with this SSID.
    Connect(Ssid),
    /// The host disconnects.
    Disconnect,
    /// The link quality of the host's connection changes (percent).
    Signal(u8),
    /// A host scan that no request waited for delivers every network.
    ScanResults,
    /// Scans answer synchronously or asynchronously from now on.
    ScanMode(ScanMode),
}

/// Why a simulated host event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulatedError {
    /// No simulated network has that SSID.
    #[error("no simulated network is called {0:?}")]
    UnknownNetwork(String),
    /// A disconnect while the host is not connected.
    #[error("the simulated host is not connected")]
    NotConnected,
    /// A signal quality above 100 %.
    #[error("signal quality {0} is not a percentage (0-100)")]
    BadPercent(u8),
}

/// A backend whose host events can be driven from outside.
pub trait HostSimulator: Send + Sync {
    /// Makes `event` happen on the simulated host.
    fn apply(&self, event: HostEvent) -> Result<(), SimulatedError>;
}
