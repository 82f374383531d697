//! `proxy-wifi serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use proxy_wifi::daemon::config::MAX_THREADS;
use proxy_wifi::daemon::{
    check_connect_timeout, Daemon, DaemonConfig, DaemonError, GuestConfig, Overrides, PolicyConfig,
};
use proxy_wifi::protocol::{MacAddr, Ssid};
use proxy_wifi::transport::{self, SocketAccess, TransportConfig};
use proxy_wifi::wifi::BackendKind;

use tokio_util::sync::CancellationToken;

use super::transport_args::{LayoutArg, SocketAccessArgs, TransportArgs};

/// `--backend NAME`: any backend `wifi` knows, by its name.
fn backend_parser() -> impl clap::builder::TypedValueParser<Value = BackendKind> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(BackendKind::names())
        .try_map(|name| name.parse::<BackendKind>())
}

/// A fake network given as SSID=BSSID (the SSID is everything before the
/// last `=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNetworkArg {
    pub ssid: Ssid,
    pub bssid: MacAddr,
}

pub fn parse_fake_network(text: &str) -> Result<FakeNetworkArg, String> {
    let (ssid, bssid) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("'{text}' is not SSID=BSSID"))?;
    if ssid.is_empty() {
        return Err(format!("'{text}' has an empty SSID"));
    }
    let ssid = Ssid::new(ssid.as_bytes()).map_err(|e| e.to_string())?;
    let bssid: MacAddr = bssid.parse().map_err(|e| format!("{e}"))?;
    Ok(FakeNetworkArg { ssid, bssid })
}

/// The transport and per-guest flags: the single-VM shortcut, which
/// `--config` replaces.
const SINGLE_VM_FLAGS: [&str; 16] = [
    "tcp",
    "hybrid_vsock",
    "vsock_cid",
    "hyperv_vm_id",
    "simulated",
    "backend",
    "iwd_state_dir",
    "fake_networks",
    "scan_layout",
    "scan_min_latency_ms",
    "notify_host_disconnect",
    "notification_deadline_ms",
    "socket_owner",
    "socket_group",
    "socket_mode",
    "connect_timeout_ms",
];

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve the guests of this TOML file (see docs/daemon.md) instead of
    /// one guest described by flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = SINGLE_VM_FLAGS)]
    pub config: Option<PathBuf>,
    /// Check this configuration file and exit: 0 if it is valid, 78 with
    /// the error serve would print otherwise. Nothing is started (for
    /// ExecStartPre=, CI and configuration management).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = SINGLE_VM_FLAGS,
        conflicts_with_all = ["config", "control", "metrics"]
    )]
    pub check_config: Option<PathBuf>,
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Simulated mode (same as --backend simulated).
    #[arg(long, conflicts_with = "backend")]
    pub simulated: bool,
    /// Where the host's Wi-Fi comes from (default: the platform's:
    /// on Linux whichever of NetworkManager and iwd manages the Wi-Fi devices, wlanapi on Windows).
    #[arg(long, value_name = "NAME", value_parser = backend_parser())]
    pub backend: Option<BackendKind>,
    /// iwd's state directory, where the iwd backend writes its
    /// provisioning files (default: the one iwd reports).
    #[arg(long, value_name = "DIR")]
    pub iwd_state_dir: Option<PathBuf>,
    /// A fake network shown to the guest, always connected (repeatable).
    #[arg(long = "fake-network", value_name = "SSID=BSSID", value_parser = parse_fake_network)]
    pub fake_networks: Vec<FakeNetworkArg>,
    /// Control socket for `proxy-wifi ctl` (overrides $PROXY_WIFI_CONTROL,
    /// which overrides the file's). With --config and none of them: under
    /// systemd $RUNTIME_DIRECTORY/control.sock, else
    /// /run/proxy-wifi/control.sock for root, else
    /// $XDG_RUNTIME_DIR/proxy-wifi/control.sock. One VM from flags has none
    /// unless asked.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR:PORT at /metrics (overrides the
    /// file's).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// SCAN_RESPONSE layout of the guest driver.
    #[arg(long, value_enum, default_value = "current")]
    pub scan_layout: LayoutArg,
    /// Minimum time between a scan request and its reply (0: off).
    #[arg(long, value_name = "N", default_value_t = 150)]
    pub scan_min_latency_ms: u64,
    /// Tell the guest (NOTIF_DISCONNECTED) when the host leaves its network.
    #[arg(long)]
    pub notify_host_disconnect: bool,
    /// How long a notification the guest cannot take (a paused VM) is
    /// retried, from when it was produced (0: one attempt only).
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    pub notification_deadline_ms: u64,
    /// How long a guest-directed connect may take on one host interface,
    /// 1000 to 18000 (the guest waits 20 s for the whole connect).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Who may open the hybrid vsock request socket.
    #[command(flatten)]
    pub socket_access: SocketAccessArgs,
    /// Threads serving guests (overrides the file's `threads`). Default 1:
    /// every request is answered on the thread its socket wakes, the
    /// fastest for a request at a time; more only for guests that keep
    /// more than one CPU busy (BENCHMARKS.md).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=MAX_THREADS as i64))]
    pub threads: Option<u16>,
}

