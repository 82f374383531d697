//! Simulated mode: a host backend with one simulated interface holding a
//! list of networks, and methods an operator (or a test) calls to make
//! host-side things happen: the host connects or disconnects, the signal
//! changes, scan results arrive, scans become asynchronous.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    AuthAlgorithm, ConnectParams, ConnectedNetwork, EventHub, HostEvent, HostSimulator, HostWifi,
    InterfaceError, InterfaceEvent, InterfaceId, ScanResult, ScannedBss, Security, WifiInterface,
    DEFAULT_BEACON_INTERVAL_TU,
};
pub use super::{ScanMode, SimulatedError};
use crate::protocol::{pmk_from_passphrase, Key, MacAddr, Ssid};

/// The simulated interface's id.
pub const SIMULATED_INTERFACE_ID: InterfaceId =
    uuid::Uuid::from_u128(0x5e7a1a7e_d000_4000_8000_000000000001);

/// How long an asynchronous scan takes to deliver the rest of its results.
pub const DEFAULT_ASYNC_SCAN_DELAY: Duration = Duration::from_millis(500);

/// 802.11 status CHALLENGE_FAIL: what a wrong key gets.
const STATUS_CHALLENGE_FAIL: u16 = 15;

/// One simulated network. It is also what a `[[simulated_network]]` table
/// of the daemon's configuration reads into (`security` is `"open"` or
/// `"wpa2-psk"` there; `rssi_dbm` defaults to -50).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedNetwork {
    /// The network's name.
    pub ssid: Ssid,
    /// Its one BSS.
    pub bssid: MacAddr,
    /// Channel centre frequency in kHz.
    pub freq_khz: u32,
    /// Signal strength shown in scans.
    #[serde(default = "default_rssi")]
    pub rssi_dbm: i32,
    /// Open, WPA2-PSK/CCMP or WPA3-SAE/CCMP.
    #[serde(deserialize_with = "simulated_security")]
    pub security: Security,
    /// `None`: any key is accepted (as the reference). `Some`: for WPA2-PSK
    /// the guest's PMK must be the one derived from this passphrase and the
    /// SSID; for WPA3-SAE the guest's SAE password must be this one. A wrong
    /// key is refused with status 15.
    pub passphrase: Option<String>,
}

fn default_rssi() -> i32 {
    -50
}

/// The securities a simulated network may have, by their configuration
/// names.
fn simulated_security<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Security, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Name {
        Open,
        Wpa2Psk,
        /// WPA3-Personal: SAE with CCMP and management frame protection
        /// required; the guest connects with auth_type 4 and the password.
        Wpa3Sae,
    }
    Ok(match <Name as serde::Deserialize>::deserialize(d)? {
        Name::Open => Security::OPEN,
        Name::Wpa2Psk => Security::WPA2_PSK_CCMP,
        Name::Wpa3Sae => Security::WPA3_SAE_CCMP,
    })
}

impl fmt::Debug for SimulatedNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedNetwork")
            .field("ssid", &self.ssid)
            .field("bssid", &self.bssid)
            .field("freq_khz", &self.freq_khz)
            .field("rssi_dbm", &self.rssi_dbm)
            .field("security", &self.security)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl SimulatedNetwork {
    /// The reference's three networks: FakeWpa2Psk (2432 MHz, WPA2-PSK/CCMP,
    /// any key), FakeOpen (5240 MHz) and Fake6GHz (6115 MHz), all -50 dBm.
    pub fn reference_networks() -> Vec<SimulatedNetwork> {
        let net = |ssid: &str, last: u8, freq_khz: u32, security: Security| SimulatedNetwork {
            ssid: Ssid::new(ssid.as_bytes()).unwrap_or_default(),
            bssid: MacAddr([0, 0, 0, 0, 0, last]),
            freq_khz,
            rssi_dbm: -50,
            security,
            passphrase: None,
        };
        vec![
            net("FakeWpa2Psk", 1, 2_432_000, Security::WPA2_PSK_CCMP),
            net("FakeOpen", 2, 5_240_000, Security::OPEN),
            net("Fake6GHz", 3, 6_115_000, Security::OPEN),
        ]
    }

    fn scanned(&self) -> ScannedBss {
        ScannedBss {
            bssid: self.bssid,
            ssid: self.ssid,
            capabilities: None,
            rssi_dbm: self.rssi_dbm,
            beacon_interval: Some(DEFAULT_BEACON_INTERVAL_TU),
            freq_khz: self.freq_khz,
            security: self.security,
            ies: Vec::new(),
        }
    }

    fn connection(&self) -> ConnectedNetwork {
        ConnectedNetwork {
            ssid: self.ssid,
            bssid: self.bssid,
            security: self.security,
        }
    }
}

