//! The command as people and their tools use it every day: configuration
//! checks, help, man pages and completions (issue 20).

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-wifi");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PROXY_WIFI_CONTROL")
        .output()
        .expect("run proxy-wifi")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

#[test]
fn check_config_accepts_a_valid_file_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let config = write(
        dir.path(),
        "good.toml",
        &format!(
            "backend = \"simulated\"\ncontrol_socket = \"{}\"\n[[guest]]\nname = \"vm1\"\ntcp = \"127.0.0.1\"\n[[guest]]\nname = \"vm2\"\nhybrid_vsock = \"{}/v.sock\"\n",
            control.display(),
            dir.path().display()
        ),
    );
    let out = run(&["serve", "--check-config", &config]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("good.toml: valid (2 guests, backend simulated)"),
        "{stdout}"
    );
    assert!(!control.exists(), "--check-config bound the control socket");
    assert!(!dir.path().join("v.sock_12345").exists());
}

#[test]
fn check_config_fails_with_78_and_the_message_serve_prints() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.toml",
        "[[guest]]\nname = \"vm1\"\ntcp = \"127.0.0.1\"\nrequest_port = 70000\n",
    );
    let checked = run(&["serve", "--check-config", &config]);
    assert_eq!(checked.status.code(), Some(78), "{checked:?}");
    let served = run(&["serve", "--config", &config]);
    assert_eq!(served.status.code(), Some(78), "{served:?}");
    let message = text(&checked.stderr);
    assert!(
        message.contains("bad.toml:4:") && message.contains("request_port"),
        "{message}"
    );
    assert_eq!(message, text(&served.stderr));

    let missing = dir.path().join("missing.toml").display().to_string();
    let out = run(&["serve", "--check-config", &missing]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(text(&out.stderr).contains("missing.toml"), "{out:?}");
}

#[test]
fn check_config_does_not_mix_with_serving_flags() {
    for extra in [
        &["--tcp", "127.0.0.1"][..],
        &["--config", "x.toml"],
        &["--simulated"],
        &["--metrics", "127.0.0.1:9400"],
    ] {
        let mut args = vec!["serve", "--check-config", "x.toml"];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

fn help(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    let out = run(&all);
    assert_eq!(out.status.code(), Some(0), "{all:?}: {out:?}");
    text(&out.stdout)
}

#[test]
fn transport_flags_are_worded_for_their_subcommand() {
    let serve = help(&["serve"]);
    let guest = help(&["guest", "scan"]);
    assert!(serve.contains("TCP: the address to listen on"), "{serve}");
    assert!(!serve.contains("the host's address"), "{serve}");
    assert!(guest.contains("TCP: the host's address"), "{guest}");
    assert!(
        guest.contains("the host's CID (2 from inside a VM"),
        "{guest}"
    );
    assert!(!guest.contains("(serve)") && !serve.contains("(guest)"));
}

#[test]
fn every_command_has_an_example_and_its_exit_codes() {
    for (args, codes) in [
        (
            &["serve"][..],
            &["78  configuration error", "1   could not start"][..],
        ),
        (
            &["guest"],
            &["3  host unreachable", "6  the host answered INVALID"],
        ),
        (&["ctl"], &["1  the service refused"]),
        (&[], &["Exit codes: 0 success; 2 bad arguments"]),
    ] {
        let text = help(args);
        assert!(text.contains("Example"), "{args:?}: {text}");
        for code in codes {
            assert!(text.contains(code), "{args:?} lacks {code:?}: {text}");
        }
    }
    for sub in ["scan", "connect", "disconnect", "watch"] {
        let text = help(&["guest", sub]);
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("proxy-wifi guest") && l.contains(sub)),
            "guest {sub}: no example in {text}"
        );
        assert!(text.contains("Example"), "guest {sub}: {text}");
    }
    for sub in [
        "host-connect",
        "host-disconnect",
        "signal",
        "scan-results",
        "scan-mode",
        "status",
        "reload",
    ] {
        let text = help(&["ctl", sub]);
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("proxy-wifi ctl --control") && l.contains(sub)),
            "ctl {sub}: {text}"
        );
    }
}

#[test]
fn positional_arguments_are_explained() {
    let signal = help(&["ctl", "signal"]);
    assert!(
        signal.contains("<PERCENT>  Link quality, 0 to 100"),
        "{signal}"
    );
    let connect = help(&["ctl", "host-connect"]);
    assert!(connect.contains("<SSID>  The network's SSID"), "{connect}");
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn transport_flags_work_after_the_subcommand() {
    let port = closed_port().to_string();
    // Before or after the subcommand: the same outcome, "unreachable" (3),
    // not a usage error (2).
    for args in [
        vec![
            "guest",
            "--tcp",
            "127.0.0.1",
            "--request-port",
            &port,
            "scan",
        ],
        vec![
            "guest",
            "scan",
            "--tcp",
            "127.0.0.1",
            "--request-port",
            &port,
        ],
        vec![
            "guest",
            "scan",
            "--request-port",
            &port,
            "--tcp",
            "127.0.0.1",
            "--json",
        ],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {out:?}");
    }
    // Two transports are still refused, wherever they are.
    let out = run(&["guest", "--tcp", "127.0.0.1", "scan", "--vsock-cid", "2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // ctl: --control after the subcommand; missing, the default socket.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock").display().to_string();
    let out = run(&["ctl", "status", "--control", &socket]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("none.sock"), "{out:?}");
    let out = run(&["ctl", "status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("proxy-wifi/control.sock"),
        "{out:?}"
    );
}

#[test]
fn man_pages_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = run(&["man", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in [
        "proxy-wifi.1",
        "proxy-wifi-serve.1",
        "proxy-wifi-guest.1",
        "proxy-wifi-guest-scan.1",
        "proxy-wifi-guest-connect.1",
        "proxy-wifi-guest-disconnect.1",
        "proxy-wifi-guest-watch.1",
        "proxy-wifi-ctl.1",
        "proxy-wifi-ctl-signal.1",
        "proxy-wifi-ctl-reload.1",
        "proxy-wifi-completions.1",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("-man")), "{names:?}");
    let serve = std::fs::read_to_string(out_dir.join("proxy-wifi-serve.1")).unwrap();
    assert!(serve.starts_with(".ie") || serve.contains(".TH"), "{serve}");
    assert!(serve.contains("check\\-config"), "{serve}");
    assert!(serve.contains("EX_CONFIG"), "exit codes missing: {serve}");
    // man(1) renders it, when installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let rendered = Command::new("man")
            .arg("-l")
            .arg(out_dir.join("proxy-wifi-guest-scan.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let page = text(&rendered.stdout);
        assert!(page.contains("--ssid"), "{rendered:?}");
    } else {
        println!("SKIPPED: rendering with man(1): man is not installed");
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, checker) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
        let script = text(&out.stdout);
        for word in [
            "serve",
            "guest",
            "ctl",
            "check-config",
            "host-connect",
            "--tcp",
        ] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        // The shell itself parses it, where it is installed.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("completion");
        std::fs::write(&file, &script).unwrap();
        match Command::new(checker).arg("-n").arg(&file).output() {
            Ok(o) => assert!(o.status.success(), "{shell} -n: {o:?}"),
            Err(_) => println!(
                "SKIPPED: syntax check of the {shell} completion: {checker} is not installed"
            ),
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