/// The runtime's thread count: `--threads`, else the file's `threads`,
/// else 1 (errors in the file are reported when `serve` loads it).
pub fn runtime_threads(args: &ServeArgs) -> usize {
    if let Some(n) = args.threads {
        return usize::from(n);
    }
    args.config
        .as_deref()
        .and_then(|path| DaemonConfig::load(path).ok())
        .and_then(|config| config.threads)
        .unwrap_or(1)
}

/// The log level a configuration file asks for, if it can be read (errors
/// are reported when `serve` loads it).
pub fn config_log_level(args: &ServeArgs) -> Option<String> {
    let path = args.config.as_deref()?;
    DaemonConfig::load(path).ok()?.log_level
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\nFor more information, try '--help'.");
    ExitCode::from(2)
}

/// EX_CONFIG: the unit file keeps systemd from restarting on it.
const EXIT_CONFIG: u8 = 78;

/// The single-VM flags as a one-guest configuration.
fn single_vm_config(args: &ServeArgs) -> Result<DaemonConfig, String> {
    let transport = args.transport.to_config()?;
    let resolve = |value: &Option<String>, flag: &str, f: fn(&str) -> Result<u32, String>| {
        value
            .as_deref()
            .map(|v| f(v).map_err(|e| format!("--{flag}: {e}")))
            .transpose()
    };
    let socket_access = SocketAccess {
        owner: resolve(
            &args.socket_access.socket_owner,
            "socket-owner",
            transport::resolve_user,
        )?,
        group: resolve(
            &args.socket_access.socket_group,
            "socket-group",
            transport::resolve_group,
        )?,
        mode: resolve(
            &args.socket_access.socket_mode,
            "socket-mode",
            transport::parse_socket_mode,
        )?,
    };
    if !socket_access.is_default() && !matches!(transport, TransportConfig::HybridVsock { .. }) {
        return Err(
            "--socket-owner, --socket-group and --socket-mode apply to --hybrid-vsock only".into(),
        );
    }
    let backend = match (args.simulated, args.backend) {
        (true, _) => BackendKind::Simulated,
        (false, Some(kind)) => kind,
        (false, None) => BackendKind::platform_default(),
    };
    Ok(DaemonConfig {
        backend,
        iwd_state_dir: args.iwd_state_dir.clone(),
        log_level: None,
        threads: args.threads.map(usize::from),
        control_socket: None,
        control_socket_access: Default::default(),
        metrics: None,
        simulated_networks: Vec::new(),
        guests: vec![GuestConfig {
            name: SINGLE_GUEST.into(),
            transport,
            scan_layout: args.scan_layout.into(),
            scan_min_latency: Some(Duration::from_millis(args.scan_min_latency_ms)),
            notify_host_disconnect: args.notify_host_disconnect,
            notification_deadline: Some(Duration::from_millis(args.notification_deadline_ms)),
            connect_timeout: Some(check_connect_timeout(args.connect_timeout_ms)?),
            fake_networks: args
                .fake_networks
                .iter()
                .map(|f| (f.ssid, f.bssid))
                .collect(),
            policy: PolicyConfig::default(),
            socket_access,
        }],
    })
}

