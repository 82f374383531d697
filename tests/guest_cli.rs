//! `proxy-wifi guest` run as a process against scripted fake hosts over
//! real TCP sockets: output formats, exit codes, error messages.

mod common;

use common::{
    closed_port, parse_scan_table, run_guest, run_guest_with_stdin, send_notification,
    tcp_guest_args, HostAction, ScriptedHost, Watch,
};
use proxy_wifi::protocol::{
    ssid_element, wpa2_psk_ccmp_rsn_element, ConnectResponse, MacAddr, Message, ScanBss,
    ScanLayout, ScanResponse, Ssid,
};

fn bss(mac: u8, ssid: &str, freq_khz: u32, rssi: i32, wpa2: bool) -> ScanBss {
    let mut ies = ssid_element(&Ssid::new(ssid.as_bytes()).unwrap());
    if wpa2 {
        ies.extend_from_slice(&wpa2_psk_ccmp_rsn_element());
    }
    ScanBss {
        bssid: MacAddr([0x02, 0, 0, 0, 0, mac]),
        capabilities: if wpa2 { 0x11 } else { 0x01 },
        rssi_dbm: rssi,
        beacon_interval: 100,
        freq_khz,
        ies,
    }
}

fn networks(complete: bool) -> ScanResponse {
    ScanResponse {
        scan_complete: complete,
        bss: vec![
            bss(1, "FakeWpa2Psk", 2_437_000, -45, true),
            bss(2, "Fake Open", 5_180_000, -80, false),
        ],
    }
}

fn scan_reply(layout: ScanLayout, resp: &ScanResponse) -> HostAction {
    HostAction::Reply(Message::ScanResponse(resp.clone()).encode(layout).unwrap())
}

fn connect_reply(code: u16, mac: u8, session: u64) -> HostAction {
    HostAction::Reply(
        Message::ConnectResponse(ConnectResponse {
            result_code: code,
            bssid: MacAddr([0x02, 0, 0, 0, 0, mac]),
            session_id: session,
        })
        .encode(ScanLayout::Current)
        .unwrap(),
    )
}

fn wildcard_scan_request() -> Vec<u8> {
    let mut wire = vec![1, 33, 0, 0, 0, 1, 0];
    wire.extend_from_slice(&[0; 33]);
    wire
}

#[tokio::test]
async fn scan_prints_a_table() {
    let host = ScriptedHost::start(vec![scan_reply(ScanLayout::Current, &networks(true))]).await;
    let run = run_guest(&tcp_guest_args(host.port), &["scan"]).await;
    run.expect_code(0);
    let rows = parse_scan_table(&run.stdout);
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert_eq!(rows[0]["BSSID"], "02:00:00:00:00:01");
    assert_eq!(rows[0]["SSID"], "FakeWpa2Psk");
    assert_eq!(rows[0]["FREQ"], "2437 MHz");
    assert_eq!(rows[0]["CHAN"], "6");
    assert_eq!(rows[0]["SIGNAL"], "-45 dBm");
    assert_eq!(rows[0]["BARS"], "▂▄▆█");
    assert_eq!(rows[0]["SECURITY"], "WPA2");
    assert_eq!(rows[1]["SSID"], "Fake Open");
    assert_eq!(rows[1]["FREQ"], "5180 MHz");
    assert_eq!(rows[1]["CHAN"], "36");
    assert_eq!(rows[1]["SIGNAL"], "-80 dBm");
    assert_eq!(rows[1]["BARS"], "▂▄__");
    assert_eq!(rows[1]["SECURITY"], "--");
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert_eq!(host.requests().await, vec![wildcard_scan_request()]);
}

