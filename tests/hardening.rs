//! Issue 17 (second hardening round): the release binary under floods and
//! operator mistakes. Each test starts `proxy-wifi serve --config FILE`
//! (simulated backend, TCP guests on loopback) with a chosen
//! RLIMIT_NOFILE, attacks one surface, and checks that guests stay served
//! and the daemon's descriptors and memory stay bounded. The figures each
//! test prints (`FIGURES ...`) are the ones in docs/reliability.md.

#![cfg(target_os = "linux")]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_wifi::guest::GuestClient;
use proxy_wifi::transport::TransportConfig;

const BIN: &str = env!("CARGO_BIN_EXE_proxy-wifi");
const WAIT: Duration = Duration::from_secs(30);

/// A running daemon, killed when dropped.
struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    control: PathBuf,
    log: Arc<Mutex<String>>,
}

/// The configuration: simulated backend, a control socket, metrics on an
/// ephemeral port, `guests` TCP guests on ephemeral ports, then `extra`.
fn config(dir: &std::path::Path, guests: usize, extra: &str) -> String {
    let mut text = format!(
        "backend = \"simulated\"\ncontrol_socket = \"{}\"\nmetrics = \"127.0.0.1:0\"\n{extra}\n",
        dir.join("control.sock").display()
    );
    for i in 0..guests {
        text.push_str(&format!(
            "[[guest]]\nname = \"vm{i}\"\ntcp = \"127.0.0.1\"\nrequest_port = 0\nnotification_port = 1\n"
        ));
    }
    text
}

