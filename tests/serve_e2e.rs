//! End-to-end: the real `proxy-wifi serve --simulated` binary on ephemeral
//! ports, driven over real sockets exactly as the guest driver does it (a new
//! connection per request, a listener for notifications that reads with a
//! 10 ms timeout), and `proxy-wifi ctl` for host-side events.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use proxy_wifi::protocol::{
    pmk_from_passphrase, wpa2_psk_ccmp_rsn_element, ConnectRequest, ConnectResponse,
    DisconnectRequest, Key, MacAddr, Message, Request, ScanLayout, ScanRequest, ScanResponse, Ssid,
    CAPABILITY_ESS, CAPABILITY_PRIVACY,
};
use proxy_wifi::test_utils::{open_connect, wpa2_connect};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-wifi");

struct Server {
    child: Option<Child>,
    port: u16,
    notifications: TcpListener,
    control: PathBuf,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_with_env(extra, &[])
    }

    fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control.sock");
        let notifications = TcpListener::bind("127.0.0.1:0").unwrap();
        notifications.set_nonblocking(true).unwrap();
        let notification_port = notifications.local_addr().unwrap().port().to_string();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--simulated",
            "--tcp",
            "127.0.0.1",
            "--request-port",
            "0",
        ])
        .args(["--notification-port", &notification_port])
        .arg("--control")
        .arg(&control)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening for guest requests on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    if let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok())
                    {
                        let _ = port_tx.send(port);
                    }
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let port = match port_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!("the service did not start: {}", stderr.lock().unwrap());
            }
        };
        // The control socket is bound right after the request port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !control.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        Server {
            child: Some(child),
            port,
            notifications,
            control,
            stderr,
            reader: Some(reader),
            _dir: dir,
        }
    }

    /// One request on one connection, as the driver does it.
    fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    fn ask(&self, request: &Request) -> Message {
        Message::decode(&self.raw(&request.encode().unwrap()), ScanLayout::Current)
            .expect("a well-formed reply")
    }

    fn scan(&self) -> ScanResponse {
        match self.ask(&Request::Scan(ScanRequest::default())) {
            Message::ScanResponse(s) => s,
            other => panic!("expected a scan response, got {other:?}"),
        }
    }

    fn connect(&self, request: ConnectRequest) -> ConnectResponse {
        match self.ask(&Request::Connect(request)) {
            Message::ConnectResponse(c) => c,
            other => panic!("expected a connect response, got {other:?}"),
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .output()
            .unwrap()
    }

    fn ctl_ok(&self, args: &[&str]) {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The next notification, read like the driver: whole message within
    /// 10 ms of the connection being accepted.
    fn notification(&self, within: Duration) -> Option<Message> {
        let deadline = Instant::now() + within;
        loop {
            match self.notifications.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                    let mut head = [0u8; 7];
                    s.read_exact(&mut head)
                        .expect("notification header within 10 ms of the connection");
                    let size = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
                    let mut body = vec![0u8; size];
                    s.read_exact(&mut body)
                        .expect("notification body within 10 ms of the connection");
                    let mut all = head.to_vec();
                    all.extend_from_slice(&body);
                    return Some(Message::decode(&all, ScanLayout::Current).unwrap());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, wait for a clean exit, and return everything it logged.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the service did not stop on SIGTERM");
            }
            thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.stderr())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ssid(s: &str) -> Ssid {
    Ssid::new(s.as_bytes()).unwrap()
}

fn bssid(last: u8) -> MacAddr {
    MacAddr([0, 0, 0, 0, 0, last])
}

#[test]
fn scan_connect_signal_disconnect_like_the_driver() {
    let server = Server::start(&["--fake-network", "a=b=c=aa:bb:cc:dd:ee:ff"]);

    let scan = server.scan();
    assert!(scan.scan_complete);
    let rsn = wpa2_psk_ccmp_rsn_element();
    let with_rsn = |name: &str| {
        let mut ies = vec![0, name.len() as u8];
        ies.extend_from_slice(name.as_bytes());
        ies.extend_from_slice(&rsn);
        ies
    };
    let open = |name: &str| {
        let mut ies = vec![0, name.len() as u8];
        ies.extend_from_slice(name.as_bytes());
        ies
    };
    let rows: Vec<_> = scan
        .bss
        .iter()
        .map(|b| {
            (
                b.bssid,
                b.capabilities,
                b.rssi_dbm,
                b.beacon_interval,
                b.freq_khz,
                b.ies.clone(),
            )
        })
        .collect();
    let privacy = CAPABILITY_ESS | CAPABILITY_PRIVACY;
    assert_eq!(
        rows,
        vec![
            (
                "aa:bb:cc:dd:ee:ff".parse().unwrap(),
                privacy,
                -50,
                100,
                5_240_000,
                with_rsn("a=b=c")
            ),
            (
                bssid(1),
                privacy,
                -50,
                100,
                2_432_000,
                with_rsn("FakeWpa2Psk")
            ),
            (
                bssid(2),
                CAPABILITY_ESS,
                -50,
                100,
                5_240_000,
                open("FakeOpen")
            ),
            (
                bssid(3),
                CAPABILITY_ESS,
                -50,
                100,
                6_115_000,
                open("Fake6GHz")
            ),
        ]
    );

    let c = server.connect(open_connect("FakeOpen"));
    assert_eq!((c.result_code, c.bssid, c.session_id), (0, bssid(2), 1));

    server.ctl_ok(&["signal", "80"]);
    assert_eq!(
        server.notification(Duration::from_secs(5)),
        Some(Message::NotifSignalQuality { dbm: -60 })
    );

    let c = server.connect(open_connect("NoSuchNetwork"));
    assert_eq!((c.result_code, c.session_id), (1, 2));

    assert_eq!(
        server.ask(&Request::Disconnect(DisconnectRequest { session_id: 2 })),
        Message::DisconnectResponse
    );

    // A fake network is mirrored.
    let c = server.connect(wpa2_connect("a=b=c", Key::new(vec![1; 32])));
    assert_eq!(
        (c.result_code, c.bssid, c.session_id),
        (0, "aa:bb:cc:dd:ee:ff".parse().unwrap(), 3)
    );

    // A network the host is on is mirrored too.
    server.ctl_ok(&["host-connect", "FakeWpa2Psk"]);
    let c = server.connect(wpa2_connect("FakeWpa2Psk", Key::new(vec![2; 32])));
    assert_eq!((c.result_code, c.bssid, c.session_id), (0, bssid(1), 4));

    let (status, log) = server.stop();
    assert!(status.success(), "exit {status:?}: {log}");
}

#[test]
fn async_scan_completes_through_a_notification() {
    let server = Server::start(&[]);
    server.ctl_ok(&["scan-mode", "async"]);
    let scan = server.scan();
    assert!(!scan.scan_complete);
    assert_eq!(
        scan.bss.iter().map(|b| b.bssid).collect::<Vec<_>>(),
        vec![bssid(1)]
    );
    match server.notification(Duration::from_secs(5)) {
        Some(Message::ScanResponse(rest)) => {
            assert!(rest.scan_complete);
            assert_eq!(
                rest.bss.iter().map(|b| b.bssid).collect::<Vec<_>>(),
                vec![bssid(2), bssid(3)]
            );
        }
        other => panic!("expected the rest of the scan, got {other:?}"),
    }
    server.ctl_ok(&["scan-mode", "sync"]);
    assert!(server.scan().scan_complete);
}

#[test]
fn malformed_requests_get_invalid_and_the_service_carries_on() {
    let server = Server::start(&[]);
    let invalid = vec![0u8, 0, 0, 0, 0, 1, 0];
    // Unknown operation, wrong version, a body larger than allowed.
    assert_eq!(server.raw(&[9, 0, 0, 0, 0, 1, 0]), invalid);
    assert_eq!(server.raw(&[1, 33, 0, 0, 0, 2, 0]), invalid);
    assert_eq!(server.raw(&[3, 0xff, 0xff, 0, 0, 1, 0]), invalid);
    // A body that does not decode (ssid_len 40).
    let mut bad = vec![1u8, 33, 0, 0, 0, 1, 0, 40];
    bad.extend_from_slice(&[0; 32]);
    assert_eq!(server.raw(&bad), invalid);
    // A request cut short by the guest.
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.write_all(&[1, 33, 0, 0, 0, 1, 0, 0]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(out, invalid);
    // Still serving.
    assert_eq!(server.scan().bss.len(), 3);
}

#[test]
fn notifications_are_dropped_until_the_first_request() {
    let server = Server::start(&[]);
    // Applied on the host, and `ctl` says nobody can get it (exit 4).
    let out = server.ctl(&["scan-results"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(server.notification(Duration::from_millis(500)), None);
    assert!(server.stderr().contains("dropping a notification"));
    server.scan();
    server.ctl_ok(&["scan-results"]);
    match server.notification(Duration::from_secs(5)) {
        Some(Message::ScanResponse(s)) => {
            // Spontaneous results never complete a scan.
            assert!(!s.scan_complete);
            assert_eq!(s.bss.len(), 3);
        }
        other => panic!("expected scan results, got {other:?}"),
    }
}

#[test]
fn ctl_reports_what_it_could_not_do() {
    let server = Server::start(&[]);
    let out = server.ctl(&["host-disconnect"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not connected"));
    let out = server.ctl(&["host-connect", "Nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Nope"));
    server.ctl_ok(&["host-connect", "FakeOpen"]);
    server.ctl_ok(&["host-disconnect"]);
    let out = Command::new(BIN)
        .args([
            "ctl",
            "--control",
            "/nonexistent/proxy-wifi.sock",
            "scan-results",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        vec!["serve", "--simulated"],
        vec!["serve", "--simulated", "--tcp", "not-an-ip"],
        vec![
            "serve",
            "--simulated",
            "--tcp",
            "127.0.0.1",
            "--fake-network",
            "no-bssid",
        ],
        vec![
            "serve",
            "--simulated",
            "--tcp",
            "127.0.0.1",
            "--fake-network",
            "x=zz:bb:cc:dd:ee:ff",
        ],
        vec![
            "serve",
            "--simulated",
            "--tcp",
            "127.0.0.1",
            "--request-port",
            "70000",
        ],
        vec![
            "serve",
            "--simulated",
            "--backend",
            "simulated",
            "--tcp",
            "127.0.0.1",
        ],
        vec!["serve", "--tcp", "127.0.0.1", "--vsock-cid", "3"],
        vec!["ctl", "--control", "/tmp/x", "signal", "101"],
        vec!["ctl", "--control", "/tmp/x", "scan-mode", "sometimes"],
        // No transport for the guest (without --control, ctl uses the
        // default socket: that is no longer a usage error).
        vec!["ctl", "add-guest", "x"],
        vec!["frobnicate"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--simulated",
            "--tcp",
            "127.0.0.1",
            "--request-port",
            &port,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on 127.0.0.1:") && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn no_key_in_any_log_line_even_at_trace() {
    let server = Server::start_with_env(&[], &[("RUST_LOG", "trace")]);
    server.scan();
    let pmk = pmk_from_passphrase("secretsecret", &ssid("FakeWpa2Psk")).unwrap();
    let secret = pmk.expose().to_vec();
    let c = server.connect(wpa2_connect("FakeWpa2Psk", pmk));
    assert_eq!((c.result_code, c.bssid), (0, bssid(1)));
    server.ask(&Request::Disconnect(DisconnectRequest {
        session_id: c.session_id,
    }));
    let (_, log) = server.stop();
    assert!(log.contains("TRACE"), "not a trace-level run");
    let forms = [
        hex::encode(&secret),
        hex::encode_upper(&secret),
        format!("{:?}", &secret[..8])
            .trim_end_matches(']')
            .to_string(),
        format!("{:02x?}", &secret[..8])
            .trim_end_matches(']')
            .to_string(),
    ];
    for form in forms {
        assert!(!log.contains(&form), "the PMK appears in the log as {form}");
    }
}

#[test]
fn legacy_layout_and_no_scan_latency() {
    let server = Server::start(&["--scan-layout", "legacy", "--scan-min-latency-ms", "0"]);
    let bytes = server.raw(&Request::Scan(ScanRequest::default()).encode().unwrap());
    match Message::decode(&bytes, ScanLayout::Legacy).unwrap() {
        Message::ScanResponse(s) => assert_eq!(s.bss.len(), 3),
        other => panic!("expected a scan response, got {other:?}"),
    }
    // The 8-byte fixed part: num_bss first, then total_size = body size.
    assert_eq!(&bytes[7..11], &3u32.to_le_bytes());
    assert_eq!(
        u32::from_le_bytes([bytes[11], bytes[12], bytes[13], bytes[14]]) as usize,
        bytes.len() - 7
    );
}
