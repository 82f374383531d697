//! A `proxy-wifi serve --config FILE` daemon for end-to-end tests: its
//! configuration written into the test's directory, its log captured, and
//! `proxy-wifi ctl` to drive it.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_wifi::daemon::GuestStatus;
use proxy_wifi::guest::GuestClient;
use proxy_wifi::transport::TransportConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a test waits for the daemon to get somewhere.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// The test's directory: the configuration and the sockets.
    pub dir: PathBuf,
    /// The control socket.
    pub control: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
}

/// The configuration file: the control socket in `dir` and metrics on an
/// ephemeral port, then `body` (backend, networks, guests).
pub fn config_text(dir: &Path, body: &str) -> String {
    format!(
        "control_socket = \"{}\"\nmetrics = \"127.0.0.1:0\"\n{body}",
        dir.join("control.sock").display()
    )
}

impl Daemon {
    /// Writes `config.toml` ([`config_text`]) into `dir` and starts the
    /// daemon on it with `env` added; returns once it is ready.
    pub async fn start(dir: &Path, body: &str, env: &[(&str, &str)]) -> Daemon {
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text(dir, body)).unwrap();
        let mut cmd = Command::new(super::bin());
        cmd.arg("serve").arg("--config").arg(&config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::spawn(cmd, dir).await
    }

    /// Starts `serve` as `cmd` says (its control socket must be
    /// `dir/control.sock`), logging at info, and returns once it is ready.
    pub async fn spawn(cmd: Command, dir: &Path) -> Daemon {
        Daemon::try_spawn(cmd, dir, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Daemon::spawn`], but a `serve` that exits before it is ready is an
    /// error with its log; one still not ready after `limit` panics.
    pub async fn try_spawn(
        mut cmd: Command,
        dir: &Path,
        limit: Duration,
    ) -> Result<Daemon, String> {
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut daemon = Daemon {
            child: Some(child),
            log,
            dir: dir.to_path_buf(),
            control: dir.join("control.sock"),
            config: dir.join("config.toml"),
        };
        let deadline = Instant::now() + limit;
        while !daemon.log().contains(" ready") {
            if let Some(Ok(Some(status))) = daemon.child.as_mut().map(|c| c.try_wait()) {
                // Let the log reader catch up.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(format!("serve exited with {status}:\n{}", daemon.log()));
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", daemon.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(daemon)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs `proxy-wifi ctl` on the daemon's control socket.
    pub async fn ctl(&self, args: &[&str]) -> Output {
        tokio::time::timeout(
            WAIT,
            Command::new(super::bin())
                .arg("ctl")
                .arg("--control")
                .arg(&self.control)
                .args(args)
                .output(),
        )
        .await
        .expect("ctl hung")
        .unwrap()
    }

    /// Runs `proxy-wifi ctl`, checks it succeeded and returns its stdout.
    pub async fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args).await;
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctl status --json`.
    pub async fn status(&self) -> Vec<GuestStatus> {
        serde_json::from_str(&self.ctl_ok(&["status", "--json"]).await).unwrap()
    }

    /// One guest's status.
    pub async fn guest(&self, name: &str) -> GuestStatus {
        self.status()
            .await
            .into_iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no guest {name} in the status"))
    }

    /// A client for a TCP guest (its bound port from the status).
    pub async fn tcp_client(&self, name: &str) -> GuestClient {
        tcp_client_of(&self.guest(name).await)
    }

    /// A client for a hybrid vsock guest whose VMM socket is `dir/file`.
    pub fn hybrid_client(&self, file: &str) -> GuestClient {
        GuestClient::new(&hybrid(&self.dir, file, 12346)).unwrap()
    }

    /// The metrics page (the address from the log), checked to be a 200.
    pub async fn metrics(&self) -> String {
        let line = self
            .log()
            .lines()
            .find_map(|l| l.split("metrics on http://").nth(1).map(String::from))
            .expect("the metrics address in the log");
        let address = line.split('/').next().unwrap().to_string();
        let mut s = TcpStream::connect(address).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        out
    }

    /// SIGTERM; waits for the exit.
    pub async fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().unwrap() as i32;
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("no exit after SIGTERM")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        (status, self.log())
    }
}

/// A hybrid vsock transport whose VMM socket is `dir/file`.
pub fn hybrid(dir: &Path, file: &str, notification_port: u32) -> TransportConfig {
    TransportConfig::HybridVsock {
        path: dir.join(file),
        request_port: 12345,
        notification_port,
    }
}

/// The TCP port a guest listens on, from its status.
pub fn tcp_port(g: &GuestStatus) -> u16 {
    g.listening
        .as_deref()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no TCP port in {g:?}"))
}

/// A client for the TCP guest `g` describes (its bound port).
pub fn tcp_client_of(g: &GuestStatus) -> GuestClient {
    GuestClient::new(&TransportConfig::Tcp {
        address: "127.0.0.1".parse().unwrap(),
        request_port: tcp_port(g),
        notification_port: 9,
    })
    .unwrap()
}