/// Runs `serve --config` with RLIMIT_NOFILE set to `nofile` (soft and
/// hard) when given.
fn spawn(dir: &std::path::Path, config_text: &str, nofile: Option<u64>) -> Child {
    let path = dir.join("config.toml");
    std::fs::write(&path, config_text).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(n) = nofile {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn().expect("spawn proxy-wifi serve")
}

impl Daemon {
    fn start(guests: usize, extra: &str, nofile: Option<u64>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let text = config(dir.path(), guests, extra);
        let mut child = spawn(dir.path(), &text, nofile);
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let kept = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                kept.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let d = Daemon {
            child,
            control: dir.path().join("control.sock"),
            _dir: dir,
            log,
        };
        d.wait_for_log("ready");
        d
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open descriptors of the daemon.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory of the daemon, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The request port of guest `name`, from its "listening on" log line.
    fn guest_port(&self, name: &str) -> u16 {
        let needle = format!("guest {name} listening on 127.0.0.1:");
        self.wait_for_log(&needle);
        let log = self.log();
        let rest = &log[log.find(&needle).unwrap() + needle.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A guest scan against `port`, with the driver's patience.
async fn scan(port: u16, limit: Duration) -> Result<usize, String> {
    let mut config = TransportConfig::tcp("127.0.0.1".parse().unwrap());
    if let TransportConfig::Tcp { request_port, .. } = &mut config {
        *request_port = port;
    }
    let client = GuestClient::new(&config)
        .map_err(|e| e.to_string())?
        .timeout(limit);
    client
        .scan(None)
        .await
        .map(|s| s.bss.len())
        .map_err(|e| e.to_string())
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// Point 2: idle control clients past the descriptor limit. Guests, `ctl
/// status` and metrics keep working; the daemon's descriptors stay below
/// the limit; "Too many open files" is not logged in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_control_clients_cannot_exhaust_descriptors() {
    const LIMIT: u64 = 384;
    const CLIENTS: usize = 600;
    let d = Daemon::start(1, "", Some(LIMIT));
    let port = d.guest_port("vm0");
    let fds_before = d.fds();
    let rss_before = d.rss_kib();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        match tokio::net::UnixStream::connect(&d.control).await {
            Ok(s) => clients.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    // Give the daemon time to accept (or fail to accept) them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_flood = d.fds();
    let rss_flood = d.rss_kib();
    let started = Instant::now();
    let scanned = scan(port, Duration::from_secs(5)).await;
    let scan_ms = started.elapsed().as_millis();
    let status = d.ctl(&["status", "--json"]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log = d.log();
    println!(
        "FIGURES control flood: {CLIENTS} idle clients, RLIMIT_NOFILE {LIMIT}: fds {fds_before} -> {fds_flood}, \
         RSS {rss_before} -> {rss_flood} KiB, guest scan {scan_ms} ms, \
         'Too many open files' logged {} times",
        count(&log, "Too many open files")
    );
    assert!(scanned.is_ok(), "guest scan failed: {scanned:?}\n{log}");
    assert!(
        status.status.success(),
        "ctl status failed: {}\n{log}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!((fds_flood as u64) < LIMIT - 32, "fds {fds_flood}");
    assert!(count(&log, "Too many open files") <= 2, "{log}");
    drop(clients);
}

/// Point 7: a fleet the descriptor limit cannot hold is refused at once
/// with exit 78 and the number needed, before any guest starts.
#[test]
fn a_fleet_past_the_descriptor_limit_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), 1100, "");
    let started = Instant::now();
    let out = spawn(dir.path(), &text, Some(1024))
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "FIGURES fd check: 1100 guests at RLIMIT_NOFILE 1024 refused in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("need 2456 file descriptors"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

/// Point 7: `ctl status` works for a fleet whose status is past the old
/// 1 MiB answer cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_works_for_a_large_fleet() {
    const GUESTS: usize = 6000;
    let started = Instant::now();
    let d = Daemon::start(GUESTS, "", Some(20_000));
    let start_ms = started.elapsed().as_millis();
    let started = Instant::now();
    let out = d.ctl(&["status", "--json"]);
    let status_ms = started.elapsed().as_millis();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "FIGURES large fleet: {GUESTS} guests started in {start_ms} ms, fds {}, RSS {} KiB, \
         ctl status ({} bytes of JSON) {status_ms} ms",
        d.fds(),
        d.rss_kib(),
        out.stdout.len()
    );
    assert_eq!(list.len(), GUESTS);
}

/// Point 5: the CLI exits quietly when its reader goes away (`| head -1`,
/// `| true`), never with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_is_not_a_panic() {
    let d = Daemon::start(1, "", None);
    let port = d.guest_port("vm0").to_string();
    let runs: [Vec<String>; 2] = [
        vec![
            "guest".into(),
            "--tcp".into(),
            "127.0.0.1".into(),
            "--request-port".into(),
            port,
            "scan".into(),
        ],
        vec![
            "ctl".into(),
            "--control".into(),
            d.control.display().to_string(),
            "status".into(),
        ],
    ];
    for args in runs {
        // A pipe whose read end is closed before anything is written.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}

/// Point 5: the daemon survives its log reader going away
/// (`serve ... 2>&1 | head -1`) and keeps serving guests and `ctl`.
#[test]
fn a_closed_log_pipe_does_not_kill_the_daemon() {
    // The daemon's stderr is a pipe whose read end is already closed:
    // every log line it writes fails with EPIPE.
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), 1, "");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    let control = dir.path().join("control.sock");
    let deadline = Instant::now() + WAIT;
    while !control.exists() {
        assert!(Instant::now() < deadline, "the daemon never started");
        assert!(child.try_wait().unwrap().is_none(), "the daemon died");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..3 {
        let out = Command::new(BIN)
            .arg("ctl")
            .arg("--control")
            .arg(&control)
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "the daemon died");
    let _ = child.kill();
    let _ = child.wait();
}

/// Point 6: a guest's own slowloris (every in-flight request connection
/// stalled after 3 bytes of header) does not keep its well-formed requests
/// from being answered: the oldest stalled connection is evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_request_is_answered_during_a_slowloris_flood() {
    use tokio::io::AsyncWriteExt;
    const STALLED: usize = 200;
    let d = Daemon::start(1, "", None);
    let port = d.guest_port("vm0");
    let rss_before = d.rss_kib();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(&[0, 0, 0]).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fds = d.fds();
    // Well under the 1 s read deadline of the stalled ones: only eviction
    // makes room in time.
    let mut answered = 0;
    let started = Instant::now();
    for _ in 0..5 {
        // Keep the flood going: new stalled connections between requests.
        for _ in 0..40 {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(&[0, 0, 0]).await.unwrap();
            stalled.push(s);
        }
        if scan(port, Duration::from_millis(400)).await.is_ok() {
            answered += 1;
        }
    }
    println!(
        "FIGURES slowloris: {} stalled connections, fds {fds}, RSS {rss_before} -> {} KiB, \
         {answered}/5 scans answered in {} ms",
        stalled.len(),
        d.rss_kib(),
        started.elapsed().as_millis()
    );
    assert_eq!(answered, 5, "{}", d.log());
}

/// Point 14: a RUST_LOG that would silence every log line (a bare word is
/// a target name to the filter parser) is said on stderr and not applied.
#[test]
fn an_invalid_rust_log_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["ctl", "--control"])
        .arg(dir.path().join("nobody.sock"))
        .arg("status")
        .env("RUST_LOG", "aaa")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ignoring RUST_LOG"), "{stderr}");
}

/// Point 9: a configuration holding passphrases that others can read gets
/// a warning naming the file and its mode.
#[test]
fn a_world_readable_config_with_passphrases_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let network = "[[simulated_network]]\nssid = \"Home\"\nbssid = \"02:00:00:00:00:01\"\n\
                   freq_khz = 2437000\nsecurity = \"wpa2-psk\"\npassphrase = \"correct horse\"\n";
    let d = Daemon::start(1, network, None);
    let path = d._dir.path().join("config.toml");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_ne!(mode & 0o077, 0, "the test needs a file others can read");
    let log = d.log();
    assert!(
        log.contains(&format!("{}", path.display())) && log.contains(&format!("{mode:o}")),
        "{log}"
    );
    assert!(!log.contains("correct horse"), "{log}");
}

