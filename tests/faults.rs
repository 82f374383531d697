//! Fault tests: the real service (through the library) over real sockets,
//! facing a hostile or broken guest, a guest notification port that does
//! not cooperate, a backend that fails or never answers, an observer that
//! panics. Each checks the guest still gets a well-formed answer where one
//! is due and the service keeps serving.
//!
//! Covered elsewhere, not repeated here: NetworkManager disappearing and
//! coming back (`tests/networkmanager.rs`,
//! `networkmanager_absent_then_restarting_is_followed`); each handler
//! timeout in virtual time, including the 5 s disconnect bound
//! (`src/handler/tests.rs`: `scan_collects_within_10_s_and_skips_failures`,
//! `connect_gives_each_interface_10_s_and_reports_rejection_status`,
//! `disconnect_waits_at_most_5_s`, `a_panicking_observer_is_contained`); the
//! notification queue's coalescing rules (`src/service.rs` unit tests).
//!
//! Also here: the bounded property-test version of the `handler` fuzz
//! target (same model, `fuzz/model/handler.rs`) and a replay of its seed
//! corpus.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use proxy_wifi::handler::HandlerSettings;
use proxy_wifi::observer::{
    Authorization, ConnectionKind, GuestConnectCompletion, GuestDisconnect, HostConnection,
    Observer, ObserverQueue,
};
use proxy_wifi::protocol::{
    ConnectResponse, DisconnectRequest, MacAddr, Message, Request, ScanLayout, ScanRequest,
    ScanResponse, Ssid,
};
use proxy_wifi::service::{Service, ServiceStats, MAX_CONNECTIONS_IN_FLIGHT, REQUEST_READ_TIMEOUT};
use proxy_wifi::test_utils::{open_connect, serve_request_connection, spawn_handler};
use proxy_wifi::transport::TransportConfig;
use proxy_wifi::wifi::simulated::SimulatedWifi;
use proxy_wifi::wifi::{
    ConnectParams, ConnectedNetwork, EventHub, HostWifi, InterfaceError, InterfaceId, ScanResult,
    WifiInterface,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};

#[path = "../fuzz/model/handler.rs"]
mod model;

// ------------------------------------------------------------ allocations

/// Counts, on threads that ask for it, the largest single allocation.
struct Tracking;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
}
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if TRACK.try_with(Cell::get).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// The process's resident set size in KiB (Linux), from /proc/self/status.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------- helpers

const LIMIT: Duration = Duration::from_secs(20);

fn ssid(s: &str) -> Ssid {
    Ssid::new(s.as_bytes()).unwrap()
}

fn open_request(name: &str) -> Request {
    Request::Connect(open_connect(name))
}

fn scan_bytes() -> Vec<u8> {
    Request::Scan(ScanRequest::default())
        .encode()
        .unwrap()
        .to_vec()
}

/// A port on which nothing listens (bound, then released).
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Starts a TCP service on an ephemeral request port.
async fn tcp_service(
    backend: std::sync::Arc<dyn proxy_wifi::wifi::HostWifi>,
    notification_port: u16,
    configure: impl FnOnce(proxy_wifi::service::ServiceBuilder) -> proxy_wifi::service::ServiceBuilder,
) -> (Service, u16) {
    let config = TransportConfig::Tcp {
        address: "127.0.0.1".parse().unwrap(),
        request_port: 0,
        notification_port,
    };
    let service = configure(Service::builder(config, backend)).build();
    service.start().await.unwrap();
    let port = service.request_port().await.unwrap() as u16;
    (service, port)
}

fn quick() -> HandlerSettings {
    HandlerSettings {
        scan_min_latency: Duration::ZERO,
        ..HandlerSettings::default()
    }
}

/// One request connection: write `bytes`, read until the service closes.
async fn ask_raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    timeout(LIMIT, async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    })
    .await
    .expect("the service answered in time")
}

