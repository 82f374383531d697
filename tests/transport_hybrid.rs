//! Hybrid vsock end to end over real Unix sockets in a temporary directory:
//! the host endpoint against the guest endpoint, against hand-written fake
//! VMMs (good, refusing, garbling, silent, babbling), and the socket file's
//! life cycle (stale replacement, 0600, removal on drop, long paths).
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proxy_wifi::protocol::{DisconnectRequest, Header, Message, Request, ScanLayout};
use proxy_wifi::transport::framing::{read_message, write_message};
use proxy_wifi::transport::hybrid::{self, HandshakeError, HANDSHAKE_TIMEOUT, MAX_LINE};
use proxy_wifi::transport::{NotificationConnector, Peer, TransportConfig, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// The guest driver's receive timeout on a notification connection.
const DRIVER_RECV_TIMEOUT: Duration = Duration::from_millis(10);

fn config(path: &Path, request_port: u32, notification_port: u32) -> TransportConfig {
    TransportConfig::HybridVsock {
        path: path.to_path_buf(),
        request_port,
        notification_port,
    }
}

fn notification() -> Vec<u8> {
    Message::NotifSignalQuality { dbm: -61 }
        .encode(ScanLayout::Current)
        .unwrap()
}

fn handshake_error(err: &std::io::Error) -> Option<&HandshakeError> {
    err.get_ref()?.downcast_ref::<HandshakeError>()
}

#[tokio::test]
async fn request_round_trip_between_guest_and_host() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let cfg = config(&uds, 12345, 12346);
    let host = cfg.bind_host().await.unwrap();
    assert_eq!(
        host.listener.local_description(),
        format!("{}_12345", uds.display())
    );
    assert_eq!(host.listener.local_port(), Some(12345));

    let guest = cfg.guest().unwrap();
    assert_eq!(
        guest.requests.describe(),
        format!("{}_12345", uds.display())
    );
    let request = Request::Disconnect(DisconnectRequest { session_id: 77 })
        .encode()
        .unwrap();
    let client = tokio::spawn(async move {
        let mut s = guest.requests.connect().await.unwrap();
        write_message(&mut s, &request).await.unwrap();
        let (h, body) = read_message(&mut s, Header::decode_host).await.unwrap();
        (h, body)
    });

    let (mut stream, peer) = host.listener.accept().await.unwrap();
    // The connecting process (this one) by its peer credentials, read
    // only for a line that shows them.
    assert_eq!(peer, Peer::UnixProcessUnread);
    let peer = peer.read_from(&stream);
    match &peer {
        Peer::UnixProcess(Some(credentials)) => {
            assert_eq!(credentials.pid, Some(std::process::id() as i32))
        }
        other => panic!("no peer credentials: {other:?}"),
    }
    assert_eq!(
        peer.to_string(),
        format!("guest via VMM pid {}", std::process::id())
    );
    let (h, body) = read_message(&mut stream, Header::decode_request)
        .await
        .unwrap();
    assert_eq!(
        Request::decode_body(h.operation, &body).unwrap(),
        Request::Disconnect(DisconnectRequest { session_id: 77 })
    );
    let reply = Message::DisconnectResponse
        .encode(ScanLayout::Current)
        .unwrap();
    write_message(&mut stream, &reply).await.unwrap();
    drop(stream);

    let (h, body) = client.await.unwrap();
    assert_eq!(
        Message::decode_body(h.operation, &body, ScanLayout::Current).unwrap(),
        Message::DisconnectResponse
    );
}