/// Point 15: `ctl` that gets no answer in time says the outcome is unknown
/// (the command may still take effect) and exits with its own code, 3.
#[test]
fn a_ctl_timeout_says_the_outcome_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    // Accepts, reads, never answers.
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let keeper = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(8));
        drop(s);
    });
    let out = Command::new(BIN)
        .args(["ctl", "--control"])
        .arg(&path)
        .args(["signal", "50"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("outcome unknown"), "{stderr}");
    let _ = keeper.join();
}

/// The metrics endpoint's address, from its "metrics on" log line.
fn metrics_addr(d: &Daemon) -> std::net::SocketAddr {
    let needle = "metrics on http://";
    d.wait_for_log(needle);
    let log = d.log();
    let rest = &log[log.find(needle).unwrap() + needle.len()..];
    rest.split('/').next().unwrap().parse().unwrap()
}

/// One scrape: the status line and how long it took.
async fn scrape(addr: std::net::SocketAddr, limit: Duration) -> Result<(String, u128), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out);
            Ok((
                text.lines().next().unwrap_or_default().to_string(),
                started.elapsed().as_millis(),
            ))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Point 4: idle and slow clients of the metrics endpoint (any local user
/// can reach it) cannot pin the daemon's descriptors: a scrape, a guest
/// scan and `ctl status` keep working, descriptors stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_flood_is_bounded() {
    use tokio::io::AsyncWriteExt;
    const LIMIT: u64 = 384;
    const IDLE: usize = 300;
    const SLOW: usize = 300;
    let d = Daemon::start(1, "", Some(LIMIT));
    let port = d.guest_port("vm0");
    let addr = metrics_addr(&d);
    let fds_before = d.fds();
    let rss_before = d.rss_kib();
    let mut flood = Vec::new();
    // Half send nothing, half a partial request line (slowloris).
    for i in 0..IDLE + SLOW {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /metr").await;
        }
        flood.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_flood = d.fds();
    let rss_flood = d.rss_kib();
    let scraped = scrape(addr, Duration::from_secs(3)).await;
    let scanned = scan(port, Duration::from_secs(5)).await;
    let status = d.ctl(&["status", "--json"]);
    let log = d.log();
    println!(
        "FIGURES metrics flood: {} connections ({IDLE} silent, {SLOW} partial), RLIMIT_NOFILE {LIMIT}: \
         fds {fds_before} -> {fds_flood}, RSS {rss_before} -> {rss_flood} KiB, scrape {scraped:?}, \
         'Too many open files' logged {} times",
        flood.len(),
        count(&log, "Too many open files")
    );
    let (line, _) = scraped.unwrap_or_else(|e| panic!("scrape failed: {e}\n{log}"));
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    assert!(scanned.is_ok(), "guest scan failed: {scanned:?}\n{log}");
    assert!(
        status.status.success(),
        "ctl status failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        (fds_flood as u64) < fds_before as u64 + 64,
        "fds {fds_flood}"
    );
    drop(flood);
}

/// Point 15: `ctl signal` and `ctl scan-results` say so, with exit 4,
/// when no guest can receive the notification; 0 once one can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_says_when_no_guest_can_be_notified() {
    let d = Daemon::start(1, "", None);
    let port = d.guest_port("vm0");
    let code = |args: &[&str]| {
        let out = d.ctl(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No request yet: nobody is known to listen.
    let (c, e) = code(&["signal", "80"]);
    assert_eq!(c, Some(4), "{e}");
    assert!(e.contains("no guest can receive the signal change"), "{e}");
    let (c, e) = code(&["scan-results"]);
    assert_eq!(c, Some(4), "{e}");
    assert!(e.contains("no guest can receive the scan results"), "{e}");
    // After a scan, scan results reach the guest; a signal change does
    // not (it is not connected).
    scan(port, Duration::from_secs(5)).await.unwrap();
    assert_eq!(code(&["scan-results"]).0, Some(0));
    assert_eq!(code(&["signal", "80"]).0, Some(4));
    // Connected through the simulated host: the signal reaches it.
    let mut config = TransportConfig::tcp("127.0.0.1".parse().unwrap());
    if let TransportConfig::Tcp { request_port, .. } = &mut config {
        *request_port = port;
    }
    let client = GuestClient::new(&config).unwrap();
    let ssid = proxy_wifi::protocol::Ssid::new(b"FakeOpen").unwrap();
    let joined = client
        .connect(&proxy_wifi::guest::ConnectSpec::open(ssid))
        .await
        .unwrap();
    assert_eq!(joined.result_code, 0);
    assert_eq!(code(&["signal", "80"]).0, Some(0));
    assert_eq!(code(&["--guest", "vm0", "signal", "70"]).0, Some(0));
    // Other commands are unaffected.
    assert_eq!(code(&["scan-mode", "sync"]).0, Some(0));
}