#[derive(Default)]
struct State {
    /// Index of the network the host is connected to.
    connected: Option<usize>,
    mode: ScanMode,
    async_delay: Option<Duration>,
}

struct SimulatedInterface {
    networks: Vec<SimulatedNetwork>,
    state: Mutex<State>,
    hub: Weak<EventHub>,
}

impl SimulatedInterface {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, event: InterfaceEvent) {
        if let Some(hub) = self.hub.upgrade() {
            hub.publish(event);
        }
    }
}

#[async_trait]
impl WifiInterface for SimulatedInterface {
    fn id(&self) -> InterfaceId {
        SIMULATED_INTERFACE_ID
    }

    fn name(&self) -> String {
        "simulated".into()
    }

    async fn connected_network(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        let connected = self.state().connected;
        Ok(connected
            .and_then(|i| self.networks.get(i))
            .map(SimulatedNetwork::connection))
    }

    async fn scan(&self, _target: Option<&Ssid>) -> Result<ScanResult, InterfaceError> {
        let (mode, delay) = {
            let s = self.state();
            (s.mode, s.async_delay.unwrap_or(DEFAULT_ASYNC_SCAN_DELAY))
        };
        let all: Vec<ScannedBss> = self.networks.iter().map(|n| n.scanned()).collect();
        match mode {
            ScanMode::Sync => Ok(ScanResult {
                bss: all,
                complete: true,
            }),
            ScanMode::Async => {
                let mut rest = all;
                let first: Vec<ScannedBss> = if rest.is_empty() {
                    Vec::new()
                } else {
                    vec![rest.remove(0)]
                };
                let hub = self.hub.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(hub) = hub.upgrade() {
                        hub.publish(InterfaceEvent::ScanResults {
                            iface: SIMULATED_INTERFACE_ID,
                            result: ScanResult {
                                bss: rest,
                                complete: true,
                            },
                        });
                    }
                });
                Ok(ScanResult {
                    bss: first,
                    complete: false,
                })
            }
        }
    }

    async fn connect(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        let index = self
            .networks
            .iter()
            .position(|n| n.ssid == params.ssid && params.bssid.is_none_or(|b| b == n.bssid))
            .ok_or_else(|| InterfaceError::NotFound(params.ssid.to_string_lossy()))?;
        let network = &self.networks[index];
        if network.security.as_seen_by_guest() != params.security {
            return Err(InterfaceError::SecurityMismatch {
                network: network.security,
                requested: params.security,
            });
        }
        if let Some(passphrase) = &network.passphrase {
            // WPA2-PSK: the guest hands over the PMK derived from the
            // passphrase; WPA3-SAE: the SAE password itself.
            let expected = match network.security.auth {
                AuthAlgorithm::Wpa3Sae => Key::new(passphrase.as_bytes().to_vec()),
                _ => pmk_from_passphrase(passphrase, &network.ssid)
                    .map_err(InterfaceError::UnusablePassphrase)?,
            };
            if params.key.as_ref() != Some(&expected) {
                return Err(InterfaceError::Rejected {
                    status: STATUS_CHALLENGE_FAIL,
                });
            }
        }
        self.state().connected = Some(index);
        let connection = network.connection();
        self.publish(InterfaceEvent::Connected {
            iface: SIMULATED_INTERFACE_ID,
            network: connection.clone(),
        });
        Ok(connection)
    }

    async fn disconnect(&self) -> Result<(), InterfaceError> {
        let was = self.state().connected.take();
        if was.is_some() {
            self.publish(InterfaceEvent::Disconnected {
                iface: SIMULATED_INTERFACE_ID,
            });
        }
        Ok(())
    }
}

/// A [`HostWifi`] backend with one simulated interface.
pub struct SimulatedWifi {
    hub: Arc<EventHub>,
    iface: Arc<SimulatedInterface>,
}

impl SimulatedWifi {
    /// A backend whose interface holds `networks`.
    pub fn new(networks: Vec<SimulatedNetwork>) -> Arc<SimulatedWifi> {
        let hub = Arc::new(EventHub::new());
        let iface = Arc::new(SimulatedInterface {
            networks,
            state: Mutex::new(State::default()),
            hub: Arc::downgrade(&hub),
        });
        hub.add(iface.clone());
        Arc::new(SimulatedWifi { hub, iface })
    }