/// The guest's name in single-VM mode (status, metrics, `ctl --guest`).
pub const SINGLE_GUEST: &str = "default";

/// `--check-config FILE`: the same loading and messages as `serve
/// --config FILE`, without starting anything.
fn check_config(path: &std::path::Path) -> ExitCode {
    match DaemonConfig::load(path) {
        Ok(config) => {
            println!(
                "{}: valid ({} guest{}, backend {})",
                path.display(),
                config.guests.len(),
                if config.guests.len() == 1 { "" } else { "s" },
                config.backend.name()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("proxy-wifi: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The control socket: `--control`, else $PROXY_WIFI_CONTROL, else the
/// file's, else (a daemon from a file only) the default place. One VM from
/// flags gets none unless asked: that is how tests and one-off runs start
/// it, several at once, and they would fight over one default path.
fn control_socket(args: &ServeArgs, config: &DaemonConfig) -> Option<PathBuf> {
    if let Some(path) = &args.control {
        return Some(path.clone());
    }
    if let Some(path) = std::env::var_os(proxy_wifi::control::CONTROL_ENV).filter(|v| !v.is_empty())
    {
        return Some(PathBuf::from(path));
    }
    if config.control_socket.is_some() || args.config.is_none() {
        return None;
    }
    let path = proxy_wifi::control::default_server_path();
    match &path {
        Some(p) => {
            if let Err(e) = proxy_wifi::control::create_parent(p) {
                // Binding will fail and say so, with the path.
                tracing::debug!("cannot create the directory of {}: {e}", p.display());
            }
        }
        None => tracing::warn!(
            "no control socket: no --control, {}, control_socket or XDG_RUNTIME_DIR",
            proxy_wifi::control::CONTROL_ENV
        ),
    }
    path
}

pub async fn run(args: ServeArgs) -> ExitCode {
    if let Some(path) = &args.check_config {
        return check_config(path);
    }
    let (config, path) = match &args.config {
        Some(path) => match DaemonConfig::load(path) {
            Ok(config) => (config, Some(path.clone())),
            Err(e) => {
                eprintln!("proxy-wifi: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => {
            if !args.transport.is_set() {
                return usage_error(
                    "a transport is required: --tcp ADDR, --hybrid-vsock PATH, --vsock-cid CID or --hyperv-vm-id GUID (or --config FILE)",
                );
            }
            match single_vm_config(&args) {
                Ok(c) => (c, None),
                Err(e) => return usage_error(&e),
            }
        }
    };
    let overrides = Overrides {
        control_socket: control_socket(&args, &config),
        metrics: args.metrics,
    };
    match Daemon::serve(config, path, overrides, CancellationToken::new()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy-wifi: {e}");
            // A fleet the descriptor limit cannot hold is a configuration
            // problem: restarting would fail the same way.
            match e {
                DaemonError::DescriptorLimit(_) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_network_ssid_is_everything_before_the_last_equals() {
        let f = parse_fake_network("a=b=c=aa:bb:cc:dd:ee:ff").unwrap();
        assert_eq!(f.ssid, Ssid::new(b"a=b=c").unwrap());
        assert_eq!(f.bssid, MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]));
        assert!(parse_fake_network("nobssid").is_err());
        assert!(parse_fake_network("=aa:bb:cc:dd:ee:ff").is_err());
        assert!(parse_fake_network("x=aa:bb").is_err());
        assert!(parse_fake_network(&format!("{}=aa:bb:cc:dd:ee:ff", "s".repeat(33))).is_err());
    }
}
