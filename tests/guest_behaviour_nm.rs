//! End-to-end, issue 13 with the NetworkManager backend: the real
//! `proxy-wifi serve --backend networkmanager` against the mock
//! NetworkManager on a private D-Bus (see `tests/common/nm.rs`), a guest over
//! TCP. `iw connect` (auth_type 8) to an open network, the same connect
//! again (kept guest-directed: no second activation, the disconnect deletes
//! the profile), WPA3-SAE (key-mgmt `sae`, the password as `psk`), shared
//! key refused with status 13.
//!
//! Needs `dbus-daemon` and python3-dbusmock; when they are missing the test
//! prints `SKIPPED: ...` and passes, except under CI (`CI` set).
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::nm::*;
use proxy_wifi::guest::GuestClient;
use proxy_wifi::protocol::{akm, cipher, ConnectRequest, ConnectResponse, Key, Message, Request};
use proxy_wifi::protocol::{MacAddr, Ssid};
use proxy_wifi::wifi::networkmanager::convert::sec;
use zbus::zvariant::OwnedValue;

const LIMIT: Duration = Duration::from_secs(20);
const SAE: u32 = sec::KEY_MGMT_SAE | sec::PAIR_CCMP | sec::GROUP_CCMP;

fn request(name: &str, auth_type: u8, akms: Vec<u32>, key: &[u8]) -> Request {
    Request::Connect(ConnectRequest {
        ssid: Ssid::new(name.as_bytes()).unwrap(),
        bssid: None,
        auth_type,
        wpa_versions: if akms.is_empty() { 0 } else { 4 },
        pairwise_ciphers: if akms.is_empty() {
            vec![]
        } else {
            vec![cipher::CCMP]
        },
        akm_suites: akms,
        group_cipher: 0,
        key: Key::new(key.to_vec()),
    })
}

async fn connect(guest: &GuestClient, request: Request) -> ConnectResponse {
    match guest.request(&request).await.unwrap() {
        Message::ConnectResponse(r) => r,
        other => panic!("expected a connect response, got {other:?}"),
    }
}

fn settings_text(v: &OwnedValue, group: &str, key: &str) -> Option<String> {
    let all = NmSettingsOwned::try_from(v.try_clone().unwrap()).unwrap();
    all.get(group)
        .and_then(|g| g.get(key))
        .map(|v| <&str>::try_from(&**v).unwrap().to_string())
}

type NmSettingsOwned =
    std::collections::HashMap<String, std::collections::HashMap<String, OwnedValue>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iw_connect_connect_again_and_sae_with_networkmanager() {
    require_tools!();
    let bus = Bus::start().await;
    let _nm = bus.start_nm().await;
    let dev = bus
        .add_wifi("wlan0", "wlan0", "02:00:00:00:00:90", true)
        .await;
    bus.add_ap(&dev, "ap1", "cafe", "AA:00:00:00:00:02", 5180, 40, 0)
        .await;
    bus.add_ap(&dev, "ap2", "wpa3", "AA:00:00:00:00:03", 2437, 70, SAE)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(
        serve_command(&bus.address, &dir.path().join("control.sock")),
        dir.path(),
    )
    .await;
    let guest = daemon.tcp_client("default").await;

    // `iw dev wlan0 connect cafe`: auth_type 8, an open profile.
    let first = connect(&guest, request("cafe", 8, vec![], &[])).await;
    assert_eq!(first.result_code, 0, "iw connect to an open network");
    assert_eq!(first.bssid, "AA:00:00:00:00:02".parse::<MacAddr>().unwrap());
    let calls = bus.method_calls(MANAGER, "AddAndActivateConnection2").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        settings_text(&calls[0][0], "802-11-wireless-security", "key-mgmt"),
        None,
        "an open profile"
    );

    // The same connect again: kept, guest-directed, a new session.
    let again = connect(&guest, request("cafe", 8, vec![], &[])).await;
    assert_eq!(again.result_code, 0);
    assert!(again.session_id > first.session_id);
    let s = daemon.guest("default").await;
    assert_eq!(s.connection.as_deref(), Some("guest-directed"));
    assert_eq!(s.session_id, again.session_id);
    assert_eq!(
        bus.method_calls(MANAGER, "AddAndActivateConnection2")
            .await
            .len(),
        1,
        "no second activation"
    );
    assert_eq!(bus.profiles().await.len(), 1);

    // The guest's disconnect is honoured: the proxy's profile goes.
    guest.disconnect(again.session_id).await.unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !bus.profiles().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy's profile is left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // WPA3-SAE: key-mgmt sae, the password as psk.
    let sae = connect(&guest, request("wpa3", 4, vec![akm::SAE], b"correct horse")).await;
    assert_eq!(sae.result_code, 0);
    let calls = bus.method_calls(MANAGER, "AddAndActivateConnection2").await;
    assert_eq!(calls.len(), 2);
    assert_eq!(
        settings_text(&calls[1][0], "802-11-wireless-security", "key-mgmt").as_deref(),
        Some("sae")
    );
    assert_eq!(
        settings_text(&calls[1][0], "802-11-wireless-security", "psk").as_deref(),
        Some("correct horse")
    );

    // Shared key: refused at once with 13, NetworkManager untouched.
    let wep = connect(&guest, request("cafe", 1, vec![], &[])).await;
    assert_eq!(wep.result_code, 13);
    assert_eq!(
        bus.method_calls(MANAGER, "AddAndActivateConnection2")
            .await
            .len(),
        2
    );

    let (exit, rest) = daemon.stop().await;
    assert!(exit.success(), "{rest}");
    assert!(rest.contains("shared-key"), "{rest}");
    assert!(
        !rest.contains("correct horse"),
        "the SAE password was logged"
    );
}