    /// The reference's three networks.
    pub fn reference() -> Arc<SimulatedWifi> {
        SimulatedWifi::new(SimulatedNetwork::reference_networks())
    }

    /// The simulated interface's id.
    pub fn interface_id(&self) -> InterfaceId {
        SIMULATED_INTERFACE_ID
    }

    /// The simulated networks.
    pub fn networks(&self) -> &[SimulatedNetwork] {
        &self.iface.networks
    }

    /// How long an asynchronous scan takes to deliver the rest (default 500 ms).
    pub fn set_async_scan_delay(&self, delay: Duration) {
        self.iface.state().async_delay = Some(delay);
    }

    /// The host connects to the simulated network `ssid`.
    pub fn host_connect(&self, ssid: &Ssid) -> Result<(), SimulatedError> {
        let index = self
            .iface
            .networks
            .iter()
            .position(|n| n.ssid == *ssid)
            .ok_or_else(|| SimulatedError::UnknownNetwork(ssid.to_string_lossy()))?;
        self.iface.state().connected = Some(index);
        self.iface.publish(InterfaceEvent::Connected {
            iface: SIMULATED_INTERFACE_ID,
            network: self.iface.networks[index].connection(),
        });
        Ok(())
    }

    /// The host disconnects.
    pub fn host_disconnect(&self) -> Result<(), SimulatedError> {
        if self.iface.state().connected.take().is_none() {
            return Err(SimulatedError::NotConnected);
        }
        self.iface.publish(InterfaceEvent::Disconnected {
            iface: SIMULATED_INTERFACE_ID,
        });
        Ok(())
    }

    /// The link quality of the host's connection changes (percent).
    pub fn signal(&self, percent: u8) -> Result<(), SimulatedError> {
        if percent > 100 {
            return Err(SimulatedError::BadPercent(percent));
        }
        self.iface.publish(InterfaceEvent::SignalQuality {
            iface: SIMULATED_INTERFACE_ID,
            percent,
        });
        Ok(())
    }

    /// A host scan that no request waited for delivers every network.
    pub fn scan_results(&self) {
        self.iface.publish(InterfaceEvent::ScanResults {
            iface: SIMULATED_INTERFACE_ID,
            result: ScanResult {
                bss: self.iface.networks.iter().map(|n| n.scanned()).collect(),
                complete: true,
            },
        });
    }

    /// Switches scans between synchronous and asynchronous answers.
    pub fn set_scan_mode(&self, mode: ScanMode) {
        self.iface.state().mode = mode;
    }

    /// How scans are answered now.
    pub fn scan_mode(&self) -> ScanMode {
        self.iface.state().mode
    }
}

impl HostWifi for SimulatedWifi {
    fn subscribe(&self) -> broadcast::Receiver<InterfaceEvent> {
        self.hub.subscribe()
    }

    fn interfaces(&self) -> Vec<Arc<dyn WifiInterface>> {
        self.hub.interfaces()
    }

    fn simulator(&self) -> Option<&dyn HostSimulator> {
        Some(self)
    }
}

