//! Transport flags shared by `serve` and `guest`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use proxy_wifi::protocol::{ScanLayout, DEFAULT_NOTIFICATION_PORT, DEFAULT_REQUEST_PORT};
use proxy_wifi::transport::TransportConfig;

/// SCAN_RESPONSE layout the driver speaks (never guessed: it must be
/// configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// 9-byte fixed part with scan_complete (current drivers).
    Current,
    /// 8-byte fixed part (kernel 5.10 WSA driver).
    Legacy,
}

impl From<LayoutArg> for ScanLayout {
    fn from(layout: LayoutArg) -> ScanLayout {
        match layout {
            LayoutArg::Current => ScanLayout::Current,
            LayoutArg::Legacy => ScanLayout::Legacy,
        }
    }
}

/// At most one transport flag (clap enforces it, exit code 2); `to_config`
/// says when none was given. The group is declared on the command rather
/// than on the struct: a struct-level group would also take in the port
/// flags, making `--tcp ADDR --request-port N` a conflict.
#[derive(Debug, Clone, Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("transport").required(false).multiple(false)))]
pub struct TransportArgs {
    /// TCP: the address to listen on (serve) or the host to reach (guest).
    #[arg(long, value_name = "ADDR", group = "transport")]
    pub tcp: Option<IpAddr>,
    /// Hybrid vsock: the VMM's vsock Unix socket (Firecracker, Cloud
    /// Hypervisor, vhost-device-vsock).
    #[arg(long, value_name = "PATH", group = "transport")]
    pub hybrid_vsock: Option<PathBuf>,
    /// AF_VSOCK: the guest's CID (serve) or the host's CID (guest; 2, or 1
    /// for loopback).
    #[arg(long, value_name = "CID", group = "transport")]
    pub vsock_cid: Option<u32>,
    /// Hyper-V socket: the VM id (Windows hosts).
    #[arg(long, value_name = "GUID", group = "transport")]
    pub hyperv_vm_id: Option<uuid::Uuid>,
    /// Port the guest sends requests to.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_REQUEST_PORT)]
    pub request_port: u32,
    /// Port the guest listens on for notifications.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_NOTIFICATION_PORT)]
    pub notification_port: u32,
}

impl TransportArgs {
    /// Whether any transport flag was given.
    pub fn is_set(&self) -> bool {
        self.tcp.is_some()
            || self.hybrid_vsock.is_some()
            || self.vsock_cid.is_some()
            || self.hyperv_vm_id.is_some()
    }

    /// The transport these flags describe, or a message saying what is wrong.
    pub fn to_config(&self) -> Result<TransportConfig, String> {
        // clap's group sees only the flags given on one level; `guest`'s
        // are global (accepted after the subcommand too), so two transports
        // on two levels arrive here.
        let given: Vec<&str> = [
            (self.tcp.is_some(), "--tcp"),
            (self.hybrid_vsock.is_some(), "--hybrid-vsock"),
            (self.vsock_cid.is_some(), "--vsock-cid"),
            (self.hyperv_vm_id.is_some(), "--hyperv-vm-id"),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect();
        if given.len() > 1 {
            return Err(format!(
                "one transport only: {} were given together",
                given.join(" and ")
            ));
        }
        let (request_port, notification_port) = (self.request_port, self.notification_port);
        if let Some(address) = self.tcp {
            let port = |p: u32, name: &str| {
                u16::try_from(p).map_err(|_| format!("--{name} {p} is not a TCP port (0-65535)"))
            };
            return Ok(TransportConfig::Tcp {
                address,
                request_port: port(request_port, "request-port")?,
                notification_port: port(notification_port, "notification-port")?,
            });
        }
        if let Some(path) = &self.hybrid_vsock {
            return Ok(TransportConfig::HybridVsock {
                path: path.clone(),
                request_port,
                notification_port,
            });
        }
        if let Some(cid) = self.vsock_cid {
            return Ok(TransportConfig::Vsock {
                cid,
                request_port,
                notification_port,
            });
        }
        if let Some(vm_id) = self.hyperv_vm_id {
            return Ok(TransportConfig::HyperV {
                vm_id,
                request_port,
                notification_port,
            });
        }
        Err("a transport is required: --tcp ADDR, --hybrid-vsock PATH, --vsock-cid CID or --hyperv-vm-id GUID".into())
    }
}

/// Who may open a hybrid vsock request socket, for a VMM running as another
/// user. `serve` resolves the names itself; `ctl add-guest` passes them to
/// the daemon, which resolves them on its side.
#[derive(Debug, Clone, Default, Args)]
pub struct SocketAccessArgs {
    /// Hybrid vsock: the request socket's owner (a user name or uid; needs
    /// CAP_CHOWN).
    #[arg(long, value_name = "USER")]
    pub socket_owner: Option<String>,
    /// Hybrid vsock: the request socket's group (a group name or gid).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Hybrid vsock: the request socket's mode, octal (default 0600; 0660
    /// with --socket-group).
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
}
