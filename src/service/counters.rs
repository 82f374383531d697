//! What a service counts: for `status`, tests and, under a daemon,
//! Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::handler::HandlerStatus;
use crate::metrics::Metrics;
use crate::protocol::{Message, Operation};

/// Counters, for status output and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Guest requests received (including ones answered INVALID).
    pub requests: u64,
    /// Requests answered INVALID because they could not be read or decoded.
    pub invalid_requests: u64,
    /// Notifications delivered.
    pub notifications_sent: u64,
    /// Dropped: before the first request, the guest could not be reached,
    /// or the queue was backed up (an older signal update replaced by a
    /// newer one, or no room left).
    pub notifications_dropped: u64,
    /// Request connections closed unanswered because
    /// [`MAX_CONNECTIONS_IN_FLIGHT`] were already open: the oldest one
    /// still waiting for its request, or the new one when all were busy.
    pub refused_connections: u64,
    /// Delivery attempts after a first one failed.
    pub notification_retries: u64,
    /// Notifications given up at their deadline (also counted as dropped).
    pub notifications_given_up: u64,
}

/// The live counters of one service, shared by its tasks.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) invalid_requests: AtomicU64,
    pub(super) notifications_sent: AtomicU64,
    pub(super) notifications_dropped: AtomicU64,
    pub(super) refused_connections: AtomicU64,
    pub(super) notification_retries: AtomicU64,
    pub(super) notifications_given_up: AtomicU64,
    /// Prometheus metrics and this guest's name in them, when a daemon runs
    /// the service.
    metrics: Option<(Arc<Metrics>, String)>,
    /// The scan floor (`scan_min_latency`), a label of the latency metric.
    scan_floor: Duration,
    /// This guest's request series, found once each and kept.
    request_series: RequestSeries,
}

/// The request results a metric tells apart.
const RESULTS: [&str; 3] = ["ok", "failed", "invalid"];

/// Cache slots: the three guest requests, and requests that could not be
/// read.
const OPERATION_SLOTS: usize = 4;

/// One guest's request counters and latency histograms, by operation slot
/// (and result), each looked up in its labelled family on first use and
/// kept: a lookup allocates and hashes the labels, which on the request
/// path cost more than the rest of the bookkeeping. A series still appears
/// in the output only once a request has used it.
#[derive(Default)]
struct RequestSeries {
    counters: [[OnceLock<Counter>; RESULTS.len()]; OPERATION_SLOTS],
    latency: [OnceLock<Histogram>; OPERATION_SLOTS],
}

impl RequestSeries {
    fn slot(operation: Option<Operation>) -> Option<usize> {
        match operation {
            Some(Operation::ScanRequest) => Some(0),
            Some(Operation::ConnectRequest) => Some(1),
            Some(Operation::DisconnectRequest) => Some(2),
            None => Some(3),
            // Not a request (the framing refuses these before any count).
            Some(_) => None,
        }
    }
}

impl Counters {
    pub(super) fn new(metrics: Option<(Arc<Metrics>, String)>, scan_floor: Duration) -> Counters {
        Counters {
            metrics,
            scan_floor,
            ..Counters::default()
        }
    }

    pub(super) fn stats(&self) -> ServiceStats {
        ServiceStats {
            requests: self.requests.load(Ordering::Relaxed),
            invalid_requests: self.invalid_requests.load(Ordering::Relaxed),
            notifications_sent: self.notifications_sent.load(Ordering::Relaxed),
            notifications_dropped: self.notifications_dropped.load(Ordering::Relaxed),
            refused_connections: self.refused_connections.load(Ordering::Relaxed),
            notification_retries: self.notification_retries.load(Ordering::Relaxed),
            notifications_given_up: self.notifications_given_up.load(Ordering::Relaxed),
        }
    }

    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answered request; `elapsed` is from its arrival to its
    /// reply written.
    pub(super) fn answered(
        &self,
        operation: Option<Operation>,
        reply: &Message,
        elapsed: Duration,
    ) {
        if let Some((metrics, guest)) = &self.metrics {
            let result = match reply {
                Message::Invalid => 2,
                Message::ConnectResponse(r) if r.result_code != 0 => 1,
                _ => 0,
            };
            let floor = match operation {
                Some(Operation::ScanRequest) => self.scan_floor,
                _ => Duration::ZERO,
            };
            let name = operation.map_or("unreadable", Operation::name);
            match RequestSeries::slot(operation) {
                Some(slot) => {
                    let series = &self.request_series;
                    series.counters[slot][result]
                        .get_or_init(|| metrics.request_counter(guest, name, RESULTS[result]))
                        .inc();
                    series.latency[slot]
                        .get_or_init(|| metrics.request_latency(guest, name, floor))
                        .observe(elapsed.as_secs_f64());
                }
                None => metrics.request(guest, name, RESULTS[result], elapsed, floor),
            }
        }
    }

    pub(super) fn connection_refused(&self) {
        Counters::bump(&self.refused_connections);
        if let Some((metrics, guest)) = &self.metrics {
            metrics.connection_refused(guest, "too_many_in_flight");
        }
    }

    /// Keeps the guest's `guest_connected` metric equal to the handler's
    /// view until the handler goes away. Wakes only when that view changes.
    pub(super) fn follow_connection(
        &self,
        mut status: tokio::sync::watch::Receiver<HandlerStatus>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let (metrics, guest) = self.metrics.clone()?;
        Some(tokio::spawn(async move {
            loop {
                let connected = status.borrow_and_update().connection.is_some();
                metrics.set_guest_connected(&guest, connected);
                if status.changed().await.is_err() {
                    metrics.set_guest_connected(&guest, false);
                    return;
                }
            }
        }))
    }

    pub(super) fn notification_sent(&self) {
        Counters::bump(&self.notifications_sent);
        if let Some((metrics, guest)) = &self.metrics {
            metrics.notification_sent(guest);
        }
    }

    pub(super) fn notification_dropped(&self, reason: &str) {
        Counters::bump(&self.notifications_dropped);
        if let Some((metrics, guest)) = &self.metrics {
            metrics.notification_dropped(guest, reason);
        }
    }

    pub(super) fn notification_retry(&self) {
        Counters::bump(&self.notification_retries);
        if let Some((metrics, guest)) = &self.metrics {
            metrics.notification_retry(guest);
        }
    }

    pub(super) fn notification_given_up(&self) {
        Counters::bump(&self.notifications_given_up);
        if let Some((metrics, guest)) = &self.metrics {
            metrics.notification_given_up(guest);
        }
        self.notification_dropped("deadline");
    }
}