impl HostSimulator for SimulatedWifi {
    fn apply(&self, event: HostEvent) -> Result<(), SimulatedError> {
        match event {
            HostEvent::Connect(ssid) => self.host_connect(&ssid),
            HostEvent::Disconnect => self.host_disconnect(),
            HostEvent::Signal(percent) => self.signal(percent),
            HostEvent::ScanResults => {
                self.scan_results();
                Ok(())
            }
            HostEvent::ScanMode(mode) => {
                self.set_scan_mode(mode);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Key;

    fn ssid(s: &str) -> Ssid {
        Ssid::new(s.as_bytes()).unwrap()
    }

    fn params(name: &str, security: Security, key: Option<Key>) -> ConnectParams {
        ConnectParams {
            ssid: ssid(name),
            bssid: None,
            security,
            key,
        }
    }

    #[tokio::test]
    async fn reference_networks_and_sync_scan() {
        let wifi = SimulatedWifi::reference();
        let ifaces = wifi.interfaces();
        assert_eq!(ifaces.len(), 1);
        let r = ifaces[0].scan(None).await.unwrap();
        assert!(r.complete);
        let summary: Vec<_> = r
            .bss
            .iter()
            .map(|b| {
                (
                    b.ssid.to_string_lossy(),
                    b.bssid.0[5],
                    b.freq_khz,
                    b.rssi_dbm,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("FakeWpa2Psk".to_string(), 1, 2_432_000, -50),
                ("FakeOpen".to_string(), 2, 5_240_000, -50),
                ("Fake6GHz".to_string(), 3, 6_115_000, -50),
            ]
        );
        assert_eq!(r.bss[0].security, Security::WPA2_PSK_CCMP);
        assert_eq!(r.bss[1].security, Security::OPEN);
    }

    #[tokio::test(start_paused = true)]
    async fn async_scan_answers_first_then_publishes_the_rest() {
        let wifi = SimulatedWifi::reference();
        let mut events = wifi.subscribe();
        wifi.set_scan_mode(ScanMode::Async);
        let r = wifi.interfaces()[0].scan(None).await.unwrap();
        assert!(!r.complete);
        assert_eq!(r.bss.len(), 1);
        match events.recv().await.unwrap() {
            InterfaceEvent::ScanResults { result, .. } => {
                assert!(result.complete);
                assert_eq!(result.bss.len(), 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn host_events_are_published() {
        let wifi = SimulatedWifi::reference();
        let mut events = wifi.subscribe();
        assert_eq!(
            wifi.host_connect(&ssid("Nope")),
            Err(SimulatedError::UnknownNetwork("Nope".into()))
        );
        assert_eq!(wifi.host_disconnect(), Err(SimulatedError::NotConnected));
        wifi.host_connect(&ssid("FakeOpen")).unwrap();
        assert!(matches!(
            events.recv().await.unwrap(),
            InterfaceEvent::Connected { network, .. } if network.ssid == ssid("FakeOpen")
        ));
        let iface = &wifi.interfaces()[0];
        assert_eq!(
            iface.connected_network().await.unwrap().unwrap().ssid,
            ssid("FakeOpen")
        );
        wifi.signal(80).unwrap();
        assert!(matches!(
            events.recv().await.unwrap(),
            InterfaceEvent::SignalQuality { percent: 80, .. }
        ));
        assert_eq!(wifi.signal(101), Err(SimulatedError::BadPercent(101)));
        wifi.host_disconnect().unwrap();
        assert!(matches!(
            events.recv().await.unwrap(),
            InterfaceEvent::Disconnected { .. }
        ));
        wifi.scan_results();
        assert!(matches!(
            events.recv().await.unwrap(),
            InterfaceEvent::ScanResults { result, .. } if result.bss.len() == 3 && result.complete
        ));
    }

    #[tokio::test]
    async fn connect_checks_network_security_and_passphrase() {
        let mut nets = SimulatedNetwork::reference_networks();
        nets[0].passphrase = Some("secretsecret".into());
        let wifi = SimulatedWifi::new(nets);
        let iface = wifi.interfaces()[0].clone();
        let good = pmk_from_passphrase("secretsecret", &ssid("FakeWpa2Psk")).unwrap();
        let bad = pmk_from_passphrase("wrongwrong", &ssid("FakeWpa2Psk")).unwrap();
        assert_eq!(
            iface
                .connect(&params("FakeWpa2Psk", Security::WPA2_PSK_CCMP, Some(bad)))
                .await,
            Err(InterfaceError::Rejected { status: 15 })
        );
        assert!(iface
            .connect(&params("FakeOpen", Security::WPA2_PSK_CCMP, None))
            .await
            .is_err());
        assert!(matches!(
            iface
                .connect(&params("Missing", Security::OPEN, None))
                .await,
            Err(InterfaceError::NotFound(_))
        ));
        let joined = iface
            .connect(&params("FakeWpa2Psk", Security::WPA2_PSK_CCMP, Some(good)))
            .await
            .unwrap();
        assert_eq!(joined.bssid, MacAddr([0, 0, 0, 0, 0, 1]));
        // The reference networks accept any key.
        let any = SimulatedWifi::reference();
        assert!(any.interfaces()[0]
            .connect(&params(
                "FakeWpa2Psk",
                Security::WPA2_PSK_CCMP,
                Some(Key::new(vec![7; 32]))
            ))
            .await
            .is_ok());
        let d = format!(
            "{:?}",
            SimulatedNetwork {
                passphrase: Some("secretsecret".into()),
                ..SimulatedNetwork::reference_networks().remove(0)
            }
        );
        assert!(!d.contains("secretsecret"));
    }
}
