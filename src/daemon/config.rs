//! The daemon's TOML configuration: global settings and one `[[guest]]`
//! table per VM. Everything is checked before anything starts, and every
//! error names its line and field.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::protocol::{
    channel_for_freq_khz, MacAddr, ScanLayout, Ssid, DEFAULT_NOTIFICATION_PORT,
    DEFAULT_REQUEST_PORT,
};
use crate::transport::{SocketAccess, TransportConfig};
use crate::wifi::simulated::SimulatedNetwork;
use crate::wifi::{BackendKind, Security};

/// A fake network shown to one guest (always "connected": joining it is
/// mirroring and never touches the host).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeNetworkConfig {
    /// The SSID, as text.
    pub ssid: String,
    /// The BSSID shown for it.
    pub bssid: MacAddr,
}

/// What a guest may do, applied through the authorization hook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Allow guest-directed connects (the host joins a network for the
    /// guest). `false`: mirror only.
    #[serde(default = "yes")]
    pub guest_directed: bool,
    /// When set, only these SSIDs may be joined (mirrored or directed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_ssids: Option<Vec<String>>,
    /// These SSIDs may never be joined.
    #[serde(default)]
    pub deny_ssids: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            guest_directed: true,
            allow_ssids: None,
            deny_ssids: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// One `[[guest]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuestTable {
    pub name: Spanned<String>,
    pub tcp: Option<Spanned<IpAddr>>,
    pub vsock_cid: Option<Spanned<u32>>,
    pub hybrid_vsock: Option<Spanned<PathBuf>>,
    pub hyperv_vm_id: Option<Spanned<uuid::Uuid>>,
    pub request_port: Option<Spanned<u32>>,
    pub notification_port: Option<Spanned<u32>>,
    #[serde(default)]
    pub scan_layout: ScanLayout,
    pub scan_min_latency_ms: Option<u64>,
    #[serde(default)]
    pub notify_host_disconnect: bool,
    /// How long a guest-directed connect may take on one host interface
    /// (default 10000; 1000 to 18000).
    pub connect_timeout_ms: Option<Spanned<u64>>,
    /// How long an undeliverable notification is retried (default 60000).
    pub notification_deadline_ms: Option<u64>,
    #[serde(default)]
    pub fake_network: Vec<Spanned<FakeNetworkConfig>>,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Owner of the hybrid vsock request socket (a user name or uid).
    pub socket_owner: Option<Spanned<String>>,
    /// Group of the hybrid vsock request socket (a group name or gid).
    pub socket_group: Option<Spanned<String>>,
    /// Mode of the hybrid vsock request socket, octal in a string.
    pub socket_mode: Option<Spanned<String>>,
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    backend: Option<BackendKind>,
    iwd_state_dir: Option<PathBuf>,
    log_level: Option<Spanned<String>>,
    threads: Option<Spanned<i64>>,
    control_socket: Option<PathBuf>,
    control_socket_owner: Option<Spanned<String>>,
    control_socket_group: Option<Spanned<String>>,
    control_socket_mode: Option<Spanned<String>>,
    metrics: Option<Spanned<SocketAddr>>,
    #[serde(default)]
    simulated_network: Vec<Spanned<SimulatedNetwork>>,
    #[serde(default)]
    guest: Vec<Spanned<GuestTable>>,
}

/// One guest, checked and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// The guest's name (logs, metrics, `ctl --guest`).
    pub name: String,
    /// Where its requests arrive and its notifications go.
    pub transport: TransportConfig,
    /// The scan response layout its driver speaks.
    pub scan_layout: ScanLayout,
    /// `None`: the handler's default.
    pub scan_min_latency: Option<Duration>,
    /// Send NOTIF_DISCONNECTED when the host loses the guest's network.
    pub notify_host_disconnect: bool,
    /// How long an undeliverable notification is retried; `None`: the
    /// service's default (60 s).
    pub notification_deadline: Option<Duration>,
    /// How long a guest-directed connect may take on one host interface;
    /// `None`: the handler's default (10 s).
    pub connect_timeout: Option<Duration>,
    /// Fake networks shown to this guest only.
    pub fake_networks: Vec<(Ssid, MacAddr)>,
    /// What the guest may join.
    pub policy: PolicyConfig,
    /// Owner, group and mode of the request socket (hybrid vsock only).
    pub socket_access: SocketAccess,
}

/// The most runtime threads `threads` (and `serve --threads`) accept: more
/// than a host has CPUs only adds wakeups.
pub const MAX_THREADS: usize = 64;

