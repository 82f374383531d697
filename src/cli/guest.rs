//! `proxy-wifi guest`: act as a guest from user space. Parsing, output and
//! exit codes only; the work is in `proxy_wifi::guest`.
//!
//! Exit codes: 0 success; 1 the host refused the connect (non-zero 802.11
//! status); 2 bad arguments; 3 host unreachable or connection failed;
//! 4 timeout; 5 malformed reply; 6 the host answered INVALID; 7 local
//! problem (transport unavailable here, port cannot be bound).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use proxy_wifi::guest::{
    read_secret, secret_from_env, BssSummary, ConnectSpec, ErrorClass, GuestClient, GuestError,
    Notification, NotificationWatcher,
};
use proxy_wifi::protocol::{
    status_code_name, ConnectResponse, MacAddr, ScanBss, ScanLayout, ScanResponse, Ssid,
};
use serde_json::json;
use zeroize::Zeroizing;

use super::transport_args::{LayoutArg, TransportArgs};

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_TIMEOUT: u8 = 4;
const EXIT_MALFORMED: u8 = 5;
const EXIT_INVALID: u8 = 6;
const EXIT_LOCAL: u8 = 7;

#[derive(Debug, Args)]
pub struct GuestArgs {
    #[command(flatten)]
    transport: TransportArgs,
    /// SCAN_RESPONSE layout the host speaks: `current` (9-byte fixed part)
    /// or `legacy` (8-byte, kernel 5.10 WSA driver). Never guessed.
    #[arg(long, value_enum, global = true, default_value_t = LayoutArg::Current)]
    scan_layout: LayoutArg,
    /// Time limit of each request, connect included, in seconds.
    #[arg(long, value_name = "SECONDS", global = true, default_value = "20", value_parser = parse_seconds)]
    timeout: Duration,
    /// Machine-readable output (JSON; one object per line for `watch`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: GuestCommand,
}

#[derive(Debug, Subcommand)]
enum GuestCommand {
    /// Scan, like `nmcli dev wifi`: every network, or one SSID (targeted
    /// scan, finds hidden networks).
    Scan {
        /// Scan for this SSID only.
        #[arg(long, value_name = "SSID")]
        ssid: Option<Ssid>,
    },
    /// Connect to a network: open, or WPA2-PSK from a passphrase or a raw
    /// PSK. Give the secret with --passphrase-file / --psk-file (a file, or
    /// `-` for standard input) or in PROXY_WIFI_PASSPHRASE / PROXY_WIFI_PSK
    /// (read when no secret flag is given); a secret given on the command
    /// line itself is visible to every local user.
    Connect {
        /// The network name (at most 32 bytes).
        ssid: Ssid,
        /// WPA2 passphrase, 8 to 63 printable ASCII characters, from the
        /// first line of FILE; `-` reads standard input.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["passphrase", "psk", "psk_file"])]
        passphrase_file: Option<PathBuf>,
        /// WPA2 raw PSK (the PMK), 64 hexadecimal digits, from the first
        /// line of FILE; `-` reads standard input.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["passphrase", "psk"])]
        psk_file: Option<PathBuf>,
        /// The passphrase itself: visible to every local user in `ps` and
        /// /proc/PID/cmdline (a warning says so); prefer --passphrase-file.
        /// `-` reads it from standard input.
        #[arg(long, value_name = "PASSPHRASE", conflicts_with = "psk")]
        passphrase: Option<String>,
        /// The raw PSK itself, 64 hexadecimal digits: visible to every
        /// local user (a warning says so); prefer --psk-file. `-` reads it
        /// from standard input.
        #[arg(long, value_name = "HEX")]
        psk: Option<String>,
        /// Join this BSS only.
        #[arg(long, value_name = "BSSID")]
        bssid: Option<MacAddr>,
    },
    /// Disconnect the session a connect returned.
    Disconnect {
        /// The session id.
        session: u64,
    },
    /// Listen for the host's notifications and print each as it arrives.
    Watch {
        /// Exit after this many notifications.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// How long a notification connection may take to deliver its
        /// message, in milliseconds (the driver allows 10).
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        read_timeout_ms: u64,
    },
}

