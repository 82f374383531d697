//! `proxy-wifi ctl`: sends one command to a running service's control socket.
//!
//! Exit codes: 0 done; 1 refused or unreachable; 3 sent but no answer in
//! time, so the outcome is unknown (the command may still take effect).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use proxy_wifi::control::{ControlCommand, ControlError, ControlRequest, ControlResponse};
use proxy_wifi::daemon::{GuestStatus, ReloadSummary};
use proxy_wifi::wifi::simulated::ScanMode;

/// The request went out but no answer came: it may still take effect.
const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// How long `reload` may take: removed guests finish their requests first.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The service's control socket (`serve --control PATH` or
    /// `control_socket` in the configuration). Required.
    // An Option only because clap accepts a flag after the subcommand
    // (global) only when it is optional; `run` insists on it.
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
    Reload,
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
        _ => {}
    }
    Ok(())
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
    };
    let limit = match command {
        ControlCommand::Reload => RELOAD_TIMEOUT,
        _ => proxy_wifi::control::CONTROL_TIMEOUT,
    };
    let request = ControlRequest {
        guest: args.guest.clone(),
        command,
    };
    let Some(control) = &args.control else {
        eprintln!(
            "error: which service? give --control PATH (its control socket)\n\nFor more information, try '--help'."
        );
        return ExitCode::from(2);
    };
    match proxy_wifi::control::request_within(control, &request, limit).await {
        Ok(response) if response.ok => match print_answer(&args.command, &response) {
            Ok(()) => ExitCode::SUCCESS,
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
