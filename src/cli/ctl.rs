//! `proxy-wifi ctl`.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct CtlArgs {}

pub async fn run(_args: CtlArgs) -> ExitCode {
    eprintln!("proxy-wifi ctl: not available in this build yet");
    ExitCode::FAILURE
}