impl GuestCommand {
    fn name(&self) -> &'static str {
        match self {
            GuestCommand::Scan { .. } => "scan",
            GuestCommand::Connect { .. } => "connect",
            GuestCommand::Disconnect { .. } => "disconnect",
            GuestCommand::Watch { .. } => "watch",
        }
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("'{s}': the time limit must be positive"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("'{s}': {e}"))
}

fn exit_code_of(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Unreachable => EXIT_UNREACHABLE,
        ErrorClass::Timeout => EXIT_TIMEOUT,
        ErrorClass::Malformed => EXIT_MALFORMED,
        ErrorClass::Invalid => EXIT_INVALID,
        ErrorClass::Local => EXIT_LOCAL,
    }
}

fn fail(what: &str, e: &GuestError) -> ExitCode {
    eprintln!("proxy-wifi guest {what}: {e}");
    ExitCode::from(exit_code_of(e.class()))
}

fn usage(what: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("proxy-wifi guest {what}: {message}");
    ExitCode::from(EXIT_USAGE)
}

pub async fn run(args: GuestArgs) -> ExitCode {
    let transport = args.transport.clone();
    let what = args.command.name();
    if !transport.is_set() {
        return usage(
            what,
            "which host to reach? give --tcp ADDR, --hybrid-vsock PATH, --vsock-cid CID or --hyperv-vm-id GUID",
        );
    }
    let config = match transport.to_config() {
        Ok(c) => c,
        Err(message) => return usage(what, message),
    };
    let layout = ScanLayout::from(args.scan_layout);
    let out = Output { json: args.json };
    let client = || GuestClient::new(&config).map(|c| c.scan_layout(layout).timeout(args.timeout));
    match args.command {
        GuestCommand::Scan { ssid } => {
            let scan = match client() {
                Ok(c) => c.scan(ssid).await,
                Err(e) => Err(e),
            };
            match scan {
                Ok(scan) => {
                    out.scan(&scan);
                    ExitCode::SUCCESS
                }
                Err(e) => fail("scan", &e),
            }
        }
        GuestCommand::Connect {
            ssid,
            passphrase_file,
            psk_file,
            passphrase,
            psk,
            bssid,
        } => {
            let secret = SecretArgs {
                passphrase_file,
                psk_file,
                passphrase,
                psk,
            };
            let spec = match connect_spec(ssid, secret, bssid) {
                Ok(spec) => spec,
                Err(message) => return usage("connect", message),
            };
            let reply = match client() {
                Ok(c) => c.connect(&spec).await,
                Err(e) => Err(e),
            };
            match reply {
                Ok(reply) => {
                    out.connect(&reply);
                    if reply.result_code == 0 {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!(
                            "proxy-wifi guest connect: the host refused: status {} ({})",
                            reply.result_code,
                            status_code_name(reply.result_code)
                        );
                        ExitCode::from(EXIT_REFUSED)
                    }
                }
                Err(e) => fail("connect", &e),
            }
        }
        GuestCommand::Disconnect { session } => {
            let done = match client() {
                Ok(c) => c.disconnect(session).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {
                    out.disconnect(session);
                    ExitCode::SUCCESS
                }
                Err(e) => fail("disconnect", &e),
            }
        }
        GuestCommand::Watch {
            count,
            read_timeout_ms,
        } => {
            let watcher = match NotificationWatcher::bind(&config, layout).await {
                Ok(w) => w.read_timeout(Duration::from_millis(read_timeout_ms)),
                Err(e) => return fail("watch", &e),
            };
            eprintln!(
                "proxy-wifi guest watch: listening for notifications on {}",
                watcher.local_description()
            );
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                match watcher.next().await {
                    Ok(n) => {
                        out.notification(&n);
                        seen += 1;
                    }
                    Err(e @ GuestError::NotificationIo(_)) => {
                        eprintln!("proxy-wifi guest watch: {e}");
                        // Accept errors (out of descriptors, ...) tend to
                        // repeat: do not spin on them.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => eprintln!("proxy-wifi guest watch: {e}"),
                }
            }
            ExitCode::SUCCESS
        }
    }
}

