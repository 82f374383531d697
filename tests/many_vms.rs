//! Many VMs on one host (issue 16), end to end with the real binary:
//! vsock guests sharing one listener per port (2 and 100 of them), guests
//! added and removed over `ctl` for each transport while another guest keeps
//! its session, a hybrid socket handed to a non-root user whose guest then
//! works, the default control socket, and the libvirt hook on fixture XML.
//!
//! This machine has no vsock loopback, so no vsock guest exchanges a
//! message here (the routing by peer CID is unit-tested in
//! `transport::vsock` through a test double of the accepted connection's
//! peer); binding AF_VSOCK is real. Where AF_VSOCK cannot even be bound, or
//! a part needs root, that part prints `SKIPPED:` with the reason.

#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use proxy_wifi::daemon::GuestStatus;
use proxy_wifi::guest::{ConnectSpec, GuestClient};
use proxy_wifi::protocol::Ssid;
use proxy_wifi::transport::TransportConfig;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_proxy-wifi");
/// Generous: several builds and VMs share two cores while this runs.
const WAIT: Duration = Duration::from_secs(60);
const HOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/libvirt/qemu");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/libvirt");

/// A vsock request port no other test (or test run) uses: vsock ports are
/// host-wide.
/// Ports 30000-39999: below the lib tests' 40000-59999 (another process).
fn vsock_port(slot: u32) -> u32 {
    30_000 + (std::process::id() % 2_500) * 4 + slot
}

/// Whether this machine can bind AF_VSOCK at all.
fn vsock_available() -> Result<(), String> {
    // SAFETY: plain socket(2)/close(2) on a descriptor owned here.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(format!(
            "AF_VSOCK is unavailable here ({})",
            std::io::Error::last_os_error()
        ));
    }
    unsafe { libc::close(fd) };
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The common daemon, driven by `ctl` with no `--control`.
struct Daemon {
    inner: common::daemon::Daemon,
    control: PathBuf,
}

impl Daemon {
    /// Starts `serve --config` on `config` with `RUNTIME_DIRECTORY=dir`
    /// (as systemd's RuntimeDirectory= would) and no control socket named
    /// anywhere: the default place must be used.
    async fn start(dir: &Path, config: &str) -> Result<Daemon, String> {
        let path = dir.join("config.toml");
        std::fs::write(&path, config).unwrap();
        let mut serve = Command::new(BIN);
        serve
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUNTIME_DIRECTORY", dir)
            .env_remove("PROXY_WIFI_CONTROL");
        let inner = common::daemon::Daemon::try_spawn(serve, dir, WAIT).await?;
        let control = inner.control.clone();
        Ok(Daemon { inner, control })
    }

    fn log(&self) -> String {
        self.inner.log()
    }

    /// `ctl` with no --control: PROXY_WIFI_CONTROL names the socket.
    async fn ctl(&self, args: &[&str]) -> Output {
        tokio::time::timeout(
            WAIT,
            Command::new(BIN)
                .arg("ctl")
                .args(args)
                .env("PROXY_WIFI_CONTROL", &self.control)
                .output(),
        )
        .await
        .expect("ctl hung")
        .unwrap()
    }

