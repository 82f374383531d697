//! End-to-end: `proxy-wifi serve --backend networkmanager` against a mock
//! NetworkManager on a private D-Bus (`DBUS_SYSTEM_BUS_ADDRESS`), a guest
//! scan and connect through it, and SIGTERM deleting the proxy's profile.
//!
//! Needs `dbus-daemon` and python3-dbusmock (see `tests/common/nm.rs`); when
//! they are missing the test prints `SKIPPED: ...` and passes, except under
//! CI (`CI` set), where it fails.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::daemon::{tcp_client_of, Daemon};
use common::nm::*;
use proxy_wifi::daemon::GuestStatus;
use proxy_wifi::guest::ConnectSpec;
use proxy_wifi::protocol::{MacAddr, Ssid};
const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_networkmanager_scans_and_connects_through_it() {
    require_tools!();
    let bus = Bus::start().await;
    let _nm = bus.start_nm().await;
    let dev = bus
        .add_wifi("wlan0", "wlan0", "02:00:00:00:00:90", true)
        .await;
    bus.add_ap(&dev, "ap1", "home", "AA:00:00:00:00:01", 2437, 80, WPA2)
        .await;
    bus.add_ap(&dev, "ap2", "cafe", "AA:00:00:00:00:02", 5180, 40, 0)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(
        serve_command(&bus.address, &dir.path().join("control.sock")),
        dir.path(),
    )
    .await;
    let guest = daemon.tcp_client("default").await;

    // The mock's access points, as the guest sees them.
    let scan = guest.scan(None).await.unwrap();
    let mut seen: Vec<(MacAddr, u32)> = scan.bss.iter().map(|b| (b.bssid, b.freq_khz)).collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("AA:00:00:00:00:01".parse().unwrap(), 2_437_000),
            ("AA:00:00:00:00:02".parse().unwrap(), 5_180_000),
        ]
    );

    // A guest-directed connect becomes the proxy's own NM profile...
    let spec = ConnectSpec::wpa2_passphrase(Ssid::new(b"home").unwrap(), "secretsecret").unwrap();
    let joined = guest.connect(&spec).await.unwrap();
    assert_eq!(joined.result_code, 0);
    assert_eq!(
        joined.bssid,
        "AA:00:00:00:00:01".parse::<MacAddr>().unwrap()
    );
    assert_eq!(bus.profiles().await.len(), 1);

    // ...which SIGTERM deletes (the backend's shutdown).
    let control = daemon.control.clone();
    let (exit, log) = daemon.stop().await;
    assert!(exit.success(), "{log}");
    assert!(
        bus.profiles().await.is_empty(),
        "the proxy's profile is left"
    );
    assert!(!control.exists());
}

/// The first guest's status once its backend state is one of `want`.
async fn wait_backend_state(daemon: &Daemon, want: &[&str]) -> GuestStatus {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let out = daemon.ctl(&["status", "--json"]).await;
        let status: Vec<GuestStatus> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(g) = status.into_iter().next() {
            if want.contains(&g.backend.state.as_str()) {
                return g;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "backend state {:?}, want one of {want:?}",
                g.backend
            );
        } else {
            assert!(tokio::time::Instant::now() < deadline, "no status");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 17, item 16, end to end: the system bus restarts under a running
/// service. `ctl status` shows the backend's health leave `up`, the service
/// stays up and follows NetworkManager again once the bus is back, and a
/// guest scan works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_a_bus_restart_and_status_shows_it() {
    require_tools!();
    let mut bus = Bus::start().await;
    let nm = bus.start_nm().await;
    let dev = bus
        .add_wifi("wlan0", "wlan0", "02:00:00:00:00:91", true)
        .await;
    bus.add_ap(&dev, "ap1", "home", "AA:00:00:00:00:01", 2437, 80, WPA2)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::spawn(
        serve_command(&bus.stable_address(), &dir.path().join("control.sock")),
        dir.path(),
    )
    .await;
    let up = wait_backend_state(&daemon, &["up"]).await;
    assert_eq!(up.backend.kind, "networkmanager");

    nm.stop().await;
    bus.restart_daemon().await;
    let down = wait_backend_state(&daemon, &["reconnecting", "service-down"]).await;
    assert!(daemon.is_running(), "the service exited");

    let _nm = bus.start_nm().await;
    let dev = bus
        .add_wifi("wlan0", "wlan0", "02:00:00:00:00:91", true)
        .await;
    bus.add_ap(&dev, "ap1", "home", "AA:00:00:00:00:01", 2437, 80, WPA2)
        .await;
    let guest = tcp_client_of(&wait_backend_state(&daemon, &["up"]).await);
    // The device comes back through a signal: wait until the guest sees the
    // access point again.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let scan = guest.scan(None).await.unwrap();
        if scan
            .bss
            .iter()
            .any(|b| b.bssid == "AA:00:00:00:00:01".parse::<MacAddr>().unwrap())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access point after the bus came back (health was {:?})",
            down.backend
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (exit, log) = daemon.stop().await;
    assert!(exit.success(), "{log}");
}
