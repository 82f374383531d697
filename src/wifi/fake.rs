//! The client application's fake networks, as an interface.
//!
//! A provider closure returns (SSID, BSSID) pairs. Each is shown to the guest
//! as WPA2-PSK/CCMP on 5240 MHz at -50 dBm, and is always "connected":
//! connecting to one is host mirroring and never touches the host. The
//! handler puts this interface first, so fake networks win BSSID duplicates.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    ConnectParams, ConnectedNetwork, InterfaceError, InterfaceId, ScanResult, ScannedBss, Security,
    WifiInterface, DEFAULT_BEACON_INTERVAL_TU,
};
use crate::protocol::{MacAddr, Ssid};

/// The interface id reported for operations on fake networks (the
/// reference's value).
pub const FAKE_INTERFACE_ID: InterfaceId =
    uuid::Uuid::from_u128(0x1b57e649_a1df_482f_85c2_a16063836418);
/// Frequency of every fake network, kHz (5 GHz channel 48).
pub const FAKE_FREQ_KHZ: u32 = 5_240_000;
/// Signal of every fake network, dBm.
pub const FAKE_RSSI_DBM: i32 = -50;

/// Returns the fake networks of the moment, as (SSID, BSSID) pairs.
pub type FakeNetworkProvider = Arc<dyn Fn() -> Vec<(Ssid, MacAddr)> + Send + Sync>;

/// The fake networks of `provider` as an interface, for the handler to put
/// first.
pub fn fake_networks(provider: FakeNetworkProvider) -> Arc<dyn WifiInterface> {
    Arc::new(FakeWifi { provider })
}

/// The fake networks as a [`WifiInterface`].
struct FakeWifi {
    provider: FakeNetworkProvider,
}

impl FakeWifi {
    /// The networks the provider returns now. A provider that panics is
    /// logged and yields none.
    fn networks(&self) -> Vec<(Ssid, MacAddr)> {
        match catch_unwind(AssertUnwindSafe(|| (self.provider)())) {
            Ok(list) => list,
            Err(_) => {
                tracing::error!("the fake network provider panicked; no fake networks this time");
                Vec::new()
            }
        }
    }

    /// The fake network called `ssid`, as a connection (fake networks are
    /// always connected).
    fn find(&self, ssid: &Ssid) -> Option<ConnectedNetwork> {
        self.networks()
            .into_iter()
            .find(|(s, _)| s == ssid)
            .map(|(ssid, bssid)| ConnectedNetwork {
                ssid,
                bssid,
                security: Security::WPA2_PSK_CCMP,
            })
    }
}

#[async_trait]
impl WifiInterface for FakeWifi {
    fn id(&self) -> InterfaceId {
        FAKE_INTERFACE_ID
    }

    fn name(&self) -> String {
        "fake-networks".into()
    }

    /// The first fake network: the trait has room for one connection;
    /// [`WifiInterface::connection_to`] answers for each of them.
    async fn connected_network(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        Ok(self
            .networks()
            .into_iter()
            .next()
            .map(|(ssid, bssid)| ConnectedNetwork {
                ssid,
                bssid,
                security: Security::WPA2_PSK_CCMP,
            }))
    }

    async fn connection_to(&self, ssid: &Ssid) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        Ok(self.find(ssid))
    }

    async fn scan(&self, _target: Option<&Ssid>) -> Result<ScanResult, InterfaceError> {
        let bss = self
            .networks()
            .into_iter()
            .map(|(ssid, bssid)| ScannedBss {
                bssid,
                ssid,
                capabilities: None,
                rssi_dbm: FAKE_RSSI_DBM,
                beacon_interval: Some(DEFAULT_BEACON_INTERVAL_TU),
                freq_khz: FAKE_FREQ_KHZ,
                security: Security::WPA2_PSK_CCMP,
                ies: Vec::new(),
            })
            .collect();
        Ok(ScanResult {
            bss,
            complete: true,
        })
    }

    async fn connect(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        self.find(&params.ssid)
            .ok_or_else(|| InterfaceError::NotFound(params.ssid.to_string_lossy()))
    }

    async fn disconnect(&self) -> Result<(), InterfaceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_networks_are_wpa2_on_5240_and_connected() {
        let mac: MacAddr = "aa:bb:cc:dd:ee:ff".parse().unwrap();
        let fake = fake_networks(Arc::new(move || vec![(Ssid::new(b"Corp").unwrap(), mac)]));
        let scan = fake.scan(None).await.unwrap();
        assert!(scan.complete);
        assert_eq!(scan.bss.len(), 1);
        let b = &scan.bss[0];
        assert_eq!(
            (b.bssid, b.freq_khz, b.rssi_dbm, b.security),
            (mac, 5_240_000, -50, Security::WPA2_PSK_CCMP)
        );
        let corp = fake.connection_to(&Ssid::new(b"Corp").unwrap()).await;
        assert_eq!(corp.unwrap().unwrap().bssid, mac);
        let other = fake.connection_to(&Ssid::new(b"Other").unwrap()).await;
        assert!(other.unwrap().is_none());
        assert_eq!(
            fake.id().to_string(),
            "1b57e649-a1df-482f-85c2-a16063836418"
        );
    }

    #[tokio::test]
    async fn a_panicking_provider_yields_nothing() {
        let fake = fake_networks(Arc::new(|| panic!("provider bug")));
        assert!(fake.scan(None).await.unwrap().bss.is_empty());
    }
}