#[tokio::test]
async fn notification_reaches_the_guest_emulation_of_the_vmm() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let cfg = config(&uds, 12345, 12346);
    let guest_listener = cfg.bind_guest_notifications().await.unwrap();
    assert_eq!(guest_listener.local_port(), Some(12346));
    let host = cfg.bind_host().await.unwrap();

    let message = notification();
    let expected = message.clone();
    let notifier = host.notifier.clone();
    let sender = tokio::spawn(async move {
        let mut s = notifier.connect().await.unwrap();
        write_message(&mut s, &message).await.unwrap();
    });
    let mut s = guest_listener.accept().await.unwrap();
    let (h, body) = tokio::time::timeout(
        Duration::from_secs(5),
        read_message(&mut s, Header::decode_host),
    )
    .await
    .unwrap()
    .unwrap();
    let mut got = h.encode().to_vec();
    got.extend_from_slice(&body);
    assert_eq!(got, expected);
    sender.await.unwrap();

    // A host asking for another guest port is closed without OK, and the
    // emulation keeps serving: accept() goes on to the next connection.
    let wrong_host = hybrid::HybridNotificationConnector::new(uds.clone(), 999);
    let notifier = host.notifier.clone();
    let sender = tokio::spawn(async move {
        let err = wrong_host.connect().await.err().unwrap();
        let mut s = notifier.connect().await.unwrap();
        write_message(&mut s, &notification()).await.unwrap();
        err
    });
    let mut s = guest_listener.accept().await.unwrap();
    read_message(&mut s, Header::decode_host).await.unwrap();
    let err = sender.await.unwrap();
    assert_eq!(
        handshake_error(&err),
        Some(&HandshakeError::Closed { port: 999 }),
        "{err}"
    );
}

/// A fake VMM on a real OS thread with a real 10 ms receive timeout, exactly
/// like the guest driver: it answers the handshake and then gives the host
/// 10 ms to deliver the whole message. Returns the CONNECT line and what it
/// read (or the read error).
fn spawn_timing_vmm(path: &Path) -> std::thread::JoinHandle<(Vec<u8>, std::io::Result<Vec<u8>>)> {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while s.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        s.write_all(b"OK 1073741824\n").unwrap();
        s.set_read_timeout(Some(DRIVER_RECV_TIMEOUT)).unwrap();
        let mut message = vec![0u8; notification().len()];
        let got = s.read_exact(&mut message).map(|()| message);
        (line, got)
    })
}

#[tokio::test]
async fn notification_is_delivered_within_the_drivers_10ms() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let vmm = spawn_timing_vmm(&uds);
    let notifier = hybrid::HybridNotificationConnector::new(uds.clone(), 12346);
    let mut s = notifier.connect().await.unwrap();
    let written = write_message(&mut s, &notification()).await;
    let (line, got) = tokio::task::spawn_blocking(move || vmm.join().unwrap())
        .await
        .unwrap();
    assert_eq!(line, b"CONNECT 12346");
    match got {
        Ok(message) => assert_eq!(message, notification()),
        Err(e) => panic!("the message did not arrive within the driver's 10 ms: {e}"),
    }
    written.unwrap();
}

/// The check above can fail: a host that dawdles after the handshake is
/// caught by the same fake VMM.
#[tokio::test]
async fn a_late_notification_misses_the_drivers_10ms() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let vmm = spawn_timing_vmm(&uds);
    let notifier = hybrid::HybridNotificationConnector::new(uds.clone(), 12346);
    let mut s = notifier.connect().await.unwrap();
    let vmm = tokio::task::spawn_blocking(move || vmm.join().unwrap());
    tokio::time::sleep(5 * DRIVER_RECV_TIMEOUT).await;
    // Too late: the VMM side has given up (the write may still succeed into
    // the socket buffer, or fail).
    let _ = write_message(&mut s, &notification()).await;
    let (_, got) = vmm.await.unwrap();
    let err = got.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
}

/// How a fake VMM answers the CONNECT line.
enum Answer {
    /// Close at once, as a VMM does when nothing listens on the guest port.
    Close,
    /// Send these bytes and keep the connection open.
    Send(Vec<u8>),
    /// Say nothing and keep the connection open.
    Nothing,
}

