//! Prometheus metrics: build information, backend health, requests by
//! guest, operation and result, request latency (with the scan floor as a
//! label), refused connections, each guest's connection state,
//! notifications sent and dropped, guests configured.
//!
//! The registry is `prometheus-client`'s. The HTTP side is a deliberately
//! tiny responder for `GET /metrics` (one fixed read-only endpoint, bounded
//! request size and time): a full HTTP stack would be most of the daemon's
//! dependency tree for one page.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

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
            "Time from a request's arrival to its reply being written",
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
        self.requests
            .get_or_create(&RequestLabels {
                guest: guest.to_string(),
                operation: operation.to_string(),
                result: result.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels {
                guest: guest.to_string(),
                operation: operation.to_string(),
                floor_ms: u64::try_from(floor.as_millis()).unwrap_or(u64::MAX),
            })
            .observe(elapsed.as_secs_f64());
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

/// Answers `GET /metrics` (and `GET /`) until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    // Answers in flight are owned here (each bounded at 5 s) and dropped
    // with the set when shutdown comes.
    let mut answers = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = answers.join_next(), if !answers.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors and the like: back off briefly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        answers.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &metrics)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics" | b"/") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
