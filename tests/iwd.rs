//! The iwd backend against a real dbus-daemon on a private bus, with a
//! python-dbusmock template of our own (`tests/iwd_mock.py`) playing iwd
//! and a scripted kernel scan cache.
//!
//! Needs `dbus-daemon` and `/usr/bin/python3` with `dbusmock` (Debian:
//! `dbus-daemon`, `python3-dbusmock`; `scripts/test.sh` installs them). When
//! they are missing a test prints `SKIPPED: ...` and returns, except under
//! CI (`CI` set), where it fails.
#![cfg(target_os = "linux")]

mod common;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::nm::{require_tools, wait_health_lost, Bus, Mock, MOCK_IFACE, WAIT};
use proxy_wifi::protocol::{pmk_from_passphrase, Key, MacAddr, Ssid};
use proxy_wifi::wifi::iwd::profile::MARKER;
use proxy_wifi::wifi::iwd::{BssCache, IwdConfig, IwdWifi};
use proxy_wifi::wifi::networkmanager::BusAddress;
use proxy_wifi::wifi::{
    BackendHealth, ConnectParams, HostWifi, InterfaceError, InterfaceEvent, ScannedBss, Security,
    WifiInterface,
};
use tokio::process::Command;
use tokio::sync::broadcast;
use zbus::zvariant::{DynamicType, OwnedValue};

const IWD: &str = "net.connman.iwd";

/// The kernel scan cache, as the test scripts it.
#[derive(Default)]
struct FakeCache {
    now: Mutex<Vec<ScannedBss>>,
    /// What the cache holds once it has been read: a host scan's results,
    /// in place before the scan ends whatever the timing.
    after_read: Mutex<Option<Vec<ScannedBss>>>,
}

impl FakeCache {
    fn set(&self, bss: Vec<ScannedBss>) {
        *self.now.lock().unwrap() = bss;
        *self.after_read.lock().unwrap() = None;
    }

    /// Holds `bss` now, and `fresh` from the first read on.
    fn set_then(&self, bss: Vec<ScannedBss>, fresh: Vec<ScannedBss>) {
        *self.now.lock().unwrap() = bss;
        *self.after_read.lock().unwrap() = Some(fresh);
    }
}

impl BssCache for FakeCache {
    fn dump(&self, _ifname: &str) -> io::Result<Vec<ScannedBss>> {
        let mut now = self.now.lock().unwrap();
        let out = now.clone();
        if let Some(fresh) = self.after_read.lock().unwrap().take() {
            *now = fresh;
        }
        Ok(out)
    }
}

fn bss(ssid_text: &str, bssid: &str, security: Security) -> ScannedBss {
    ScannedBss {
        bssid: mac(bssid),
        ssid: ssid(ssid_text),
        capabilities: Some(0x11),
        rssi_dbm: -50,
        beacon_interval: Some(100),
        freq_khz: 2_437_000,
        security,
        ies: Vec::new(),
    }
}

