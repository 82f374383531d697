//! `proxy-wifi ctl`: sends one command to a running service's control socket.
//!
//! Exit codes: 0 done; 1 refused or unreachable; 3 sent but no answer in
//! time, so the outcome is unknown (the command may still take effect);
//! 4 `signal` or `scan-results` was applied to the host but no guest can
//! receive its notification (none connected, none has made a request yet,
//! or only legacy-layout guests for scan results).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use proxy_wifi::control::{ControlCommand, ControlError, ControlRequest, ControlResponse};
use proxy_wifi::daemon::config::FakeNetworkSpec;
use proxy_wifi::daemon::{GuestSpec, GuestStatus, PolicyConfig, ReloadSummary};
use proxy_wifi::wifi::simulated::ScanMode;

use super::transport_args::SocketAccessArgs;

/// The request went out but no answer came: it may still take effect.
const EXIT_OUTCOME_UNKNOWN: u8 = 3;
/// The host event happened, but no guest can receive its notification.
const EXIT_NO_RECIPIENT: u8 = 4;

/// How long `reload` may take: removed guests finish their requests first.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The service's control socket (`serve --control PATH` or
    /// `control_socket` in the configuration). Default: $PROXY_WIFI_CONTROL,
    /// else your own service's ($XDG_RUNTIME_DIR/proxy-wifi/control.sock)
    /// if it runs, else the system service's (/run/proxy-wifi/control.sock).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Which guest to act on. Simulated host events affect the one shared
    /// simulated host (every guest sees them); the name is checked. With
    /// `status`: only that guest.
    #[arg(long, value_name = "NAME")]
    pub guest: Option<String>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanModeArg {
    Sync,
    Async,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The simulated host connects to a network.
    HostConnect {
        /// The network's SSID, one of the simulated networks (`scan` lists
        /// them).
        ssid: String,
    },
    /// The simulated host disconnects.
    HostDisconnect,
    /// The link quality of the host's connection changes; a connected
    /// guest gets NOTIF_SIGNAL_QUALITY.
    Signal {
        /// Link quality, 0 to 100; the guest gets percent / 2 - 100 dBm
        /// (80 is -60 dBm).
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
    },
    /// A host scan nobody waited for delivers every network.
    ScanResults,
    /// Scans answer at once (sync) or with the first network and the rest later (async).
    ScanMode {
        /// sync: every network in the reply; async: the first in the reply,
        /// the rest as a notification.
        #[arg(value_enum)]
        mode: ScanModeArg,
    },
    /// Per guest: transport, connection, session id, counters.
    Status {
        /// JSON (a list of guests) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the configuration file: add, remove and restart guests.
    /// Guests added with add-guest stay unless the file names them.
    Reload,
    /// Add a guest to the running service, checked as a [[guest]] table
    /// is. It lives until remove-guest or a restart of the service: it is
    /// not written to the configuration file.
    AddGuest(Box<AddGuestArgs>),
    /// Stop and remove a guest (a guest of the file comes back at the next
    /// reload).
    RemoveGuest {
        /// The guest's name.
        name: String,
    },
}

/// A guest for `add-guest`: the keys of a `[[guest]]` table as flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("guest_transport").required(true).multiple(false)))]
pub struct AddGuestArgs {
    /// The guest's name (1 to 64 of A-Z a-z 0-9 - _ .).
    pub name: String,
    /// AF_VSOCK: the guest's CID.
    #[arg(long, value_name = "CID", group = "guest_transport")]
    pub vsock_cid: Option<u32>,
    /// Hybrid vsock: the VMM's vsock Unix socket.
    #[arg(long, value_name = "PATH", group = "guest_transport")]
    pub hybrid_vsock: Option<PathBuf>,
    /// TCP: the address to listen on.
    #[arg(long, value_name = "ADDR", group = "guest_transport")]
    pub tcp: Option<String>,
    /// Hyper-V: the VM id (Windows hosts).
    #[arg(long, value_name = "GUID", group = "guest_transport")]
    pub hyperv_vm_id: Option<String>,
    /// Port the guest sends requests to (default 12345).
    #[arg(long, value_name = "PORT")]
    pub request_port: Option<u32>,
    /// Port the guest listens on for notifications (default 12346).
    #[arg(long, value_name = "PORT")]
    pub notification_port: Option<u32>,
    /// SCAN_RESPONSE layout of the guest driver: current or legacy.
    #[arg(long, value_name = "LAYOUT")]
    pub scan_layout: Option<String>,
    /// Minimum time between a scan request and its reply (default 150).
    #[arg(long, value_name = "N")]
    pub scan_min_latency_ms: Option<u64>,
    /// Tell the guest when the host leaves its network.
    #[arg(long)]
    pub notify_host_disconnect: bool,
    /// How long an undeliverable notification is retried (default 60000).
    #[arg(long, value_name = "N")]
    pub notification_deadline_ms: Option<u64>,
    /// How long a guest-directed connect may take on one host interface,
    /// 1000 to 18000 (default 10000).
    #[arg(long, value_name = "N")]
    pub connect_timeout_ms: Option<u64>,
    /// A fake network shown to the guest, always connected (repeatable).
    #[arg(long = "fake-network", value_name = "SSID=BSSID")]
    pub fake_networks: Vec<String>,
    /// Policy: the guest may only mirror the host's connections.
    #[arg(long)]
    pub mirror_only: bool,
    /// Policy: only these SSIDs may be joined (repeatable).
    #[arg(long = "allow-ssid", value_name = "SSID")]
    pub allow_ssids: Vec<String>,
    /// Policy: these SSIDs may never be joined (repeatable).
    #[arg(long = "deny-ssid", value_name = "SSID")]
    pub deny_ssids: Vec<String>,
    /// Who may open the hybrid vsock request socket.
    #[command(flatten)]
    pub socket_access: SocketAccessArgs,
}

impl AddGuestArgs {
    /// The guest as the daemon checks it.
    pub fn spec(&self) -> Result<GuestSpec, String> {
        let mut fake_network = Vec::new();
        for f in &self.fake_networks {
            let (ssid, bssid) = f
                .rsplit_once('=')
                .ok_or_else(|| format!("--fake-network '{f}' is not SSID=BSSID"))?;
            fake_network.push(FakeNetworkSpec {
                ssid: ssid.to_string(),
                bssid: bssid.to_string(),
            });
        }
        let policy = PolicyConfig {
            guest_directed: !self.mirror_only,
            allow_ssids: (!self.allow_ssids.is_empty()).then(|| self.allow_ssids.clone()),
            deny_ssids: self.deny_ssids.clone(),
        };
        Ok(GuestSpec {
            name: self.name.clone(),
            tcp: self.tcp.clone(),
            vsock_cid: self.vsock_cid,
            hybrid_vsock: self.hybrid_vsock.clone(),
            hyperv_vm_id: self.hyperv_vm_id.clone(),
            request_port: self.request_port,
            notification_port: self.notification_port,
            scan_layout: self.scan_layout.clone(),
            scan_min_latency_ms: self.scan_min_latency_ms,
            notify_host_disconnect: self.notify_host_disconnect,
            notification_deadline_ms: self.notification_deadline_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            fake_network,
            policy: (policy != PolicyConfig::default()).then_some(policy),
            socket_owner: self.socket_access.socket_owner.clone(),
            socket_group: self.socket_access.socket_group.clone(),
            socket_mode: self.socket_access.socket_mode.clone(),
        })
    }
}

fn cell(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

/// The status table, one guest per line.
pub fn status_table(guests: &[GuestStatus]) -> String {
    let header = [
        "GUEST",
        "LISTENING",
        "SSID",
        "CONNECTION",
        "SESSION",
        "REQUESTS",
        "INVALID",
        "NOTIF-SENT",
        "NOTIF-DROPPED",
    ];
    let rows: Vec<Vec<String>> = guests
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.listening.clone().unwrap_or_else(|| g.transport.clone()),
                cell(&g.connected_ssid).to_string(),
                cell(&g.connection).to_string(),
                g.session_id.to_string(),
                g.requests.to_string(),
                g.invalid_requests.to_string(),
                g.notifications_sent.to_string(),
                g.notifications_dropped.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                let pad = widths[i] - c.chars().count();
                out.push_str(c);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn print_answer(command: &CtlCommand, response: &ControlResponse) -> Result<(), String> {
    let data = response.data.clone().unwrap_or(serde_json::Value::Null);
    match command {
        CtlCommand::Status { json: true } => {
            let text = serde_json::to_string_pretty(&data).map_err(|e| e.to_string())?;
            println!("{text}");
        }
        CtlCommand::Status { json: false } => {
            let guests: Vec<GuestStatus> = serde_json::from_value(data)
                .map_err(|e| format!("unreadable status from the service: {e}"))?;
            print!("{}", status_table(&guests));
            // Below the table, which scripts may read from its header on.
            if let Some(g) = guests.first().filter(|g| !g.backend.kind.is_empty()) {
                println!("backend: {} {}", g.backend.kind, g.backend.detail);
            }
        }
        CtlCommand::Reload => {
            let s: ReloadSummary = serde_json::from_value(data)
                .map_err(|e| format!("unreadable reload summary from the service: {e}"))?;
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(", ")
                }
            };
            println!("added: {}", list(&s.added));
            println!("removed: {}", list(&s.removed));
            println!("restarted: {}", list(&s.restarted));
            println!("unchanged: {}", list(&s.unchanged));
        }
        CtlCommand::AddGuest(_) => {
            let g: GuestStatus = serde_json::from_value(data)
                .map_err(|e| format!("unreadable answer from the service: {e}"))?;
            println!(
                "added {} ({}), listening on {}; run time only: not written to the configuration file",
                g.name,
                g.transport,
                g.listening.as_deref().unwrap_or("-")
            );
        }
        CtlCommand::RemoveGuest { name } => println!("removed {name}"),
        _ => {}
    }
    Ok(())
}

/// For `signal` and `scan-results`: why no guest gets the notification,
/// when the service says none can (its answer lists the recipients; an
/// answer without the list, from an older service, says nothing).
fn nobody_notified(command: &CtlCommand, response: &ControlResponse) -> Option<&'static str> {
    let recipients = response.data.as_ref()?.get("recipients")?.as_array()?;
    if !recipients.is_empty() {
        return None;
    }
    match command {
        CtlCommand::Signal { .. } => Some(
            "no guest can receive the signal change: none is connected through the host's \
             Wi-Fi (or none has made a request since it started)",
        ),
        CtlCommand::ScanResults => Some(
            "no guest can receive the scan results: none has made a request since it started \
             (or every one uses the legacy scan layout, which drops scan notifications)",
        ),
        _ => None,
    }
}

