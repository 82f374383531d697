//! End-to-end: the real `proxy-wifi serve --config FILE` binary with several
//! guests (TCP and hybrid vsock) on one shared simulated host, driven
//! concurrently with the guest client library; `proxy-wifi ctl` for status,
//! events and reload; metrics over HTTP; sd_notify through a Unix datagram
//! socket as NOTIFY_SOCKET; SIGTERM.

#![cfg(target_os = "linux")]

use std::time::Duration;

use proxy_wifi::daemon::GuestStatus;
use proxy_wifi::guest::{ConnectSpec, GuestClient, Notification, NotificationWatcher};
use proxy_wifi::protocol::{ConnectResponse, Header, MacAddr, Operation, ScanLayout, Ssid};
use proxy_wifi::transport::TransportConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};
use tokio::process::Command;

mod common;

use common::daemon::{config_text, tcp_port, Daemon, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-wifi");

/// The simulated networks every test uses.
const NETWORKS: &str = r#"
backend = "simulated"

[[simulated_network]]
ssid = "Home"
bssid = "02:00:00:00:00:01"
freq_khz = 2437000
security = "wpa2-psk"
passphrase = "correct horse"

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

[[simulated_network]]
ssid = "Evil"
bssid = "02:00:00:00:00:04"
freq_khz = 2462000
security = "open"
"#;

/// The configuration after the control socket and metrics lines.
fn body(guests: &str) -> String {
    format!("{NETWORKS}\n{guests}")
}

fn ssid(s: &str) -> Ssid {
    Ssid::new(s.as_bytes()).unwrap()
}

fn open(name: &str) -> ConnectSpec {
    ConnectSpec::open(ssid(name))
}

fn psk(name: &str, passphrase: &str) -> ConnectSpec {
    ConnectSpec::wpa2_passphrase(ssid(name), passphrase).unwrap()
}

async fn connect(client: &GuestClient, spec: &ConnectSpec) -> ConnectResponse {
    client.connect(spec).await.unwrap()
}

async fn bound(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guests_are_isolated_and_policy_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    // Guest a's notifications come here.
    let watch_config = TransportConfig::Tcp {
        address: "127.0.0.1".parse().unwrap(),
        request_port: 9,
        notification_port: 0,
    };
    let watcher = NotificationWatcher::bind(&watch_config, ScanLayout::Current)
        .await
        .unwrap();
    let a_notifications = watcher.local_port().unwrap();
    let guests = format!(
        r#"
[[guest]]
name = "a"
tcp = "127.0.0.1"
request_port = 0
notification_port = {a_notifications}
scan_min_latency_ms = 0
notify_host_disconnect = true

[[guest]]
name = "b"
hybrid_vsock = "{dir}/b.vsock"
scan_min_latency_ms = 0
policy = {{ deny_ssids = ["Evil"] }}

[[guest]]
name = "m"
tcp = "127.0.0.1"
request_port = 0
scan_min_latency_ms = 0
policy = {{ guest_directed = false }}

[[guest]]
name = "w"
tcp = "127.0.0.1"
request_port = 0
scan_min_latency_ms = 0
policy = {{ allow_ssids = ["Cafe", "Home"] }}

[[guest]]
name = "slow"
tcp = "127.0.0.1"
request_port = 0
scan_min_latency_ms = 3000
"#,
        dir = dir.path().display()
    );
    let daemon = Daemon::start(dir.path(), &body(&guests), &[]).await;
    let a = daemon.tcp_client("a").await;
    let b = daemon.hybrid_client("b.vsock");
    let m = daemon.tcp_client("m").await;
    let w = daemon.tcp_client("w").await;
    let slow_status = daemon.guest("slow").await;
    let slow = daemon.tcp_client("slow").await;

    // --- isolation: the slow guest is busy in its handler for 3 s, holds
    // connections open and sends garbage; a (TCP) and b (hybrid) are
    // answered all the while.
    let slow_scan = tokio::spawn(async move { slow.scan(None).await });
    let port = tcp_port(&slow_status);
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&[0, 0]).await.unwrap(); // part of a header, then nothing
        held.push(s);
    }
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    garbage.write_all(&[0xff; 7]).await.unwrap();
    let (ra, rb) = tokio::join!(
        async {
            let mut n = Vec::new();
            for _ in 0..5 {
                n.push(a.scan(None).await.unwrap().bss.len());
            }
            n
        },
        async {
            let mut n = Vec::new();
            for _ in 0..5 {
                n.push(b.scan(None).await.unwrap().bss.len());
            }
            n
        }
    );
    assert_eq!(ra, vec![4; 5]);
    assert_eq!(rb, vec![4; 5]);
    assert!(
        !slow_scan.is_finished(),
        "ten scans of other guests should finish while one guest's 3 s scan is still running"
    );
    let mut reply = Vec::new();
    garbage.read_to_end(&mut reply).await.unwrap();
    assert_eq!(
        Header::decode_host(&reply[..7].try_into().unwrap())
            .unwrap()
            .operation,
        Operation::Invalid
    );
    let slow_result = tokio::time::timeout(WAIT, slow_scan)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(slow_result.unwrap().bss.len(), 4);
    drop(held);

    // --- policy, each denial for its own reason (the log says which).
    let r = connect(&b, &open("Evil")).await;
    assert_eq!(r.result_code, 1);
    daemon.wait_log("on the guest's deny list").await;
    let r = connect(&w, &open("Office")).await;
    assert_eq!(r.result_code, 1);
    daemon.wait_log("not on the guest's allow list").await;
    let r = connect(&m, &open("Cafe")).await;
    assert_eq!(r.result_code, 1);
    daemon.wait_log("may only mirror").await;

    // A configured WPA2-PSK network checks the passphrase.
    let r = connect(&a, &psk("Home", "wrong horse")).await;
    assert_eq!(r.result_code, 15, "wrong key");
    let home = connect(&a, &psk("Home", "correct horse")).await;
    assert_eq!(home.result_code, 0);
    assert_eq!(home.bssid, "02:00:00:00:00:01".parse::<MacAddr>().unwrap());

    // The multi-guest rule: a holds Home; b may not take the radio away...
    let r = connect(&b, &open("Cafe")).await;
    assert_eq!(r.result_code, 1);
    daemon
        .wait_log("guest a holds a guest-directed connection to Home")
        .await;
    // ...but b and the mirror-only guest may share a's network.
    assert_eq!(connect(&b, &open("Home")).await.result_code, 0);
    let mirrored = connect(&m, &open("Home")).await;
    assert_eq!(mirrored.result_code, 0);

    // --- status, as JSON and as a table.
    let status = daemon.status().await;
    let names: Vec<&str> = status.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "m", "w", "slow"]);
    let sa = &status[0];
    assert_eq!(sa.connected_ssid.as_deref(), Some("Home"));
    assert_eq!(sa.connection.as_deref(), Some("guest-directed"));
    assert_eq!(sa.session_id, home.session_id);
    assert_eq!(sa.requests, 7);
    let sm = &status[2];
    assert_eq!(sm.connection.as_deref(), Some("host-mirroring"));
    assert_eq!(sm.session_id, mirrored.session_id);
    assert_eq!(status[3].connected_ssid, None);
    assert!(status[4].invalid_requests >= 1, "{:?}", status[4]);
    let table = daemon.ctl_ok(&["status"]).await;
    assert!(table.starts_with("GUEST"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("Home") && l.contains("guest-directed")),
        "{table}"
    );
    let only = daemon.ctl_ok(&["--guest", "m", "status", "--json"]).await;
    let only: Vec<GuestStatus> = serde_json::from_str(&only).unwrap();
    assert_eq!(only.len(), 1);
    let out = daemon.ctl(&["--guest", "nosuch", "signal", "80"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no guest named \"nosuch\""));
    let out = daemon.ctl(&["--guest", "nosuch", "status"]).await;
    assert!(!out.status.success());

    // --- host disconnect: a (notify_host_disconnect) is told, with its
    // session id, and its hold on the radio ends.
    daemon.ctl_ok(&["--guest", "a", "host-disconnect"]).await;
    let note = tokio::time::timeout(WAIT, watcher.next())
        .await
        .expect("no notification")
        .unwrap();
    assert_eq!(
        note,
        Notification::Disconnected {
            session_id: home.session_id
        }
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // The hold ends through a's observer queue, just after the event.
        let r = connect(&w, &open("Cafe")).await;
        if r.result_code == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "w still denied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(daemon.guest("a").await.connected_ssid, None);

    // --- metrics over HTTP. The connection gauge follows the handler's
    // state on its own task: wait for it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let metrics = daemon.metrics().await;
        if metrics.contains("proxy_wifi_guest_connected{guest=\"w\"} 1") {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "w not connected in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for line in [
        "proxy_wifi_guest_connected{guest=\"a\"} 0",
        "proxy_wifi_backend_up{backend=\"simulated\"} 1",
        "proxy_wifi_backend_wifi_interfaces{backend=\"simulated\"} 1",
        "proxy_wifi_build_info{version=\"",
        "proxy_wifi_request_duration_seconds_count{guest=\"a\",operation=\"scan_request\",floor_ms=\"0\"} 5",
        "proxy_wifi_request_duration_seconds_count{guest=\"slow\",operation=\"scan_request\",floor_ms=\"3000\"}",
        "proxy_wifi_guests_configured 5",
        "proxy_wifi_requests_total{guest=\"a\",operation=\"scan_request\",result=\"ok\"} 5",
        "proxy_wifi_requests_total{guest=\"a\",operation=\"connect_request\",result=\"failed\"} 1",
        "proxy_wifi_requests_total{guest=\"b\",operation=\"scan_request\",result=\"ok\"} 5",
        "proxy_wifi_notifications_sent_total{guest=\"a\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    assert!(
        metrics.contains("proxy_wifi_request_duration_seconds_count{guest=\"m\",operation=\"connect_request\",floor_ms=\"0\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "proxy_wifi_requests_total{guest=\"slow\",operation=\"unreadable\",result=\"invalid\"}"
        ),
        "{metrics}"
    );

    // --- SIGTERM: clean exit, socket files gone.
    let hybrid_socket = dir.path().join("b.vsock_12345");
    assert!(hybrid_socket.exists());
    let (status, log) = daemon.stop().await;
    assert!(status.success(), "{log}");
    assert!(!hybrid_socket.exists(), "hybrid socket left behind");
    assert!(
        !dir.path().join("control.sock").exists(),
        "control socket left behind"
    );
}

/// Reads sd_notify datagrams until one contains `want`; returns them all.
async fn notified(socket: &UnixDatagram, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want} datagram; saw {seen:?}"))
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = text.lines().any(|l| l == want);
        seen.push(text);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_keeps_unchanged_guests_and_sd_notify_follows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let keep = r#"
[[guest]]
name = "keep"
tcp = "127.0.0.1"
request_port = 0
scan_min_latency_ms = 0
"#;
    let v1 = format!(
        r#"{keep}
[[guest]]
name = "gone"
tcp = "127.0.0.1"
request_port = 0

[[guest]]
name = "changed"
hybrid_vsock = "{d}/changed.vsock"
scan_min_latency_ms = 0
"#
    );
    let daemon = Daemon::start(
        dir.path(),
        &body(&v1),
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    )
    .await;
    notified(&notify, "READY=1").await;
    // Ready means every listener is bound: no retries needed.
    let keep_status = daemon.guest("keep").await;
    let gone_port = tcp_port(&daemon.guest("gone").await);
    let k = daemon.tcp_client("keep").await;
    let c = daemon.hybrid_client("changed.vsock");
    assert!(bound(gone_port).await);
    let first = connect(&k, &open("Cafe")).await;
    assert_eq!((first.result_code, first.session_id), (0, 1));
    c.scan(None).await.unwrap();
    assert_eq!(daemon.guest("changed").await.requests, 1);
    assert!(daemon
        .metrics()
        .await
        .contains("proxy_wifi_guests_configured 3"));

    // v2: keep as it was, gone removed, changed changed, two added.
    let v2 = format!(
        r#"{keep}
[[guest]]
name = "changed"
hybrid_vsock = "{d}/changed.vsock"
scan_min_latency_ms = 1

[[guest]]
name = "new"
hybrid_vsock = "{d}/new.vsock"
scan_min_latency_ms = 0

[[guest]]
name = "new2"
tcp = "127.0.0.1"
request_port = 0
"#
    );
    std::fs::write(&daemon.config, config_text(dir.path(), &body(&v2))).unwrap();
    let summary = daemon.ctl_ok(&["reload"]).await;
    assert_eq!(
        summary,
        "added: new, new2\nremoved: gone\nrestarted: changed\nunchanged: keep\n"
    );
    let datagrams = notified(&notify, "READY=1").await;
    let reloading = datagrams
        .iter()
        .find(|d| d.contains("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 in {datagrams:?}"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");

    // keep: same listener, same handler state.
    let now = daemon.guest("keep").await;
    assert_eq!(now.listening, keep_status.listening);
    assert_eq!(now.session_id, 1);
    assert_eq!(now.connected_ssid.as_deref(), Some("Cafe"));
    assert_eq!(connect(&k, &open("Cafe")).await.session_id, 2);
    // changed: restarted afresh; gone: gone; new: serving.
    assert_eq!(daemon.guest("changed").await.requests, 0);
    assert_eq!(c.scan(None).await.unwrap().bss.len(), 4);
    assert!(!bound(gone_port).await, "a removed guest still listens");
    assert_eq!(
        daemon
            .hybrid_client("new.vsock")
            .scan(None)
            .await
            .unwrap()
            .bss
            .len(),
        4
    );
    let names: Vec<String> = daemon.status().await.into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["keep", "changed", "new", "new2"]);
    assert!(daemon
        .metrics()
        .await
        .contains("proxy_wifi_guests_configured 4"));

    // A broken file changes nothing and says where it is broken.
    std::fs::write(
        &daemon.config,
        "control_socket = \"x\"\n[[guest]]\nname = \"keep\"\ntcp = 5\n",
    )
    .unwrap();
    let out = daemon.ctl(&["reload"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.toml:4:"), "{err}");
    // A global change is refused too.
    std::fs::write(
        &daemon.config,
        config_text(dir.path(), &body(&v2))
            .replace("metrics = \"127.0.0.1:0\"", "metrics = \"127.0.0.1:1\""),
    )
    .unwrap();
    let out = daemon.ctl(&["reload"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("restart the daemon"));
    let names: Vec<String> = daemon.status().await.into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["keep", "changed", "new", "new2"]);
    assert_eq!(daemon.guest("keep").await.session_id, 2);

    let (status, log) = daemon.stop().await;
    assert!(status.success(), "{log}");
    notified(&notify, "STOPPING=1").await;
    for file in ["changed.vsock_12345", "new.vsock_12345", "control.sock"] {
        assert!(!dir.path().join(file).exists(), "{file} left behind");
    }
}

#[tokio::test]
async fn config_errors_are_reported_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        format!(
            "control_socket = \"{}/control.sock\"\n[[guest]]\nname = \"vm1\"\ntcp = \"127.0.0.1\"\nrequest_port = 70000\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:") && err.contains("request_port"),
        "{err}"
    );
    assert!(!dir.path().join("control.sock").exists());
    // --config replaces the single-VM flags.
    let out = Command::new(BIN)
        .args(["serve", "--tcp", "127.0.0.1", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn single_vm_flags_get_status_and_metrics_too() {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let mut serve = Command::new(BIN);
    serve
        .args([
            "serve",
            "--simulated",
            "--tcp",
            "127.0.0.1",
            "--request-port",
            "0",
            "--metrics",
            "127.0.0.1:0",
            "--control",
        ])
        .arg(&control);
    let daemon = Daemon::spawn(serve, dir.path()).await;
    let status = daemon.status().await;
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].name, "default");
    let text = daemon.metrics().await;
    assert!(text.contains("proxy_wifi_guests_configured 1"), "{text}");
    // Without a configuration file there is nothing to reload.
    let out = daemon.ctl(&["reload"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a configuration file"));
    let (exit, log) = daemon.stop().await;
    assert!(exit.success(), "{log}");
    assert!(!control.exists());
}