/// The environment variable read for the passphrase when no secret flag
/// is given.
const PASSPHRASE_ENV: &str = "PROXY_WIFI_PASSPHRASE";
/// The environment variable read for the raw PSK when no secret flag is
/// given.
const PSK_ENV: &str = "PROXY_WIFI_PSK";

/// Where `guest connect` takes its secret from (clap keeps them exclusive).
struct SecretArgs {
    passphrase_file: Option<PathBuf>,
    psk_file: Option<PathBuf>,
    passphrase: Option<String>,
    psk: Option<String>,
}

/// Which secret, read into memory that is wiped on drop.
enum Secret {
    Passphrase(Zeroizing<String>),
    Psk(Zeroizing<String>),
}

/// A secret from FILE, or from standard input for `-`.
fn secret_from_file(path: &Path, what: &str) -> Result<Zeroizing<String>, String> {
    let read = if path == Path::new("-") {
        read_secret(std::io::stdin().lock())
    } else {
        match std::fs::File::open(path) {
            Ok(file) => read_secret(file),
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        }
    };
    read.map_err(|e| {
        let from = if path == Path::new("-") {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        format!("cannot read the {what} from {from}: {e}")
    })
}

/// A secret given on the command line: `-` means standard input;
/// anything else is used, with a warning that every local user can read
/// it (clap and the process arguments keep copies this cannot wipe).
fn secret_from_argument(
    value: String,
    flag: &str,
    file_flag: &str,
    env: &str,
    what: &str,
) -> Result<Zeroizing<String>, String> {
    let value = Zeroizing::new(value);
    if value.as_str() == "-" {
        return secret_from_file(Path::new("-"), what);
    }
    eprintln!(
        "proxy-wifi guest connect: warning: {flag} puts the {what} on the command line, where \
         every local user can read it (ps, /proc/PID/cmdline); use {file_flag} FILE, \
         {file_flag} - (standard input) or {env}"
    );
    Ok(value)
}

fn secret_from_environment(name: &str, what: &str) -> Result<Option<Zeroizing<String>>, String> {
    secret_from_env(name).map_err(|e| format!("cannot use the {what} in {name}: {e}"))
}

impl SecretArgs {
    /// The secret, from the one flag given, else from the environment.
    fn read(self) -> Result<Option<Secret>, String> {
        const PASSPHRASE: &str = "passphrase";
        const PSK: &str = "PSK";
        if let Some(path) = self.passphrase_file {
            return secret_from_file(&path, PASSPHRASE).map(|s| Some(Secret::Passphrase(s)));
        }
        if let Some(path) = self.psk_file {
            return secret_from_file(&path, PSK).map(|s| Some(Secret::Psk(s)));
        }
        if let Some(value) = self.passphrase {
            return secret_from_argument(
                value,
                "--passphrase",
                "--passphrase-file",
                PASSPHRASE_ENV,
                PASSPHRASE,
            )
            .map(|s| Some(Secret::Passphrase(s)));
        }
        if let Some(value) = self.psk {
            return secret_from_argument(value, "--psk", "--psk-file", PSK_ENV, PSK)
                .map(|s| Some(Secret::Psk(s)));
        }
        let passphrase = secret_from_environment(PASSPHRASE_ENV, PASSPHRASE)?;
        let psk = secret_from_environment(PSK_ENV, PSK)?;
        match (passphrase, psk) {
            (Some(_), Some(_)) => Err(format!(
                "both {PASSPHRASE_ENV} and {PSK_ENV} are set; which one? unset one of them"
            )),
            (Some(p), None) => Ok(Some(Secret::Passphrase(p))),
            (None, Some(k)) => Ok(Some(Secret::Psk(k))),
            (None, None) => Ok(None),
        }
    }
}

fn connect_spec(
    ssid: Ssid,
    secret: SecretArgs,
    bssid: Option<MacAddr>,
) -> Result<ConnectSpec, String> {
    let spec = match secret.read()? {
        Some(Secret::Passphrase(p)) => {
            ConnectSpec::wpa2_passphrase(ssid, &p).map_err(|e| e.to_string())?
        }
        Some(Secret::Psk(hex)) => {
            ConnectSpec::wpa2_psk_hex(ssid, &hex).map_err(|e| e.to_string())?
        }
        None => ConnectSpec::open(ssid),
    };
    Ok(match bssid {
        Some(b) => spec.bssid(b),
        None => spec,
    })
}

struct Output {
    json: bool,
}

impl Output {
    fn scan(&self, scan: &ScanResponse) {
        if self.json {
            let list: Vec<BssSummary> = scan.bss.iter().map(BssSummary::new).collect();
            println!("{}", pretty(&list));
        } else {
            for line in table(&scan.bss, "") {
                println!("{line}");
            }
        }
        if !scan.scan_complete {
            eprintln!(
                "proxy-wifi guest scan: the host reports the scan as still running \
                 (scan_complete = 0); more results may follow as notifications"
            );
        }
    }

    fn connect(&self, reply: &ConnectResponse) {
        let name = status_code_name(reply.result_code);
        if self.json {
            let v = json!({
                "result_code": reply.result_code,
                "status": name,
                "success": reply.result_code == 0,
                "bssid": reply.bssid,
                "session_id": reply.session_id,
            });
            println!("{}", pretty(&v));
        } else {
            println!("result:  {} ({name})", reply.result_code);
            println!("bssid:   {}", reply.bssid);
            println!("session: {}", reply.session_id);
        }
    }

    fn disconnect(&self, session: u64) {
        if self.json {
            println!("{}", json!({ "session_id": session, "disconnected": true }));
        } else {
            // DISCONNECT_RESPONSE is empty: the host acknowledges every
            // disconnect, and ignores a session that is not its current one.
            println!("disconnect of session {session} acknowledged");
            eprintln!(
                "proxy-wifi guest disconnect: the host acknowledges every disconnect and \
                 ignores a session that is not its current one; its reply cannot say which \
                 (the host's log and `proxy-wifi ctl status` do)"
            );
        }
    }

    fn notification(&self, n: &Notification) {
        if self.json {
            let v = match n {
                Notification::Disconnected { session_id } => {
                    json!({ "type": "disconnected", "session_id": session_id })
                }
                Notification::SignalQuality { dbm } => {
                    json!({ "type": "signal_quality", "dbm": dbm })
                }
                Notification::ScanResults(scan) => {
                    let list: Vec<BssSummary> = scan.bss.iter().map(BssSummary::new).collect();
                    json!({ "type": "scan_results", "scan_complete": scan.scan_complete, "bss": list })
                }
            };
            println!("{v}");
        } else {
            match n {
                Notification::Disconnected { session_id } => {
                    println!("disconnected: session {session_id}")
                }
                Notification::SignalQuality { dbm } => {
                    let bars = proxy_wifi::guest::signal_bars(proxy_wifi::guest::signal_percent(
                        i32::from(*dbm),
                    ));
                    println!("signal: {dbm} dBm {bars}")
                }
                Notification::ScanResults(scan) => {
                    println!(
                        "scan results: {} BSS, scan {}",
                        scan.bss.len(),
                        if scan.scan_complete {
                            "complete"
                        } else {
                            "running"
                        }
                    );
                    for line in table(&scan.bss, "  ") {
                        println!("{line}");
                    }
                }
            }
        }
    }
}

fn pretty<T: serde::Serialize>(value: &T) -> String {
    // Serializing plain data to a string cannot fail; fall back to compact
    // output rather than panic if it ever did.
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The scan table, as `nmcli dev wifi` prints it: strongest signal first
/// (ties keep the host's order), nmcli's security words, and columns
/// padded to their widest cell by display width, so an SSID in CJK or
/// with emoji does not shift the columns after it.
fn table(list: &[ScanBss], indent: &str) -> Vec<String> {
    table_with(list, indent, Bars::for_locale())
}

fn table_with(list: &[ScanBss], indent: &str, bars: Bars) -> Vec<String> {
    use unicode_width::UnicodeWidthStr;
    let header = [
        "BSSID", "SSID", "FREQ", "CHAN", "SIGNAL", "BARS", "SECURITY",
    ]
    .map(String::from);
    let mut sorted: Vec<&ScanBss> = list.iter().collect();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.rssi_dbm));
    let mut rows = vec![header];
    for bss in sorted {
        let s = BssSummary::new(bss);
        let ssid = match bss.ssid() {
            Some(ssid) if !ssid.is_empty() => ssid.to_string(),
            _ => "--".to_string(),
        };
        rows.push([
            s.bssid.to_string(),
            ssid,
            format!("{} MHz", s.freq_mhz),
            s.channel
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into()),
            format!("{} dBm", s.rssi_dbm),
            bars.render(s.signal_percent),
            nmcli_security(&s.security),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = indent.to_string();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(w - cell.width() + 2));
                }
            }
            line
        })
        .collect()
}

