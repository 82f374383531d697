//! The service for one guest: a transport, a handler, the host's Wi-Fi, the
//! client's fake networks and observer, started and stopped as one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), proxy_wifi::service::ServiceError> {
//! use proxy_wifi::service::Service;
//! use proxy_wifi::transport::TransportConfig;
//! use proxy_wifi::wifi::simulated::SimulatedWifi;
//!
//! let service = Service::builder(
//!     TransportConfig::tcp("127.0.0.1".parse().unwrap()),
//!     SimulatedWifi::reference(),
//! )
//! .build();
//! service.start().await?;
//! // ... serve until told to stop ...
//! service.stop().await;
//! # Ok(()) }
//! ```
//!
//! Per guest request connection a task reads one message (under a 1 s read
//! deadline), hands it to the handler, writes the reply and closes, exactly
//! as the driver expects. A request that cannot be read or decoded is
//! answered INVALID and the service carries on. At most
//! [`MAX_CONNECTIONS_IN_FLIGHT`] request connections are served at once;
//! past that, the oldest one still waiting for its request is closed to
//! make room (a stalled writer must not lock the guest's own well-formed
//! requests out until the read deadlines expire); only when every one is
//! being answered is the new one closed at once (the guest reads that as
//! INVALID). A warning is logged at most once a second.
//!
//! Notifications leave through one sender task: each is encoded first, then
//! a connection is opened and the whole message written at once, with
//! nothing awaited in between (the driver gives the connection 10 ms). Until
//! the first guest request has arrived, notifications are dropped: the guest
//! may not be listening yet. While a notification is being delivered (up to
//! the connect and write timeouts when the guest does not cooperate), the
//! next ones wait in a bounded queue that keeps only the latest
//! NOTIF_SIGNAL_QUALITY and, when full, gives up signal updates and partial
//! scan results before anything else: a NOTIF_DISCONNECTED or a completing
//! SCAN_RESPONSE is never dropped to make room for them.
//!
//! Many services (one per guest) may share one [`HostWifi`] backend.
//!
//! The parts: this module (builder and lifecycle), [`requests`] (the
//! request path), [`notifications`] (the notification queue and its
//! sender) and [`counters`]. Each task of a running service watches one
//! [`CancellationToken`]; [`Service::stop`] cancels it and waits for them in
//! order (requests, handler, notifications, observer), so the observer gets
//! every event the handler queued.

#![warn(missing_docs)]

mod counters;
pub(crate) mod notifications;
pub(crate) mod requests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use counters::ServiceStats;
pub use notifications::{
    DEFAULT_NOTIFICATION_DEADLINE, NOTIFICATION_CONNECT_TIMEOUT, NOTIFICATION_QUEUE,
    NOTIFICATION_RETRY_FIRST_PAUSE, NOTIFICATION_RETRY_MAX_PAUSE, NOTIFICATION_WRITE_TIMEOUT,
    SCAN_NOTIFICATION_DEADLINE,
};
pub use requests::{MAX_CONNECTIONS_IN_FLIGHT, REPLY_WRITE_TIMEOUT, REQUEST_READ_TIMEOUT};

use crate::handler::{self, HandlerSettings, HandlerStatus};
use crate::metrics::Metrics;
use crate::observer::{Observer, ObserverQueue};
use crate::protocol::{MacAddr, ScanLayout, Ssid};
use crate::transport::{SocketAccess, TransportConfig, TransportError};
use crate::wifi::{fake_networks, FakeNetworkProvider, HostWifi, InterfaceId};
use counters::Counters;

/// How long [`Service::stop`] lets in-flight requests finish before it
/// severs them. A request is bounded by the read deadline and the handler's
/// 10 s rules, so most finish well within it.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long [`Service::stop`] waits for the handler to finish the input in
/// hand once no request can reach it; past that it is aborted (a backend
/// call that overran every bound).
const HANDLER_GRACE: Duration = Duration::from_secs(5);
/// How long [`Service::stop`] waits for the observer to take the events it
/// is owed. Past that the delivery task is left to finish on its own (it is
/// never aborted: the events are the client application's).
const OBSERVER_GRACE: Duration = Duration::from_secs(5);

/// The name a service has in logs and metrics unless given one.
const DEFAULT_NAME: &str = "default";

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The transport could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// `start` on a started service.
    #[error("the service is already running")]
    AlreadyRunning,
}