async fn ask(port: u16, request: &Request) -> Message {
    let reply = ask_raw(port, &request.encode().unwrap()).await;
    Message::decode(&reply, ScanLayout::Current).unwrap()
}

async fn scan(port: u16) -> ScanResponse {
    match ask(port, &Request::Scan(ScanRequest::default())).await {
        Message::ScanResponse(s) => s,
        other => panic!("expected a scan response, got {other:?}"),
    }
}

async fn connect(port: u16, request: &Request) -> ConnectResponse {
    match ask(port, request).await {
        Message::ConnectResponse(c) => c,
        other => panic!("expected a connect response, got {other:?}"),
    }
}

/// Waits until `done(stats)` holds, for up to `LIMIT`.
async fn wait_for(service: &Service, what: &str, done: impl Fn(&ServiceStats) -> bool) {
    let start = Instant::now();
    while !done(&service.stats()) {
        assert!(
            start.elapsed() < LIMIT,
            "gave up waiting for {what}: {:?}",
            service.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A simulated host with `n` open networks, so that a scan reply or a
/// scan-results notification is larger than a Unix socket's buffer (27000
/// fill the 1 MiB a scan response may hold).
#[cfg(target_os = "linux")]
fn crowded_wifi(n: u32) -> Arc<SimulatedWifi> {
    use proxy_wifi::wifi::simulated::SimulatedNetwork;
    use proxy_wifi::wifi::Security;
    let networks = (0..n)
        .map(|i| SimulatedNetwork {
            ssid: ssid(&format!("crowd-{i:05}")),
            bssid: MacAddr([2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
            freq_khz: 2_412_000,
            rssi_dbm: -60,
            security: Security::OPEN,
            passphrase: None,
        })
        .collect();
    SimulatedWifi::new(networks)
}

/// A host interface whose scan, connect and disconnect wait on `gate` (and
/// its connection query too, if `hang_query`), or that fails everything.
struct Scripted {
    gate: Arc<Semaphore>,
    hang_query: bool,
    fail: bool,
}

impl Scripted {
    fn backend(self) -> Arc<dyn HostWifi> {
        let hub = Arc::new(EventHub::new());
        hub.add(Arc::new(self));
        hub
    }

    async fn wait(&self) {
        // Never released: waits forever. Released: passes.
        let _ = self.gate.acquire().await;
    }

    fn failure(&self) -> InterfaceError {
        InterfaceError::HostServiceError {
            call: "scripted",
            message: "scripted backend failure".into(),
        }
    }
}

#[async_trait]
impl WifiInterface for Scripted {
    fn id(&self) -> InterfaceId {
        uuid::Uuid::from_u128(0xfa17)
    }
    fn name(&self) -> String {
        "scripted".into()
    }
    async fn connected_network(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        if self.fail {
            return Err(self.failure());
        }
        if self.hang_query {
            self.wait().await;
        }
        Ok(None)
    }
    async fn scan(&self, _target: Option<&Ssid>) -> Result<ScanResult, InterfaceError> {
        if self.fail {
            return Err(self.failure());
        }
        self.wait().await;
        Ok(ScanResult {
            bss: vec![],
            complete: true,
        })
    }
    async fn connect(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        if self.fail {
            return Err(self.failure());
        }
        self.wait().await;
        Err(InterfaceError::NotFound(params.ssid.to_string_lossy()))
    }
    async fn disconnect(&self) -> Result<(), InterfaceError> {
        if self.fail {
            return Err(self.failure());
        }
        self.wait().await;
        Ok(())
    }
}

// ------------------------------------------------------------ hostile guests

/// A header announcing a 4 GiB body is answered INVALID at once (not at the
/// read deadline, which is what waiting for the body would give), and
/// nothing near that size is allocated. The test runs on one thread (the
/// current-thread runtime runs the service too), so the allocation tracker
/// sees exactly the service's work.
#[tokio::test]
async fn a_header_announcing_4_gib_is_refused_at_once_without_allocating() {
    let wifi = SimulatedWifi::reference();
    let (service, port) = tcp_service(wifi, dead_port().await, |b| b).await;
    let rss_before = rss_kib();
    LARGEST.store(0, Ordering::Relaxed);
    TRACK.with(|t| t.set(true));
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let start = Instant::now();
    // CONNECT_REQUEST, size 0xffffffff, version 1; no body, connection open.
    s.write_all(&[3, 0xff, 0xff, 0xff, 0xff, 1, 0])
        .await
        .unwrap();
    let mut reply = Vec::new();
    timeout(LIMIT, s.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let elapsed = start.elapsed();
    TRACK.with(|t| t.set(false));
    let largest = LARGEST.load(Ordering::Relaxed);
    let rss_after = rss_kib();
    eprintln!(
        "4 GiB header: INVALID after {elapsed:?}, largest allocation {largest} bytes, RSS {rss_before:?} -> {rss_after:?} KiB"
    );
    assert_eq!(reply, [0, 0, 0, 0, 0, 1, 0], "INVALID, then the close");
    assert!(
        elapsed < REQUEST_READ_TIMEOUT,
        "the refusal waited for the read deadline ({elapsed:?})"
    );
    assert!(
        largest < 64 * 1024,
        "an allocation of {largest} bytes while refusing the header"
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        assert!(
            after < before + 16 * 1024,
            "RSS jumped from {before} to {after} KiB"
        );
    }
    assert_eq!(service.stats().invalid_requests, 1);
    assert_eq!(scan(port).await.bss.len(), 3, "still serving");
    service.stop().await;
}

/// A guest that connects and sends 3 bytes holds its connection until the
/// read deadline, then gets INVALID; other guest connections are served
/// meanwhile.
#[tokio::test]
async fn a_guest_sending_3_bytes_is_answered_invalid_at_the_read_deadline() {
    let wifi = SimulatedWifi::reference();
    let (service, port) = tcp_service(wifi, dead_port().await, |b| b.settings(quick())).await;
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(&[1, 33, 0]).await.unwrap();
    let start = Instant::now();
    let stuck = tokio::spawn(async move {
        let mut reply = Vec::new();
        timeout(LIMIT, slow.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        (reply, start.elapsed())
    });
    for _ in 0..3 {
        assert_eq!(scan(port).await.bss.len(), 3);
    }
    let (reply, elapsed) = stuck.await.unwrap();
    eprintln!("3-byte guest answered after {elapsed:?}");
    assert_eq!(reply, [0, 0, 0, 0, 0, 1, 0]);
    assert!(
        elapsed >= REQUEST_READ_TIMEOUT - Duration::from_millis(50),
        "answered before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < REQUEST_READ_TIMEOUT + Duration::from_secs(5),
        "held far past the deadline: {elapsed:?}"
    );
    assert_eq!(service.stats().invalid_requests, 1);
    service.stop().await;
}

/// Past MAX_CONNECTIONS_IN_FLIGHT connections, a new one is closed at once,
/// unanswered; once the others finish, connections are served again.
#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    let gate = Arc::new(Semaphore::new(0));
    let backend = Scripted {
        gate: gate.clone(),
        hang_query: false,
        fail: false,
    }
    .backend();
    let metrics = Arc::new(proxy_wifi::metrics::Metrics::new());
    let (service, port) = tcp_service(backend, dead_port().await, |b| {
        b.name("g").settings(quick()).metrics(metrics.clone())
    })
    .await;
    // Fill the service: the first scan blocks the handler, the others wait
    // behind it.
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS_IN_FLIGHT {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&scan_bytes()).await.unwrap();
        held.push(s);
    }
    let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The service may already have closed it: a write error is fine.
    let _ = extra.write_all(&scan_bytes()).await;
    let mut got = Vec::new();
    match timeout(LIMIT, extra.read_to_end(&mut got)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the connection past the limit was held, not closed"),
    }
    assert!(got.is_empty(), "answered past the limit: {got:?}");
    assert_eq!(service.stats().refused_connections, 1);
    let text = metrics.render();
    assert!(
        text.contains(
            "proxy_wifi_connections_refused_total{guest=\"g\",reason=\"too_many_in_flight\"} 1"
        ),
        "{text}"
    );

    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    for mut s in held {
        let mut reply = Vec::new();
        timeout(LIMIT, s.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            Message::decode(&reply, ScanLayout::Current).unwrap(),
            Message::ScanResponse(_)
        ));
    }
    assert!(scan(port).await.scan_complete, "served again");
    assert_eq!(service.stats().refused_connections, 1);
    service.stop().await;
}

/// A guest that closes in the middle of a request: half-closed, it gets
/// INVALID; fully gone, the service's answer falls into the void; with
/// nothing sent, nothing is answered. The service carries on.
#[tokio::test]
async fn a_guest_closing_mid_request_does_not_disturb_the_service() {
    let wifi = SimulatedWifi::reference();
    let (service, port) = tcp_service(wifi, dead_port().await, |b| b.settings(quick())).await;
    let connect = open_request("FakeOpen").encode().unwrap();

    let mut half = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    half.write_all(&connect[..40]).await.unwrap();
    half.shutdown().await.unwrap();
    let mut reply = Vec::new();
    timeout(LIMIT, half.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, [0, 0, 0, 0, 0, 1, 0]);

    let mut gone = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    gone.write_all(&connect[..40]).await.unwrap();
    drop(gone);
    let silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    drop(silent);
    wait_for(&service, "the vanished guest's request", |s| {
        s.invalid_requests == 2
    })
    .await;

    let c = connect_ok(port, "FakeOpen").await;
    assert_eq!(c.session_id, 1, "no connect was half-done");
    let stats = service.stats();
    assert_eq!(
        (stats.requests, stats.invalid_requests),
        (3, 2),
        "{stats:?}"
    );
    service.stop().await;
}

async fn connect_ok(port: u16, name: &str) -> ConnectResponse {
    let c = connect(port, &open_request(name)).await;
    assert_eq!(c.result_code, 0, "{c:?}");
    c
}

// ----------------------------------------------------- notification faults

/// Notifications to a port that refuses connections are dropped; requests
/// are served throughout.
#[tokio::test]
async fn notifications_to_a_refusing_port_are_dropped() {
    let wifi = SimulatedWifi::reference();
    // Retried for 2 s (from when each was produced), then given up.
    let (service, port) = tcp_service(wifi.clone(), dead_port().await, |b| {
        b.settings(quick())
            .notification_deadline(Duration::from_secs(2))
    })
    .await;
    assert_eq!(scan(port).await.bss.len(), 3);
    for _ in 0..3 {
        wifi.scan_results();
    }
    wait_for(&service, "three dropped notifications", |s| {
        s.notifications_dropped == 3
    })
    .await;
    assert_eq!(scan(port).await.bss.len(), 3);
    let stats = service.stats();
    assert_eq!(stats.notifications_sent, 0);
    assert_eq!(stats.notifications_given_up, 3);
    assert!(stats.notification_retries >= 1, "{stats:?}");
    service.stop().await;
}

/// A notification port that accepts and never reads, over TCP: the kernel
/// takes the message (loopback TCP buffers grow to megabytes, more than
/// the largest legal notification), so the service counts it as sent, and
/// requests are served throughout. The write-timeout path itself is
/// exercised over hybrid vsock below, where socket buffers are fixed.
#[tokio::test]
async fn a_notification_port_that_accepts_and_never_reads() {
    let wifi = SimulatedWifi::reference();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notification_port = listener.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(8);
    let hoarder = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            // Kept open, never read.
            let _ = accepted_tx.send(s).await;
        }
    });
    let (service, port) =
        tcp_service(wifi.clone(), notification_port, |b| b.settings(quick())).await;
    assert_eq!(scan(port).await.bss.len(), 3);
    wifi.scan_results();
    let _kept = timeout(LIMIT, accepted.recv()).await.unwrap().unwrap();
    wait_for(&service, "the notification", |s| s.notifications_sent == 1).await;
    assert_eq!(scan(port).await.bss.len(), 3);
    service.stop().await;
    hoarder.abort();
}

#[cfg(target_os = "linux")]
mod hybrid {
    use super::*;
    use proxy_wifi::service::REPLY_WRITE_TIMEOUT;
    use proxy_wifi::transport::hybrid::port_path;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::{UnixListener, UnixStream};

    async fn ask_unix(path: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        timeout(LIMIT, s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    /// A fake VMM: accepts on the vsock socket, reads the `CONNECT` line,
    /// then either never answers, or answers OK and never reads again.
    async fn fake_vmm(
        listener: UnixListener,
        answer: bool,
        lines: tokio::sync::mpsc::Sender<String>,
    ) {
        let mut kept = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            let mut reader = tokio::io::BufReader::new(s);
            let mut line = String::new();
            let _ = reader.read_line(&mut line).await;
            let _ = lines.send(line).await;
            if answer {
                let _ = reader.get_mut().write_all(b"OK 1073741824\n").await;
            }
            kept.push(reader);
        }
    }

    async fn run(answer: bool, wifi: Arc<SimulatedWifi>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, mut lines) = tokio::sync::mpsc::channel(8);
        let vmm = tokio::spawn(fake_vmm(listener, answer, tx));
        let config = TransportConfig::HybridVsock {
            path: path.clone(),
            request_port: 12345,
            notification_port: 12346,
        };
        // Retried for 3 s, then given up; requests are answered all along.
        let service = Service::builder(config, wifi.clone())
            .settings(quick())
            .notification_deadline(Duration::from_secs(3))
            .build();
        service.start().await.unwrap();
        let requests = port_path(&path, 12345);
        let full = ask_unix(&requests, &scan_bytes()).await.len();
        wifi.scan_results();
        let start = Instant::now();
        let mut served = 0;
        while service.stats().notifications_dropped == 0 {
            assert!(start.elapsed() < LIMIT, "{:?}", service.stats());
            assert_eq!(ask_unix(&requests, &scan_bytes()).await.len(), full);
            served += 1;
        }
        eprintln!(
            "hybrid VMM answering={answer}: notification dropped after {:?}; {served} requests served meanwhile",
            start.elapsed()
        );
        assert_eq!(lines.recv().await.unwrap(), "CONNECT 12346\n");
        assert_eq!(service.stats().notifications_sent, 0);
        assert_eq!(service.stats().notifications_given_up, 1);
        assert!(service.stats().notification_retries >= 1);
        service.stop().await;
        vmm.abort();
    }

    /// A guest that asks for a large reply and never reads it: the write
    /// gives up after REPLY_WRITE_TIMEOUT and the connection is closed;
    /// everyone else is served meanwhile. (Over Unix sockets, whose buffers
    /// are fixed; loopback TCP would swallow the whole 1 MiB reply.)
    #[tokio::test]
    async fn a_guest_that_never_reads_its_reply_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sock");
        let config = TransportConfig::HybridVsock {
            path: path.clone(),
            request_port: 12345,
            notification_port: 12346,
        };
        let service = Service::builder(config, crowded_wifi(27000))
            .settings(quick())
            .build();
        service.start().await.unwrap();
        let requests = port_path(&path, 12345);
        let full = ask_unix(&requests, &scan_bytes()).await.len();
        let mut lazy = UnixStream::connect(&requests).await.unwrap();
        lazy.write_all(&scan_bytes()).await.unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(ask_unix(&requests, &scan_bytes()).await.len(), full);
        }
        tokio::time::sleep(
            (REPLY_WRITE_TIMEOUT + Duration::from_secs(1)).saturating_sub(start.elapsed()),
        )
        .await;
        // Now read: part of the reply, then the service's close.
        let mut got = Vec::new();
        let read = timeout(LIMIT, lazy.read_to_end(&mut got)).await.unwrap();
        eprintln!(
            "reply of {full} bytes; the non-reading guest got {} before the service gave up ({read:?})",
            got.len()
        );
        assert!(
            got.len() < full,
            "the whole reply fit in the socket buffers"
        );
        service.stop().await;
    }

    /// The VMM accepts but never answers `CONNECT`: the handshake times out,
    /// the notification is dropped, requests are served meanwhile.
    #[tokio::test]
    async fn a_vmm_that_never_answers_connect() {
        run(false, SimulatedWifi::reference()).await;
    }

    /// The VMM answers `OK` and the guest never reads: a notification
    /// larger than the socket buffer times out in its write.
    #[tokio::test]
    async fn a_guest_that_accepts_and_never_reads_over_hybrid_vsock() {
        run(true, crowded_wifi(27000)).await;
    }
}