/// The whole configuration, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The host Wi-Fi backend all guests share.
    pub backend: BackendKind,
    /// iwd's state directory for the proxy's provisioning files (backend
    /// `iwd`); `None`: the one iwd reports.
    pub iwd_state_dir: Option<PathBuf>,
    /// The log filter (`RUST_LOG` syntax) when `RUST_LOG` is not set.
    pub log_level: Option<String>,
    /// Threads of the async runtime (`threads`, 1 to [`MAX_THREADS`]);
    /// `None`: one, a current-thread runtime.
    pub threads: Option<usize>,
    /// The control socket's path, if any.
    pub control_socket: Option<PathBuf>,
    /// Owner, group and mode of the control socket (default: the
    /// service's user, 0600).
    pub control_socket_access: SocketAccess,
    /// The metrics endpoint's address, if any.
    pub metrics: Option<SocketAddr>,
    /// The networks of the simulated backend (empty: the reference's three).
    pub simulated_networks: Vec<SimulatedNetwork>,
    /// The guests, in file order.
    pub guests: Vec<GuestConfig>,
}

/// A configuration error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", location(*.line, *.column))]
pub struct ConfigError {
    /// The configuration file (or the flag) at fault.
    pub file: String,
    /// Line of the error in the file, when known (1-based).
    pub line: Option<usize>,
    /// Column of the error in the file, when known (1-based).
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError {
            file: self.file.to_string(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }
}

/// Checks a log filter (`log_level`, RUST_LOG): comma-separated
/// directives, each a level (`info`) or `target=level`. The filter parser
/// takes a bare word such as `aaa` for a target name and silences
/// everything else; here that is an error.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level.trim())) {
            return Err(format!(
                "'{}' is not a level or target=level (levels: {})",
                bounded(directive),
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The parser's message without the offending value: it may be a secret
/// (a numeric passphrase is echoed as "invalid type: integer `3141...`")
/// or huge; the type is kept, and the whole message is bounded.
fn parser_message(message: &str) -> String {
    let mut out = message.to_string();
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = out.strip_prefix(prefix) {
            let kind = rest.split([' ', ',']).next().unwrap_or_default();
            let expected = rest.find(", expected").map_or("", |i| &rest[i..]);
            out = format!("{prefix}{kind}{expected}");
        }
    }
    bounded_to(&out, 256)
}

/// The key whose value starts at `offset`, read from the text of its line
/// (`scan_layout = "old"`, `{ ssid = "x", bssid = "nope" }`).
fn key_before(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let eq = line.rfind('=')?;
    let key = line[..eq]
        .rsplit(['{', ',', '['])
        .next()?
        .trim()
        .trim_matches('"');
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'));
    plain.then(|| key.to_string())
}

/// Passphrases in a file that group or others can read are readable by
/// them: said once per load, with the file and its mode (never the secret).
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} holds passphrases and is readable by others (mode {mode:o}); chmod 600 it",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The longest path a Unix socket address holds (108 bytes with the NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// At most 64 characters of a value for a message, marked when cut.
fn bounded(text: &str) -> String {
    bounded_to(text, 64)
}

fn bounded_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

impl DaemonConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
        })?;
        let config = DaemonConfig::parse(&text, &path.display().to_string())?;
        if config
            .simulated_networks
            .iter()
            .any(|n| n.passphrase.is_some())
        {
            warn_if_readable_by_others(path);
        }
        Ok(config)
    }

    /// Parses and checks configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<DaemonConfig, ConfigError> {
        let c = Checker { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = parser_message(e.message().trim());
            let message = match key_before(text, span.start) {
                Some(key) => format!("{key}: {message}"),
                None => message,
            };
            c.at(span, message)
        })?;
        let backend = raw.backend.unwrap_or_else(BackendKind::platform_default);

        if let Some(level) = &raw.log_level {
            check_log_filter(level.get_ref())
                .map_err(|e| c.at(level.span(), format!("log_level: {e}")))?;
        }

        let threads = match &raw.threads {
            Some(t) => match usize::try_from(*t.get_ref()) {
                Ok(n) if (1..=MAX_THREADS).contains(&n) => Some(n),
                _ => {
                    return Err(c.at(
                        t.span(),
                        format!(
                            "threads: {} is not a thread count from 1 to {MAX_THREADS}",
                            t.get_ref()
                        ),
                    ))
                }
            },
            None => None,
        };

        let mut simulated_networks = Vec::new();
        let mut sim_bssids = HashSet::new();
        for net in &raw.simulated_network {
            let span = net.span();
            let n = net.get_ref();
            let err = |m: String| {
                c.at(
                    span.clone(),
                    format!("[[simulated_network]] '{}': {m}", n.ssid),
                )
            };
            if backend != BackendKind::Simulated {
                return Err(err(format!(
                    "simulated networks need backend = \"simulated\" (backend is \"{}\")",
                    backend.name()
                )));
            }
            if channel_for_freq_khz(n.freq_khz).is_none() {
                return Err(err(format!(
                    "freq_khz: {} is not a 2.4/5/6 GHz channel centre in kHz (2437 MHz is 2437000)",
                    n.freq_khz
                )));
            }
            if !sim_bssids.insert(n.bssid) {
                return Err(err(format!(
                    "bssid: {} is used by another network",
                    n.bssid
                )));
            }
            match (n.security, &n.passphrase) {
                (Security::OPEN, Some(_)) => {
                    return Err(err("passphrase: an open network has no passphrase".into()))
                }
                (_, Some(p)) => {
                    let ok = (8..=63).contains(&p.len())
                        && p.bytes().all(|b| (0x20..=0x7e).contains(&b));
                    if !ok {
                        return Err(err(
                            "passphrase: a WPA2 passphrase or SAE password is 8 to 63 printable ASCII characters"
                                .into(),
                        ));
                    }
                }
                _ => {}
            }
            simulated_networks.push(n.clone());
        }

        let mut guests = Vec::new();
        let mut names = HashSet::new();
        let mut endpoints = HashSet::new();
        for table in &raw.guest {
            let g = table.get_ref();
            let name = g.name.get_ref().clone();
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
            if !valid_name {
                return Err(c.at(
                    g.name.span(),
                    format!(
                        "[[guest]] name: '{}' must be 1 to 64 characters of A-Z a-z 0-9 - _ .",
                        bounded(&name)
                    ),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(c.at(
                    g.name.span(),
                    format!("[[guest]] name: '{name}' is used twice"),
                ));
            }
            let transport = guest_transport(&c, table.span(), g, &name)?;
            if let Some(ep) = endpoint_key(&transport) {
                if !endpoints.insert(ep.clone()) {
                    return Err(c.at(
                        table.span(),
                        format!("[[guest]] '{name}': {ep} is already used by another guest"),
                    ));
                }
            }
            let socket_access = socket_access(
                &c,
                &format!("[[guest]] '{name}' socket_"),
                [&g.socket_owner, &g.socket_group, &g.socket_mode],
            )?;
            if !socket_access.is_default()
                && !matches!(transport, TransportConfig::HybridVsock { .. })
            {
                let field = [
                    ("socket_owner", &g.socket_owner),
                    ("socket_group", &g.socket_group),
                    ("socket_mode", &g.socket_mode),
                ]
                .into_iter()
                .find_map(|(n, f)| f.as_ref().map(|f| (n, f.span())));
                if let Some((field, span)) = field {
                    return Err(c.at(
                        span,
                        format!(
                            "[[guest]] '{name}' {field}: only a hybrid_vsock guest has a request socket file"
                        ),
                    ));
                }
            }
            let mut fake_networks = Vec::new();
            for f in &g.fake_network {
                let fr = f.get_ref();
                let ssid = Ssid::new(fr.ssid.as_bytes()).map_err(|e| {
                    c.at(
                        f.span(),
                        format!("[[guest]] '{name}' fake_network ssid: {e}"),
                    )
                })?;
                fake_networks.push((ssid, fr.bssid));
            }
            for s in g
                .policy
                .allow_ssids
                .iter()
                .flatten()
                .chain(g.policy.deny_ssids.iter())
            {
                if Ssid::new(s.as_bytes()).is_err() {
                    return Err(c.at(
                        table.span(),
                        format!(
                            "[[guest]] '{name}' policy: SSID '{}' is longer than 32 bytes",
                            bounded(s)
                        ),
                    ));
                }
            }
            let connect_timeout = match &g.connect_timeout_ms {
                Some(ms) => Some(
                    check_connect_timeout(*ms.get_ref())
                        .map_err(|e| c.at(ms.span(), format!("[[guest]] '{name}' {e}")))?,
                ),
                None => None,
            };
            guests.push(GuestConfig {
                name,
                transport,
                scan_layout: g.scan_layout,
                scan_min_latency: g.scan_min_latency_ms.map(Duration::from_millis),
                notify_host_disconnect: g.notify_host_disconnect,
                notification_deadline: g.notification_deadline_ms.map(Duration::from_millis),
                connect_timeout,
                fake_networks,
                policy: g.policy.clone(),
                socket_access,
            });
        }
        let control_socket_access = socket_access(
            &c,
            "control_socket_",
            [
                &raw.control_socket_owner,
                &raw.control_socket_group,
                &raw.control_socket_mode,
            ],
        )?;

        Ok(DaemonConfig {
            backend,
            iwd_state_dir: raw.iwd_state_dir,
            log_level: raw.log_level.map(Spanned::into_inner),
            threads,
            control_socket: raw.control_socket,
            control_socket_access,
            metrics: raw.metrics.map(|m| m.into_inner()),
            simulated_networks,
            guests,
        })
    }
}

