//! End-to-end: `proxy-wifi serve --backend networkmanager` against a mock
//! NetworkManager on a private D-Bus (`DBUS_SYSTEM_BUS_ADDRESS`), a guest
//! scan and connect through it, and SIGTERM deleting the proxy's profile.
//!
//! Needs `dbus-daemon` and python3-dbusmock (see `tests/common/nm.rs`); when
//! they are missing the test prints `SKIPPED: ...` and passes, except under
//! CI (`CI` set), where it fails.
#![cfg(target_os = "linux")]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::nm::*;
use proxy_wifi::daemon::GuestStatus;
use proxy_wifi::guest::{ConnectSpec, GuestClient};
use proxy_wifi::protocol::{MacAddr, Ssid};
use proxy_wifi::transport::TransportConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_proxy-wifi");
const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_networkmanager_scans_and_connects_through_it() {
    if let Some(why) = missing_tools() {
        if std::env::var_os("CI").is_some() {
            panic!("SKIPPED is not acceptable in CI: {why}");
        }
        eprintln!("SKIPPED: serve --backend networkmanager: {why}");
        return;
    }
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
    let control = dir.path().join("control.sock");
    let mut child = serve_command(&bus.address, &control)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    loop {
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("not ready:\n{log}"))
            .unwrap()
            .unwrap_or_else(|| panic!("exited:\n{log}"));
        log.push_str(&line);
        log.push('\n');
        if line.ends_with(" ready") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let out = Command::new(BIN)
        .args(["ctl", "--control"])
        .arg(&control)
        .args(["status", "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Vec<GuestStatus> = serde_json::from_slice(&out.stdout).unwrap();
    let port: u16 = status[0]
        .listening
        .as_deref()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let guest = GuestClient::new(&TransportConfig::Tcp {
        address: "127.0.0.1".parse().unwrap(),
        request_port: port,
        notification_port: 9,
    })
    .unwrap();

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
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
    let exit = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());
    assert!(
        bus.profiles().await.is_empty(),
        "the proxy's profile is left"
    );
    assert!(!control.exists());
}

/// `ctl status --json` once the first guest's backend state is `want`.
async fn wait_backend_state(control: &std::path::Path, want: &[&str]) -> GuestStatus {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let out = Command::new(BIN)
            .args(["ctl", "--control"])
            .arg(control)
            .args(["status", "--json"])
            .output()
            .await
            .unwrap();
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
    if let Some(why) = missing_tools() {
        if std::env::var_os("CI").is_some() {
            panic!("SKIPPED is not acceptable in CI: {why}");
        }
        eprintln!("SKIPPED: serve --backend networkmanager: {why}");
        return;
    }
    let mut bus = Bus::start().await;
    let nm = bus.start_nm().await;
    let dev = bus
        .add_wifi("wlan0", "wlan0", "02:00:00:00:00:91", true)
        .await;
    bus.add_ap(&dev, "ap1", "home", "AA:00:00:00:00:01", 2437, 80, WPA2)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let mut child = serve_command(&bus.stable_address(), &control)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_backend_state(&control, &["up"]).await;
    assert_eq!(up.backend.kind, "networkmanager");

    nm.stop().await;
    bus.restart_daemon().await;
    let down = wait_backend_state(&control, &["reconnecting", "service-down"]).await;
    assert!(child.try_wait().unwrap().is_none(), "the service exited");

    let _nm = bus.start_nm().await;
    let dev = bus
        .add_wifi("wlan0", "wlan0", "02:00:00:00:00:91", true)
        .await;
    bus.add_ap(&dev, "ap1", "home", "AA:00:00:00:00:01", 2437, 80, WPA2)
        .await;
    let again = wait_backend_state(&control, &["up"]).await;
    let port: u16 = again
        .listening
        .as_deref()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let guest = GuestClient::new(&TransportConfig::Tcp {
        address: "127.0.0.1".parse().unwrap(),
        request_port: port,
        notification_port: 9,
    })
    .unwrap();
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
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
    let exit = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());
}
