//! `proxy-wifi guest`.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct GuestArgs {}

pub async fn run(_args: GuestArgs) -> ExitCode {
    eprintln!("proxy-wifi guest: not available in this build yet");
    ExitCode::FAILURE
}