/// What a service is made of: what the builder collects and the service
/// keeps, one struct so the two cannot drift apart.
struct Parts {
    name: String,
    transport: TransportConfig,
    backend: Arc<dyn HostWifi>,
    fake: Option<FakeNetworkProvider>,
    observer: Option<Arc<dyn Observer>>,
    settings: HandlerSettings,
    notification_deadline: Duration,
    /// Owner, group and mode of the request socket when it is a file.
    socket_access: SocketAccess,
}

/// Builds a [`Service`].
pub struct ServiceBuilder {
    parts: Parts,
    metrics: Option<Arc<Metrics>>,
}

impl ServiceBuilder {
    /// The guest's name: in every log line of the service (a `guest` span
    /// with the name and the transport) and in metrics.
    pub fn name(mut self, name: impl Into<String>) -> ServiceBuilder {
        self.parts.name = name.into();
        self
    }

    /// Records requests and notifications in `metrics`, under the guest's
    /// name.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> ServiceBuilder {
        self.metrics = Some(metrics);
        self
    }

    /// Fake networks: a closure returning (SSID, BSSID) pairs, called at
    /// every scan and connect. They are shown as WPA2-PSK/CCMP on 5240 MHz
    /// at -50 dBm and are always connected.
    pub fn fake_networks(
        mut self,
        provider: impl Fn() -> Vec<(Ssid, MacAddr)> + Send + Sync + 'static,
    ) -> ServiceBuilder {
        self.parts.fake = Some(Arc::new(provider));
        self
    }

    /// The client application's observer.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> ServiceBuilder {
        self.parts.observer = Some(observer);
        self
    }

    /// The handler's rules and time bounds.
    pub fn settings(mut self, settings: HandlerSettings) -> ServiceBuilder {
        self.parts.settings = settings;
        self
    }

    /// How long a notification the guest cannot take yet is retried,
    /// counted from when it was produced ([`DEFAULT_NOTIFICATION_DEADLINE`]
    /// by default; zero: one attempt, no retry).
    pub fn notification_deadline(mut self, deadline: Duration) -> ServiceBuilder {
        self.parts.notification_deadline = deadline;
        self
    }

    /// Who may use the request socket when it is a file (hybrid vsock):
    /// its owner, group and mode (default: the service's, 0600).
    pub fn socket_access(mut self, access: SocketAccess) -> ServiceBuilder {
        self.parts.socket_access = access;
        self
    }

    /// The service, stopped.
    pub fn build(self) -> Service {
        let metrics = self.metrics.map(|m| (m, self.parts.name.clone()));
        let counters = Arc::new(Counters::new(metrics, self.parts.settings.scan_min_latency));
        Service {
            parts: self.parts,
            counters,
            running: Mutex::new(None),
        }
    }
}

/// The tasks of a started service.
struct Running {
    /// Every task below watches it.
    shutdown: CancellationToken,
    /// The accept loop: it owns the listener, the in-flight connections and
    /// every handle on the handler.
    acceptor: JoinHandle<()>,
    /// Ends once the accept loop is gone (no request can reach it).
    handler: JoinHandle<()>,
    notifier: JoinHandle<()>,
    /// Ends once the handler is gone and every queued event is delivered.
    observer: Option<JoinHandle<()>>,
    local_description: String,
    local_port: Option<u32>,
    /// The handler's view of the guest's connection.
    status: tokio::sync::watch::Receiver<HandlerStatus>,
    /// Keeps the `guest_connected` metric current (daemon services only).
    connection_metric: Option<JoinHandle<()>>,
    /// The `guest` span every task runs in.
    span: tracing::Span,
    /// Set by the first guest request: notifications go out from then on.
    guest_seen: Arc<AtomicBool>,
}

/// Whether a host event's notification could reach a guest now
/// ([`Service::notification_reach`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationReach {
    /// The guest has made a request since the service started; until then
    /// notifications are dropped (nobody is known to listen).
    pub guest_seen: bool,
    /// The interface holding the guest's connection, if it has one: signal
    /// changes are sent for that interface only.
    pub connected_on: Option<InterfaceId>,
    /// Scan results are sent as notifications (legacy-layout guests drop
    /// them, so none are sent to those).
    pub takes_scan_results: bool,
}

/// The host service for one guest. Start, stop, start again.
pub struct Service {
    parts: Parts,
    counters: Arc<Counters>,
    running: Mutex<Option<Running>>,
}

impl Service {
    /// A builder for a service on `transport` over `backend` (see
    /// [`crate::wifi::open`]; a backend may be shared by many services).
    pub fn builder(transport: TransportConfig, backend: Arc<dyn HostWifi>) -> ServiceBuilder {
        ServiceBuilder {
            parts: Parts {
                name: DEFAULT_NAME.to_string(),
                transport,
                backend,
                fake: None,
                observer: None,
                settings: HandlerSettings::default(),
                notification_deadline: DEFAULT_NOTIFICATION_DEADLINE,
                socket_access: SocketAccess::default(),
            },
            metrics: None,
        }
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.parts.name
    }