/// Security as nmcli words it: `WPA2`, `WPA3`, `WPA2 WPA3` (transition),
/// `WPA2 802.1X`, `WPA1`, `WEP`, `OWE`, and `--` for an open network. The
/// JSON output keeps the precise label (`WPA2-PSK`, ...).
fn nmcli_security(label: &str) -> String {
    if label == "open" {
        return "--".to_string();
    }
    let mut words: Vec<&str> = Vec::new();
    for part in label.split('/') {
        let word = match part {
            "WPA2-PSK" => "WPA2",
            "WPA3-SAE" => "WPA3",
            "WPA2-EAP" => "WPA2 802.1X",
            "WPA" => "WPA1",
            other => other,
        };
        if !words.contains(&word) {
            words.push(word);
        }
    }
    words.join(" ")
}

/// Signal bars: block glyphs on a UTF-8 terminal, `*` otherwise (what
/// nmcli does in a C locale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bars {
    Glyphs,
    Ascii,
}

impl Bars {
    fn for_locale() -> Bars {
        let var = |name: &str| std::env::var(name).ok();
        if locale_is_utf8(var("LC_ALL"), var("LC_CTYPE"), var("LANG")) {
            Bars::Glyphs
        } else {
            Bars::Ascii
        }
    }

    fn render(self, percent: u8) -> String {
        let glyphs = proxy_wifi::guest::signal_bars(percent);
        match self {
            Bars::Glyphs => glyphs,
            Bars::Ascii => glyphs
                .chars()
                .map(|c| if c == '_' { '_' } else { '*' })
                .collect(),
        }
    }
}