#[tokio::test]
async fn scan_json_with_target_and_legacy_layout() {
    let host = ScriptedHost::start(vec![scan_reply(ScanLayout::Legacy, &networks(true))]).await;
    let run = run_guest(
        &tcp_guest_args(host.port),
        &[
            "scan",
            "--ssid",
            "Fake Open",
            "--json",
            "--scan-layout",
            "legacy",
        ],
    )
    .await;
    run.expect_code(0);
    let list = run.json();
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    let first = &list[0];
    assert_eq!(first["bssid"], "02:00:00:00:00:01");
    assert_eq!(first["ssid"], "FakeWpa2Psk");
    assert_eq!(first["freq_khz"], 2_437_000);
    assert_eq!(first["freq_mhz"], 2437);
    assert_eq!(first["channel"], 6);
    assert_eq!(first["band"], "2.4GHz");
    assert_eq!(first["rssi_dbm"], -45);
    assert_eq!(first["security"], "WPA2-PSK");
    assert_eq!(first["ciphers"], "CCMP");
    assert_eq!(first["capabilities"], 0x11);
    assert_eq!(first["beacon_interval"], 100);
    assert_eq!(list[1]["security"], "open");
    assert_eq!(list[1]["band"], "5GHz");
    let requests = host.requests().await;
    assert_eq!(requests[0].len(), 7 + 33);
    assert_eq!(requests[0][7], 9);
    assert_eq!(&requests[0][8..17], b"Fake Open");
}

#[tokio::test]
async fn an_incomplete_scan_is_reported_on_stderr() {
    let host = ScriptedHost::start(vec![scan_reply(ScanLayout::Current, &networks(false))]).await;
    let run = run_guest(&tcp_guest_args(host.port), &["--json", "scan"]).await;
    run.expect_code(0);
    assert_eq!(run.json().as_array().map(Vec::len), Some(2));
    assert!(run.stderr.contains("scan_complete = 0"), "{}", run.stderr);
}

