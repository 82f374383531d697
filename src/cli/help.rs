//! What `--help`, the man pages and the shell completions say beyond each
//! flag's own doc comment: the shared transport flags worded for the
//! subcommand they are given to, examples and exit codes. All three are
//! generated from the one [`command`], so they cannot disagree.

use std::path::Path;

use clap::{Command, CommandFactory};

use super::Cli;

const ROOT_AFTER: &str = "\
Examples:
  proxy-wifi serve --simulated --tcp 127.0.0.1        a simulated host for one guest over TCP
  proxy-wifi serve --config /etc/proxy-wifi/config.toml
  proxy-wifi guest --tcp 127.0.0.1 scan               be the guest: scan that host
  proxy-wifi ctl status                               the service's guests (its default control socket)

Exit codes: 0 success; 2 bad arguments; the others are listed in each
command's --help (proxy-wifi serve --help, guest --help, ctl --help).";

const SERVE_AFTER: &str = "\
Examples:
  proxy-wifi serve --vsock-cid 3                      QEMU/KVM guest with CID 3, host Wi-Fi from NetworkManager
  proxy-wifi serve --hybrid-vsock /run/fc-vm1/v.sock  Firecracker, Cloud Hypervisor, vhost-device-vsock
  proxy-wifi serve --simulated --tcp 127.0.0.1 --control /tmp/pw.sock
  proxy-wifi serve --config /etc/proxy-wifi/config.toml      many VMs (docs/daemon.md)
  proxy-wifi serve --check-config /etc/proxy-wifi/config.toml

Exit codes:
  0   stopped by SIGTERM or SIGINT (or --check-config: the file is valid)
  1   could not start (a port or socket in use, the backend unavailable, ...)
  2   bad arguments
  78  configuration error (EX_CONFIG): the file, line and field are printed";

const GUEST_AFTER: &str = "\
Name the host with one transport flag, before or after the subcommand:
--tcp ADDR, --vsock-cid CID (2 from inside a VM), --hybrid-vsock PATH or
--hyperv-vm-id GUID.

Examples:
  proxy-wifi guest --vsock-cid 2 scan
  proxy-wifi guest scan --tcp 127.0.0.1 --json
  proxy-wifi guest --tcp 127.0.0.1 connect Home --passphrase-file -   (passphrase from stdin)
  proxy-wifi guest --tcp 127.0.0.1 watch --json

Exit codes:
  0  success
  1  the host refused the connect (non-zero 802.11 status)
  2  bad arguments
  3  host unreachable, or the connection failed
  4  timeout
  5  malformed reply
  6  the host answered INVALID
  7  local problem (transport unavailable here, port cannot be bound)";

const CTL_AFTER: &str = "\
The control socket: --control PATH, else $PROXY_WIFI_CONTROL, else your own
service's ($XDG_RUNTIME_DIR/proxy-wifi/control.sock) when it runs, else the
system service's, /run/proxy-wifi/control.sock (where `serve --config`
puts it by default; `serve --control PATH` or `control_socket` in the file
put it elsewhere).

Examples:
  proxy-wifi ctl status
  proxy-wifi ctl --control /tmp/pw.sock signal 80
  proxy-wifi ctl add-guest vm7 --vsock-cid 7
  proxy-wifi ctl reload

Exit codes:
  0  done
  1  the service refused the command or could not be reached
  2  bad arguments
  3  sent, but no answer in time: the outcome is unknown (it may still take effect)
  4  signal / scan-results done on the host, but no guest can receive the notification";

/// The transport flags' help, per subcommand: (flag id, for serve, for guest).
const TRANSPORT_HELP: [(&str, &str, &str); 6] = [
    (
        "tcp",
        "TCP: the address to listen on (tests and local use; guests reach it at --request-port)",
        "TCP: the host's address (the one `serve --tcp` listens on)",
    ),
    (
        "hybrid_vsock",
        "Hybrid vsock: the VMM's vsock Unix socket (Firecracker, Cloud Hypervisor, vhost-device-vsock); requests are accepted on PATH_<request-port>",
        "Hybrid vsock: the VMM's vsock Unix socket the host service was given",
    ),
    (
        "vsock_cid",
        "AF_VSOCK: the guest's CID; connections from a CID no guest has are closed",
        "AF_VSOCK: the host's CID (2 from inside a VM, 1 for loopback tests)",
    ),
    (
        "hyperv_vm_id",
        "Hyper-V socket: the VM's id (Windows hosts; Get-VM | Select Name, Id)",
        "Hyper-V socket: the VM's id (Windows)",
    ),
    (
        "request_port",
        "Port guests send requests to (the driver's: 12345)",
        "Port the host accepts requests on (the driver's: 12345)",
    ),
    (
        "notification_port",
        "Port guests listen on for notifications (the driver's: 12346)",
        "Port to listen on for notifications with `watch` (0 picks a free port, printed on stderr)",
    ),
];

