//! Prometheus metrics: build information, backend health, requests by
//! guest, operation and result, request latency (with the scan floor as a
//! label), refused connections, each guest's connection state,
//! notifications sent and dropped, guests configured.
//!
//! The registry is `prometheus-client`'s; the HTTP side is hyper's HTTP/1
//! server (a hand-written responder got bare-LF requests and oversized
//! headers wrong), bounded in connections, time and request size since
//! any local user can reach it.

#![warn(missing_docs)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::accept_backoff::AcceptBackoff;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    guest: String,
    operation: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    guest: String,
    operation: String,
    /// The deliberate minimum latency of this operation in milliseconds
    /// (`scan_min_latency_ms` for scans, 0 otherwise): a scan p50 equal to
    /// it is the floor, not a slow host.
    floor_ms: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuestLabels {
    guest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    guest: String,
    reason: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~13 s: from a cached scan answer to the 10 s connect rule.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 19,
    ))
}

/// The daemon's metrics. Cheap to clone handles are kept inside; share it
/// as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    notifications_sent: Family<GuestLabels, Counter>,
    notifications_dropped: Family<DropLabels, Counter>,
    notification_retries: Family<GuestLabels, Counter>,
    notification_give_ups: Family<GuestLabels, Counter>,
    guests: Gauge<i64, AtomicI64>,
    refused: Family<DropLabels, Counter>,
    guest_connected: Family<GuestLabels, Gauge<i64, AtomicI64>>,
    backend_up: Family<BackendLabels, Gauge<i64, AtomicI64>>,
    backend_interfaces: Family<BackendLabels, Gauge<i64, AtomicI64>>,
    unknown_peers: Counter,
    backend_healthy: Family<BackendLabels, Gauge<i64, AtomicI64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("proxy_wifi");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let notifications_sent = Family::<GuestLabels, Counter>::default();
        let notifications_dropped = Family::<DropLabels, Counter>::default();
        let notification_retries = Family::<GuestLabels, Counter>::default();
        let notification_give_ups = Family::<GuestLabels, Counter>::default();
        let guests = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "requests",
            "Guest requests answered, by guest, operation and result",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its reply being sent (written, and the connection shut down for writing)",
            latency.clone(),
        );
        registry.register(
            "notifications_sent",
            "Notifications delivered to guests",
            notifications_sent.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Notifications not delivered, by reason",
            notifications_dropped.clone(),
        );
        registry.register(
            "notification_retries",
            "Notification delivery attempts after a failed one (the guest could not be reached)",
            notification_retries.clone(),
        );
        registry.register(
            "notification_give_ups",
            "Notifications given up at their retry deadline",
            notification_give_ups.clone(),
        );
        registry.register("guests_configured", "Guests configured", guests.clone());
        // Registered as "build": the Info type adds the `_info` suffix.
        registry.register(
            "build",
            "The running proxy-wifi: version and operating system",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("os", std::env::consts::OS),
            ]),
        );
        let refused = Family::<DropLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Guest request connections closed unanswered, by reason",
            refused.clone(),
        );
        let unknown_peers = Counter::default();
        registry.register(
            "unknown_peer_connections",
            "Connections closed because no configured guest is their peer (a vsock CID no guest has)",
            unknown_peers.clone(),
        );
        let guest_connected = Family::<GuestLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "guest_connected",
            "1 while the guest has a connection (guest-directed or mirrored), else 0",
            guest_connected.clone(),
        );
        let backend_up = Family::<BackendLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "backend_up",
            "1 while the host backend offers at least one Wi-Fi interface \
             (0: e.g. NetworkManager not running, or no Wi-Fi device)",
            backend_up.clone(),
        );
        let backend_interfaces = Family::<BackendLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "backend_wifi_interfaces",
            "Wi-Fi interfaces the host backend offers now",
            backend_interfaces.clone(),
        );
        let backend_healthy = Family::<BackendLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "backend_healthy",
            "1 while the host backend follows the host's Wi-Fi service; 0 while \
             that service is down or the backend reconnects to its bus (see ctl status)",
            backend_healthy.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            notifications_sent,
            notifications_dropped,
            notification_retries,
            notification_give_ups,
            guests,
            refused,
            guest_connected,
            backend_up,
            backend_interfaces,
            unknown_peers,
            backend_healthy,
        }
    }

    /// Records an answered request. `operation` is the request's operation
    /// name (or `malformed`), `result` e.g. `ok`, `failed`, `invalid`;
    /// `floor` is the deliberate minimum latency applied to it.
    pub fn request(
        &self,
        guest: &str,
        operation: &str,
        result: &str,
        elapsed: Duration,
        floor: Duration,
    ) {
        self.request_counter(guest, operation, result).inc();
        self.request_latency(guest, operation, floor)
            .observe(elapsed.as_secs_f64());
    }

    /// The counter [`Metrics::request`] increments for these labels, as a
    /// handle to keep: finding it hashes and allocates the labels, which a
    /// caller on the request path does once per label set, not per request.
    /// The series appears in the output once created (at zero).
    pub fn request_counter(&self, guest: &str, operation: &str, result: &str) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                guest: guest.to_string(),
                operation: operation.to_string(),
                result: result.to_string(),
            })
            .clone()
    }

    /// The latency histogram [`Metrics::request`] observes for these
    /// labels, as a handle to keep (see [`Metrics::request_counter`]).
    pub fn request_latency(&self, guest: &str, operation: &str, floor: Duration) -> Histogram {
        self.latency
            .get_or_create(&OperationLabels {
                guest: guest.to_string(),
                operation: operation.to_string(),
                floor_ms: u64::try_from(floor.as_millis()).unwrap_or(u64::MAX),
            })
            .clone()
    }

    /// One notification delivered to `guest`.
    pub fn notification_sent(&self, guest: &str) {
        self.notifications_sent
            .get_or_create(&GuestLabels {
                guest: guest.to_string(),
            })
            .inc();
    }

    /// One notification for `guest` dropped, and why.
    pub fn notification_dropped(&self, guest: &str, reason: &str) {
        self.notifications_dropped
            .get_or_create(&DropLabels {
                guest: guest.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// One more delivery attempt for `guest` after a failed one.
    pub fn notification_retry(&self, guest: &str) {
        self.notification_retries
            .get_or_create(&GuestLabels {
                guest: guest.to_string(),
            })
            .inc();
    }

    /// One notification for `guest` given up at its deadline.
    pub fn notification_given_up(&self, guest: &str) {
        self.notification_give_ups
            .get_or_create(&GuestLabels {
                guest: guest.to_string(),
            })
            .inc();
    }

    /// How many guests are configured.
    pub fn set_guests(&self, n: usize) {
        self.guests.set(n as i64);
    }

    /// A guest request connection closed unanswered (`reason`, e.g.
    /// `too_many_in_flight`).
    pub fn connection_refused(&self, guest: &str, reason: &str) {
        self.refused
            .get_or_create(&DropLabels {
                guest: guest.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Sets whether `guest` has a connection (its `guest_connected` gauge).
    pub fn set_guest_connected(&self, guest: &str, connected: bool) {
        self.guest_connected
            .get_or_create(&GuestLabels {
                guest: guest.to_string(),
            })
            .set(i64::from(connected));
    }

    /// Drops a removed guest's connection state (its counters stay, as
    /// counters do).
    pub fn forget_guest(&self, guest: &str) {
        self.guest_connected.remove(&GuestLabels {
            guest: guest.to_string(),
        });
    }

    /// The backend's health: how many Wi-Fi interfaces it offers now.
    pub fn set_backend_interfaces(&self, backend: &str, interfaces: usize) {
        let labels = BackendLabels {
            backend: backend.to_string(),
        };
        self.backend_interfaces
            .get_or_create(&labels)
            .set(i64::try_from(interfaces).unwrap_or(i64::MAX));
        self.backend_up
            .get_or_create(&labels)
            .set(i64::from(interfaces > 0));
    }

    /// The backend's health: whether it follows the host's Wi-Fi service.
    pub fn set_backend_healthy(&self, backend: &str, healthy: bool) {
        let labels = BackendLabels {
            backend: backend.to_string(),
        };
        self.backend_healthy
            .get_or_create(&labels)
            .set(i64::from(healthy));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        // The transports count process-wide; catch the counter up.
        let seen = crate::transport::unknown_peer_connections();
        let shown = self.unknown_peers.get();
        if seen > shown {
            self.unknown_peers.inc_by(seen - shown);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {address}: {source}")]
pub struct MetricsError {
    /// The address asked for.
    pub address: SocketAddr,
    /// What the system said.
    #[source]
    pub source: std::io::Error,
}

/// Binds the metrics endpoint. Serve it with [`serve`].
pub async fn bind(address: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| MetricsError { address, source })
}

/// Bounds of the metrics endpoint. Any local user can reach it, so each
/// connection costs at most one descriptor, one task and 16 KiB of buffer
/// for a bounded time, and only so many at once.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once. Past it, the oldest connection that has
    /// not delivered its request (or whose answer has waited
    /// `slow_reader` to be read) is closed to make room; when every one is
    /// being answered, the new one gets 503.
    max_connections: usize,
    /// Time to deliver the request head.
    header_timeout: Duration,
    /// Time for the whole exchange, the answer's write included.
    connection_timeout: Duration,
    /// An answer not read for this long may be evicted for a new client.
    slow_reader: Duration,
}

const LIMITS: Limits = Limits {
    max_connections: 16,
    header_timeout: Duration::from_secs(5),
    connection_timeout: Duration::from_secs(10),
    slow_reader: Duration::from_secs(1),
};

/// Longest request head (request line and headers); more gets 431.
const MAX_HEADER_SIZE: usize = 8 * 1024;
/// Read buffer of a connection (hyper's minimum is 8 KiB).
const MAX_BUF_SIZE: usize = 16 * 1024;

/// Answers `GET /metrics` (and `GET /`) until `shutdown` is cancelled.
///
/// HTTP/1.1 by hyper, one request per connection (`Connection: close`),
/// bounded (16 connections, 5 s for the head, 10 s in all); bare-LF line
/// ends are accepted, a request head over 8 KiB is answered 431.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    serve_with(listener, metrics, LIMITS, shutdown).await
}

/// A connection being served: its task, and since when its answer has
/// been in progress (unset while it waits for its request).
struct Open {
    task: tokio::task::AbortHandle,
    answering_since: Arc<OnceLock<Instant>>,
}

impl Open {
    fn evictable(&self, limits: &Limits) -> bool {
        self.answering_since
            .get()
            .is_none_or(|since| since.elapsed() >= limits.slow_reader)
    }
}

async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    // Connections in flight are owned here and dropped with the set when
    // shutdown comes.
    let mut connections = JoinSet::new();
    // The same connections, oldest first, for eviction.
    let mut open: VecDeque<Open> = VecDeque::new();
    let mut backoff = AcceptBackoff::new("metrics endpoint");
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_SIZE)
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(false);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        open.retain(|c| !c.task.is_finished());
        if open.len() >= limits.max_connections {
            match open.iter().position(|c| c.evictable(&limits)) {
                Some(oldest) => {
                    if let Some(evicted) = open.remove(oldest) {
                        evicted.task.abort();
                    }
                }
                None => {
                    connections.spawn(refuse_busy(stream));
                    continue;
                }
            }
        }
        let answering_since = Arc::new(OnceLock::new());
        let exchange = http.serve_connection(
            TokioIo::new(stream),
            service_fn({
                let metrics = metrics.clone();
                let answering_since = answering_since.clone();
                move |request| {
                    let _ = answering_since.set(Instant::now());
                    let response = respond(&request, &metrics);
                    async move { Ok::<_, Infallible>(response) }
                }
            }),
        );
        let task = connections.spawn(async move {
            // Errors are the client's (bad request, gone, too slow): hyper
            // has answered what can be answered; nothing to log per client.
            let _ = tokio::time::timeout(limits.connection_timeout, exchange).await;
        });
        open.push_back(Open {
            task,
            answering_since,
        });
    }
}

/// Every connection slot is busy answering: say so and close.
async fn refuse_busy(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        // Take what the client sent before closing: a close with unread
        // data resets the connection, which can destroy the 503 before
        // the client reads it.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

fn respond(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics" | "/") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (&Method::GET | &Method::HEAD, _) => {
            (StatusCode::NOT_FOUND, "text/plain", "not found\n".into())
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::task::JoinHandle;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.set_guests(2);
        let floor = Duration::from_millis(150);
        m.request(
            "vm1",
            "scan_request",
            "ok",
            Duration::from_millis(153),
            floor,
        );
        m.request(
            "vm1",
            "scan_request",
            "ok",
            Duration::from_millis(154),
            floor,
        );
        m.connection_refused("vm1", "too_many_in_flight");
        m.set_guest_connected("vm1", true);
        m.set_guest_connected("vm2", true);
        m.set_guest_connected("vm2", false);
        m.set_guest_connected("gone", true);
        m.forget_guest("gone");
        m.set_backend_interfaces("networkmanager", 0);
        m.set_backend_healthy("networkmanager", false);
        m.notification_sent("vm1");
        m.notification_dropped("vm2", "no_guest_request_yet");
        let text = m.render();
        assert!(
            text.contains(
                "proxy_wifi_requests_total{guest=\"vm1\",operation=\"scan_request\",result=\"ok\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("proxy_wifi_request_duration_seconds_count{guest=\"vm1\",operation=\"scan_request\",floor_ms=\"150\"} 2"), "{text}");
        assert!(
            text.contains(&format!(
                "proxy_wifi_build_info{{version=\"{}\",os=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS
            )),
            "{text}"
        );
        assert!(text.contains(
            "proxy_wifi_connections_refused_total{guest=\"vm1\",reason=\"too_many_in_flight\"} 1"
        ));
        assert!(text.contains("proxy_wifi_guest_connected{guest=\"vm1\"} 1"));
        assert!(text.contains("proxy_wifi_guest_connected{guest=\"vm2\"} 0"));
        assert!(!text.contains("guest=\"gone\""), "{text}");
        assert!(text.contains("proxy_wifi_backend_up{backend=\"networkmanager\"} 0"));
        assert!(text.contains("proxy_wifi_backend_wifi_interfaces{backend=\"networkmanager\"} 0"));
        assert!(text.contains("proxy_wifi_backend_healthy{backend=\"networkmanager\"} 0"));
        assert!(text.contains("proxy_wifi_notifications_sent_total{guest=\"vm1\"} 1"));
        assert!(text.contains(
            "proxy_wifi_notifications_dropped_total{guest=\"vm2\",reason=\"no_guest_request_yet\"} 1"
        ));
        assert!(text.contains("proxy_wifi_guests_configured 2"));
    }

    /// One scrape of `/metrics` on a new connection, answered within 5 s.
    async fn scrape(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("the scrape was answered")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn serves_over_http() {
        let m = Arc::new(Metrics::new());
        m.set_guests(3);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, m, shutdown.clone()));
        let get = |req: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("proxy_wifi_guests_configured 3"), "{ok}");
        let missing = get("GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get("POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        shutdown.cancel();
        task.await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }

    /// Sends `request` to a fresh endpoint and returns what came back
    /// before the server closed (or `limit` passed).
    async fn exchange(request: Vec<u8>, limit: Duration) -> String {
        let m = Arc::new(Metrics::new());
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, m, shutdown.clone()));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
        shutdown.cancel();
        task.await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn bare_lf_line_ends_are_answered() {
        // Well before the header deadline: answered, not timed out.
        let out = exchange(
            b"GET /metrics HTTP/1.1\nHost: x\n\n".to_vec(),
            Duration::from_secs(3),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
        assert!(out.contains("proxy_wifi_guests_configured"), "{out:?}");
    }

    #[tokio::test]
    async fn an_oversized_header_gets_an_answer() {
        let mut request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 9 * 1024));
        request.extend_from_slice(b"\r\n\r\n");
        let out = exchange(request, Duration::from_secs(3)).await;
        assert!(
            out.starts_with("HTTP/1.1 431") || out.starts_with("HTTP/1.1 400"),
            "{out:?}"
        );
    }

    async fn start_with(limits: Limits) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_with(
            listener,
            Arc::new(Metrics::new()),
            limits,
            shutdown.clone(),
        ));
        (addr, shutdown, task)
    }

    #[tokio::test]
    async fn a_stalled_client_is_closed_at_the_header_deadline() {
        let (addr, shutdown, task) = start_with(Limits {
            header_timeout: Duration::from_millis(300),
            ..LIMITS
        })
        .await;
        // A partial request line, then nothing. The bound is generous:
        // this is about being closed at all, not about speed.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(b"GET /met").await.unwrap();
        let mut sink = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut sink))
            .await
            .expect("a stalled client must be closed at the header deadline")
            .ok();
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn silent_clients_past_the_cap_evict_the_oldest() {
        // A header deadline far away: only eviction can close them soon.
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_secs(60),
            ..LIMITS
        };
        let (addr, shutdown, task) = start_with(limits).await;
        let mut silent = Vec::new();
        for _ in 0..2 * limits.max_connections {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let out = scrape(addr).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        // The oldest silent ones were closed unanswered, the newest not.
        let mut evicted = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), silent[0].read_to_end(&mut evicted))
            .await
            .expect("the oldest silent client was closed")
            .ok();
        assert!(evicted.is_empty(), "{evicted:?}");
        let mut buf = [0u8; 1];
        let newest = silent.last_mut().unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), newest.read(&mut buf))
                .await
                .is_err(),
            "the newest silent client is still waited for"
        );
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_new_client_gets_503_when_every_slot_is_answering() {
        // An answer of several MB that its client does not read stays in
        // progress (socket buffers fill): the one slot is busy answering.
        let m = Arc::new(Metrics::new());
        for i in 0..8000 {
            let guest = format!("guest-{i}");
            m.request(&guest, "scan_request", "ok", Duration::ZERO, Duration::ZERO);
        }
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let limits = Limits {
            max_connections: 1,
            slow_reader: Duration::from_secs(60),
            ..LIMITS
        };
        let task = tokio::spawn(serve_with(listener, m, limits, shutdown.clone()));
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The answer has started; read no more of it.
        let mut first = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), busy.read_exact(&mut first))
            .await
            .expect("the answer starts")
            .unwrap();
        let out = scrape(addr).await;
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.contains("Retry-After: 1"), "{out}");
        drop(busy);
        shutdown.cancel();
        task.await.unwrap();
    }
}