pub async fn run(args: CtlArgs) -> ExitCode {
    let command = match &args.command {
        CtlCommand::HostConnect { ssid } => ControlCommand::HostConnect { ssid: ssid.clone() },
        CtlCommand::HostDisconnect => ControlCommand::HostDisconnect,
        CtlCommand::Signal { percent } => ControlCommand::Signal { percent: *percent },
        CtlCommand::ScanResults => ControlCommand::ScanResults,
        CtlCommand::ScanMode { mode } => ControlCommand::ScanMode {
            mode: match mode {
                ScanModeArg::Sync => ScanMode::Sync,
                ScanModeArg::Async => ScanMode::Async,
            },
        },
        CtlCommand::Status { .. } => ControlCommand::Status,
        CtlCommand::Reload => ControlCommand::Reload,
        CtlCommand::AddGuest(add) => match add.spec() {
            Ok(spec) => ControlCommand::AddGuest {
                spec: Box::new(spec),
            },
            Err(e) => {
                eprintln!("error: {e}\n\nFor more information, try '--help'.");
                return ExitCode::from(2);
            }
        },
        CtlCommand::RemoveGuest { name } => ControlCommand::RemoveGuest { name: name.clone() },
    };
    let limit = match command {
        // Removing a guest lets its requests finish, as a reload does.
        ControlCommand::Reload | ControlCommand::RemoveGuest { .. } => RELOAD_TIMEOUT,
        _ => proxy_wifi::control::CONTROL_TIMEOUT,
    };
    let request = ControlRequest {
        guest: args.guest.clone(),
        command,
    };
    let control = args
        .control
        .clone()
        .or_else(|| {
            std::env::var_os(proxy_wifi::control::CONTROL_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(proxy_wifi::control::default_client_path);
    match proxy_wifi::control::request_within(&control, &request, limit).await {
        Ok(response) if response.ok => match print_answer(&args.command, &response) {
            Ok(()) => match nobody_notified(&args.command, &response) {
                Some(why) => {
                    eprintln!("proxy-wifi ctl: done on the host, but {why}");
                    ExitCode::from(EXIT_NO_RECIPIENT)
                }
                None => ExitCode::SUCCESS,
            },
            Err(e) => {
                eprintln!("proxy-wifi ctl: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(response) => {
            eprintln!(
                "proxy-wifi ctl: {}",
                response.error.as_deref().unwrap_or("the service refused")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("proxy-wifi ctl: {e}");
            match e {
                ControlError::NoAnswer(_) => ExitCode::from(EXIT_OUTCOME_UNKNOWN),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_aligns_columns() {
        let g = |name: &str, ssid: Option<&str>| GuestStatus {
            name: name.into(),
            transport: "tcp 127.0.0.1 ports 0/1".into(),
            listening: Some("127.0.0.1:4000".into()),
            connected_ssid: ssid.map(String::from),
            connection: ssid.map(|_| "guest-directed".into()),
            session_id: 3,
            requests: 12,
            invalid_requests: 0,
            notifications_sent: 1,
            notifications_dropped: 2,
            runtime: false,
            backend: Default::default(),
        };
        let t = status_table(&[g("vm1", Some("Home Net")), g("a-longer-name", None)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("GUEST          LISTENING"), "{t}");
        assert!(lines[1].contains("Home Net  guest-directed  3"), "{t}");
        assert!(lines[2].contains("  -     "), "{t}");
        let col = lines[0].find("SESSION").unwrap();
        assert_eq!(&lines[1][col..col + 1], "3");
        assert_eq!(&lines[2][col..col + 1], "3");
    }
}