    async fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args).await;
        assert!(
            out.status.success(),
            "ctl {args:?}: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctl` that must fail with exit 1; returns its message.
    async fn ctl_refused(&self, args: &[&str]) -> String {
        let out = self.ctl(args).await;
        assert_eq!(out.status.code(), Some(1), "ctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    async fn status(&self) -> Vec<GuestStatus> {
        serde_json::from_str(&self.ctl_ok(&["status", "--json"]).await).unwrap()
    }

    async fn guest(&self, name: &str) -> Option<GuestStatus> {
        self.status().await.into_iter().find(|g| g.name == name)
    }

    async fn stop(self) {
        let (status, log) = self.inner.stop().await;
        assert!(status.success(), "{status}\n{log}");
    }
}

fn vsock_guests(cids: impl Iterator<Item = u32>, port: u32) -> String {
    cids.map(|cid| {
        format!("[[guest]]\nname = \"vm{cid}\"\nvsock_cid = {cid}\nrequest_port = {port}\n")
    })
    .collect()
}

async fn vsock_fleet(n: u32) {
    if let Err(why) = vsock_available() {
        println!("SKIPPED: {n} vsock guests: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Slot 3 is guests_come_and_go_over_ctl_...: tests of one binary run at once.
    let port = vsock_port(if n <= 2 { 1 } else { 2 });
    let config = format!("backend = \"simulated\"\n{}", vsock_guests(3..3 + n, port));
    let daemon = match Daemon::start(dir.path(), &config).await {
        Ok(d) => d,
        Err(log) if log.contains("AF_VSOCK is unavailable") => {
            println!("SKIPPED: {n} vsock guests: {log}");
            return;
        }
        Err(log) => panic!("{log}"),
    };
    let status = daemon.status().await;
    assert_eq!(status.len(), n as usize);
    for (g, cid) in status.iter().zip(3..) {
        assert_eq!(g.name, format!("vm{cid}"));
        let at = g.listening.as_deref().unwrap_or_default();
        assert!(
            at.contains(&format!(":{port}")) && at.ends_with(&format!("(from CID {cid})")),
            "{g:?}"
        );
        assert!(!g.runtime);
    }
    // One listener for them all.
    assert_eq!(
        daemon.log().matches("vsock listener on").count(),
        1,
        "{}",
        daemon.log()
    );
    let table = daemon.ctl_ok(&["status"]).await;
    // A header, a line per guest, then the backend's health line.
    assert_eq!(table.lines().count(), n as usize + 2, "{table}");
    assert!(table.ends_with("backend: simulated up\n"), "{table}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vsock_guests_share_one_listener() {
    vsock_fleet(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_vsock_guests_share_one_listener() {
    vsock_fleet(100).await;
}

#[tokio::test]
async fn two_guests_with_one_cid_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "backend = \"simulated\"\n[[guest]]\nname = \"a\"\nvsock_cid = 3\n[[guest]]\nname = \"b\"\nvsock_cid = 3\nrequest_port = 5000\n",
    )
    .unwrap();
    for mode in ["--check-config", "--config"] {
        let out = Command::new(BIN)
            .args(["serve", mode])
            .arg(&path)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{mode}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("config.toml:5:") && err.contains("vsock cid 3 is already used"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn socket_flags_of_one_vm_are_checked() {
    for (args, message) in [
        (
            &["--tcp", "127.0.0.1", "--socket-mode", "0660"][..],
            "apply to --hybrid-vsock only",
        ),
        (
            &[
                "--hybrid-vsock",
                "/tmp/pw-none.vsock",
                "--socket-mode",
                "0999",
            ],
            "--socket-mode",
        ),
        (
            &[
                "--hybrid-vsock",
                "/tmp/pw-none.vsock",
                "--socket-owner",
                "no-such-user-pw",
            ],
            "no user named 'no-such-user-pw'",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--simulated"])
            .args(args)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

fn ssid(s: &str) -> Ssid {
    Ssid::new(s.as_bytes()).unwrap()
}

fn tcp_port(g: &GuestStatus) -> u16 {
    g.listening
        .as_deref()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no TCP port in {g:?}"))
}

fn tcp_client(port: u16) -> GuestClient {
    GuestClient::new(&TransportConfig::Tcp {
        address: "127.0.0.1".parse().unwrap(),
        request_port: port,
        notification_port: 9,
    })
    .unwrap()
}

fn hybrid_client(path: &Path) -> GuestClient {
    GuestClient::new(&TransportConfig::HybridVsock {
        path: path.to_path_buf(),
        request_port: 12345,
        notification_port: 12346,
    })
    .unwrap()
}

async fn scan_count(client: &GuestClient) -> usize {
    tokio::time::timeout(WAIT, client.scan(None))
        .await
        .expect("scan hung")
        .expect("scan answered")
        .bss
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_come_and_go_over_ctl_while_others_keep_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let config = "backend = \"simulated\"\n[[guest]]\nname = \"keep\"\ntcp = \"127.0.0.1\"\nrequest_port = 0\nscan_min_latency_ms = 0\n";
    let daemon = Daemon::start(dir.path(), config).await.unwrap();
    // The default control socket, found by ctl with no flag.
    assert!(dir.path().join("control.sock").exists());

    let keep = tcp_client(tcp_port(&daemon.guest("keep").await.unwrap()));
    let joined = keep.connect(&ConnectSpec::open(ssid("FakeOpen"))).await;
    let joined = joined.expect("keep connects");
    assert_eq!(joined.result_code, 0);
    let keep_session = daemon.guest("keep").await.unwrap().session_id;
    assert_eq!(keep_session, joined.session_id);

    // TCP.
    let out = daemon
        .ctl_ok(&[
            "add-guest",
            "t1",
            "--tcp",
            "127.0.0.1",
            "--request-port",
            "0",
            "--scan-min-latency-ms",
            "0",
        ])
        .await;
    assert!(
        out.contains("not written to the configuration file"),
        "{out}"
    );
    let t1 = daemon.guest("t1").await.unwrap();
    assert!(t1.runtime);
    assert!(scan_count(&tcp_client(tcp_port(&t1))).await > 0);

    // Hybrid vsock.
    let uds = dir.path().join("h1.vsock");
    daemon
        .ctl_ok(&[
            "add-guest",
            "h1",
            "--hybrid-vsock",
            uds.to_str().unwrap(),
            "--scan-min-latency-ms",
            "0",
        ])
        .await;
    let socket = dir.path().join("h1.vsock_12345");
    assert!(socket.exists());
    assert!(scan_count(&hybrid_client(&uds)).await > 0);

    // AF_VSOCK (bound for real, no traffic: no loopback here).
    let port = vsock_port(3).to_string();
    let vsock_added = match vsock_available() {
        Ok(()) => {
            daemon
                .ctl_ok(&[
                    "add-guest",
                    "v1",
                    "--vsock-cid",
                    "42",
                    "--request-port",
                    &port,
                ])
                .await;
            let v1 = daemon.guest("v1").await.unwrap();
            assert!(
                v1.listening.as_deref().unwrap().ends_with("(from CID 42)"),
                "{v1:?}"
            );
            let err = daemon
                .ctl_refused(&["add-guest", "v2", "--vsock-cid", "42"])
                .await;
            assert!(
                err.contains("vsock cid 42 is already used by guest 'v1'"),
                "{err}"
            );
            true
        }
        Err(why) => {
            println!("SKIPPED: the vsock part of add-guest: {why}");
            false
        }
    };

    // Checked like the file.
    let err = daemon
        .ctl_refused(&["add-guest", "bad", "--vsock-cid", "2"])
        .await;
    assert!(err.contains("not a guest CID"), "{err}");
    let err = daemon
        .ctl_refused(&[
            "add-guest",
            "keep",
            "--tcp",
            "127.0.0.1",
            "--request-port",
            "0",
        ])
        .await;
    assert!(err.contains("exists already"), "{err}");
    let err = daemon
        .ctl_refused(&[
            "add-guest",
            "t2",
            "--tcp",
            "127.0.0.1",
            "--socket-mode",
            "0660",
        ])
        .await;
    assert!(err.contains("only a hybrid_vsock guest"), "{err}");
    let out = daemon.ctl(&["add-guest", "t3"]).await;
    assert_eq!(out.status.code(), Some(2), "no transport is a usage error");

    // A reload of the unchanged file leaves run-time guests alone.
    let reload = daemon.ctl_ok(&["reload"]).await;
    assert!(reload.contains("unchanged: keep"), "{reload}");
    assert!(reload.contains("removed: -"), "{reload}");
    let names: Vec<String> = daemon.status().await.into_iter().map(|g| g.name).collect();
    let mut expected = vec!["keep", "t1", "h1"];
    if vsock_added {
        expected.push("v1");
    }
    assert_eq!(names, expected);

    // Removed one by one; keep's session is untouched throughout.
    for name in expected.iter().skip(1) {
        daemon.ctl_ok(&["remove-guest", name]).await;
        assert!(daemon.guest(name).await.is_none());
        let k = daemon.guest("keep").await.unwrap();
        assert_eq!(k.session_id, keep_session);
        assert_eq!(k.connected_ssid.as_deref(), Some("FakeOpen"));
    }
    assert!(
        !socket.exists(),
        "the hybrid socket is removed with its guest"
    );
    let err = daemon.ctl_refused(&["remove-guest", "t1"]).await;
    assert!(err.contains("no guest named"), "{err}");
    assert!(scan_count(&keep).await > 0);
    daemon.stop().await;
}

/// The user a VMM would run as under Firecracker's jailer: created here
/// (idempotently) when running as root.
const VMM_USER: &str = "proxy-wifi-test-vmm";

fn ensure_user(name: &str) -> Result<(u32, u32), String> {
    let lookup = || nix::unistd::User::from_name(name).ok().flatten();
    if lookup().is_none() {
        let out = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .map_err(|e| format!("cannot run useradd: {e}"))?;
        // Another test run may have created it meanwhile (exit 9).
        if !out.status.success() && lookup().is_none() {
            return Err(format!(
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let user = lookup().ok_or_else(|| format!("no user {name} after useradd"))?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_socket_handed_to_a_non_root_user_serves_that_users_vmm() {
    if !is_root() {
        println!("SKIPPED: handing a socket to another user needs root (CAP_CHOWN)");
        return;
    }
    let (uid, gid) = match ensure_user(VMM_USER) {
        Ok(ids) => ids,
        Err(why) => {
            println!("SKIPPED: cannot create the test user: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // The VMM's directory: the VMM user must reach the socket in it.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let uds = dir.path().join("fc.vsock");
    let config = format!(
        "backend = \"simulated\"\ncontrol_socket_group = \"{gid}\"\ncontrol_socket_mode = \"0660\"\n[[guest]]\nname = \"fc\"\nhybrid_vsock = \"{}\"\nsocket_owner = \"{VMM_USER}\"\nscan_min_latency_ms = 0\n",
        uds.display()
    );
    let daemon = Daemon::start(dir.path(), &config).await.unwrap();
    let socket = dir.path().join("fc.vsock_12345");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o600));
    let control = std::fs::symlink_metadata(dir.path().join("control.sock")).unwrap();
    assert_eq!((control.gid(), control.mode() & 0o777), (gid, 0o660));

    // The VMM's user reaches the guest's service: a scan as that user.
    let scan_as = |uid: u32, gid: u32| {
        let mut cmd = Command::new(BIN);
        cmd.args(["guest", "--hybrid-vsock"])
            .arg(&uds)
            .args(["scan", "--json"])
            .uid(uid)
            .gid(gid);
        cmd
    };
    let out = tokio::time::timeout(WAIT, scan_as(uid, gid).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "scan as {VMM_USER}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FakeOpen"));
    assert_eq!(daemon.guest("fc").await.unwrap().requests, 1);

    // Anyone else is refused by the file's permissions.
    let out = tokio::time::timeout(WAIT, scan_as(65534, 65534).output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success(), "nobody must not reach it: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(daemon.guest("fc").await.unwrap().requests, 1);
    daemon.stop().await;
}

/// Runs the libvirt hook as libvirt does: domain name and operation as
/// arguments, the domain XML on stdin.
async fn hook(daemon_control: &Path, fixture: &str, domain: &str, operation: &str) -> Output {
    let xml = std::fs::read(Path::new(FIXTURES).join(fixture)).unwrap();
    let mut child = Command::new("sh")
        .arg(HOOK)
        .args([domain, operation, "begin", "-"])
        .env("PROXY_WIFI", BIN)
        .env("PROXY_WIFI_CONTROL", daemon_control)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&xml).await.unwrap();
    drop(stdin);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("hook hung")
        .unwrap()
}

fn cid_of(g: &GuestStatus) -> u32 {
    g.transport
        .split_whitespace()
        .nth(2)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no CID in {g:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_libvirt_hook_adds_and_removes_vsock_guests_from_domain_xml() {
    if let Err(why) = vsock_available() {
        println!("SKIPPED: libvirt hook: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "backend = \"simulated\"\n")
        .await
        .unwrap();
    let control = daemon.control.clone();

    // libvirt's own layout, a CID assigned at boot, a name to clean up.
    let out = hook(&control, "auto-cid.xml", "web 1/ü", "started").await;
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let g = daemon.guest("libvirt-web_1___").await.expect("guest added");
    assert_eq!(cid_of(&g), 41);
    assert!(g.runtime);
    // Attributes in another order, double quotes, line breaks.
    let out = hook(&control, "fixed-cid-reordered.xml", "ci-7", "started").await;
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(cid_of(&daemon.guest("libvirt-ci-7").await.unwrap()), 7);
    // libvirtd restarted with the VM running: already there, quietly.
    let out = hook(&control, "fixed-cid-reordered.xml", "ci-7", "reconnect").await;
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    // No vsock device: nothing to do, at start or stop.
    let out = hook(&control, "no-vsock.xml", "plain", "started").await;
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let out = hook(&control, "no-vsock.xml", "plain", "stopped").await;
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    // Other operations are ignored.
    let out = hook(&control, "auto-cid.xml", "web 1/ü", "prepare").await;
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(daemon.status().await.len(), 2);

    let out = hook(&control, "auto-cid.xml", "web 1/ü", "stopped").await;
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let names: Vec<String> = daemon.status().await.into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["libvirt-ci-7"]);

    // A failure is reported on stderr (libvirt's log) without failing the
    // VM: the same CID again under another name.
    let out = hook(&control, "fixed-cid-reordered.xml", "ci-7-clone", "started").await;
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vsock cid 7 is already used"), "{err}");
    daemon.stop().await;
}