/// A guest described field by field, as `proxy-wifi ctl add-guest` sends
/// it: the names and meanings of a `[[guest]]` table's keys, checked by
/// exactly the same code ([`GuestSpec::check`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// The guest's name.
    pub name: String,
    /// TCP: the address to listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// AF_VSOCK: the guest's CID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_cid: Option<u32>,
    /// Hybrid vsock: the VMM's vsock socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hybrid_vsock: Option<PathBuf>,
    /// Hyper-V: the VM id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperv_vm_id: Option<String>,
    /// The port the guest sends requests to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_port: Option<u32>,
    /// The port the guest listens on for notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_port: Option<u32>,
    /// `current` or `legacy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_layout: Option<String>,
    /// Minimum scan reply latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_min_latency_ms: Option<u64>,
    /// Tell the guest when the host leaves its network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify_host_disconnect: bool,
    /// How long an undeliverable notification is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_deadline_ms: Option<u64>,
    /// How long a guest-directed connect may take on one host interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Fake networks: `{ ssid, bssid }` tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fake_network: Vec<FakeNetworkSpec>,
    /// What the guest may do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyConfig>,
    /// Owner of the request socket (hybrid vsock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<String>,
    /// Group of the request socket (hybrid vsock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// Mode of the request socket (hybrid vsock), octal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<String>,
}

