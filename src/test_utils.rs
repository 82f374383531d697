//! Hooks and fixtures for tests, fuzz targets and benchmarks; not part of
//! the library's API (hidden from its documentation, may change at any
//! time).
//!
//! The hooks reach inside the service (its request path, its notification
//! sender, a bare handler) so the fuzzers and property tests drive exactly
//! the code a running service runs, over in-memory streams. The fixtures
//! are what many tests build the same way.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::guest::ConnectSpec;
use crate::handler::{HandlerClient, HandlerSettings};
use crate::observer::ObserverQueue;
use crate::protocol::{ConnectRequest, Key, Message, Ssid};
use crate::wifi::{HostWifi, WifiInterface};

pub use crate::service::notifications::send_notification;
pub use crate::service::requests::{encode_or_invalid, serve_request_connection};

/// A handler spawned on its own, without a service around it.
pub struct SpawnedHandler {
    /// Hands it requests.
    pub client: HandlerClient,
    /// Its task; it ends when every client is dropped.
    pub task: JoinHandle<()>,
}

/// Spawns a handler as a service would (see the handler's documentation
/// for the arguments).
pub fn spawn_handler(
    host: Arc<dyn HostWifi>,
    fake: Option<Arc<dyn WifiInterface>>,
    observer: ObserverQueue,
    notifications: mpsc::Sender<Message>,
    settings: HandlerSettings,
) -> SpawnedHandler {
    let handle = crate::handler::spawn(host, fake, observer, notifications, settings);
    SpawnedHandler {
        client: handle.client,
        task: handle.task,
    }
}

/// `ssid` as an [`Ssid`]; panics on a name longer than 32 bytes (fixtures
/// only use short ones).
pub fn ssid(name: &str) -> Ssid {
    Ssid::new(name.as_bytes()).expect("a fixture SSID fits in 32 bytes")
}

/// The CONNECT_REQUEST the driver sends for an open network.
pub fn open_connect(name: &str) -> ConnectRequest {
    ConnectSpec::open(ssid(name)).to_request()
}

/// The CONNECT_REQUEST the driver sends for a WPA2-PSK network with this
/// PMK (32 bytes).
pub fn wpa2_connect(name: &str, pmk: Key) -> ConnectRequest {
    ConnectSpec::wpa2_psk(ssid(name), pmk).to_request()
}
