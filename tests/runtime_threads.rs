//! `serve` runs on one thread by default (issue 22): a guest request is
//! answered on the thread its socket wakes, with no hand-off to a second
//! one. `--threads N` and the file's `threads` choose more. Thread counts
//! only, never times (speed is measured in benches/e2e.rs).

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxy_wifi::protocol::{DisconnectRequest, Message, Request, ScanLayout, ScanRequest};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-wifi");

/// A running `serve`, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `serve --simulated` on TCP with `extra` arguments, once it accepts.
fn serve(extra: &[&str]) -> (Serve, SocketAddr) {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["serve", "--simulated", "--tcp", "127.0.0.1"])
        .args(["--request-port", &port.to_string()])
        .args(["--notification-port", &free_port().to_string()])
        .args(["--scan-min-latency-ms", "0"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut serve = Serve(child);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    // Generous: several builds and VMs may share the machine's CPUs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(address).is_err() {
        assert!(
            serve.0.try_wait().unwrap().is_none(),
            "serve exited before listening"
        );
        assert!(Instant::now() < deadline, "serve not listening after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    (serve, address)
}

fn ask(address: SocketAddr, request: Request) -> Message {
    let mut s = TcpStream::connect(address).unwrap();
    s.write_all(&request.encode().unwrap()).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    Message::decode(&reply, ScanLayout::Current).unwrap()
}

fn threads(serve: &Serve) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", serve.0.id()))
        .unwrap()
        .count()
}

#[test]
fn serve_answers_on_one_thread_by_default() {
    let (serve, address) = serve(&[]);
    for _ in 0..20 {
        assert!(matches!(
            ask(address, Request::Scan(ScanRequest::default())),
            Message::ScanResponse(s) if s.bss.len() == 3
        ));
        assert!(matches!(
            ask(
                address,
                Request::Disconnect(DisconnectRequest { session_id: 0 })
            ),
            Message::DisconnectResponse
        ));
    }
    assert_eq!(threads(&serve), 1, "serve runs on more than one thread");
}

#[test]
fn threads_flag_gives_a_runtime_with_that_many_workers() {
    let (serve, address) = serve(&["--threads", "3"]);
    assert!(matches!(
        ask(address, Request::Scan(ScanRequest::default())),
        Message::ScanResponse(_)
    ));
    // The main thread and three workers.
    assert!(threads(&serve) >= 4, "{} threads", threads(&serve));
}

#[test]
fn threads_out_of_range_is_a_usage_error() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--simulated",
            "--tcp",
            "127.0.0.1",
            "--threads",
            "0",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
}