/// A fake network in a [`GuestSpec`], as written (the BSSID unparsed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FakeNetworkSpec {
    /// The network's SSID.
    pub ssid: String,
    /// Its BSSID, `aa:bb:cc:dd:ee:ff`.
    pub bssid: String,
}

impl GuestSpec {
    /// Checks the guest exactly as a `[[guest]]` table of the file is
    /// checked (on its own: see [`guest_conflict`] for the others). The
    /// error's message has no line: there is no file.
    pub fn check(&self) -> Result<GuestConfig, ConfigError> {
        #[derive(serde::Serialize)]
        struct One<'a> {
            guest: [&'a GuestSpec; 1],
        }
        let origin = "add-guest";
        let text = toml::to_string(&One { guest: [self] }).map_err(|e| ConfigError {
            file: origin.into(),
            line: None,
            column: None,
            message: format!("cannot express the guest as a [[guest]] table: {e}"),
        })?;
        let config = DaemonConfig::parse(&text, origin).map_err(|e| ConfigError {
            line: None,
            column: None,
            ..e
        })?;
        config.guests.into_iter().next().ok_or_else(|| ConfigError {
            file: origin.into(),
            line: None,
            column: None,
            message: "no guest".into(),
        })
    }
}

/// What two guests may not share: a TCP listening address, a vsock CID
/// (one VM is one guest, whatever the ports), a hybrid request socket, a
/// Hyper-V VM and port. `None` for a TCP guest on port 0 (any free port).
pub fn endpoint_key(transport: &TransportConfig) -> Option<String> {
    match transport {
        TransportConfig::Tcp {
            address,
            request_port,
            ..
        } if *request_port != 0 => Some(format!("tcp {address}:{request_port}")),
        TransportConfig::Tcp { .. } => None,
        TransportConfig::Vsock { cid, .. } => Some(format!("vsock cid {cid}")),
        TransportConfig::HybridVsock {
            path, request_port, ..
        } => Some(format!("hybrid {}_{request_port}", path.display())),
        TransportConfig::HyperV {
            vm_id,
            request_port,
            ..
        } => Some(format!("hyper-v {vm_id} port {request_port}")),
    }
}

/// Why `guest` cannot join `others`: its name or its endpoint
/// ([`endpoint_key`]) is taken.
pub fn guest_conflict<'a>(
    others: impl IntoIterator<Item = &'a GuestConfig>,
    guest: &GuestConfig,
) -> Option<String> {
    let key = endpoint_key(&guest.transport);
    for other in others {
        if other.name == guest.name {
            return Some(format!("a guest named '{}' exists already", guest.name));
        }
        if key.is_some() && endpoint_key(&other.transport) == key {
            return Some(format!(
                "guest '{}': {} is already used by guest '{}'",
                guest.name,
                key.as_deref().unwrap_or_default(),
                other.name
            ));
        }
    }
    None
}

/// `*_owner`, `*_group`, `*_mode` (`prefix` names them in errors), resolved.
fn socket_access(
    c: &Checker<'_>,
    prefix: &str,
    [owner, group, mode]: [&Option<Spanned<String>>; 3],
) -> Result<SocketAccess, ConfigError> {
    let resolve =
        |field: &Option<Spanned<String>>, what: &str, f: fn(&str) -> Result<u32, String>| {
            field
                .as_ref()
                .map(|v| f(v.get_ref()).map_err(|e| c.at(v.span(), format!("{prefix}{what}: {e}"))))
                .transpose()
        };
    Ok(SocketAccess {
        owner: resolve(owner, "owner", crate::transport::resolve_user)?,
        group: resolve(group, "group", crate::transport::resolve_group)?,
        mode: resolve(mode, "mode", crate::transport::parse_socket_mode)?,
    })
}