    /// How the guest is reached.
    pub fn transport(&self) -> &TransportConfig {
        &self.parts.transport
    }

    /// The handler's rules and time bounds.
    pub fn settings(&self) -> &HandlerSettings {
        &self.parts.settings
    }

    /// The host backend.
    pub fn backend(&self) -> &Arc<dyn HostWifi> {
        &self.parts.backend
    }

    /// Binds the transport and starts serving. Every start is a new guest
    /// session: the session counter starts again at 1.
    pub async fn start(&self) -> Result<(), ServiceError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(ServiceError::AlreadyRunning);
        }
        let span = tracing::info_span!("guest", guest = %self.parts.name, transport = %self.parts.transport);
        let endpoint = self
            .parts
            .transport
            .bind_host_with(self.parts.socket_access)
            .instrument(span.clone())
            .await?;
        let local_description = endpoint.listener.local_description();
        let local_port = endpoint.listener.local_port();

        // Spawned inside the span, so each task (and what it spawns) logs
        // as this guest's.
        let _in_span = span.enter();
        let shutdown = CancellationToken::new();
        let (observer, observer_task) = ObserverQueue::start(self.parts.observer.clone());
        let (notify_tx, notify_rx) = mpsc::channel(NOTIFICATION_QUEUE);
        let handler = handler::spawn(
            self.parts.backend.clone(),
            self.parts.fake.clone().map(fake_networks),
            observer,
            notify_tx,
            self.parts.settings.clone(),
        );
        let guest_seen = Arc::new(AtomicBool::new(false));
        let layout = self.parts.settings.scan_layout;
        let notifier = tokio::spawn(
            notifications::run_notifier(
                notify_rx,
                endpoint.notifier,
                layout,
                guest_seen.clone(),
                self.counters.clone(),
                Some(handler.reply_gate.clone()),
                notifications::Retry {
                    deadline: self.parts.notification_deadline,
                    status: Some(handler.status.clone()),
                },
                shutdown.clone(),
            )
            .in_current_span(),
        );
        let acceptor = tokio::spawn(
            requests::accept_loop(
                endpoint.listener,
                handler.client,
                layout,
                guest_seen.clone(),
                self.counters.clone(),
                shutdown.clone(),
            )
            .in_current_span(),
        );
        let connection_metric = self.counters.follow_connection(handler.status.clone());
        tracing::info!("listening for guest requests on {local_description}");
        drop(_in_span);
        *running = Some(Running {
            shutdown,
            acceptor,
            handler: handler.task,
            notifier,
            observer: observer_task,
            local_description,
            local_port,
            status: handler.status,
            connection_metric,
            span,
            guest_seen,
        });
        Ok(())
    }

    /// Stops the service gracefully: stops accepting (a hybrid socket file
    /// is removed at once), lets in-flight requests finish for up to
    /// [`STOP_GRACE`] and severs what is left, lets the handler finish the
    /// input in hand, stops the notification sender, and lets the observer
    /// take every event it is owed. Stopping a stopped service does
    /// nothing; `start` may be called again.
    pub async fn stop(&self) {
        let Some(running) = self.running.lock().await.take() else {
            return;
        };
        let span = running.span.clone();
        running.stop().instrument(span).await;
    }

    /// Whether the service is started.
    pub async fn is_running(&self) -> bool {
        self.running.lock().await.is_some()
    }

    /// The request port actually bound (useful with port 0), while running.
    pub async fn request_port(&self) -> Option<u32> {
        self.running
            .lock()
            .await
            .as_ref()
            .and_then(|r| r.local_port)
    }

    /// Where requests are accepted, while running.
    pub async fn local_description(&self) -> Option<String> {
        self.running
            .lock()
            .await
            .as_ref()
            .map(|r| r.local_description.clone())
    }

    /// Whether a notification could reach the guest now, while running
    /// (never waits for a request in progress).
    pub async fn notification_reach(&self) -> Option<NotificationReach> {
        let layout = self.parts.settings.scan_layout;
        self.running
            .lock()
            .await
            .as_ref()
            .map(|r| NotificationReach {
                guest_seen: r.guest_seen.load(Ordering::SeqCst),
                connected_on: r.status.borrow().connection.as_ref().map(|c| c.interface),
                takes_scan_results: layout != ScanLayout::Legacy,
            })
    }

    /// The guest's session id and connection, while running (never waits
    /// for a request in progress).
    pub async fn handler_status(&self) -> Option<HandlerStatus> {
        self.running
            .lock()
            .await
            .as_ref()
            .map(|r| r.status.borrow().clone())
    }

    /// The service's counters (they survive a restart).
    pub fn stats(&self) -> ServiceStats {
        self.counters.stats()
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        // The accept loop drains within STOP_GRACE by itself.
        let _ = self.acceptor.await;
        // Every handle on the handler went with the accept loop, so it ends
        // after the input in hand.
        let mut handler = self.handler;
        if timeout(HANDLER_GRACE, &mut handler).await.is_err() {
            tracing::warn!("the handler did not finish within {HANDLER_GRACE:?}; aborting it");
            handler.abort();
            let _ = handler.await;
        }
        let _ = self.notifier.await;
        // Ends (and reports the guest disconnected) with the handler.
        if let Some(metric) = self.connection_metric {
            let _ = metric.await;
        }
        if let Some(mut observer) = self.observer {
            if timeout(OBSERVER_GRACE, &mut observer).await.is_err() {
                tracing::warn!(
                    "the observer has not taken its events within {OBSERVER_GRACE:?}; they are delivered in the background"
                );
            }
        }
        tracing::info!(
            "stopped serving guest requests on {}",
            self.local_description
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wifi::simulated::SimulatedWifi;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::protocol::{Message, ScanLayout};

    #[tokio::test]
    async fn start_stop_start_and_port_in_use() {
        let config = TransportConfig::Tcp {
            address: "127.0.0.1".parse().unwrap(),
            request_port: 0,
            notification_port: 9,
        };
        let service = Service::builder(config, SimulatedWifi::reference()).build();
        service.start().await.unwrap();
        assert!(matches!(
            service.start().await,
            Err(ServiceError::AlreadyRunning)
        ));
        let port = service.request_port().await.unwrap();
        let scan = crate::protocol::Request::Scan(Default::default())
            .encode()
            .unwrap();
        let ask = |port: u32| {
            let scan = scan.clone();
            async move {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port as u16)).await?;
                s.write_all(&scan).await?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await?;
                std::io::Result::Ok(out)
            }
        };
        let reply = ask(port).await.unwrap();
        assert!(matches!(
            Message::decode(&reply, ScanLayout::Current).unwrap(),
            Message::ScanResponse(s) if s.bss.len() == 3
        ));
        // Another service on the same port cannot start.
        let clash = Service::builder(
            TransportConfig::Tcp {
                address: "127.0.0.1".parse().unwrap(),
                request_port: port as u16,
                notification_port: 9,
            },
            SimulatedWifi::reference(),
        )
        .build();
        let err = clash.start().await.unwrap_err();
        assert!(err.to_string().contains("cannot listen"), "{err}");

        service.stop().await;
        assert!(ask(port).await.is_err(), "still listening after stop");
        service.start().await.unwrap();
        let port = service.request_port().await.unwrap();
        assert!(!ask(port).await.unwrap().is_empty());
        assert_eq!(service.stats().requests, 2);
        service.stop().await;
    }

    /// An observer that takes its time with the first event.
    #[derive(Default)]
    struct Slow {
        calls: std::sync::Mutex<Vec<&'static str>>,
    }

    impl Observer for Slow {
        fn guest_scan_requested(&self) {
            std::thread::sleep(Duration::from_millis(300));
            self.calls.lock().unwrap().push("scan");
        }
        fn guest_scan_completed(&self) {
            self.calls.lock().unwrap().push("scan done");
        }
    }

    #[tokio::test]
    async fn stop_delivers_the_observer_events_it_owes() {
        let config = TransportConfig::Tcp {
            address: "127.0.0.1".parse().unwrap(),
            request_port: 0,
            notification_port: 9,
        };
        let observer = Arc::new(Slow::default());
        let service = Service::builder(config, SimulatedWifi::reference())
            .settings(HandlerSettings {
                scan_min_latency: Duration::ZERO,
                ..HandlerSettings::default()
            })
            .observer(observer.clone())
            .build();
        service.start().await.unwrap();
        let port = service.request_port().await.unwrap();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
            .await
            .unwrap();
        let scan = crate::protocol::Request::Scan(Default::default())
            .encode()
            .unwrap();
        s.write_all(&scan).await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        // Both events are queued; the observer is still in the first.
        assert!(observer.calls.lock().unwrap().is_empty());
        service.stop().await;
        assert_eq!(*observer.calls.lock().unwrap(), ["scan", "scan done"]);
    }
}
