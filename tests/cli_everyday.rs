//! The command as people and their tools use it every day: configuration
//! checks, help, man pages and completions (issue 20).

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-wifi");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
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