fn guest_transport(
    c: &Checker<'_>,
    table_span: Range<usize>,
    g: &GuestTable,
    name: &str,
) -> Result<TransportConfig, ConfigError> {
    let given: Vec<(&str, Range<usize>)> = [
        g.tcp.as_ref().map(|s| ("tcp", s.span())),
        g.vsock_cid.as_ref().map(|s| ("vsock_cid", s.span())),
        g.hybrid_vsock.as_ref().map(|s| ("hybrid_vsock", s.span())),
        g.hyperv_vm_id.as_ref().map(|s| ("hyperv_vm_id", s.span())),
    ]
    .into_iter()
    .flatten()
    .collect();
    match given.as_slice() {
        [] => {
            return Err(c.at(
                table_span,
                format!("[[guest]] '{name}': needs one transport: tcp, vsock_cid, hybrid_vsock or hyperv_vm_id"),
            ))
        }
        [_] => {}
        [_, (second, span), ..] => {
            return Err(c.at(
                span.clone(),
                format!("[[guest]] '{name}' {second}: only one transport per guest"),
            ))
        }
    }
    let request_port = g.request_port.as_ref().map(|p| (*p.get_ref(), p.span()));
    let notification_port = g
        .notification_port
        .as_ref()
        .map(|p| (*p.get_ref(), p.span()));
    let req = request_port.as_ref().map_or(DEFAULT_REQUEST_PORT, |p| p.0);
    let notif = notification_port
        .as_ref()
        .map_or(DEFAULT_NOTIFICATION_PORT, |p| p.0);
    if let Some(addr) = &g.tcp {
        let tcp_port = |p: &Option<(u32, Range<usize>)>, default: u32, field: &str| match p {
            Some((v, span)) => u16::try_from(*v).map_err(|_| {
                c.at(
                    span.clone(),
                    format!("[[guest]] '{name}' {field}: {v} is not a TCP port"),
                )
            }),
            None => Ok(default as u16),
        };
        return Ok(TransportConfig::Tcp {
            address: *addr.get_ref(),
            request_port: tcp_port(&request_port, DEFAULT_REQUEST_PORT, "request_port")?,
            notification_port: tcp_port(
                &notification_port,
                DEFAULT_NOTIFICATION_PORT,
                "notification_port",
            )?,
        });
    }
    if let Some(cid) = &g.vsock_cid {
        // CIDs 0 (hypervisor), 1 (loopback) and 2 (host) are never a guest;
        // u32::MAX is VMADDR_CID_ANY.
        let v = *cid.get_ref();
        if v <= 1 || v == 2 || v == u32::MAX {
            return Err(c.at(
                cid.span(),
                format!(
                    "[[guest]] '{name}' vsock_cid: {v} is not a guest CID (guests have 3 and up)"
                ),
            ));
        }
        return Ok(TransportConfig::Vsock {
            cid: v,
            request_port: req,
            notification_port: notif,
        });
    }
    if let Some(path) = &g.hybrid_vsock {
        // The request listener is bound at `<path>_<request_port>`; a Unix
        // socket address holds at most 107 bytes of path. Found here, with
        // the rest of the file, not after other guests have started.
        let listener_len = path.get_ref().as_os_str().len() + 1 + req.to_string().len();
        if listener_len > MAX_UNIX_SOCKET_PATH {
            return Err(c.at(
                path.span(),
                format!(
                    "[[guest]] '{name}' hybrid_vsock: the request socket {}_{req} is {listener_len} bytes long; a Unix socket path holds at most {MAX_UNIX_SOCKET_PATH}",
                    bounded(&path.get_ref().display().to_string())
                ),
            ));
        }
        return Ok(TransportConfig::HybridVsock {
            path: path.get_ref().clone(),
            request_port: req,
            notification_port: notif,
        });
    }
    match &g.hyperv_vm_id {
        Some(id) => Ok(TransportConfig::HyperV {
            vm_id: *id.get_ref(),
            request_port: req,
            notification_port: notif,
        }),
        None => Err(c.at(table_span, "unreachable: no transport")),
    }
}

