//! End-to-end, issue 13: what a real Linux guest does, against the real
//! `proxy-wifi serve --config FILE` binary over real sockets (TCP for the
//! requests, a fake VMM on a Unix socket for hybrid-vsock notifications).
//!
//! - `iw dev wlan0 connect SSID` sends auth_type 8 (automatic): it joins an
//!   open network; SAE (4) joins a WPA3-Personal network with the password;
//!   shared key (1) is refused with status 13.
//! - A guest that connects again to the network its own guest-directed
//!   connection holds keeps it guest-directed: the hold stays, another guest
//!   stays denied, and the guest's disconnect makes the host leave.
//! - A NOTIF_DISCONNECTED for a VM that is paused for 3 s (its VMM does not
//!   answer CONNECT) still arrives once the VM runs again.

#![cfg(target_os = "linux")]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_wifi::guest::{ConnectSpec, GuestClient};
use proxy_wifi::protocol::{
    akm, cipher, rsn_security, ConnectRequest, ConnectResponse, Key, MacAddr, Message, Request,
    ScanLayout, Ssid, CONNECT_REQUEST_FIXED_LEN, HEADER_LEN,
};
use proxy_wifi::transport::TransportConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::time::Instant;

mod common;

use common::daemon::{Daemon, WAIT};

const NETWORKS: &str = r#"
backend = "simulated"

[[simulated_network]]
ssid = "Cafe"
bssid = "02:00:00:00:00:02"
freq_khz = 5180000
security = "open"

[[simulated_network]]
ssid = "Office"
bssid = "02:00:00:00:00:03"
freq_khz = 2412000
security = "open"

"#;

/// Only the SAE test uses it, so that the others run unchanged on a host
/// that predates WPA3 support.
const WPA3_NETWORK: &str = r#"
[[simulated_network]]
ssid = "Wpa3"
bssid = "02:00:00:00:00:05"
freq_khz = 2437000
security = "wpa3-sae"
passphrase = "correct horse battery"
"#;

/// The configuration after the control socket and metrics lines.
fn body(networks: &str, guests: &str) -> String {
    format!("{NETWORKS}\n{networks}\n{guests}")
}

fn ssid(s: &str) -> Ssid {
    Ssid::new(s.as_bytes()).unwrap()
}

/// A connect request as the guest driver builds it.
fn request(name: &str, auth_type: u8, wpa: u8, akms: Vec<u32>, key: &[u8]) -> ConnectRequest {
    ConnectRequest {
        ssid: ssid(name),
        bssid: None,
        auth_type,
        wpa_versions: wpa,
        pairwise_ciphers: if akms.is_empty() {
            vec![]
        } else {
            vec![cipher::CCMP]
        },
        akm_suites: akms,
        group_cipher: if key.is_empty() { 0 } else { cipher::CCMP },
        key: Key::new(key.to_vec()),
    }
}

async fn ask_connect(client: &GuestClient, request: ConnectRequest) -> ConnectResponse {
    match client.request(&Request::Connect(request)).await.unwrap() {
        Message::ConnectResponse(r) => r,
        other => panic!("expected a connect response, got {other:?}"),
    }
}

async fn connect(client: &GuestClient, name: &str) -> ConnectResponse {
    client
        .connect(&ConnectSpec::open(ssid(name)))
        .await
        .unwrap()
}