// ------------------------------------------------------------ backend faults

/// A backend whose every call hangs: the service's request path answers
/// within the handler's bounds (virtual time): a scan at 10 s, complete and
/// empty; a connect after the 5 s connection query and the 10 s connect,
/// failed, both inside the guest's 20 s.
#[tokio::test(start_paused = true)]
async fn a_backend_that_never_returns_is_bounded() {
    let hub = Arc::new(EventHub::new());
    hub.add(Arc::new(Scripted {
        gate: Arc::new(Semaphore::new(0)),
        hang_query: true,
        fail: false,
    }));
    let (notify, _notes) = tokio::sync::mpsc::channel(8);
    let started = Instant::now();
    let handle = spawn_handler(
        hub,
        None,
        ObserverQueue::default(),
        notify,
        HandlerSettings::default(),
    );
    handle.client.sync().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(5),
        "the start-up connection query is bounded by 5 s"
    );
    let exchange = |request: Request| {
        let client = handle.client.clone();
        async move {
            let (mut guest, host) = tokio::io::duplex(4096);
            let served = tokio::spawn(serve_request_connection(
                Box::new(host),
                client,
                ScanLayout::Current,
            ));
            guest.write_all(&request.encode().unwrap()).await.unwrap();
            let mut reply = Vec::new();
            guest.read_to_end(&mut reply).await.unwrap();
            served.await.unwrap();
            Message::decode(&reply, ScanLayout::Current).unwrap()
        }
    };
    let start = Instant::now();
    match exchange(Request::Scan(ScanRequest::default())).await {
        Message::ScanResponse(s) => assert!(s.scan_complete && s.bss.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::from_secs(10));

    let start = Instant::now();
    match exchange(open_request("Anything")).await {
        Message::ConnectResponse(c) => assert_eq!((c.result_code, c.session_id), (1, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::from_secs(15));

    let start = Instant::now();
    assert_eq!(
        exchange(Request::Disconnect(DisconnectRequest { session_id: 1 })).await,
        Message::DisconnectResponse
    );
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "not connected: nothing to wait for"
    );
    handle.task.abort();
}

/// A backend that fails every call: scans answer what else there is (the
/// fake networks), connects to fake networks still mirror, others fail with
/// status 1, disconnects are answered.
#[tokio::test]
async fn backend_errors_become_failure_answers() {
    let backend = Scripted {
        gate: Arc::new(Semaphore::new(0)),
        hang_query: false,
        fail: true,
    }
    .backend();
    let fake_bssid = MacAddr([2, 0, 0, 0, 0, 0x42]);
    let (service, port) = tcp_service(backend, dead_port().await, |b| {
        b.settings(quick())
            .fake_networks(move || vec![(ssid("FakeNet"), fake_bssid)])
    })
    .await;
    let s = scan(port).await;
    assert!(s.scan_complete);
    assert_eq!(
        s.bss.iter().map(|b| b.bssid).collect::<Vec<_>>(),
        vec![fake_bssid]
    );
    let c = connect(port, &open_request("Elsewhere")).await;
    assert_eq!((c.result_code, c.session_id), (1, 1));
    let c = connect(port, &open_request("FakeNet")).await;
    assert_eq!((c.result_code, c.bssid, c.session_id), (0, fake_bssid, 2));
    assert_eq!(
        ask(
            port,
            &Request::Disconnect(DisconnectRequest { session_id: 2 })
        )
        .await,
        Message::DisconnectResponse
    );
    let c = connect(port, &open_request("FakeNet")).await;
    assert_eq!(c.session_id, 3);
    service.stop().await;
}

/// An observer that panics in every method.
struct Panicky;

impl Observer for Panicky {
    fn host_connected(&self, _: &HostConnection) {
        panic!("observer bug: host_connected");
    }
    fn host_disconnected(&self, _: InterfaceId) {
        panic!("observer bug: host_disconnected");
    }
    fn authorize_guest_connection(&self, _: ConnectionKind, _: &Ssid) -> Authorization {
        panic!("observer bug: authorize");
    }
    fn guest_connect_completed(&self, _: &GuestConnectCompletion) {
        panic!("observer bug: completed");
    }
    fn guest_disconnect_requested(&self, _: &GuestDisconnect) {
        panic!("observer bug: disconnect requested");
    }
    fn guest_disconnect_completed(&self, _: &GuestDisconnect) {
        panic!("observer bug: disconnect completed");
    }
    fn guest_scan_requested(&self) {
        panic!("observer bug: scan requested");
    }
    fn guest_scan_completed(&self) {
        panic!("observer bug: scan completed");
    }
}

/// End to end: the panics are contained; a connect needing authorization
/// fails (a panicking authorization is a denial), everything else is
/// answered normally, and the service keeps serving.
#[tokio::test]
async fn a_panicking_observer_is_contained_end_to_end() {
    let wifi = SimulatedWifi::reference();
    let (service, port) = tcp_service(wifi.clone(), dead_port().await, |b| {
        b.settings(quick()).observer(Arc::new(Panicky))
    })
    .await;
    for round in 0..3u64 {
        assert_eq!(scan(port).await.bss.len(), 3);
        let c = connect(port, &open_request("FakeOpen")).await;
        assert_eq!((c.result_code, c.session_id), (1, round + 1));
        assert_eq!(
            ask(
                port,
                &Request::Disconnect(DisconnectRequest {
                    session_id: c.session_id
                })
            )
            .await,
            Message::DisconnectResponse
        );
        // Host events reach the (panicking) observer too.
        let _ = wifi.host_connect(&ssid("FakeOpen"));
        let _ = wifi.host_disconnect();
    }
    assert!(service.is_running().await);
    service.stop().await;
}

// --------------------------------------------------------- handler model

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The `handler` fuzz target's model, bounded: arbitrary sequences of
    /// request connections and host events, invariants checked each step.
    #[test]
    fn handler_invariants_hold_for_arbitrary_sequences(
        data in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        let summary = model::run(&data);
        prop_assert!(summary.invalid <= summary.requests);
    }
}

/// The committed seed corpus of the `handler` fuzz target replays cleanly.
#[test]
fn handler_fuzz_seeds_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/handler");
    let mut total = model::Summary::default();
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let s = model::run(&data);
        total.requests += s.requests;
        total.invalid += s.invalid;
        total.events += s.events;
        total.notifications += s.notifications;
        seeds += 1;
    }
    eprintln!("{seeds} seeds: {total:?}");
    assert!(seeds > 0, "no seeds in {}", dir.display());
    assert!(total.requests > total.invalid && total.invalid > 0);
    assert!(total.events > 0 && total.notifications > 0);
}