/// Checks a per-interface connect bound (`connect_timeout_ms`,
/// `--connect-timeout-ms`): at least 1 s, at most the handler's whole
/// connect budget (18 s: the guest waits 20 s for the answer), where a
/// larger value could never be used.
pub fn check_connect_timeout(ms: u64) -> Result<Duration, String> {
    let max = crate::handler::CONNECT_BUDGET.as_millis();
    if ms < 1000 || u128::from(ms) > max {
        return Err(format!(
            "connect_timeout_ms: {ms} is outside 1000..={max} (the guest waits 20 s for a connect)"
        ));
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::parse(text, "test.toml")
    }

    #[test]
    fn connect_timeout_is_read_and_bounded() {
        let base = "[[guest]]\nname = \"vm1\"\ntcp = \"127.0.0.1\"\n";
        let cfg = parse(&format!("{base}connect_timeout_ms = 17000\n")).unwrap();
        assert_eq!(cfg.guests[0].connect_timeout, Some(Duration::from_secs(17)));
        assert_eq!(parse(base).unwrap().guests[0].connect_timeout, None);
        for bad in ["999", "18001"] {
            let e = parse(&format!("{base}connect_timeout_ms = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("connect_timeout_ms") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn iwd_backend_and_its_state_dir() {
        let cfg = parse("backend = \"iwd\"\niwd_state_dir = \"/srv/iwd\"\n").unwrap();
        assert_eq!(cfg.backend, BackendKind::Iwd);
        assert_eq!(cfg.iwd_state_dir, Some(PathBuf::from("/srv/iwd")));
        let cfg = parse("backend = \"auto\"\n").unwrap();
        assert_eq!(cfg.backend, BackendKind::Auto);
        let cfg = parse("").unwrap();
        assert_eq!(cfg.backend, BackendKind::platform_default());
        assert_eq!(cfg.iwd_state_dir, None);
    }

    #[test]
    fn threads_is_a_count_from_1_to_the_maximum() {
        assert_eq!(parse("").unwrap().threads, None);
        assert_eq!(parse("threads = 2\n").unwrap().threads, Some(2));
        for bad in ["0", "-1", "65", "\"two\""] {
            let e = parse(&format!("log_level = \"info\"\nthreads = {bad}\n")).unwrap_err();
            assert!(e.message.starts_with("threads:"), "{bad}: {e}");
            assert_eq!(e.line, Some(2), "{bad}: {e}");
        }
    }

    #[test]
    fn full_example_parses() {
        let cfg = parse(
            r#"
backend = "simulated"
log_level = "debug"
control_socket = "/run/proxy-wifi/control.sock"
metrics = "127.0.0.1:9400"

[[simulated_network]]
ssid = "Home"
bssid = "02:00:00:00:00:10"
freq_khz = 2437000
security = "wpa2-psk"
passphrase = "correct horse"

[[guest]]
name = "vm1"
tcp = "127.0.0.1"
request_port = 0
scan_layout = "legacy"
scan_min_latency_ms = 0
notify_host_disconnect = true
notification_deadline_ms = 5000
fake_network = [{ ssid = "Corp", bssid = "02:00:00:00:00:20" }]
policy = { guest_directed = false, deny_ssids = ["Evil"] }

[[guest]]
name = "vm2"
hybrid_vsock = "/run/fc/vm2.vsock"
"#,
        )
        .unwrap();
        assert_eq!(cfg.backend, BackendKind::Simulated);
        assert_eq!(cfg.metrics, Some("127.0.0.1:9400".parse().unwrap()));
        assert_eq!(cfg.simulated_networks[0].rssi_dbm, -50);
        assert_eq!(cfg.guests.len(), 2);
        let g = &cfg.guests[0];
        assert_eq!(g.scan_layout, ScanLayout::Legacy);
        assert_eq!(g.scan_min_latency, Some(Duration::ZERO));
        assert_eq!(g.notification_deadline, Some(Duration::from_secs(5)));
        assert_eq!(cfg.guests[1].notification_deadline, None);
        assert!(!g.policy.guest_directed);
        assert_eq!(g.fake_networks[0].0, Ssid::new(b"Corp").unwrap());
        assert_eq!(
            g.transport,
            TransportConfig::Tcp {
                address: "127.0.0.1".parse().unwrap(),
                request_port: 0,
                notification_port: 12346
            }
        );
        assert_eq!(
            cfg.guests[1].transport,
            TransportConfig::HybridVsock {
                path: "/run/fc/vm2.vsock".into(),
                request_port: 12345,
                notification_port: 12346
            }
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = parse("backend = \"simulated\"\n[[guest]]\nname = \"a\"\ntcp = \"127.0.0.1\"\nvsock_cid = 5\n")
            .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(
            e.to_string().contains("vsock_cid: only one transport"),
            "{e}"
        );

        let e = parse("[[guest]]\nname = \"a\"\ntcp = \"127.0.0.1\"\nrequest_port = 70000\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().starts_with("test.toml:4:"), "{e}");

        let e = parse("[[guest]]\nname = \"a\"\ntcp = \"127.0.0.1\"\ncolour = 1\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("colour"), "{e}");

        let e = parse("[[guest]]\nname = \"a\"\n").unwrap_err();
        assert!(e.message.contains("needs one transport"), "{e}");
        assert_eq!(e.line, Some(1));

        let e = parse("[[guest]]\nname = \"a\"\nvsock_cid = 2\n").unwrap_err();
        assert!(e.message.contains("not a guest CID"), "{e}");

        let e = parse(
            "[[guest]]\nname = \"a\"\nvsock_cid = 3\n[[guest]]\nname = \"a\"\nvsock_cid = 4\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("used twice"), "{e}");

        let e = parse(
            "[[guest]]\nname = \"a\"\nvsock_cid = 3\n[[guest]]\nname = \"b\"\nvsock_cid = 3\n",
        )
        .unwrap_err();
        assert!(e.message.contains("already used"), "{e}");

        let e = parse("backend = \"networkmanager\"\n[[simulated_network]]\nssid = \"x\"\nbssid = \"02:00:00:00:00:01\"\nfreq_khz = 2437000\nsecurity = \"open\"\n").unwrap_err();
        assert!(e.message.contains("need backend = \"simulated\""), "{e}");

        let e = parse("backend = \"simulated\"\n[[simulated_network]]\nssid = \"x\"\nbssid = \"02:00:00:00:00:01\"\nfreq_khz = 2437\nsecurity = \"open\"\n").unwrap_err();
        assert!(e.message.contains("freq_khz"), "{e}");

        let e = parse("backend = \"simulated\"\n[[simulated_network]]\nssid = \"x\"\nbssid = \"02:00:00:00:00:01\"\nfreq_khz = 2437000\nsecurity = \"wpa2-psk\"\npassphrase = \"short\"\n").unwrap_err();
        assert!(e.message.contains("8 to 63"), "{e}");
        let e = parse("backend = \"simulated\"\n[[simulated_network]]\nssid = \"x\"\nbssid = \"02:00:00:00:00:01\"\nfreq_khz = 2437000\nsecurity = \"wpa3-sae\"\npassphrase = \"short\"\n").unwrap_err();
        assert!(e.message.contains("SAE password"), "{e}");
        let ok = parse("backend = \"simulated\"\n[[simulated_network]]\nssid = \"x\"\nbssid = \"02:00:00:00:00:01\"\nfreq_khz = 2437000\nsecurity = \"wpa3-sae\"\npassphrase = \"long enough\"\n").unwrap();
        assert_eq!(ok.simulated_networks[0].security, Security::WPA3_SAE_CCMP);

        let e = parse("[[guest]]\nname = \"a b\"\ntcp = \"127.0.0.1\"\n").unwrap_err();
        assert_eq!(e.line, Some(2));

        let e = parse("[[guest]]\nname = \"a\"\ntcp = \"127.0.0.1\"\nfake_network = [{ ssid = \"x\", bssid = \"nope\" }]\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");

        let e = parse("log_level = \"[[[\"\n").unwrap_err();
        assert!(e.message.contains("log_level"), "{e}");
        // A bare word is a target name to the filter parser: everything
        // else would be silenced. It is refused instead.
        for bad in ["aaa", "info,aaa", "proxy_wifi=loud"] {
            let e = parse(&format!("log_level = \"{bad}\"\n")).unwrap_err();
            assert!(e.message.contains("log_level"), "{bad}: {e}");
        }
        for good in [
            "debug",
            "info,zbus=warn",
            "proxy_wifi::handler=trace,warn",
            "OFF",
        ] {
            assert!(check_log_filter(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_hybrid_path_too_long_for_its_port_suffix_is_a_config_error() {
        // 104 bytes fits a Unix socket address; with "_1234" appended for
        // the request listener it does not.
        let dir = format!("/{}", "d".repeat(103));
        let e = parse(&format!(
            "[[guest]]\nname = \"a\"\nhybrid_vsock = \"{dir}\"\nrequest_port = 1234\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("hybrid_vsock"), "{e}");
        assert!(!e.message.contains("--"), "names a flag: {e}");
    }

    #[test]
    fn parser_errors_name_their_field_and_echo_no_secret_or_unbounded_input() {
        let e = parse("[[guest]]\nname = \"a\"\ntcp = \"127.0.0.1\"\nscan_layout = \"old\"\n")
            .unwrap_err();
        assert!(e.message.starts_with("scan_layout:"), "{e}");
        let e = parse("metrics = \"localhost\"\n").unwrap_err();
        assert!(e.message.starts_with("metrics:"), "{e}");
        assert_eq!(e.line, Some(1));

        let e = parse(
            "backend = \"simulated\"\n[[simulated_network]]\nssid = \"s\"\nbssid = \"02:00:00:00:00:01\"\nfreq_khz = 2437000\nsecurity = \"wpa2-psk\"\npassphrase = 31415926535897\n",
        )
        .unwrap_err();
        assert!(!e.to_string().contains("31415926535897"), "{e}");
        assert!(e.message.contains("passphrase"), "{e}");

        let huge = "n".repeat(16 << 20);
        let e = parse(&format!(
            "[[guest]]\nname = \"{huge}\"\ntcp = \"127.0.0.1\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().len() < 1024, "{} bytes", e.to_string().len());
        let e = parse(&format!("[[guest]]\nname = {huge}\n")).unwrap_err();
        assert!(e.to_string().len() < 1024, "{} bytes", e.to_string().len());
    }

    #[test]
    fn many_vsock_guests_share_a_port_but_never_a_cid() {
        let cfg = parse(
            "[[guest]]\nname = \"a\"\nvsock_cid = 3\n[[guest]]\nname = \"b\"\nvsock_cid = 7\n",
        )
        .unwrap();
        assert_eq!(cfg.guests.len(), 2);
        // The same CID is one VM, whatever the ports: line of the second.
        let e = parse(
            "[[guest]]\nname = \"a\"\nvsock_cid = 3\n[[guest]]\nname = \"b\"\nvsock_cid = 3\nrequest_port = 5000\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("vsock cid 3 is already used"), "{e}");
        assert!(e.to_string().starts_with("test.toml:4:"), "{e}");
    }

    // User and group names are Unix's.
    #[cfg(unix)]
    #[test]
    fn socket_owner_group_and_mode() {
        let cfg = parse(
            "control_socket_owner = \"0\"\ncontrol_socket_mode = \"0660\"\n[[guest]]\nname = \"fc\"\nhybrid_vsock = \"/run/fc/v.sock\"\nsocket_owner = \"root\"\nsocket_group = \"0\"\n",
        )
        .unwrap();
        let access = cfg.guests[0].socket_access;
        assert_eq!(
            (access.owner, access.group, access.mode),
            (Some(0), Some(0), None)
        );
        assert_eq!(access.effective_mode(), 0o660);
        assert_eq!(cfg.control_socket_access.owner, Some(0));
        assert_eq!(cfg.control_socket_access.effective_mode(), 0o660);

        let e =
            parse("[[guest]]\nname = \"a\"\nvsock_cid = 3\nsocket_mode = \"0660\"\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("only a hybrid_vsock guest"), "{e}");
        let e = parse("[[guest]]\nname = \"a\"\nhybrid_vsock = \"/x\"\nsocket_mode = \"0999\"\n")
            .unwrap_err();
        assert!(e.message.contains("socket_mode"), "{e}");
        let e = parse(
            "[[guest]]\nname = \"a\"\nhybrid_vsock = \"/x\"\nsocket_owner = \"no-such-user-pw\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("no user named 'no-such-user-pw'"), "{e}");
        let e = parse("control_socket_group = \"no-such-group-pw\"\n").unwrap_err();
        assert!(e.message.starts_with("control_socket_group:"), "{e}");
    }

    #[test]
    fn a_guest_spec_is_checked_like_a_table() {
        let spec = GuestSpec {
            name: "libvirt-vm1".into(),
            vsock_cid: Some(5),
            ..Default::default()
        };
        let g = spec.check().unwrap();
        assert_eq!(
            g.transport,
            TransportConfig::Vsock {
                cid: 5,
                request_port: 12345,
                notification_port: 12346
            }
        );
        let bad = GuestSpec {
            name: "x".into(),
            vsock_cid: Some(2),
            ..Default::default()
        };
        let e = bad.check().unwrap_err();
        assert_eq!(e.line, None);
        assert!(e.message.contains("not a guest CID"), "{e}");
        let none = GuestSpec {
            name: "x".into(),
            ..Default::default()
        };
        assert!(none
            .check()
            .unwrap_err()
            .message
            .contains("needs one transport"));
        let two = GuestSpec {
            name: "x".into(),
            vsock_cid: Some(9),
            tcp: Some("127.0.0.1".into()),
            ..Default::default()
        };
        assert!(two
            .check()
            .unwrap_err()
            .message
            .contains("only one transport"));

        let other = GuestSpec {
            name: "other".into(),
            vsock_cid: Some(5),
            ..Default::default()
        }
        .check()
        .unwrap();
        let why = guest_conflict([&other], &g).unwrap();
        assert!(
            why.contains("vsock cid 5 is already used by guest 'other'"),
            "{why}"
        );
        let named = GuestConfig {
            name: "libvirt-vm1".into(),
            ..other.clone()
        };
        assert!(guest_conflict([&named], &g)
            .unwrap()
            .contains("exists already"));
    }

    #[test]
    fn load_reports_missing_file() {
        let e = DaemonConfig::load(Path::new("/nonexistent/proxy-wifi.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/proxy-wifi.toml: cannot read"),
            "{e}"
        );
    }
}