/// The character set of the locale, as the C library picks it: the first
/// non-empty of LC_ALL, LC_CTYPE, LANG; none at all is the C locale (ASCII).
fn locale_is_utf8(lc_all: Option<String>, lc_ctype: Option<String>, lang: Option<String>) -> bool {
    [lc_all, lc_ctype, lang]
        .into_iter()
        .flatten()
        .find(|v| !v.is_empty())
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: Cmd,
    }
    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Guest(GuestArgs),
    }

    fn parse(args: &[&str]) -> Result<GuestArgs, clap::Error> {
        let mut full = vec!["proxy-wifi", "guest"];
        full.extend_from_slice(args);
        Top::try_parse_from(full).map(|t| match t.cmd {
            Cmd::Guest(g) => g,
        })
    }

    #[test]
    fn ports_before_the_subcommand_and_globals_after_it() {
        let a = parse(&[
            "--tcp",
            "127.0.0.1",
            "--request-port",
            "4000",
            "scan",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.transport.request_port, 4000);
        assert!(a.json);
        assert!(matches!(a.command, GuestCommand::Scan { ssid: None }));
        let a = parse(&[
            "--tcp",
            "127.0.0.1",
            "--json",
            "--scan-layout",
            "legacy",
            "scan",
        ])
        .unwrap();
        assert!(a.json);
        assert_eq!(a.scan_layout, LayoutArg::Legacy);
        let a = parse(&[
            "--tcp",
            "127.0.0.1",
            "scan",
            "--scan-layout",
            "legacy",
            "--timeout",
            "0.5",
        ])
        .unwrap();
        assert_eq!(a.scan_layout, LayoutArg::Legacy);
        assert_eq!(a.timeout, Duration::from_millis(500));
    }

    #[test]
    fn command_is_consistent_and_transports_exclude_each_other() {
        use clap::CommandFactory;
        Top::command().debug_assert();
        let e = parse(&["--tcp", "127.0.0.1", "--vsock-cid", "2", "scan"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        let a = parse(&["--vsock-cid", "2", "--request-port", "7", "scan"]).unwrap();
        assert_eq!(a.transport.vsock_cid, Some(2));
        assert_eq!(a.transport.request_port, 7);
    }

    // The transport flags after the subcommand (global through
    // cli::help::command) are tested on the binary in tests/cli_everyday.rs.
    #[test]
    fn notification_port_before_the_subcommand() {
        let a = parse(&["--tcp", "127.0.0.1", "--notification-port", "5000", "watch"]).unwrap();
        assert_eq!(a.transport.notification_port, 5000);
    }

    #[test]
    fn connect_arguments() {
        assert!(parse(&[
            "--tcp",
            "127.0.0.1",
            "connect",
            "x",
            "--passphrase",
            "a",
            "--psk",
            "b"
        ])
        .is_err());
        assert!(parse(&["--tcp", "127.0.0.1", "connect", &"x".repeat(33)]).is_err());
        assert!(parse(&["--tcp", "127.0.0.1", "connect", "x", "--bssid", "nope"]).is_err());
        let a = parse(&[
            "--tcp",
            "127.0.0.1",
            "connect",
            "x",
            "--bssid",
            "02:00:00:00:00:01",
        ])
        .unwrap();
        assert!(matches!(
            a.command,
            GuestCommand::Connect { bssid: Some(_), .. }
        ));
        assert!(parse(&["--tcp", "127.0.0.1", "--timeout", "0", "scan"]).is_err());
        assert!(parse(&["--tcp", "127.0.0.1", "--timeout", "-1", "scan"]).is_err());
        assert!(parse(&["--tcp", "127.0.0.1", "--timeout", "nan", "scan"]).is_err());
    }

    #[test]
    fn table_columns_line_up() {
        let mut ies = proxy_wifi::protocol::ssid_element(&Ssid::new(b"a longer name").unwrap());
        ies.extend_from_slice(&proxy_wifi::protocol::wpa2_psk_ccmp_rsn_element());
        let list = vec![
            ScanBss {
                bssid: MacAddr([2, 0, 0, 0, 0, 1]),
                capabilities: 0x11,
                rssi_dbm: -45,
                beacon_interval: 100,
                freq_khz: 2_437_000,
                ies,
            },
            ScanBss {
                bssid: MacAddr([2, 0, 0, 0, 0, 2]),
                capabilities: 0x01,
                rssi_dbm: -90,
                beacon_interval: 100,
                freq_khz: 5_180_000,
                ies: vec![0, 0],
            },
        ];
        let lines = table_with(&list, "", Bars::Glyphs);
        assert_eq!(lines.len(), 3);
        let col = |line: &str, word: &str| line.find(word).unwrap();
        assert_eq!(col(&lines[0], " SSID"), col(&lines[1], " a longer"));
        assert_eq!(col(&lines[0], " SSID"), col(&lines[2], " --"));
        assert!(lines[1].ends_with("WPA2"), "{}", lines[1]);
        assert!(
            lines[1].contains("2437 MHz") && lines[1].contains(" 6 "),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with("--"), "{}", lines[2]);
        assert!(
            lines[2].contains("5180 MHz") && lines[2].contains(" 36 "),
            "{}",
            lines[2]
        );
    }

    fn bss(ssid: &str, rssi_dbm: i32, ies_extra: &[u8]) -> ScanBss {
        let mut ies = proxy_wifi::protocol::ssid_element(&Ssid::new(ssid.as_bytes()).unwrap());
        ies.extend_from_slice(ies_extra);
        ScanBss {
            bssid: MacAddr([2, 0, 0, 0, 0, rssi_dbm.unsigned_abs() as u8]),
            capabilities: 0x11,
            rssi_dbm,
            beacon_interval: 100,
            freq_khz: 2_412_000,
            ies,
        }
    }

    /// Display columns before `word` on `line`.
    fn display_column(line: &str, word: &str) -> usize {
        use unicode_width::UnicodeWidthStr;
        line[..line.find(word).unwrap()].width()
    }

    #[test]
    fn wide_ssids_keep_the_columns_aligned_and_rows_sort_by_signal() {
        let rsn = proxy_wifi::protocol::wpa2_psk_ccmp_rsn_element();
        let list = vec![
            bss("plain", -80, &[]),
            bss("日本語のWi-Fi", -40, &rsn),
            bss("café ☕", -60, &[]),
        ];
        let lines = table_with(&list, "", Bars::Glyphs);
        assert!(lines[1].contains("日本語のWi-Fi"), "{lines:#?}");
        assert!(lines[2].contains("café ☕"), "{lines:#?}");
        assert!(lines[3].contains("plain"), "{lines:#?}");
        let freq = display_column(&lines[0], "FREQ");
        for line in &lines[1..] {
            assert_eq!(display_column(line, "2412 MHz"), freq, "{lines:#?}");
        }
        let security = display_column(&lines[0], "SECURITY");
        assert_eq!(display_column(&lines[1], "WPA2"), security, "{lines:#?}");
    }

    #[test]
    fn ascii_bars_outside_utf8_locales() {
        let list = vec![bss("x", -45, &[]), bss("y", -80, &[])];
        let lines = table_with(&list, "", Bars::Ascii);
        assert!(lines.iter().all(|l| l.is_ascii()), "{lines:#?}");
        assert!(lines[1].contains("  ****  "), "{lines:#?}");
        assert!(lines[2].contains("  **__  "), "{lines:#?}");
        let s = |v: &str| Some(v.to_string());
        assert!(locale_is_utf8(None, None, s("en_US.UTF-8")));
        assert!(locale_is_utf8(None, s("C.utf8"), s("C")));
        assert!(!locale_is_utf8(s("C"), None, s("en_US.UTF-8")));
        assert!(locale_is_utf8(s(""), None, s("de_DE.UTF-8")));
        assert!(!locale_is_utf8(None, None, None));
        assert!(!locale_is_utf8(None, None, s("POSIX")));
    }

    #[test]
    fn security_in_nmcli_words() {
        assert_eq!(nmcli_security("open"), "--");
        assert_eq!(nmcli_security("WPA2-PSK"), "WPA2");
        assert_eq!(nmcli_security("WPA2-PSK/WPA3-SAE"), "WPA2 WPA3");
        assert_eq!(nmcli_security("WPA2-EAP"), "WPA2 802.1X");
        assert_eq!(nmcli_security("WPA"), "WPA1");
        assert_eq!(nmcli_security("WEP"), "WEP");
        assert_eq!(nmcli_security("OWE"), "OWE");
    }
}