/// A fake VMM: accepts one connection on `path`, reads the CONNECT line,
/// answers, and returns the line it got. Connections it keeps open are held
/// until `release` is dropped.
async fn fake_vmm(
    path: &Path,
    answer: Answer,
) -> (
    tokio::task::JoinHandle<Vec<u8>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = UnixListener::bind(path).unwrap();
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut line = Vec::new();
        loop {
            let b = s.read_u8().await.unwrap();
            if b == b'\n' {
                break;
            }
            line.push(b);
        }
        match answer {
            Answer::Close => return line,
            Answer::Send(bytes) => s.write_all(&bytes).await.unwrap(),
            Answer::Nothing => {}
        }
        let _ = hold.await;
        line
    });
    (task, release)
}

#[tokio::test]
async fn a_vmm_that_closes_without_ok_means_nobody_listens() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let (vmm, _release) = fake_vmm(&uds, Answer::Close).await;
    let notifier = hybrid::HybridNotificationConnector::new(uds.clone(), 12346);
    let err = notifier.connect().await.err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(
        handshake_error(&err),
        Some(&HandshakeError::Closed { port: 12346 })
    );
    assert!(err.to_string().contains("nothing listens"), "{err}");
    assert_eq!(vmm.await.unwrap(), b"CONNECT 12346");
}

#[tokio::test]
async fn an_answer_other_than_ok_is_refused() {
    for answer in [
        &b"ERROR no listener\n"[..],
        b"OK\n",
        b"OKAY 5\n",
        b"ok 5\n",
        b"\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let (_vmm, _release) = fake_vmm(&uds, Answer::Send(answer.to_vec())).await;
        let notifier = hybrid::HybridNotificationConnector::new(uds.clone(), 12346);
        let err = notifier.connect().await.err().unwrap();
        assert!(
            matches!(
                handshake_error(&err),
                Some(HandshakeError::NotOk { port: 12346, .. })
            ),
            "{answer:?}: {err}"
        );
    }
}

#[tokio::test]
async fn any_number_after_ok_is_accepted() {
    // Firecracker, Cloud Hypervisor and vhost-device-vsock put different
    // numbers there.
    for answer in [&b"OK 1073741824\n"[..], b"OK 52000\n", b"OK 0\n", b"OK x\n"] {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        let notifier = hybrid::HybridNotificationConnector::new(uds.clone(), 12346);
        let answer = answer.to_vec();
        let vmm = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut line = [0u8; 14];
            s.read_exact(&mut line).await.unwrap();
            assert_eq!(&line, b"CONNECT 12346\n");
            s.write_all(&answer).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut s = notifier.connect().await.unwrap();
        write_message(&mut s, &notification()).await.unwrap();
        drop(s);
        assert_eq!(vmm.await.unwrap(), notification());
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_vmm_times_out_after_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let (vmm, release) = fake_vmm(&uds, Answer::Nothing).await;
    let notifier = hybrid::HybridNotificationConnector::new(uds.clone(), 12346);
    let start = tokio::time::Instant::now();
    let err = notifier.connect().await.err().unwrap();
    assert_eq!(start.elapsed(), HANDSHAKE_TIMEOUT);
    assert_eq!(HANDSHAKE_TIMEOUT, Duration::from_secs(1));
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(handshake_error(&err), Some(&HandshakeError::TimedOut));
    drop(release);
    assert_eq!(vmm.await.unwrap(), b"CONNECT 12346");
}

#[tokio::test]
async fn a_very_long_line_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    // 4 KiB without a newline, connection kept open: the reader must stop at
    // the limit, not wait for a newline or the timeout.
    let (_vmm, _release) = fake_vmm(&uds, Answer::Send(vec![b'O'; 4096])).await;
    let notifier = hybrid::HybridNotificationConnector::new(uds.clone(), 12346);
    let start = std::time::Instant::now();
    let err = notifier.connect().await.err().unwrap();
    assert!(
        start.elapsed() < HANDSHAKE_TIMEOUT,
        "waited for the timeout"
    );
    assert_eq!(handshake_error(&err), Some(&HandshakeError::LineTooLong));
    assert!(err.to_string().contains(&MAX_LINE.to_string()), "{err}");
}