fn ssid(s: &str) -> Ssid {
    Ssid::new(s.as_bytes()).unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

struct Env {
    bus: Bus,
    mock: Option<Mock>,
    state: tempfile::TempDir,
    cache: Arc<FakeCache>,
}

/// What the kernel's scan cache holds for `home` (see [`Env::station_with_home`]).
fn home_bss() -> ScannedBss {
    bss("home", "02:00:00:00:01:00", Security::WPA2_PSK_CCMP)
}

impl Env {
    async fn start() -> Env {
        let bus = Bus::start().await;
        let state = tempfile::tempdir().unwrap();
        let mut env = Env {
            bus,
            mock: None,
            state,
            cache: Arc::new(FakeCache::default()),
        };
        env.start_iwd().await;
        env
    }

    async fn start_iwd(&mut self) {
        let template = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/iwd_mock.py");
        let log = std::fs::File::create(self.bus.dir.path().join("iwd-mock.log")).unwrap();
        let params = serde_json::json!({ "state_dir": self.state.path() }).to_string();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "dbusmock", "--system", "--template", template, "-p"])
            .arg(params)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus.address)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ready = self
                .bus
                .conn
                .call_method(
                    Some(IWD),
                    "/net/connman/iwd",
                    Some("net.connman.iwd.Daemon"),
                    "GetInfo",
                    &(),
                )
                .await
                .is_ok();
            if ready {
                self.mock = Some(Mock { child });
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mock iwd did not start: {}",
                std::fs::read_to_string(self.bus.dir.path().join("iwd-mock.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop_iwd(&mut self) {
        if let Some(m) = self.mock.take() {
            m.stop().await;
        }
    }

    async fn mock<B, R>(&self, method: &str, body: &B) -> R
    where
        B: serde::Serialize + DynamicType,
        R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
    {
        let reply = self
            .bus
            .conn
            .call_method(Some(IWD), "/", Some(MOCK_IFACE), method, body)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        reply.body().deserialize::<R>().unwrap()
    }

    async fn calls(&self, path: &str, method: &str) -> usize {
        let reply = self
            .bus
            .conn
            .call_method(
                Some(IWD),
                path,
                Some(MOCK_IFACE),
                "GetMethodCalls",
                &(method,),
            )
            .await
            .unwrap();
        let calls: Vec<(u64, Vec<OwnedValue>)> = reply.body().deserialize().unwrap();
        calls.len()
    }

    async fn wait_calls(&self, path: &str, method: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.calls(path, method).await < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fewer than {n} calls of {method}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Station `wlan0` seeing the WPA2 network `home` (not hidden): the
    /// set-up most tests start from. The station's path.
    async fn station_with_home(&self) -> String {
        let st = self.add_station("wlan0", "02:00:00:00:00:10").await;
        self.add_network(&st, "home", "psk", "02:00:00:00:01:00", false)
            .await;
        st
    }

    async fn add_station(&self, name: &str, mac: &str) -> String {
        self.mock("AddStation", &(name, mac)).await
    }

    async fn add_network(&self, st: &str, ssid: &str, kind: &str, bssid: &str, hidden: bool) {
        let _: () = self
            .mock("AddNetwork", &(st, ssid, kind, -50i32, bssid, hidden))
            .await;
    }

    async fn backend(&self) -> Arc<IwdWifi> {
        self.backend_at(self.bus.address.clone()).await
    }

    /// The backend on the bus at `address` (a test restarting the bus
    /// gives [`Bus::stable_address`]).
    async fn backend_at(&self, address: String) -> Arc<IwdWifi> {
        IwdWifi::start(
            BusAddress::Address(address),
            IwdConfig {
                state_dir: None,
                scan_timeout: Duration::from_secs(3),
                connect_timeout: Duration::from_secs(4),
                known_network_wait: Duration::from_secs(2),
                call_timeout: Duration::from_secs(5),
                bss_cache: self.cache.clone(),
            },
        )
        .await
        .unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.state.path().join(name)
    }
}

async fn next_event(
    rx: &mut broadcast::Receiver<InterfaceEvent>,
    what: &str,
    pred: impl Fn(&InterfaceEvent) -> bool,
) -> InterfaceEvent {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} event within {WAIT:?}"))
}

async fn wait_interfaces(backend: &IwdWifi, n: usize) -> Vec<Arc<dyn WifiInterface>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ifaces = backend.interfaces();
        if ifaces.len() == n {
            return ifaces;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} interfaces, have {}",
            ifaces.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_gone(path: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still exists",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn psk_params(ssid_text: &str, passphrase: &str) -> (ConnectParams, Key) {
    let pmk = pmk_from_passphrase(passphrase, &ssid(ssid_text)).unwrap();
    (
        ConnectParams {
            ssid: ssid(ssid_text),
            bssid: None,
            security: Security::WPA2_PSK_CCMP,
            key: Some(pmk.duplicate()),
        },
        pmk,
    )
}

fn open_params(ssid_text: &str) -> ConnectParams {
    ConnectParams {
        ssid: ssid(ssid_text),
        bssid: None,
        security: Security::OPEN,
        key: None,
    }
}

#[tokio::test]
async fn stations_are_followed_through_restarts_and_leftovers_removed() {
    require_tools!();
    let mut env = Env::start().await;
    // A crash left a file of the proxy behind; the host has its own.
    std::fs::write(
        env.file("old.psk"),
        format!("{MARKER}\n[Security]\nPreSharedKey=00\n"),
    )
    .unwrap();
    std::fs::write(env.file("home.psk"), "[Security]\nPassphrase=hostsecret\n").unwrap();
    env.add_station("wlan0", "02:00:00:00:00:10").await;
    let backend = env.backend().await;
    assert!(backend.is_available().await);
    assert_eq!(backend.state_dir(), env.state.path(), "from Daemon.GetInfo");
    let ifaces = wait_interfaces(&backend, 1).await;
    assert_eq!(ifaces[0].name(), "wlan0");
    let id0 = ifaces[0].id();
    assert!(!env.file("old.psk").exists(), "leftover removed");
    assert!(env.file("home.psk").exists(), "host file kept");

    let mut events = backend.subscribe();
    let st1 = env.add_station("wlan1", "02:00:00:00:00:11").await;
    next_event(
        &mut events,
        "arrival",
        |e| matches!(e, InterfaceEvent::Arrived(i) if i.name() == "wlan1"),
    )
    .await;
    let _: () = env.mock("RemoveStation", &(st1.as_str(),)).await;
    next_event(&mut events, "removal", |e| {
        matches!(e, InterfaceEvent::Removed(_))
    })
    .await;
    wait_interfaces(&backend, 1).await;

    // iwd stops: the interface goes; iwd returns: it comes back, same id.
    env.stop_iwd().await;
    next_event(
        &mut events,
        "removal on iwd exit",
        |e| matches!(e, InterfaceEvent::Removed(id) if *id == id0),
    )
    .await;
    assert!(!backend.is_available().await);
    env.start_iwd().await;
    env.add_station("wlan0", "02:00:00:00:00:10").await;
    next_event(
        &mut events,
        "arrival after restart",
        |e| matches!(e, InterfaceEvent::Arrived(i) if i.id() == id0),
    )
    .await;
    backend.shutdown().await;
}

#[tokio::test]
async fn scans_answer_from_the_cache_and_publish_fresh_results() {
    require_tools!();
    let env = Env::start().await;
    let st = env.add_station("wlan0", "02:00:00:00:00:10").await;
    // The scan answers with what the cache holds; the host scan that it
    // starts finds one more network.
    env.cache.set_then(
        vec![
            home_bss(),
            bss("", "02:00:00:00:02:00", Security::WPA2_PSK_CCMP),
        ],
        vec![home_bss(), bss("cafe", "02:00:00:00:03:00", Security::OPEN)],
    );
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let mut events = backend.subscribe();

    let first = iface.scan(None).await.unwrap();
    assert!(first.complete);
    assert_eq!(first.bss.len(), 1, "the hidden BSS is not shown untargeted");
    assert_eq!(first.bss[0].ssid, ssid("home"));
    env.wait_calls(&st, "Scan", 1).await;
    let fresh = next_event(&mut events, "scan results", |e| {
        matches!(e, InterfaceEvent::ScanResults { .. })
    })
    .await;
    let InterfaceEvent::ScanResults { result, .. } = fresh else {
        unreachable!()
    };
    assert!(result.complete);
    assert_eq!(result.bss.len(), 2);

    // Nothing cached: "still scanning", the results follow as an event.
    env.cache.set_then(
        Vec::new(),
        vec![bss("cafe", "02:00:00:00:03:00", Security::OPEN)],
    );
    let empty = iface.scan(None).await.unwrap();
    assert!(!empty.complete && empty.bss.is_empty());
    let later = next_event(
        &mut events,
        "scan results after an empty answer",
        |e| matches!(e, InterfaceEvent::ScanResults { result, .. } if result.bss.len() == 1),
    )
    .await;
    assert!(matches!(later, InterfaceEvent::ScanResults { result, .. } if result.complete));

    // A targeted scan offers hidden BSSes under the requested SSID.
    env.cache
        .set(vec![bss("", "02:00:00:00:02:00", Security::WPA2_PSK_CCMP)]);
    let targeted = iface.scan(Some(&ssid("secret"))).await.unwrap();
    assert_eq!(targeted.bss.len(), 1);
    assert_eq!(targeted.bss[0].ssid, ssid("secret"));
    backend.shutdown().await;
}

/// A guest scan never waits for a host scan: one arriving while a host scan
/// runs is answered from the cache at once, starts no host scan of its own,
/// and the running scan's results follow as a notification.
#[tokio::test]
async fn a_scan_during_a_host_scan_is_answered_from_the_cache() {
    require_tools!();
    let env = Env::start().await;
    let st = env.station_with_home().await;
    // Long enough that both guest scans come while it runs (3 s bound).
    let _: () = env
        .mock("SetScanBehaviour", &(st.as_str(), "ok", 2000u32))
        .await;
    env.cache.set(vec![home_bss()]);
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let mut events = backend.subscribe();

    let first = iface.scan(None).await.unwrap();
    assert!(first.complete);
    assert_eq!(first.bss.len(), 1);
    env.wait_calls(&st, "Scan", 1).await;
    let second = iface.scan(None).await.unwrap();
    assert!(second.complete);
    assert_eq!(second.bss.len(), 1);
    // Answered before the host scan ended: its results are not out yet.
    assert!(
        !matches!(events.try_recv(), Ok(InterfaceEvent::ScanResults { .. })),
        "the second scan waited for the host scan"
    );
    let fresh = next_event(&mut events, "scan results", |e| {
        matches!(e, InterfaceEvent::ScanResults { .. })
    })
    .await;
    assert!(matches!(fresh, InterfaceEvent::ScanResults { result, .. } if result.complete));
    assert_eq!(env.calls(&st, "Scan").await, 1, "no second host scan");
    backend.shutdown().await;
}

#[tokio::test]
async fn a_guest_psk_connection_provisions_a_private_file_removed_on_disconnect() {
    require_tools!();
    let env = Env::start().await;
    let st = env.station_with_home().await;
    env.cache.set(vec![home_bss()]);
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let mut events = backend.subscribe();

    let (params, pmk) = psk_params("home", "guestpass");
    let joined = iface.connect(&params).await.unwrap();
    assert_eq!(joined.ssid, ssid("home"));
    assert_eq!(joined.bssid, mac("02:00:00:00:01:00"));
    assert_eq!(joined.security, Security::WPA2_PSK_CCMP);
    let file = env.file("home.psk");
    let content = std::fs::read_to_string(&file).unwrap();
    assert!(content.starts_with(MARKER));
    assert!(content.contains("AutoConnect=false"));
    assert!(content.contains(&format!("PreSharedKey={}", hex::encode(pmk.expose()))));
    assert!(!content.contains("Hidden"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    next_event(
        &mut events,
        "connected",
        |e| matches!(e, InterfaceEvent::Connected { network, .. } if network.ssid == ssid("home")),
    )
    .await;
    assert_eq!(
        iface.connected_network().await.unwrap().map(|n| n.bssid),
        Some(mac("02:00:00:00:01:00"))
    );

    iface.disconnect().await.unwrap();
    assert_eq!(env.calls(&st, "Disconnect").await, 1);
    assert!(!file.exists(), "the provisioning file goes with the guest");
    next_event(&mut events, "disconnected", |e| {
        matches!(e, InterfaceEvent::Disconnected { .. })
    })
    .await;
    // Disconnecting again is fine.
    iface.disconnect().await.unwrap();
    backend.shutdown().await;
}

#[tokio::test]
async fn a_refused_key_fails_and_leaves_nothing() {
    require_tools!();
    let env = Env::start().await;
    let st = env.station_with_home().await;
    let _: () = env
        .mock("SetConnectBehaviour", &(st.as_str(), "fail"))
        .await;
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let (params, _) = psk_params("home", "wrongpass");
    let e = iface.connect(&params).await.unwrap_err();
    assert!(matches!(&e, InterfaceError::JoinRefused(_)), "{e:?}");
    assert!(!env.file("home.psk").exists());
    // The right key next: iwd's network object asks an agent once after a
    // failed handshake (NoAgent, no agent here); the backend still joins.
    let _: () = env.mock("SetConnectBehaviour", &(st.as_str(), "ok")).await;
    let (params, _) = psk_params("home", "rightpass");
    let joined = iface.connect(&params).await.unwrap();
    assert_eq!(joined.ssid, ssid("home"));
    iface.disconnect().await.unwrap();
    // A network iwd does not see at all: not found, nothing left.
    let (params, _) = psk_params("nowhere", "whatever1");
    let e = iface.connect(&params).await.unwrap_err();
    assert!(matches!(e, InterfaceError::NotFound(_)), "{e:?}");
    assert!(!env.file("nowhere.psk").exists());
    backend.shutdown().await;
}

#[tokio::test]
async fn open_and_hidden_networks_are_joined_through_files() {
    require_tools!();
    let env = Env::start().await;
    let st = env.add_station("wlan0", "02:00:00:00:00:10").await;
    env.add_network(&st, "cafe", "open", "02:00:00:00:03:00", false)
        .await;
    env.add_network(&st, "secret", "psk", "02:00:00:00:02:00", true)
        .await;
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);

    let joined = iface.connect(&open_params("cafe")).await.unwrap();
    assert_eq!(joined.security, Security::OPEN, "from the network type");
    let content = std::fs::read_to_string(env.file("cafe.open")).unwrap();
    assert!(content.starts_with(MARKER) && !content.contains("[Security]"));

    // Hidden: the file says Hidden=true, a scan finds it, then it is joined.
    // The new connection replaces the earlier one and its file.
    let (params, _) = psk_params("secret", "hiddenpass");
    let joined = iface.connect(&params).await.unwrap();
    assert_eq!(joined.bssid, mac("02:00:00:00:02:00"));
    assert!(env.calls(&st, "Scan").await >= 1);
    let content = std::fs::read_to_string(env.file("secret.psk")).unwrap();
    assert!(content.contains("Hidden=true"));
    assert!(!env.file("cafe.open").exists());
    backend.shutdown().await;
    assert!(
        !env.file("secret.psk").exists(),
        "shutdown removes the files"
    );
    assert_eq!(env.calls(&st, "Disconnect").await, 1, "and disconnects");
}

#[tokio::test]
async fn the_hosts_own_known_network_is_never_modified() {
    require_tools!();
    let env = Env::start().await;
    let st = env.station_with_home().await;
    let host = "# the host's\n[Security]\nPassphrase=hostsecret\n";
    std::fs::write(env.file("home.psk"), host).unwrap();
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);

    let (wrong, _) = psk_params("home", "notthesame");
    let network = format!("{st}/{}_psk", hex::encode("home"));
    assert!(iface.connect(&wrong).await.is_err());
    assert_eq!(env.calls(&network, "Connect").await, 0);
    let (right, _) = psk_params("home", "hostsecret");
    iface.connect(&right).await.unwrap();
    assert_eq!(env.calls(&network, "Connect").await, 1);
    iface.disconnect().await.unwrap();
    backend.shutdown().await;
    assert_eq!(std::fs::read_to_string(env.file("home.psk")).unwrap(), host);
}

#[tokio::test]
async fn host_connections_and_signal_levels_are_mirrored() {
    require_tools!();
    let env = Env::start().await;
    let st = env.station_with_home().await;
    env.cache.set(vec![home_bss()]);
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let mut events = backend.subscribe();
    env.wait_calls(&st, "RegisterSignalLevelAgent", 1).await;

    let _: () = env.mock("HostConnect", &(st.as_str(), "home", "psk")).await;
    let e = next_event(&mut events, "connected", |e| {
        matches!(e, InterfaceEvent::Connected { .. })
    })
    .await;
    let InterfaceEvent::Connected { iface: id, network } = e else {
        unreachable!()
    };
    assert_eq!(id, iface.id());
    assert_eq!(network.bssid, mac("02:00:00:00:01:00"));

    let _: () = env.mock("EmitSignalLevel", &(st.as_str(), 3u8)).await;
    let e = next_event(&mut events, "signal", |e| {
        matches!(e, InterfaceEvent::SignalQuality { .. })
    })
    .await;
    assert!(
        matches!(e, InterfaceEvent::SignalQuality { percent: 60, .. }),
        "{e:?}"
    );

    let _: () = env.mock("LoseLink", &(st.as_str(),)).await;
    next_event(&mut events, "disconnected", |e| {
        matches!(e, InterfaceEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(iface.connected_network().await.unwrap(), None);
    // Nothing of the host was provisioned or removed.
    assert_eq!(std::fs::read_dir(env.state.path()).unwrap().count(), 0);
    backend.shutdown().await;
}

/// A link that drops before the backend has read what it connected to is
/// still reported as lost (a guest on it must hear of it).
#[tokio::test]
async fn a_link_lost_before_it_was_read_is_reported() {
    require_tools!();
    let env = Env::start().await;
    let st = env.station_with_home().await;
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let mut events = backend.subscribe();
    let _: () = env.mock("Flap", &(st.as_str(), "home", "psk")).await;
    next_event(
        &mut events,
        "disconnected",
        |e| matches!(e, InterfaceEvent::Disconnected { iface: i } if *i == iface.id()),
    )
    .await;
    backend.shutdown().await;
}

#[tokio::test]
async fn iwd_leaving_removes_the_guests_file() {
    require_tools!();
    let mut env = Env::start().await;
    env.station_with_home().await;
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let (params, _) = psk_params("home", "guestpass");
    iface.connect(&params).await.unwrap();
    assert!(env.file("home.psk").exists());
    env.stop_iwd().await;
    wait_gone(&env.file("home.psk")).await;
    assert!(matches!(
        iface.connect(&params).await,
        Err(InterfaceError::Gone)
    ));
    backend.shutdown().await;
}

#[tokio::test]
async fn a_lost_link_removes_the_guests_file() {
    require_tools!();
    let env = Env::start().await;
    let st = env.station_with_home().await;
    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let mut events = backend.subscribe();
    let (params, _) = psk_params("home", "guestpass");
    iface.connect(&params).await.unwrap();
    assert!(env.file("home.psk").exists());
    let _: () = env.mock("LoseLink", &(st.as_str(),)).await;
    next_event(&mut events, "disconnected", |e| {
        matches!(e, InterfaceEvent::Disconnected { .. })
    })
    .await;
    wait_gone(&env.file("home.psk")).await;
    backend.shutdown().await;
}

/// End to end: `proxy-wifi serve` with no backend picks iwd (no
/// NetworkManager on the bus), a guest connect provisions the file, and
/// SIGTERM disconnects and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_picks_iwd_and_cleans_up_on_sigterm() {
    use common::daemon::Daemon;
    use proxy_wifi::guest::ConnectSpec;

    require_tools!();
    let env = Env::start().await;
    let st = env.station_with_home().await;
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_proxy-wifi"));
    serve
        .args(["serve", "--tcp", "127.0.0.1", "--request-port", "0"])
        .arg("--iwd-state-dir")
        .arg(env.state.path())
        .arg("--control")
        .arg(dir.path().join("control.sock"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &env.bus.address);
    let daemon = Daemon::spawn(serve, dir.path()).await;
    let log = daemon.log();
    assert!(
        log.contains(
            "picked the iwd backend: iwd manages 1 Wi-Fi station(s), NetworkManager is not running"
        ),
        "{log}"
    );
    let guest = daemon.tcp_client("default").await;
    let spec = ConnectSpec::wpa2_passphrase(ssid("home"), "secretsecret").unwrap();
    let joined = guest.connect(&spec).await.unwrap();
    assert_eq!(joined.result_code, 0);
    assert_eq!(joined.bssid, mac("02:00:00:00:01:00"));
    let content = std::fs::read_to_string(env.file("home.psk")).unwrap();
    assert!(content.starts_with(MARKER));

    let (exit, log) = daemon.stop().await;
    assert!(exit.success(), "{log}");
    assert!(!env.file("home.psk").exists(), "SIGTERM removes the file");
    assert!(env.calls(&st, "Disconnect").await >= 1, "and disconnects");
}

/// The bus daemon restarts (every client loses its connection, and iwd goes
/// with it). The backend says so in its health, reconnects with backoff,
/// exports its signal level agent on the new connection and follows iwd
/// again; before, it logged "lost the D-Bus connection; no longer following
/// iwd" and stayed without interfaces, with no health to tell.
#[tokio::test]
async fn a_lost_bus_connection_is_made_again() {
    require_tools!();
    let mut env = Env::start().await;
    let st = env.station_with_home().await;
    let home = home_bss();
    env.cache.set(vec![home.clone()]);
    let backend = env.backend_at(env.bus.stable_address()).await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let id = iface.id();
    let mut health = backend.health();
    assert_eq!(*health.borrow_and_update(), BackendHealth::Up);
    env.wait_calls(&st, "RegisterSignalLevelAgent", 1).await;
    let (params, _) = psk_params("home", "guestpass");
    iface.connect(&params).await.unwrap();
    assert!(env.file("home.psk").exists());

    // The bus goes (iwd with it, as iwd exits when its bus does): nothing
    // of the guest's is left behind.
    env.bus.restart_daemon().await;
    env.stop_iwd().await;
    wait_health_lost(&mut health).await;
    wait_interfaces(&backend, 0).await;
    wait_gone(&env.file("home.psk")).await;

    // iwd on the new bus: followed again, same interface id.
    env.start_iwd().await;
    let st = env.station_with_home().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    assert_eq!(iface.id(), id);
    tokio::time::timeout(WAIT, health.wait_for(BackendHealth::is_up))
        .await
        .expect("healthy again")
        .unwrap();
    let result = iface.scan(None).await.unwrap();
    assert_eq!(result.bss, vec![home]);

    // The agent is on the new connection and registered with the new iwd:
    // its signal levels reach the guest again.
    env.wait_calls(&st, "RegisterSignalLevelAgent", 1).await;
    let mut events = backend.subscribe();
    let _: () = env.mock("HostConnect", &(st.as_str(), "home", "psk")).await;
    next_event(&mut events, "connected", |e| {
        matches!(e, InterfaceEvent::Connected { .. })
    })
    .await;
    let _: () = env.mock("EmitSignalLevel", &(st.as_str(), 0u8)).await;
    next_event(&mut events, "signal after the restart", |e| {
        matches!(e, InterfaceEvent::SignalQuality { percent: 100, .. })
    })
    .await;
    backend.shutdown().await;
}

/// iwd leaves while a guest is connected through it; the backend's
/// clean-up (a disconnect of the guest's station) must not make the bus
/// start iwd again where iwd is D-Bus activatable (seen in the VM test: a
/// second iwd). The bus here runs a marker script for iwd's name.
#[tokio::test]
async fn no_call_of_the_backend_starts_iwd() {
    require_tools!();
    let mut env = Env::start().await;
    env.station_with_home().await;
    let marker = env.bus.dir.path().join("activated");
    let script = env.bus.dir.path().join("activate.sh");
    std::fs::write(
        &script,
        // Fails, so the bus answers the call at once (a script that
        // exits 0 without taking the name makes it wait 25 s).
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        env.bus.service_dir().join(format!("{IWD}.service")),
        format!("[D-BUS Service]\nName={IWD}\nExec={}\n", script.display()),
    )
    .unwrap();
    let _: () = env
        .bus
        .conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "ReloadConfig",
            &(),
        )
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();

    let backend = env.backend().await;
    let iface = wait_interfaces(&backend, 1).await.remove(0);
    let (params, _) = psk_params("home", "guestpass");
    iface.connect(&params).await.unwrap();
    env.stop_iwd().await;
    // The backend disconnected the guest's station (which failed: iwd is
    // gone) and then removed the file.
    wait_gone(&env.file("home.psk")).await;
    assert!(
        !marker.exists(),
        "a call of the backend made the bus start iwd"
    );

    // The bus does start it for a call to its well-known name: the check
    // above could fail.
    let _ = env
        .bus
        .conn
        .call_method(
            Some(IWD),
            "/net/connman/iwd",
            Some("net.connman.iwd.Daemon"),
            "GetInfo",
            &(),
        )
        .await;
    assert!(marker.exists(), "the bus did not run the activation file");
    backend.shutdown().await;
}