const ONE_GUEST: &str = r#"
[[guest]]
name = "g"
tcp = "127.0.0.1"
request_port = 0
scan_min_latency_ms = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iw_connect_joins_an_open_network_and_shared_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &body("", ONE_GUEST), &[]).await;
    let g = daemon.tcp_client("g").await;

    // What `iw dev wlan0 connect Cafe` sends: auth_type 8, nothing else, a
    // 76-byte body.
    let iw = || request("Cafe", 8, 0, vec![], &[]);
    let bytes = Request::Connect(iw()).encode().unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + CONNECT_REQUEST_FIXED_LEN);
    let r = ask_connect(&g, iw()).await;
    assert_eq!(r.result_code, 0, "iw connect to an open network");
    assert_eq!(r.bssid, "02:00:00:00:00:02".parse::<MacAddr>().unwrap());
    g.disconnect(r.session_id).await.unwrap();

    // Shared key (WEP): refused at once, status 13, and the log says why.
    let r = ask_connect(&g, request("Cafe", 1, 0, vec![], &[])).await;
    assert_eq!(r.result_code, 13);
    daemon.wait_log("shared-key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sae_joins_a_wpa3_network_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &body(WPA3_NETWORK, ONE_GUEST), &[]).await;
    let g = daemon.tcp_client("g").await;

    // The WPA3 network is advertised as WPA3-Personal: SAE, MFP required.
    let scan = g.scan(None).await.unwrap();
    let wpa3 = scan
        .bss
        .iter()
        .find(|b| b.bssid == "02:00:00:00:00:05".parse::<MacAddr>().unwrap())
        .expect("the WPA3 network in the scan");
    let rsn = proxy_wifi::protocol::parse_elements(&wpa3.ies)
        .flatten()
        .find(|e| e.id == 48)
        .expect("an RSN element");
    assert_eq!(rsn_security(rsn.data).unwrap().akm_suites, vec![akm::SAE]);
    let caps = u16::from_le_bytes([rsn.data[rsn.data.len() - 2], rsn.data[rsn.data.len() - 1]]);
    assert_eq!(caps & 0x00c0, 0x00c0, "MFP capable and required");

    // SAE: the password is the key; a wrong one is status 15.
    let sae = |password: &[u8]| request("Wpa3", 4, 4, vec![akm::SAE], password);
    assert_eq!(
        ask_connect(&g, sae(b"wrong horse battery"))
            .await
            .result_code,
        15
    );
    let r = ask_connect(&g, sae(b"correct horse battery")).await;
    assert_eq!(r.result_code, 0);
    assert_eq!(r.bssid, "02:00:00:00:00:05".parse::<MacAddr>().unwrap());
    g.disconnect(r.session_id).await.unwrap();
    assert!(
        !daemon.log().contains("correct horse battery"),
        "the SAE password was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_again_to_its_own_network_keeps_the_guest_directed_hold() {
    let dir = tempfile::tempdir().unwrap();
    let guests = r#"
[[guest]]
name = "a"
tcp = "127.0.0.1"
request_port = 0
scan_min_latency_ms = 0

[[guest]]
name = "b"
tcp = "127.0.0.1"
request_port = 0
scan_min_latency_ms = 0

[[guest]]
name = "m"
tcp = "127.0.0.1"
request_port = 0
scan_min_latency_ms = 0
policy = { guest_directed = false }
"#;
    let daemon = Daemon::start(dir.path(), &body("", guests), &[]).await;
    let a = daemon.tcp_client("a").await;
    let b = daemon.tcp_client("b").await;
    let m = daemon.tcp_client("m").await;

    let first = connect(&a, "Cafe").await;
    assert_eq!(first.result_code, 0);
    // Again, as after a re-association, a driver reload or a lost DISCONNECT.
    let again = connect(&a, "Cafe").await;
    assert_eq!(again.result_code, 0);
    assert_eq!(again.bssid, first.bssid);
    assert!(again.session_id > first.session_id, "session id renewed");
    let status = daemon.guest("a").await;
    assert_eq!(status.connection.as_deref(), Some("guest-directed"));
    assert_eq!(status.session_id, again.session_id);

    // The hold is kept: b may not take the radio to another network.
    assert_eq!(connect(&b, "Office").await.result_code, 1);
    daemon
        .wait_log("guest a holds a guest-directed connection to Cafe")
        .await;

    // The host is on Cafe: the mirror-only guest can share it.
    let mirrored = connect(&m, "Cafe").await;
    assert_eq!(mirrored.result_code, 0);
    m.disconnect(mirrored.session_id).await.unwrap();

    // a's disconnect (with the renewed session) makes the host leave...
    a.disconnect(again.session_id).await.unwrap();
    daemon.wait_log("guest disconnected the host").await;
    assert_eq!(daemon.guest("a").await.connected_ssid, None);
    // ...so there is nothing left to mirror...
    assert_eq!(connect(&m, "Cafe").await.result_code, 1);
    // ...and the hold is gone: b may now direct the host elsewhere.
    let deadline = Instant::now() + WAIT;
    loop {
        if connect(&b, "Office").await.result_code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "b still denied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fake VMM on `path`: until `stall_until` it reads each `CONNECT` line
/// and says nothing (a paused VM) until then; afterwards it answers `OK`
/// and reads the message. Every message received is sent on `got`.
fn paused_vmm(
    path: &Path,
    stall_until: Arc<Mutex<Option<Instant>>>,
    got: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    connects: Arc<Mutex<u32>>,
) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            *connects.lock().unwrap() += 1;
            let stall = *stall_until.lock().unwrap();
            let got = got.clone();
            tokio::spawn(async move {
                let mut line = Vec::new();
                loop {
                    match s.read_u8().await {
                        Ok(b'\n') => break,
                        Ok(b) => line.push(b),
                        Err(_) => return,
                    }
                }
                if let Some(until) = stall {
                    tokio::time::sleep_until(until).await;
                }
                if s.write_all(b"OK 1234\n").await.is_err() {
                    return;
                }
                let mut message = Vec::new();
                if s.read_to_end(&mut message).await.is_ok() && !message.is_empty() {
                    let _ = got.send(message);
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_notification_survives_a_3_s_pause_of_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let vmm_path = dir.path().join("h.vsock");
    let stall = Arc::new(Mutex::new(None));
    let connects = Arc::new(Mutex::new(0));
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let _vmm = paused_vmm(&vmm_path, stall.clone(), got_tx, connects.clone());
    let guests = format!(
        r#"
[[guest]]
name = "h"
hybrid_vsock = "{}"
scan_min_latency_ms = 0
notify_host_disconnect = true
"#,
        vmm_path.display()
    );
    let daemon = Daemon::start(dir.path(), &body("", &guests), &[]).await;
    let h = GuestClient::new(&TransportConfig::HybridVsock {
        path: vmm_path.clone(),
        request_port: 12345,
        notification_port: 12346,
    })
    .unwrap();
    let r = connect(&h, "Cafe").await;
    assert_eq!(r.result_code, 0);

    // The VM pauses for 3 s; the host disconnects meanwhile.
    *stall.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3));
    daemon.ctl_ok(&["--guest", "h", "host-disconnect"]).await;
    let message = tokio::time::timeout(WAIT, got.recv())
        .await
        .expect("no notification within 20 s of a 3 s pause")
        .unwrap();
    assert_eq!(
        Message::decode(&message, ScanLayout::Current).unwrap(),
        Message::NotifDisconnected {
            session_id: r.session_id
        }
    );
    assert!(*connects.lock().unwrap() >= 2, "delivered on a retry");
    let metrics = daemon.metrics().await;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("proxy_wifi_notification_retries_total{guest=\"h\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
}
