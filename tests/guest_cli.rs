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

/// Environment variables a run sets.
type Envs<'a> = Vec<(&'a str, &'a str)>;

/// `guest connect` with `envs` set and `stdin` fed (issue 17, point 10).
async fn run_connect(port: u16, args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> common::Run {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(common::bin());
    cmd.arg("guest")
        .args(tcp_guest_args(port))
        .arg("connect")
        .args(args)
        .env_remove("PROXY_WIFI_PASSPHRASE")
        .env_remove("PROXY_WIFI_PSK")
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).await.unwrap();
    }
    let out = tokio::time::timeout(common::COMMAND_LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    common::Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Point 10: the passphrase and the PSK from a file, standard input or
/// the environment, never needing the command line; the old flags still
/// work and warn that every local user can read them.
#[tokio::test]
async fn secrets_from_files_stdin_and_environment() {
    // IEEE 802.11i test vector: passphrase "password", SSID "IEEE".
    const PMK: &str = "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e";
    let psk = "ab".repeat(32);
    let dir = tempfile::tempdir().unwrap();
    let pass_file = dir.path().join("pass");
    std::fs::write(&pass_file, "password\n").unwrap();
    let psk_file = dir.path().join("psk");
    std::fs::write(&psk_file, format!("{psk}\r\n")).unwrap();
    let pass_path = pass_file.display().to_string();
    let psk_path = psk_file.display().to_string();
    let runs: Vec<(Vec<&str>, Envs, &[u8], &str)> = vec![
        (vec!["--passphrase-file", &pass_path], vec![], b"", PMK),
        (vec!["--passphrase-file", "-"], vec![], b"password\n", PMK),
        (
            vec![],
            vec![("PROXY_WIFI_PASSPHRASE", "password")],
            b"",
            PMK,
        ),
        (vec!["--psk-file", &psk_path], vec![], b"", &psk),
        (vec!["--psk-file", "-"], vec![], psk.as_bytes(), &psk),
        (vec![], vec![("PROXY_WIFI_PSK", &psk)], b"", &psk),
        // A flag wins over the environment.
        (
            vec!["--passphrase-file", &pass_path],
            vec![("PROXY_WIFI_PSK", &psk)],
            b"",
            PMK,
        ),
    ];
    let replies = (0..runs.len() as u64)
        .map(|i| connect_reply(0, 1, i + 1))
        .collect();
    let host = ScriptedHost::start(replies).await;
    let mut expected = Vec::new();
    for (flags, envs, stdin, key) in &runs {
        let mut args = vec!["IEEE"];
        args.extend(flags);
        let run = run_connect(host.port, &args, envs, stdin).await;
        run.expect_code(0);
        assert!(!run.stderr.contains("warning"), "{flags:?}: {}", run.stderr);
        expected.push(*key);
    }
    let requests = host.requests().await;
    assert_eq!(requests.len(), runs.len());
    for (request, key) in requests.iter().zip(expected) {
        assert_eq!(hex::encode(&request[7 + 76..]), key);
    }
}

#[tokio::test]
async fn secrets_on_the_command_line_still_work_with_a_warning() {
    let psk = "cd".repeat(32);
    let host = ScriptedHost::start(vec![connect_reply(0, 1, 1), connect_reply(0, 1, 2)]).await;
    let run = run_connect(host.port, &["IEEE", "--passphrase", "password"], &[], b"").await;
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("warning: --passphrase puts the passphrase on the command line")
            && run.stderr.contains("--passphrase-file")
            && run.stderr.contains("PROXY_WIFI_PASSPHRASE"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("password\n") && !run.stderr.contains(" password"));
    let run = run_connect(host.port, &["IEEE", "--psk", &psk], &[], b"").await;
    run.expect_code(0);
    assert!(run.stderr.contains("warning: --psk"), "{}", run.stderr);
    assert!(!run.stderr.contains(&psk), "{}", run.stderr);
    let requests = host.requests().await;
    assert_eq!(hex::encode(&requests[1][7 + 76..]), psk);
}

#[tokio::test]
async fn unusable_secret_sources_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing").display().to_string();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.display().to_string();
    let psk = "ab".repeat(32);
    // Nothing listens: each must fail before any connection is tried.
    let port = closed_port().await;
    let cases: Vec<(Vec<&str>, Envs, &str)> = vec![
        (vec!["--passphrase-file", &missing], vec![], "cannot open"),
        (vec!["--passphrase-file", &empty], vec![], "empty"),
        (
            vec!["--passphrase-file", &empty, "--psk-file", &empty],
            vec![],
            "cannot be used with",
        ),
        (
            vec![],
            vec![
                ("PROXY_WIFI_PASSPHRASE", "password"),
                ("PROXY_WIFI_PSK", &psk),
            ],
            "both PROXY_WIFI_PASSPHRASE and PROXY_WIFI_PSK",
        ),
        (vec![], vec![("PROXY_WIFI_PASSPHRASE", "short")], "8 to 63"),
    ];
    for (flags, envs, says) in cases {
        let mut args = vec!["IEEE"];
        args.extend(&flags);
        let run = run_connect(port, &args, &envs, b"").await;
        run.expect_code(2);
        assert!(
            run.stderr.contains(says),
            "{flags:?} {envs:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains(&psk), "{}", run.stderr);
    }
}
