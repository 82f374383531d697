//! A private dbus-daemon with python-dbusmock's NetworkManager template
//! (extended by `tests/networkmanager_mock.py`) playing NetworkManager:
//! shared by the NetworkManager backend tests and the daemon's end-to-end
//! test of `serve --backend networkmanager`.
//!
//! Needs `dbus-daemon` and `/usr/bin/python3` with `dbusmock` (Debian:
//! `dbus-daemon`, `python3-dbusmock`); [`missing_tools`] says what is missing.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use proxy_wifi::wifi::networkmanager::convert::sec;
use proxy_wifi::wifi::networkmanager::{BusAddress, NetworkManagerWifi, NmConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zbus::zvariant::{DynamicType, OwnedObjectPath, OwnedValue, Value};

pub const NM: &str = "org.freedesktop.NetworkManager";
pub const MOCK_IFACE: &str = "org.freedesktop.DBus.Mock";
pub const MAIN: &str = "/org/freedesktop";
pub const MANAGER: &str = "/org/freedesktop/NetworkManager";
pub const SETTINGS: &str = "/org/freedesktop/NetworkManager/Settings";
pub const AP_IFACE: &str = "org.freedesktop.NetworkManager.AccessPoint";
pub const WIRELESS_IFACE: &str = "org.freedesktop.NetworkManager.Device.Wireless";
pub const WPA2: u32 = sec::KEY_MGMT_PSK | sec::PAIR_CCMP | sec::GROUP_CCMP;
/// The stock template's AddWiFiConnection only knows this flag value.
pub const PSK_ONLY: u32 = sec::KEY_MGMT_PSK;
pub const DISCONNECTED: i32 = 30;
pub const WAIT: Duration = Duration::from_secs(10);

/// Returns from the test, saying `SKIPPED:` and why, when the tools of
/// [`missing_tools`] are missing; under CI (`CI` set) a skip is a failure.
// Not every test crate that includes this module uses it.
#[allow(unused_macros)]
macro_rules! require_tools {
    () => {
        if let Some(why) = $crate::common::nm::missing_tools() {
            if std::env::var_os("CI").is_some() {
                panic!("SKIPPED is not acceptable in CI: {why}");
            }
            eprintln!("SKIPPED: {}: {why}", module_path!());
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use require_tools;

pub fn missing_tools() -> Option<String> {
    let daemon = std::process::Command::new("dbus-daemon")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !daemon.is_ok_and(|s| s.success()) {
        return Some("dbus-daemon is not installed (Debian package dbus-daemon)".into());
    }
    let mock = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import dbusmock, gi.repository.GLib"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !mock.is_ok_and(|s| s.success()) {
        return Some(
            "/usr/bin/python3 cannot import dbusmock (Debian package python3-dbusmock)".into(),
        );
    }
    None
}

/// A private dbus-daemon.
pub struct Bus {
    pub dir: tempfile::TempDir,
    pub _daemon: Child,
    pub address: String,
    pub conn: zbus::Connection,
}

/// A running mock NetworkManager.
pub struct Mock {
    pub child: Child,
}

impl Mock {
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Bus {
    pub async fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let (daemon, address, conn) = Bus::spawn_daemon(dir.path()).await;
        Bus {
            dir,
            _daemon: daemon,
            address,
            conn,
        }
    }

    /// The bus's address without the server's guid, which a restarted bus
    /// daemon does not keep: the address a client that reconnects uses.
    pub fn stable_address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus").display())
    }

    /// Kills the bus daemon (every client loses its connection) and starts
    /// a new one on the same socket path.
    pub async fn restart_daemon(&mut self) {
        let _ = self._daemon.kill().await;
        let _ = std::fs::remove_file(self.dir.path().join("bus"));
        let (daemon, address, conn) = Bus::spawn_daemon(self.dir.path()).await;
        self._daemon = daemon;
        self.address = address;
        self.conn = conn;
    }

    /// Where the bus looks for D-Bus activation files (`<name>.service`);
    /// empty unless a test puts one there.
    pub fn service_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("services")
    }

    async fn spawn_daemon(dir: &std::path::Path) -> (Child, String, zbus::Connection) {
        let socket = dir.join("bus");
        let config = dir.join("bus.conf");
        let services = dir.join("services");
        std::fs::create_dir_all(&services).unwrap();
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <servicedir>{}</servicedir>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display(),
                services.display()
            ),
        )
        .unwrap();
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = daemon.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("dbus-daemon prints its address")
            .unwrap();
        let address = line.trim().to_string();
        let conn = zbus::connection::Builder::address(address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        (daemon, address, conn)
    }

    /// Starts the mock NetworkManager and waits until it answers.
    pub async fn start_nm(&self) -> Mock {
        let template = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/networkmanager_mock.py");
        let log = std::fs::File::create(self.dir.path().join("mock.log")).unwrap();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "dbusmock", "--system", "--template", template])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ready = self
                .conn
                .call_method(Some(NM), MANAGER, Some(NM), "GetDevices", &())
                .await
                .is_ok();
            if ready {
                return Mock { child };
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mock NetworkManager did not start: {}",
                std::fs::read_to_string(self.dir.path().join("mock.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn call<B, R>(&self, path: &str, iface: &str, method: &str, body: &B) -> R
    where
        B: serde::Serialize + DynamicType,
        R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
    {
        let reply = self
            .conn
            .call_method(Some(NM), path, Some(iface), method, body)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        reply.body().deserialize::<R>().unwrap()
    }

    pub async fn mock<B, R>(&self, method: &str, body: &B) -> R
    where
        B: serde::Serialize + DynamicType,
        R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
    {
        self.call(MAIN, MOCK_IFACE, method, body).await
    }

    pub async fn add_wifi(&self, name: &str, iface: &str, mac: &str, last_scan: bool) -> String {
        self.mock(
            "AddWiFiDeviceFull",
            &(name, iface, mac, DISCONNECTED, last_scan),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn add_ap(
        &self,
        dev: &str,
        name: &str,
        ssid: &str,
        mac: &str,
        freq: u32,
        strength: u8,
        security: u32,
    ) -> String {
        self.mock(
            "AddAccessPoint",
            &(
                dev, name, ssid, mac, 2u32, freq, 54000u32, strength, security,
            ),
        )
        .await
    }

    pub async fn set_property(&self, path: &str, iface: &str, name: &str, value: Value<'_>) {
        let _: () = self.mock("SetProperty", &(path, iface, name, value)).await;
    }

    pub async fn method_calls(&self, path: &str, method: &str) -> Vec<Vec<OwnedValue>> {
        let calls: Vec<(u64, Vec<OwnedValue>)> = self
            .call(path, MOCK_IFACE, "GetMethodCalls", &(method,))
            .await;
        calls.into_iter().map(|(_, args)| args).collect()
    }

    /// The calls of `method` once there are `n` of them (the backend makes
    /// some in the background).
    pub async fn wait_calls(&self, path: &str, method: &str, n: usize) -> Vec<Vec<OwnedValue>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let calls = self.method_calls(path, method).await;
            if calls.len() >= n || tokio::time::Instant::now() >= deadline {
                assert_eq!(calls.len(), n, "calls of {method}");
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn profiles(&self) -> Vec<OwnedObjectPath> {
        self.call(
            SETTINGS,
            "org.freedesktop.NetworkManager.Settings",
            "ListConnections",
            &(),
        )
        .await
    }

    pub async fn backend(&self) -> Arc<NetworkManagerWifi> {
        NetworkManagerWifi::start_with(
            BusAddress::Address(self.address.clone()),
            NmConfig {
                scan_timeout: Duration::from_secs(3),
                scan_fallback_wait: Duration::from_millis(300),
                connect_timeout: Duration::from_secs(2),
                call_timeout: Duration::from_secs(5),
            },
        )
        .await
        .unwrap()
    }
}

/// `proxy-wifi serve --backend networkmanager` for one TCP guest (any
/// port, no scan floor) on the bus at `bus_address`, with its control
/// socket at `control`; the caller picks stderr and spawns it.
pub fn serve_command(bus_address: &str, control: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_proxy-wifi"));
    command
        .args([
            "serve",
            "--backend",
            "networkmanager",
            "--tcp",
            "127.0.0.1",
            "--request-port",
            "0",
            "--scan-min-latency-ms",
            "0",
            "--control",
        ])
        .arg(control)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Waits until a backend's health reports its service or the bus gone.
pub async fn wait_health_lost(
    health: &mut tokio::sync::watch::Receiver<proxy_wifi::wifi::BackendHealth>,
) {
    use proxy_wifi::wifi::BackendHealth;
    tokio::time::timeout(
        WAIT,
        health.wait_for(|h| {
            matches!(
                h,
                BackendHealth::Reconnecting { .. } | BackendHealth::ServiceDown(_)
            )
        }),
    )
    .await
    .expect("the health reports the lost bus")
    .unwrap();
}