#[tokio::test]
async fn a_missing_vmm_socket_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("absent.sock");
    let notifier = hybrid::HybridNotificationConnector::new(uds.clone(), 12346);
    let err = notifier.connect().await.err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("absent.sock"), "{err}");
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

#[tokio::test]
async fn sockets_are_owner_only_and_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let request_path = PathBuf::from(format!("{}_12345", uds.display()));
    let cfg = config(&uds, 12345, 12346);

    let host = cfg.bind_host().await.unwrap();
    assert!(is_socket(&request_path));
    assert_eq!(mode(&request_path), 0o600);
    let guest = cfg.bind_guest_notifications().await.unwrap();
    assert!(is_socket(&uds));
    assert_eq!(mode(&uds), 0o600);

    drop(host);
    assert!(!request_path.exists(), "request socket left behind");
    drop(guest);
    assert!(!uds.exists(), "VMM socket left behind");
}

#[tokio::test]
async fn drop_leaves_a_socket_file_that_is_no_longer_ours() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let request_path = PathBuf::from(format!("{}_12345", uds.display()));
    let host = config(&uds, 12345, 12346).bind_host().await.unwrap();
    std::fs::remove_file(&request_path).unwrap();
    std::fs::write(&request_path, b"someone else's").unwrap();
    drop(host);
    assert_eq!(std::fs::read(&request_path).unwrap(), b"someone else's");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let request_path = PathBuf::from(format!("{}_12345", uds.display()));
    let cfg = config(&uds, 12345, 12346);

    // Stale: a socket file nobody listens on (std leaves it on drop).
    drop(std::os::unix::net::UnixListener::bind(&request_path).unwrap());
    assert!(is_socket(&request_path));
    let host = cfg.bind_host().await.unwrap();
    assert_eq!(mode(&request_path), 0o600);
    let guest = cfg.guest().unwrap();
    let _client = guest.requests.connect().await.unwrap();
    host.listener.accept().await.unwrap();

    // Live: another listener holds it.
    let err = cfg.bind_host().await.err().unwrap();
    assert!(
        matches!(&err, TransportError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse),
        "{err}"
    );
    assert!(err.to_string().contains("listening"), "{err}");
    drop(host);

    // Not a socket: never deleted.
    std::fs::write(&request_path, b"data").unwrap();
    let err = cfg.bind_host().await.err().unwrap();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&request_path).unwrap(), b"data");
}

#[tokio::test]
async fn long_socket_paths_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().display().to_string();
    // A VMM path that fits on its own but not with "_12345" appended.
    let fill = 107 - base.len() - 1 - 3;
    let uds = PathBuf::from(format!("{base}/{}", "v".repeat(fill)));
    assert!(uds.as_os_str().len() <= 107 - 3);
    let cfg = config(&uds, 12345, 12346);

    let err = cfg.bind_host().await.err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, TransportError::Invalid(_)), "{msg}");
    assert!(msg.contains("110 bytes long"), "{msg}");
    assert!(msg.contains("limited to 107 bytes"), "{msg}");
    assert!(msg.contains("_12345"), "{msg}");

    let err = cfg.guest().err().unwrap();
    assert!(err.to_string().contains("limited to 107 bytes"), "{err}");

    // The guest's VMM socket itself fits.
    let listener = cfg.bind_guest_notifications().await.unwrap();
    drop(listener);
    let too_long = PathBuf::from(format!("{base}/{}", "v".repeat(200)));
    let err = config(&too_long, 1, 2)
        .bind_guest_notifications()
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("limited to 107 bytes"), "{err}");
}
