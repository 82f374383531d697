//! A host service in simulated mode, with a fake network and an observer
//! that logs what the guest does and refuses guest-directed connections to
//! one SSID. Serves TCP on 127.0.0.1 (ports 12345/12346) until Ctrl-C.
//!
//! ```text
//! cargo run --example simulated_service
//! ```

use std::sync::Arc;

use proxy_wifi::observer::{
    Authorization, ConnectionKind, GuestConnectCompletion, HostConnection, Observer,
};
use proxy_wifi::protocol::{MacAddr, Ssid};
use proxy_wifi::service::Service;
use proxy_wifi::transport::TransportConfig;
use proxy_wifi::wifi::simulated::SimulatedWifi;

struct Printer;

impl Observer for Printer {
    fn host_connected(&self, c: &HostConnection) {
        println!("host connected to {} on {}", c.ssid, c.interface);
    }

    fn authorize_guest_connection(&self, kind: ConnectionKind, ssid: &Ssid) -> Authorization {
        println!("guest wants {ssid} ({kind:?})");
        if kind == ConnectionKind::GuestDirected && ssid.as_bytes() == b"Fake6GHz" {
            Authorization::Deny
        } else {
            Authorization::Approve
        }
    }

    fn guest_connect_completed(&self, c: &GuestConnectCompletion) {
        println!("guest connection to {}: {:?}", c.ssid, c.outcome);
    }

    fn guest_scan_completed(&self) {
        println!("guest scan answered");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let simulated = SimulatedWifi::reference();
    let corp: MacAddr = "02:00:00:00:00:aa".parse()?;
    let service = Service::builder(
        TransportConfig::tcp("127.0.0.1".parse()?),
        simulated.clone(),
    )
    .fake_networks(move || vec![(Ssid::new(b"CorpNet").unwrap_or_default(), corp)])
    .observer(Arc::new(Printer))
    .build();
    service.start().await?;
    // Host-side events can be triggered from code too.
    simulated.host_connect(&Ssid::new(b"FakeOpen")?)?;
    tokio::signal::ctrl_c().await?;
    service.stop().await;
    Ok(())
}