#[tokio::test]
async fn a_layout_mismatch_is_a_malformed_reply() {
    // A current-layout reply read as legacy.
    let host = ScriptedHost::start(vec![scan_reply(ScanLayout::Current, &networks(true))]).await;
    let run = run_guest(
        &tcp_guest_args(host.port),
        &["--scan-layout", "legacy", "scan"],
    )
    .await;
    run.expect_code(5);
    assert!(run.stderr.contains("malformed reply"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[tokio::test]
async fn connect_with_passphrase() {
    let host = ScriptedHost::start(vec![connect_reply(0, 1, 7)]).await;
    let run = run_guest(
        &tcp_guest_args(host.port),
        &["connect", "ThisIsASSID", "--passphrase", "ThisIsAPassword"],
    )
    .await;
    run.expect_code(0);
    assert!(run.stdout.contains("0 (SUCCESS)"), "{}", run.stdout);
    assert!(run.stdout.contains("02:00:00:00:00:01"), "{}", run.stdout);
    assert!(run.stdout.contains("session: 7"), "{}", run.stdout);
    let request = &host.requests().await[0];
    assert_eq!(&request[..7], &[3, 108, 0, 0, 0, 1, 0]);
    // IEEE 802.11i test vector: the PMK, never the passphrase.
    assert_eq!(
        hex::encode(&request[7 + 76..]),
        "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"
    );
    assert!(!run.stdout.contains("ThisIsAPassword") && !run.stderr.contains("ThisIsAPassword"));
}

#[tokio::test]
async fn connect_json_with_psk_bssid_and_stdin_passphrase() {
    let psk = "ab".repeat(32);
    let host = ScriptedHost::start(vec![connect_reply(0, 3, 42), connect_reply(0, 3, 43)]).await;
    let args = tcp_guest_args(host.port);
    let run = run_guest(
        &args,
        &[
            "connect",
            "net",
            "--psk",
            &psk,
            "--bssid",
            "02:00:00:00:00:03",
            "--json",
        ],
    )
    .await;
    run.expect_code(0);
    let v = run.json();
    assert_eq!(v["result_code"], 0);
    assert_eq!(v["status"], "SUCCESS");
    assert_eq!(v["success"], true);
    assert_eq!(v["bssid"], "02:00:00:00:00:03");
    assert_eq!(v["session_id"], 42);
    let run = run_guest_with_stdin(
        &args,
        &["connect", "IEEE", "--passphrase", "-", "--json"],
        b"password\n",
    )
    .await;
    run.expect_code(0);
    assert_eq!(run.json()["session_id"], 43);
    let requests = host.requests().await;
    assert_eq!(&requests[0][7 + 33..7 + 39], &[2, 0, 0, 0, 0, 3]);
    assert_eq!(&requests[0][7 + 76..], &[0xab; 32]);
    assert_eq!(
        hex::encode(&requests[1][7 + 76..]),
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    );
}

#[tokio::test]
async fn a_refused_connect_exits_1_and_names_the_status() {
    let host = ScriptedHost::start(vec![connect_reply(17, 0, 0)]).await;
    let run = run_guest(&tcp_guest_args(host.port), &["connect", "FakeOpen"]).await;
    run.expect_code(1);
    assert!(
        run.stdout.contains("17 (AP_UNABLE_TO_HANDLE_NEW_STA)"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    // Open network: 76-byte body, every security field zero.
    let request = &host.requests().await[0];
    assert_eq!(&request[..7], &[3, 76, 0, 0, 0, 1, 0]);
    assert!(request[7 + 33..].iter().all(|b| *b == 0));
}

#[tokio::test]
async fn a_truncated_connect_response_is_not_success() {
    let host = ScriptedHost::start(vec![HostAction::Reply(vec![4, 16, 0, 0, 0, 1, 0])]).await;
    let run = run_guest(&tcp_guest_args(host.port), &["connect", "FakeOpen"]).await;
    run.expect_code(5);
    assert!(run.stderr.contains("[truncated]"), "{}", run.stderr);
    host.requests().await;
}

#[tokio::test]
async fn disconnect() {
    let reply = Message::DisconnectResponse
        .encode(ScanLayout::Current)
        .unwrap();
    let host = ScriptedHost::start(vec![
        HostAction::Reply(reply.clone()),
        HostAction::Reply(reply),
    ])
    .await;
    let args = tcp_guest_args(host.port);
    let run = run_guest(&args, &["disconnect", "258"]).await;
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), "disconnect of session 258 acknowledged");
    assert!(
        run.stderr
            .contains("ignores a session that is not its current one"),
        "{run:#?}"
    );
    let run = run_guest(&args, &["disconnect", "3", "--json"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["session_id"], 3);
    let requests = host.requests().await;
    assert_eq!(
        requests[0],
        vec![5, 8, 0, 0, 0, 1, 0, 2, 1, 0, 0, 0, 0, 0, 0]
    );
}

#[tokio::test]
async fn error_classes_have_distinct_exit_codes() {
    // Unreachable: 3.
    let port = closed_port().await;
    let run = run_guest(&tcp_guest_args(port), &["scan"]).await;
    run.expect_code(3);
    assert!(
        run.stderr.contains("cannot reach the host"),
        "{}",
        run.stderr
    );

    // Timeout: 4.
    let host = ScriptedHost::start(vec![HostAction::Silent]).await;
    let run = run_guest(&tcp_guest_args(host.port), &["--timeout", "0.3", "scan"]).await;
    run.expect_code(4);
    assert!(run.stderr.contains("no reply"), "{}", run.stderr);
    host.requests().await;

    // Malformed: 5, naming the rule.
    let mut body = networks(true).encode_body(ScanLayout::Current).unwrap();
    body[1] = 99; // num_bss
    let mut reply = vec![2];
    reply.extend_from_slice(&(body.len() as u32).to_le_bytes());
    reply.extend_from_slice(&[1, 0]);
    reply.extend_from_slice(&body);
    let host = ScriptedHost::start(vec![HostAction::Reply(reply), HostAction::Close]).await;
    let args = tcp_guest_args(host.port);
    let run = run_guest(&args, &["scan"]).await;
    run.expect_code(5);
    assert!(run.stderr.contains("[bss-count]"), "{}", run.stderr);
    let run = run_guest(&args, &["disconnect", "1"]).await;
    run.expect_code(5);
    assert!(run.stderr.contains("without sending"), "{}", run.stderr);
    host.requests().await;

    // INVALID: 6.
    let invalid = Message::Invalid.encode(ScanLayout::Current).unwrap();
    let host = ScriptedHost::start(vec![HostAction::Reply(invalid)]).await;
    let run = run_guest(&tcp_guest_args(host.port), &["scan"]).await;
    run.expect_code(6);
    assert!(run.stderr.contains("INVALID"), "{}", run.stderr);
    host.requests().await;

    // Bad arguments: 2, before any connection.
    let port = closed_port().await;
    let args = tcp_guest_args(port);
    run_guest(&args, &["connect", "x", "--passphrase", "short"])
        .await
        .expect_code(2);
    run_guest(&args, &["connect", "x", "--psk", "abcd"])
        .await
        .expect_code(2);
    run_guest(&args, &["connect", &"x".repeat(33)])
        .await
        .expect_code(2);
    run_guest(&[], &["scan"]).await.expect_code(2);
}

#[tokio::test]
async fn watch_prints_one_json_object_per_notification() {
    let l = ScanLayout::Current;
    let mut watch = Watch::start(
        &["--tcp".into(), "127.0.0.1".into()],
        &["--notification-port", "0", "--json", "--count", "3"],
    )
    .await;
    send_notification(
        watch.port,
        &Message::NotifSignalQuality { dbm: -61 }.encode(l).unwrap(),
    )
    .await;
    let line = watch.next_line().await.unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&line).unwrap(),
        serde_json::json!({"type": "signal_quality", "dbm": -61})
    );
    // A malformed one is reported on stderr and costs nothing else.
    send_notification(watch.port, &[7, 8, 0, 0, 0, 1, 0, 1]).await;
    let err = watch.next_error_line().await.unwrap();
    assert!(err.contains("malformed notification [truncated]"), "{err}");
    send_notification(
        watch.port,
        &Message::ScanResponse(networks(false)).encode(l).unwrap(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&watch.next_line().await.unwrap()).unwrap();
    assert_eq!(v["type"], "scan_results");
    assert_eq!(v["scan_complete"], false);
    assert_eq!(v["bss"][0]["ssid"], "FakeWpa2Psk");
    assert_eq!(v["bss"][1]["security"], "open");
    send_notification(
        watch.port,
        &Message::NotifDisconnected { session_id: 9 }
            .encode(l)
            .unwrap(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&watch.next_line().await.unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type": "disconnected", "session_id": 9})
    );
    assert_eq!(
        watch.wait().await,
        Some(0),
        "exits after --count notifications"
    );
}

#[tokio::test]
async fn watch_text_output_with_port_before_the_subcommand() {
    // Find a free port, then give it in the transport flags.
    let port = closed_port().await;
    let transport = vec![
        "--tcp".to_string(),
        "127.0.0.1".into(),
        "--notification-port".into(),
        port.to_string(),
    ];
    let mut watch = Watch::start(&transport, &["--count", "2"]).await;
    assert_eq!(watch.port, port);
    let l = ScanLayout::Current;
    send_notification(
        port,
        &Message::NotifDisconnected { session_id: 5 }
            .encode(l)
            .unwrap(),
    )
    .await;
    assert_eq!(watch.next_line().await.unwrap(), "disconnected: session 5");
    send_notification(
        port,
        &Message::NotifSignalQuality { dbm: -50 }.encode(l).unwrap(),
    )
    .await;
    assert_eq!(watch.next_line().await.unwrap(), "signal: -50 dBm ▂▄▆█");
    assert_eq!(watch.wait().await, Some(0));
}
