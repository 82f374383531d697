//! Helpers shared by the end-to-end tests: run the `proxy-wifi` binary and
//! parse its output, script a fake host (request side) and send
//! notifications (notification side).
//!
//! Each test crate includes this with `mod common;` and uses a part of it.
#![allow(dead_code)]

#[cfg(unix)]
pub mod daemon;
#[cfg(target_os = "linux")]
pub mod nm;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::task::JoinHandle;

use proxy_wifi::protocol::{Header, HEADER_LEN};
use proxy_wifi::transport::framing::read_message;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Longest any single command may run before the test calls it hung.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_proxy-wifi")
}

/// The outcome of one command.
#[derive(Debug)]
pub struct Run {
    /// Exit code, `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout parsed as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Stdout parsed as one JSON value per line.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code; output: {self:#?}"
        );
        self
    }
}

/// `--tcp 127.0.0.1 --request-port PORT`, the transport flags of a guest
/// command talking to a TCP host on this machine.
pub fn tcp_guest_args(request_port: u16) -> Vec<String> {
    vec![
        "--tcp".into(),
        "127.0.0.1".into(),
        "--request-port".into(),
        request_port.to_string(),
    ]
}

/// Runs `proxy-wifi guest <transport...> <args...>` to completion, with
/// `stdin` fed to it.
pub async fn run_guest_with_stdin(transport: &[String], args: &[&str], stdin: &[u8]) -> Run {
    let mut cmd = Command::new(bin());
    // The tables' bars are block glyphs in a UTF-8 locale only.
    cmd.env("LC_ALL", "C.UTF-8")
        .arg("guest")
        .args(transport)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn proxy-wifi");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).await.expect("write stdin");
    }
    let output = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
        .await
        .expect("proxy-wifi guest hung")
        .expect("wait for proxy-wifi");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `proxy-wifi guest <transport...> <args...>` to completion.
pub async fn run_guest(transport: &[String], args: &[&str]) -> Run {
    run_guest_with_stdin(transport, args, b"").await
}

/// Parses the `scan` table: one map per row, keyed by the header's column
/// names (BSSID, SSID, FREQ, CHAN, SIGNAL, BARS, SECURITY). Cells are cut at
/// the header's column starts, so SSIDs with spaces survive.
pub fn parse_scan_table(stdout: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = stdout.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<char> = match lines.next() {
        Some(h) => h.chars().collect(),
        None => return Vec::new(),
    };
    // Column starts: a non-space after a space (or at 0).
    let starts: Vec<usize> = (0..header.len())
        .filter(|&i| header[i] != ' ' && (i == 0 || header[i - 1] == ' '))
        .collect();
    let cut = |chars: &[char], i: usize| -> String {
        let from = starts[i].min(chars.len());
        let to = starts
            .get(i + 1)
            .copied()
            .unwrap_or(chars.len())
            .min(chars.len());
        chars[from..to]
            .iter()
            .collect::<String>()
            .trim()
            .to_string()
    };
    let names: Vec<String> = (0..starts.len()).map(|i| cut(&header, i)).collect();
    lines
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), cut(&chars, i)))
                .collect()
        })
        .collect()
}

/// What the scripted host does on one request connection, after reading
/// the request.
#[derive(Debug, Clone)]
pub enum HostAction {
    /// Write these bytes, then close.
    Reply(Vec<u8>),
    /// Close without a reply.
    Close,
    /// Never answer; hold the connection until the guest closes it.
    Silent,
}

/// A fake host on 127.0.0.1 that answers successive request connections
/// with the scripted actions and records each request (header and body).
pub struct ScriptedHost {
    pub port: u16,
    task: JoinHandle<Vec<Vec<u8>>>,
}

impl ScriptedHost {
    pub async fn start(actions: Vec<HostAction>) -> ScriptedHost {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            for action in actions {
                let (mut stream, _) = listener.accept().await.expect("accept");
                let (header, body) = read_message(&mut stream, Header::decode_request)
                    .await
                    .expect("a well-formed request");
                let mut request = header.encode().to_vec();
                request.extend_from_slice(&body);
                requests.push(request);
                match action {
                    HostAction::Reply(bytes) => {
                        stream.write_all(&bytes).await.expect("write reply");
                        let _ = stream.shutdown().await;
                    }
                    HostAction::Close => drop(stream),
                    HostAction::Silent => {
                        let mut rest = Vec::new();
                        let _ = stream.read_to_end(&mut rest).await;
                    }
                }
            }
            requests
        });
        ScriptedHost { port, task }
    }

    /// The requests received, once every action has been played.
    pub async fn requests(self) -> Vec<Vec<u8>> {
        tokio::time::timeout(COMMAND_LIMIT, self.task)
            .await
            .expect("scripted host still waiting for requests")
            .expect("scripted host failed")
    }
}

/// A free TCP port on 127.0.0.1 with nothing listening (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// Opens a notification connection to `port`, writes `bytes`, closes: what a
/// host does for each notification.
pub async fn send_notification(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect((LOCALHOST, port))
        .await
        .expect("connect to the watcher");
    s.write_all(bytes).await.expect("write notification");
    let _ = s.shutdown().await;
}

