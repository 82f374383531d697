//! `proxy-wifi serve`.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct ServeArgs {}

pub async fn run(_args: ServeArgs) -> ExitCode {
    eprintln!("proxy-wifi serve: not available in this build yet");
    ExitCode::FAILURE
}
