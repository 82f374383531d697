//! Soak test, ignored by default. Run it with
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! (`SOAK_REQUESTS=400000` for a longer run.)
//!
//! Several guests (one [`Service`] each, all sharing one `SimulatedWifi`,
//! each on its own TCP request port and with its own notification
//! listener) get 100 000 requests between them from concurrent workers, one
//! in ten malformed, while the simulated host keeps changing signal and
//! publishing scan results. The scan minimum latency is 0 here (it exists
//! for `iw`'s sake and would only make the soak slower).
//!
//! Checked: no panic anywhere (a panic hook counts them, including in the
//! service's own tasks); every well-formed request gets the right answer
//! (scans list the three simulated networks, complete; connects to known
//! networks succeed with their BSSID and to an unknown one fail with status
//! 1; each guest's session ids are exactly 1..=n, increasing for every
//! worker; disconnects are answered); every malformed one is answered
//! INVALID; the services count the same; every notification received
//! decodes; the process's resident memory (sampled from /proc/self/status)
//! stays flat after warm-up. The figures are printed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_wifi::handler::HandlerSettings;
use proxy_wifi::protocol::{
    DisconnectRequest, Key, MacAddr, Message, Request, ScanLayout, ScanRequest, Ssid,
};
use proxy_wifi::service::Service;
use proxy_wifi::test_utils::{open_connect, wpa2_connect};
use proxy_wifi::transport::TransportConfig;
use proxy_wifi::wifi::simulated::SimulatedWifi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GUESTS: usize = 4;
const WORKERS_PER_GUEST: usize = 4;
/// Requests in all; `SOAK_REQUESTS` overrides it.
const DEFAULT_REQUESTS: u64 = 100_000;
/// RSS growth allowed between the end of warm-up and any later sample.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;
const INVALID: [u8; 7] = [0, 0, 0, 0, 0, 1, 0];

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ssid(s: &str) -> Ssid {
    Ssid::new(s.as_bytes()).unwrap()
}

fn bssid(last: u8) -> MacAddr {
    MacAddr([0, 0, 0, 0, 0, last])
}

/// xorshift64*: a deterministic, dependency-free PRNG per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn connect_request(name: &str, psk: bool) -> Request {
    Request::Connect(if psk {
        wpa2_connect(name, Key::new(vec![0x5a; 32]))
    } else {
        open_connect(name)
    })
}