/// A running `proxy-wifi guest ... watch`.
pub struct Watch {
    pub child: Child,
    /// The notification port it listens on.
    pub port: u16,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Watch {
    /// Starts `proxy-wifi guest <transport...> watch <args...>` and waits for
    /// it to report where it listens (give `--notification-port 0` to let it
    /// pick a port).
    pub async fn start(transport: &[String], args: &[&str]) -> Watch {
        let (watch, description) = Watch::start_described(transport, args).await;
        assert_ne!(
            watch.port, 0,
            "no port in the listening line: {description}"
        );
        watch
    }

    /// The next line of stdout (`None` at the end).
    pub async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(COMMAND_LIMIT, self.stdout.next_line())
            .await
            .expect("watch printed nothing")
            .expect("read stdout")
    }

    /// The next line of stderr (`None` at the end).
    pub async fn next_error_line(&mut self) -> Option<String> {
        tokio::time::timeout(COMMAND_LIMIT, self.stderr.next_line())
            .await
            .expect("watch reported nothing")
            .expect("read stderr")
    }

    /// Waits for the process to exit and returns its code.
    pub async fn wait(mut self) -> Option<i32> {
        tokio::time::timeout(COMMAND_LIMIT, self.child.wait())
            .await
            .expect("watch did not exit")
            .expect("wait for watch")
            .code()
    }
}

/// The header of a whole message, checked for host messages.
pub fn host_header(bytes: &[u8]) -> Header {
    let head: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().expect("7 bytes");
    Header::decode_host(&head).expect("a host header")
}

/// Parses the port at the end of a listening description: `127.0.0.1:4000`
/// (TCP) or `/tmp/x/vm.sock port 12346` (hybrid vsock, vsock).
pub fn trailing_port(description: &str) -> Option<u32> {
    description
        .trim()
        .rsplit([':', ' '])
        .next()
        .and_then(|p| p.parse().ok())
}

impl Watch {
    /// Like [`Watch::start`] for any transport: returns the watch and where
    /// it says it listens (`127.0.0.1:PORT`, or `PATH port N` for hybrid
    /// vsock). `port` is the trailing port of that description (for hybrid
    /// vsock, the guest notification port it answers `CONNECT` for).
    pub async fn start_described(transport: &[String], args: &[&str]) -> (Watch, String) {
        let mut child = Command::new(bin())
            .env("LC_ALL", "C.UTF-8")
            .arg("guest")
            .args(transport)
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn proxy-wifi guest watch");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let description = tokio::time::timeout(COMMAND_LIMIT, async {
            while let Some(line) = stderr.next_line().await.expect("read stderr") {
                if let Some(addr) = line.split("listening for notifications on ").nth(1) {
                    return addr.trim().to_string();
                }
            }
            panic!("watch exited before listening");
        })
        .await
        .expect("watch never said where it listens");
        let port = trailing_port(&description)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0);
        (
            Watch {
                child,
                port,
                stdout,
                stderr,
            },
            description,
        )
    }

    /// The next stdout line parsed as JSON (`watch --json`).
    pub async fn next_json(&mut self) -> serde_json::Value {
        let line = self.next_line().await.expect("watch ended early");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

/// A running `proxy-wifi serve --simulated ... --control <tempdir>/control.sock`,
/// killed when dropped.
pub struct Serve {
    pub child: Child,
    /// Where it listens for guest requests, as it logged it
    /// (`127.0.0.1:PORT`, or the hybrid vsock request socket's path).
    pub listening_on: String,
    /// The control socket, for `proxy-wifi ctl --control`.
    pub control: std::path::PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts `proxy-wifi serve --simulated <args...>` and waits until it
    /// logs `listening for guest requests on ...` and its control socket
    /// exists. Everything it logs is kept (see [`Serve::log`]).
    pub async fn start(args: &[String]) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = dir.path().join("control.sock");
        let mut child = Command::new(bin())
            .args(["serve", "--simulated"])
            .args(args)
            .arg("--control")
            .arg(&control)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn proxy-wifi serve");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let kept = log.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok(Some(line)) = stderr.next_line().await {
                if let Some(rest) = line.split("listening for guest requests on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
                if let Ok(mut log) = kept.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let listening_on = match tokio::time::timeout(COMMAND_LIMIT, rx).await {
            Ok(Ok(description)) => description,
            _ => {
                let _ = child.start_kill();
                let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("proxy-wifi serve did not start:\n{log}");
            }
        };
        // The control socket is bound right after the service starts.
        let deadline = tokio::time::Instant::now() + COMMAND_LIMIT;
        while !control.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no control socket at {}",
                control.display()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Serve {
            child,
            listening_on,
            control,
            log,
            _dir: dir,
        }
    }

    /// The TCP request port (the trailing port of `listening_on`).
    pub fn request_port(&self) -> u16 {
        trailing_port(&self.listening_on)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no TCP port in {:?}", self.listening_on))
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Runs `proxy-wifi ctl --control <control> <args...>`.
    pub async fn ctl(&self, args: &[&str]) -> Run {
        let output = tokio::time::timeout(
            COMMAND_LIMIT,
            Command::new(bin())
                .arg("ctl")
                .arg("--control")
                .arg(&self.control)
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("proxy-wifi ctl hung")
        .expect("run proxy-wifi ctl");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `proxy-wifi ctl` and panics (with the service's log) unless it
    /// succeeds.
    pub async fn ctl_ok(&self, args: &[&str]) {
        let run = self.ctl(args).await;
        assert_eq!(
            run.code,
            Some(0),
            "ctl {args:?} failed: {run:#?}\nservice log:\n{}",
            self.log()
        );
    }
}
