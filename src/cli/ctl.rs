//! `proxy-wifi ctl`: sends one event to a running service's control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use proxy_wifi::control::{ControlCommand, ControlRequest};
use proxy_wifi::wifi::simulated::ScanMode;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The service's control socket (`serve --control PATH`).
    #[arg(long, value_name = "PATH")]
    pub control: PathBuf,
    /// Which guest's service to act on (multi-guest daemon).
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
    HostConnect { ssid: String },
    /// The simulated host disconnects.
    HostDisconnect,
    /// The link quality of the host's connection changes (percent).
    Signal {
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
    },
    /// A host scan nobody waited for delivers every network.
    ScanResults,
    /// Scans answer at once (sync) or with the first network and the rest later (async).
    ScanMode {
        #[arg(value_enum)]
        mode: ScanModeArg,
    },
}

pub async fn run(args: CtlArgs) -> ExitCode {
    let command = match args.command {
        CtlCommand::HostConnect { ssid } => ControlCommand::HostConnect { ssid },
        CtlCommand::HostDisconnect => ControlCommand::HostDisconnect,
        CtlCommand::Signal { percent } => ControlCommand::Signal { percent },
        CtlCommand::ScanResults => ControlCommand::ScanResults,
        CtlCommand::ScanMode { mode } => ControlCommand::ScanMode {
            mode: match mode {
                ScanModeArg::Sync => ScanMode::Sync,
                ScanModeArg::Async => ScanMode::Async,
            },
        },
    };
    let request = ControlRequest {
        guest: args.guest,
        command,
    };
    match proxy_wifi::control::request(&args.control, &request).await {
        Ok(response) if response.ok => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!(
                "proxy-wifi ctl: {}",
                response.error.as_deref().unwrap_or("the service refused")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("proxy-wifi ctl: {e}");
            ExitCode::FAILURE
        }
    }
}