/// A malformed request: the bytes to send, and whether to half-close
/// after them (a truncated message), `kind` picks one of several faults.
fn malformed(kind: u64, rng: &mut Rng) -> Vec<u8> {
    let scan = Request::Scan(ScanRequest {
        ssid: Some(ssid("FakeOpen")),
    })
    .encode()
    .unwrap()
    .to_vec();
    let connect = connect_request("FakeWpa2Psk", true)
        .encode()
        .unwrap()
        .to_vec();
    match kind % 9 {
        // Version 2.
        0 => {
            let mut b = scan;
            b[5] = 2;
            b
        }
        // Unknown operation.
        1 => {
            let mut b = scan;
            b[0] = 9 + (rng.below(200) as u8);
            b
        }
        // An operation only a host sends.
        2 => {
            let mut b = scan;
            b[0] = [0, 2, 4, 6, 7, 8][rng.below(6) as usize];
            b
        }
        // A header announcing 4 GiB.
        3 => vec![3, 0xff, 0xff, 0xff, 0xff, 1, 0],
        // Truncated: cut anywhere, then the guest half-closes.
        4 => {
            let cut = 1 + rng.below(connect.len() as u64 - 1) as usize;
            connect[..cut].to_vec()
        }
        // ssid_len past 32.
        5 => {
            let mut b = scan;
            b[7] = 33 + (rng.below(200) as u8);
            b
        }
        // key_len disagreeing with the body size.
        6 => {
            let mut b = connect;
            b[7 + 75] = 31;
            b
        }
        // A disconnect body of the wrong size.
        7 => {
            let mut b = Request::Disconnect(DisconnectRequest { session_id: 1 })
                .encode()
                .unwrap()
                .to_vec();
            b[1] = 7;
            b.pop();
            b
        }
        // Too many AKM suites.
        _ => {
            let mut b = connect;
            b[7 + 41] = 3;
            b
        }
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    malformed: AtomicU64,
    scans: AtomicU64,
    connects_ok: AtomicU64,
    connects_failed: AtomicU64,
    disconnects: AtomicU64,
    notifications: AtomicU64,
}

/// One request connection: send, half-close, read to the end.
async fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

/// A worker of one guest: `n` requests in a row, checking every answer.
/// Returns the session ids it was given, in order.
async fn worker(port: u16, seed: u64, n: u64, tally: Arc<Tally>) -> Vec<u64> {
    let mut rng = Rng(seed | 1);
    let mut sessions = Vec::new();
    let mut last_session = 0;
    for _ in 0..n {
        let roll = rng.below(100);
        if roll < 10 {
            let kind = rng.below(9);
            let bytes = malformed(kind, &mut rng);
            let reply = exchange(port, &bytes).await;
            assert_eq!(reply, INVALID, "malformed kind {kind}: {bytes:02x?}");
            tally.malformed.fetch_add(1, Ordering::Relaxed);
        } else if roll < 46 {
            let target = match rng.below(3) {
                0 => None,
                1 => Some(ssid("FakeOpen")),
                _ => Some(ssid("Elsewhere")),
            };
            let bytes = Request::Scan(ScanRequest { ssid: target })
                .encode()
                .unwrap();
            match Message::decode(&exchange(port, &bytes).await, ScanLayout::Current).unwrap() {
                Message::ScanResponse(s) => {
                    assert!(s.scan_complete);
                    let found: BTreeSet<MacAddr> = s.bss.iter().map(|b| b.bssid).collect();
                    assert_eq!(found, [bssid(1), bssid(2), bssid(3)].into());
                }
                other => panic!("scan answered {other:?}"),
            }
            tally.scans.fetch_add(1, Ordering::Relaxed);
        } else if roll < 73 {
            let (name, psk, expected) = match rng.below(6) {
                0 | 1 => ("FakeWpa2Psk", true, Some(bssid(1))),
                2 => ("FakeOpen", false, Some(bssid(2))),
                3 | 4 => ("Fake6GHz", false, Some(bssid(3))),
                _ => ("Missing", false, None),
            };
            let bytes = connect_request(name, psk).encode().unwrap();
            match Message::decode(&exchange(port, &bytes).await, ScanLayout::Current).unwrap() {
                Message::ConnectResponse(c) => {
                    match expected {
                        Some(b) => {
                            assert_eq!((c.result_code, c.bssid), (0, b), "connect {name}");
                            tally.connects_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            assert_eq!(c.result_code, 1, "connect {name}");
                            tally.connects_failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    assert!(c.session_id > last_session, "session ids go up");
                    last_session = c.session_id;
                    sessions.push(c.session_id);
                }
                other => panic!("connect answered {other:?}"),
            }
        } else {
            let bytes = Request::Disconnect(DisconnectRequest {
                session_id: last_session,
            })
            .encode()
            .unwrap();
            let reply = exchange(port, &bytes).await;
            assert_eq!(
                Message::decode(&reply, ScanLayout::Current).unwrap(),
                Message::DisconnectResponse
            );
            tally.disconnects.fetch_add(1, Ordering::Relaxed);
        }
        tally.requests.fetch_add(1, Ordering::Relaxed);
    }
    sessions
}

/// A guest's notification port: reads and checks every notification.
async fn notification_listener(listener: TcpListener, tally: Arc<Tally>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut bytes = Vec::new();
        if s.read_to_end(&mut bytes).await.is_ok() {
            let m = Message::decode(&bytes, ScanLayout::Current)
                .unwrap_or_else(|e| panic!("a notification does not decode ({e}): {bytes:02x?}"));
            assert!(matches!(
                m,
                Message::ScanResponse(_)
                    | Message::NotifSignalQuality { .. }
                    | Message::NotifDisconnected { .. }
            ));
            tally.notifications.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
#[ignore = "soak test: run with cargo test --release --test soak -- --ignored --nocapture"]
fn soak() {
    let panics = Arc::new(AtomicU64::new(0));
    let counted = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(panics));
}

async fn run(panics: Arc<AtomicU64>) {
    let total: u64 = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_REQUESTS);
    // Requests done before the warm-up RSS is taken.
    let warm_up = total / 10;
    let wifi = SimulatedWifi::reference();
    let tally = Arc::new(Tally::default());
    let mut services = Vec::new();
    let mut listeners = Vec::new();
    for _ in 0..GUESTS {
        let notifications = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let notification_port = notifications.local_addr().unwrap().port();
        listeners.push(tokio::spawn(notification_listener(
            notifications,
            tally.clone(),
        )));
        let service = Service::builder(
            TransportConfig::Tcp {
                address: "127.0.0.1".parse().unwrap(),
                request_port: 0,
                notification_port,
            },
            wifi.clone(),
        )
        .settings(HandlerSettings {
            scan_min_latency: Duration::ZERO,
            ..HandlerSettings::default()
        })
        .build();
        service.start().await.unwrap();
        let port = service.request_port().await.unwrap() as u16;
        services.push((service, port));
    }

    // The simulated host keeps busy: signal changes and scan results.
    let host = {
        let wifi = wifi.clone();
        tokio::spawn(async move {
            let mut i: u64 = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = wifi.signal((i % 101) as u8);
                if i.is_multiple_of(10) {
                    wifi.scan_results();
                }
                i += 1;
            }
        })
    };

    // Memory: sampled on a plain thread every 100 ms.
    let samples: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop_sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let samples = samples.clone();
        let tally = tally.clone();
        let stop = stop_sampling.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(rss) = rss_kib() {
                    let done = tally.requests.load(Ordering::Relaxed);
                    samples.lock().unwrap().push((done, rss));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let start = Instant::now();
    let per_worker = total / (GUESTS * WORKERS_PER_GUEST) as u64;
    let mut guests = Vec::new();
    for (g, (_, port)) in services.iter().enumerate() {
        let mut workers = Vec::new();
        for w in 0..WORKERS_PER_GUEST {
            let seed = 0x9e37_79b9_7f4a_7c15 ^ (((g * 16 + w) as u64 + 1) * 0x1234_5678_9abc);
            workers.push(tokio::spawn(worker(*port, seed, per_worker, tally.clone())));
        }
        guests.push(workers);
    }
    for (g, workers) in guests.into_iter().enumerate() {
        let mut sessions = Vec::new();
        for w in workers {
            sessions.extend(w.await.expect("a worker panicked"));
        }
        sessions.sort_unstable();
        let expected: Vec<u64> = (1..=sessions.len() as u64).collect();
        assert_eq!(
            sessions, expected,
            "guest {g}: session ids are not exactly 1..=n"
        );
    }
    let elapsed = start.elapsed();
    host.abort();
    // Let the last notifications land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_sampling.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let requests = load(&tally.requests);
    let malformed = load(&tally.malformed);
    let (mut served, mut invalid, mut sent, mut dropped) = (0, 0, 0, 0);
    for (service, _) in &services {
        let s = service.stats();
        served += s.requests;
        invalid += s.invalid_requests;
        sent += s.notifications_sent;
        dropped += s.notifications_dropped;
        assert_eq!(s.refused_connections, 0);
    }
    for (service, _) in &services {
        service.stop().await;
    }
    for l in listeners {
        l.abort();
    }

    let samples = samples.lock().unwrap().clone();
    let first = samples.first().map_or(0, |s| s.1);
    let warm = samples
        .iter()
        .find(|(done, _)| *done >= warm_up)
        .map_or(first, |s| s.1);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let end = samples.last().map_or(0, |s| s.1);

    println!("soak: {GUESTS} guests x {WORKERS_PER_GUEST} workers, scan min latency 0");
    println!(
        "soak: {requests} requests ({malformed} malformed) in {:.1} s, {:.0} requests/s",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    println!(
        "soak: scans {}, connects ok {}, connects failed {}, disconnects {}",
        load(&tally.scans),
        load(&tally.connects_ok),
        load(&tally.connects_failed),
        load(&tally.disconnects)
    );
    println!(
        "soak: notifications sent {sent}, received {}, dropped {dropped}",
        load(&tally.notifications)
    );
    println!(
        "soak: RSS start {first} KiB, after warm-up {warm} KiB, peak {peak} KiB, end {end} KiB ({} samples)",
        samples.len()
    );
    println!("soak: panics {}", panics.load(Ordering::SeqCst));

    assert_eq!(panics.load(Ordering::SeqCst), 0, "something panicked");
    assert_eq!(requests, per_worker * (GUESTS * WORKERS_PER_GUEST) as u64);
    assert_eq!(served, requests, "the services counted every request");
    assert_eq!(
        invalid, malformed,
        "the services counted every malformed one"
    );
    assert!(load(&tally.notifications) > 0, "no notification arrived");
    if samples.is_empty() {
        eprintln!("SKIPPED: RSS check: /proc/self/status is not readable here");
    } else {
        assert!(
            peak <= warm + RSS_GROWTH_LIMIT_KIB,
            "RSS grew from {warm} KiB after warm-up to a peak of {peak} KiB"
        );
    }
}
