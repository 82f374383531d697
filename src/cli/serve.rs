//! `proxy-wifi serve`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use proxy_wifi::control::SimulatedControl;
use proxy_wifi::handler::HandlerSettings;
use proxy_wifi::protocol::{MacAddr, ScanLayout, Ssid};
use proxy_wifi::service::{Backend, Service};
use proxy_wifi::wifi::simulated::SimulatedWifi;

use super::transport_args::TransportArgs;

/// Where the host's Wi-Fi comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Three simulated networks; host events through `proxy-wifi ctl`.
    Simulated,
    /// The host's Wi-Fi through NetworkManager (Linux).
    Networkmanager,
    /// The host's Wi-Fi through WlanAPI (Windows).
    Wlanapi,
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Simulated => "simulated",
            BackendKind::Networkmanager => "networkmanager",
            BackendKind::Wlanapi => "wlanapi",
        }
    }

    fn platform_default() -> BackendKind {
        if cfg!(windows) {
            BackendKind::Wlanapi
        } else {
            BackendKind::Networkmanager
        }
    }
}

/// SCAN_RESPONSE layout the guest speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// 9-byte fixed part with scan_complete (current drivers).
    Current,
    /// 8-byte fixed part (kernel 5.10 WSA driver).
    Legacy,
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

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Simulated mode (same as --backend simulated).
    #[arg(long, conflicts_with = "backend")]
    pub simulated: bool,
    /// Where the host's Wi-Fi comes from (default: the platform's).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// A fake network shown to the guest, always connected (repeatable).
    #[arg(long = "fake-network", value_name = "SSID=BSSID", value_parser = parse_fake_network)]
    pub fake_networks: Vec<FakeNetworkArg>,
    /// Control socket for `proxy-wifi ctl`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// SCAN_RESPONSE layout of the guest driver.
    #[arg(long, value_enum, default_value = "current")]
    pub scan_layout: LayoutArg,
    /// Minimum time between a scan request and its reply (0: off).
    #[arg(long, value_name = "N", default_value_t = 150)]
    pub scan_min_latency_ms: u64,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\nFor more information, try '--help'.");
    ExitCode::from(2)
}

pub async fn run(args: ServeArgs) -> ExitCode {
    if !args.transport.is_set() {
        return usage_error(
            "a transport is required: --tcp ADDR, --hybrid-vsock PATH, --vsock-cid CID or --hyperv-vm-id GUID",
        );
    }
    let transport = match args.transport.to_config() {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    let kind = if args.simulated {
        BackendKind::Simulated
    } else {
        args.backend.unwrap_or_else(BackendKind::platform_default)
    };
    let backend = match kind {
        BackendKind::Simulated => Backend::Simulated(SimulatedWifi::reference()),
        other => {
            eprintln!(
                "proxy-wifi: the {} backend is not in this build (use --simulated)",
                other.name()
            );
            return ExitCode::FAILURE;
        }
    };
    let settings = HandlerSettings {
        scan_layout: match args.scan_layout {
            LayoutArg::Current => ScanLayout::Current,
            LayoutArg::Legacy => ScanLayout::Legacy,
        },
        scan_min_latency: Duration::from_millis(args.scan_min_latency_ms),
        ..HandlerSettings::default()
    };
    let mut builder = Service::builder(transport, backend).settings(settings);
    if !args.fake_networks.is_empty() {
        let list: Vec<(Ssid, MacAddr)> = args
            .fake_networks
            .iter()
            .map(|f| (f.ssid, f.bssid))
            .collect();
        for (ssid, bssid) in &list {
            tracing::info!(%ssid, %bssid, "fake network");
        }
        builder = builder.fake_networks(move || list.clone());
    }
    let service = builder.build();
    tracing::info!(backend = kind.name(), transport = %service.transport(), "starting");
    if let Err(e) = service.start().await {
        eprintln!("proxy-wifi: {e}");
        return ExitCode::FAILURE;
    }

    #[cfg(unix)]
    let control = match &args.control {
        Some(path) => {
            let handler = Arc::new(SimulatedControl::new(service.simulated().cloned()));
            match proxy_wifi::control::ControlServer::bind(path, handler).await {
                Ok(server) => Some(server),
                Err(e) => {
                    eprintln!("proxy-wifi: {e}");
                    service.stop().await;
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    #[cfg(not(unix))]
    if args.control.is_some() {
        let _ = Arc::new(SimulatedControl::new(None));
        eprintln!("proxy-wifi: --control is not available on this platform");
        service.stop().await;
        return ExitCode::FAILURE;
    }

    shutdown_signal().await;
    tracing::info!("shutting down");
    #[cfg(unix)]
    if let Some(control) = control {
        control.stop().await;
    }
    service.stop().await;
    ExitCode::SUCCESS
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
