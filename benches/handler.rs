//! The handler's request paths on the simulated backend, without sockets:
//! `handler::spawn` driven through `HandlerClient::request`, scan minimum
//! latency 0 (the product's 150 ms default exists for `iw`, and would be
//! all this benchmark measured). `cargo bench --profile profiling --bench handler`.
//!
//! Each iteration is one request through the handler (the state's lock,
//! host events caught up, state machine, backend call), on a current-thread
//! runtime and on a two-worker multi-thread runtime (`serve --threads 2`).
//! Requests that need not wait finish on the calling task; before, each
//! went to the handler's own task and back (channel in, oneshot out).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proxy_wifi::handler::{HandlerClient, HandlerSettings};
use proxy_wifi::observer::ObserverQueue;
use proxy_wifi::protocol::{DisconnectRequest, Key, Message, Request, ScanRequest, Ssid};
use proxy_wifi::test_utils::{spawn_handler, wpa2_connect};
use proxy_wifi::wifi::simulated::{SimulatedNetwork, SimulatedWifi};
use proxy_wifi::wifi::Security;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn settings() -> HandlerSettings {
    HandlerSettings {
        scan_min_latency: Duration::ZERO,
        ..HandlerSettings::default()
    }
}

/// `n` open networks on 2.4, 5 and 6 GHz channels.
fn networks(n: usize) -> Vec<SimulatedNetwork> {
    let freqs = [
        2_412_000, 2_437_000, 2_462_000, 5_180_000, 5_240_000, 6_115_000,
    ];
    let mut nets = SimulatedNetwork::reference_networks();
    for i in nets.len()..n {
        nets.push(SimulatedNetwork {
            ssid: Ssid::new(format!("net-{i:04}").as_bytes()).unwrap_or_default(),
            bssid: proxy_wifi::protocol::MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
            freq_khz: freqs[i % freqs.len()],
            rssi_dbm: -40 - (i % 40) as i32,
            security: Security::OPEN,
            passphrase: None,
        });
    }
    nets.truncate(n.max(1));
    nets
}

struct Running {
    client: HandlerClient,
    /// Notifications the handler queues (Connected events are not turned
    /// into guest notifications; nothing should arrive). Kept open.
    _notifications: mpsc::Receiver<Message>,
}

fn start(rt: &Runtime, wifi: Arc<SimulatedWifi>) -> Running {
    rt.block_on(async {
        let (tx, rx) = mpsc::channel(64);
        let (observer, _) = ObserverQueue::start(None);
        let handle = spawn_handler(wifi, None, observer, tx, settings());
        handle.client.sync().await;
        Running {
            client: handle.client,
            _notifications: rx,
        }
    })
}

fn runtimes() -> Vec<(&'static str, Runtime)> {
    let mut out = Vec::new();
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        out.push(("current_thread", rt));
    }
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        out.push(("multi_thread_2", rt));
    }
    out
}

fn connect_request() -> Request {
    Request::Connect(wpa2_connect("FakeWpa2Psk", Key::new(vec![0x5a; 32])))
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("handler_scan");
    for (name, rt) in runtimes() {
        for n in [3usize, 100] {
            let running = start(&rt, SimulatedWifi::new(networks(n)));
            let client = running.client.clone();
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.to_async(&rt).iter(|| {
                    let client = client.clone();
                    async move {
                        black_box(
                            client
                                .request(Request::Scan(ScanRequest::default()), Instant::now())
                                .await,
                        )
                    }
                })
            });
        }
    }
    group.finish();
}

/// A connect (the host joins the simulated network for the guest) and the
/// matching disconnect, measured separately: each iteration of one does
/// the other untimed so every request finds the same state.
fn connect_disconnect(c: &mut Criterion) {
    let mut group = c.benchmark_group("handler_connect_disconnect");
    for (name, rt) in runtimes() {
        let running = start(&rt, SimulatedWifi::reference());
        let client = running.client.clone();
        group.bench_function(BenchmarkId::new("connect", name), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let client = client.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = std::time::Instant::now();
                        let reply = client.request(connect_request(), Instant::now()).await;
                        total += t.elapsed();
                        if let Message::ConnectResponse(r) = black_box(reply) {
                            let _ = client
                                .request(
                                    Request::Disconnect(DisconnectRequest {
                                        session_id: r.session_id,
                                    }),
                                    Instant::now(),
                                )
                                .await;
                        }
                    }
                    total
                }
            })
        });
        group.bench_function(BenchmarkId::new("disconnect", name), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let client = client.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let reply = client.request(connect_request(), Instant::now()).await;
                        let session_id = match reply {
                            Message::ConnectResponse(r) => r.session_id,
                            _ => 0,
                        };
                        let t = std::time::Instant::now();
                        black_box(
                            client
                                .request(
                                    Request::Disconnect(DisconnectRequest { session_id }),
                                    Instant::now(),
                                )
                                .await,
                        );
                        total += t.elapsed();
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, scan, connect_disconnect);
criterion_main!(benches);