const GUEST_EXAMPLES: [(&str, &str); 4] = [
    (
        "scan",
        "Examples:\n  proxy-wifi guest --tcp 127.0.0.1 scan\n  proxy-wifi guest scan --vsock-cid 2 --ssid Hidden --json",
    ),
    (
        "connect",
        "Examples:\n  proxy-wifi guest --tcp 127.0.0.1 connect FakeWpa2Psk --passphrase-file ~/.pw-pass\n  proxy-wifi guest --vsock-cid 2 connect Cafe\n  echo \"$PASS\" | proxy-wifi guest --vsock-cid 2 connect Home --passphrase-file -\n  PROXY_WIFI_PSK=$(cat psk.hex) proxy-wifi guest --vsock-cid 2 connect Home\n\nExit code 1: the host refused (the 802.11 status is printed).",
    ),
    (
        "disconnect",
        "Examples:\n  proxy-wifi guest --tcp 127.0.0.1 disconnect 1     (the session `connect` printed)",
    ),
    (
        "watch",
        "Examples:\n  proxy-wifi guest --tcp 127.0.0.1 watch\n  proxy-wifi guest watch --tcp 127.0.0.1 --notification-port 0 --json --count 1",
    ),
];

const CTL_EXAMPLES: [(&str, &str); 9] = [
    ("host-connect", "Example:\n  proxy-wifi ctl --control /tmp/pw.sock host-connect FakeOpen"),
    ("host-disconnect", "Example:\n  proxy-wifi ctl --control /tmp/pw.sock host-disconnect"),
    ("signal", "Example:\n  proxy-wifi ctl --control /tmp/pw.sock signal 80     (sent to a connected guest as -60 dBm; exit 4 if none can receive it)"),
    ("scan-results", "Example:\n  proxy-wifi ctl --control /tmp/pw.sock scan-results     (exit 4 if no guest can receive them)"),
    ("scan-mode", "Example:\n  proxy-wifi ctl --control /tmp/pw.sock scan-mode async"),
    ("status", "Examples:\n  proxy-wifi ctl --control /run/proxy-wifi/control.sock status\n  proxy-wifi ctl --control /run/proxy-wifi/control.sock status --guest vm1 --json"),
    ("reload", "Example:\n  proxy-wifi ctl --control /run/proxy-wifi/control.sock reload     (what systemctl reload runs)"),
    ("add-guest", "Examples:\n  proxy-wifi ctl add-guest vm7 --vsock-cid 7\n  proxy-wifi ctl add-guest fc-1 --hybrid-vsock /srv/jailer/firecracker/fc-1/root/v.sock --socket-owner fc-1 --mirror-only\n  proxy-wifi ctl add-guest test --tcp 127.0.0.1 --request-port 0\n\nThe guest lives until remove-guest or a restart of the service: it is not\nwritten to the configuration file (a reload keeps it unless the file names\na guest of the same name)."),
    ("remove-guest", "Example:\n  proxy-wifi ctl remove-guest vm7"),
];

/// The whole command line, as parsed and as documented.
pub fn command() -> Command {
    let serve = |c: Command| {
        let mut c = c.after_help(SERVE_AFTER);
        for (id, help, _) in TRANSPORT_HELP {
            c = c.mut_arg(id, |a| a.help(help));
        }
        c
    };
    let guest = |c: Command| {
        let mut c = c.after_help(GUEST_AFTER);
        for (id, _, help) in TRANSPORT_HELP {
            // Global: accepted after the subcommand too, like --json.
            c = c.mut_arg(id, |a| a.help(help).global(true));
        }
        for (name, text) in GUEST_EXAMPLES {
            c = c.mut_subcommand(name, |s| s.after_help(text));
        }
        c
    };
    let ctl = |c: Command| {
        let mut c = c
            .after_help(CTL_AFTER)
            .mut_arg("control", |a| a.global(true))
            .mut_arg("guest", |a| a.global(true));
        for (name, text) in CTL_EXAMPLES {
            c = c.mut_subcommand(name, |s| s.after_help(text));
        }
        c
    };
    Cli::command()
        .after_help(ROOT_AFTER)
        .mut_subcommand("serve", serve)
        .mut_subcommand("guest", guest)
        .mut_subcommand("ctl", ctl)
}

/// Writes `proxy-wifi.1` and one page per subcommand
/// (`proxy-wifi-guest-scan.1`, ...) into `dir`.
pub fn write_man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(command(), dir)
}

/// Prints the completion script for `shell` on stdout.
pub fn print_completions(shell: clap_complete::Shell) {
    let mut cmd = command();
    clap_complete::generate(shell, &mut cmd, "proxy-wifi", &mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks (duplicate flags, globals that are
    /// required, ...) on the decorated command, every subcommand included.
    #[test]
    fn the_command_is_consistent() {
        command().debug_assert();
    }
}
