//! The request path: accept guest connections, read one request each
//! under a deadline, hand it to the handler, write the reply, close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use std::collections::VecDeque;

use super::counters::Counters;
use super::STOP_GRACE;
use crate::accept_backoff::AcceptBackoff;
use crate::handler::HandlerClient;
use crate::protocol::{DecodeError, Header, Message, Operation, Request, ScanLayout, HEADER_LEN};
use crate::transport::framing::{read_request, write_message, FrameError};
use crate::transport::{BoxStream, Peer, RequestListener};

/// `(Result<work's output, Elapsed>, whether it waited)`: `work` bounded
/// by `limit`, the timer armed only if it has to wait. A request is usually
/// in the socket and its reply fits in it, and arming a deadline reads the
/// clock, which the usual request then does for nothing. The limit counts
/// from that first wait, a moment after the call. `before_waiting` runs
/// first if it has to wait (it releases what must not be held while
/// waiting). A macro, not an async fn: the first poll is made in the
/// caller's own poll, with no future of its own between taking the request
/// and answering it.
macro_rules! within {
    ($limit:expr, $work:expr, $before_waiting:block) => {{
        let mut work = ::std::pin::pin!($work);
        match ::futures::poll!(work.as_mut()) {
            ::std::task::Poll::Ready(done) => (Ok::<_, ::tokio::time::error::Elapsed>(done), false),
            ::std::task::Poll::Pending => {
                $before_waiting;
                // Boxed: the timer is as large as the rest of a
                // connection's state, which is allocated and copied for
                // every connection.
                (
                    ::std::boxed::Box::pin(::tokio::time::timeout($limit, work)).await,
                    true,
                )
            }
        }
    }};
}

/// How long a guest connection may take to deliver its request.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long writing a reply may take.
pub const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Guest request connections served at once. A driver never has more than
/// one request outstanding; past this, the oldest connection still waiting
/// for its request is evicted (or, when all are being answered, the new one
/// is closed at once).
pub const MAX_CONNECTIONS_IN_FLIGHT: usize = 32;
/// At most one "too many connections" warning per interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Encodes a message, falling back to INVALID if it cannot be encoded (the
/// handler only builds encodable messages; this is the last guard).
pub fn encode_or_invalid(message: &Message, layout: ScanLayout) -> Vec<u8> {
    match message.encode(layout) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(operation = %message.operation(), "cannot encode a reply ({e}); answering INVALID");
            crate::protocol::Header::new(crate::protocol::Operation::Invalid, 0)
                .encode()
                .to_vec()
        }
    }
}

/// Accepts guest connections until `shutdown`, then lets the ones in flight
/// finish for up to [`STOP_GRACE`] and severs the rest (dropping the set
/// aborts them). The listener is dropped first, so a hybrid socket file
/// disappears at once.
pub(super) async fn accept_loop(
    listener: Box<dyn RequestListener>,
    handler: HandlerClient,
    layout: ScanLayout,
    guest_seen: Arc<AtomicBool>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    let guest = Arc::new(GuestContext {
        handler,
        layout,
        guest_seen,
        counters,
    });
    let mut connections = JoinSet::new();
    let mut refusals = RefusalLog::default();
    let mut backoff = AcceptBackoff::new("guest request listener");
    // The same connections, oldest first, each with whether its request
    // has arrived: when full, the oldest one still waiting for its request
    // (a stalled or slow writer) makes room for the new one.
    let mut open: VecDeque<(AbortHandle, Arc<AtomicBool>)> = VecDeque::new();
    // One accept future at a time, polled until it completes: a new one
    // per wakeup would be an allocation and a listener poll for nothing.
    // Finished connections are reaped when the next one arrives rather
    // than by waking this loop for each.
    let mut accepting = listener.accept();
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            accepted = &mut accepting => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accepting = listener.accept();
                backoff.failed(&e).await;
                continue;
            }
        };
        backoff.succeeded();
        if connections.len() >= MAX_CONNECTIONS_IN_FLIGHT {
            // Reap finished connections first, so only live ones count.
            reap(&mut connections, &mut open);
        }
        if connections.len() >= MAX_CONNECTIONS_IN_FLIGHT {
            guest.counters.connection_refused();
            // Let connections that were just spawned read what is already
            // sent, so a request that arrived is not taken for a stall.
            tokio::task::yield_now().await;
            let waiting = open
                .iter()
                .position(|(_, arrived)| !arrived.load(Ordering::Acquire));
            match waiting.and_then(|i| open.remove(i)) {
                Some((task, _)) => {
                    task.abort();
                    refusals.refused(
                        peer,
                        &stream,
                        "evicting the oldest one still waiting for its request",
                    );
                }
                None => {
                    refusals.refused(peer, &stream, "closing a new one unanswered");
                    drop(stream);
                    accepting = listener.accept();
                    continue;
                }
            }
        } else if tracing::enabled!(tracing::Level::TRACE) {
            let peer = peer.read_from(&stream);
            tracing::trace!(%peer, "guest request connection");
        }
        let arrived = Arc::new(AtomicBool::new(false));
        let mut connection = Box::pin(serve_connection(stream, guest.clone(), arrived.clone()));
        // The request is usually in the socket by the time its connection
        // is accepted, and answered without waiting: then it is served
        // here, in this poll, with no task of its own (a task per request
        // was a measurable share of the proxy's cost, BENCHMARKS.md). One
        // that has to wait (its request not all there, the handler busy, a
        // slow reader) goes on, from where it stopped, on a task of its own.
        let served = futures::poll!(connection.as_mut()).is_ready();
        // The next accept is made only now, so that nothing stands between
        // a connection and the read of its request: a guest blocked reading
        // its reply is woken once more if its request is taken from the
        // socket after it went to sleep (BENCHMARKS.md).
        accepting = listener.accept();
        if !served {
            let task = connections.spawn(connection.in_current_span());
            open.push_back((task, arrived));
        }
        // Finished connections are reaped here, after the new one is
        // served, not only when the limit is reached: a finished task's
        // memory stays allocated until it is, and with many guests that
        // added up (BENCHMARKS.md).
        reap(&mut connections, &mut open);
    }
    drop(accepting);
    // Stop accepting before draining, so a hybrid socket file disappears now.
    drop(listener);
    if !connections.is_empty() {
        tracing::info!("finishing {} in-flight request(s)", connections.len());
    }
    let drained = timeout(STOP_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} request(s) still in flight after {STOP_GRACE:?}; closing them",
            connections.len()
        );
    }
}

/// Drops the connections that have finished, and their entries in `open`.
fn reap(connections: &mut JoinSet<()>, open: &mut VecDeque<(AbortHandle, Arc<AtomicBool>)>) {
    while connections.try_join_next().is_some() {}
    open.retain(|(task, _)| !task.is_finished());
}

/// What every request connection of one guest shares: one reference per
/// connection rather than one per part.
struct GuestContext {
    handler: HandlerClient,
    layout: ScanLayout,
    guest_seen: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

/// Logs refused connections, at most once per [`REFUSAL_LOG_INTERVAL`].
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    /// `peer` is read from `stream` only when the line is written.
    fn refused(&mut self, peer: Peer, stream: &BoxStream, action: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        let peer = peer.read_from(stream);
        tracing::warn!(
            %peer,
            suppressed = self.suppressed,
            "{MAX_CONNECTIONS_IN_FLIGHT} guest connections already in flight; {action}"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Serves one guest request connection exactly as a running service does
/// (one request read under [`REQUEST_READ_TIMEOUT`], one reply, close), for
/// a handler the caller spawned. Fuzz targets and property tests drive the
/// request path through it over in-memory streams.
pub async fn serve_request_connection(
    stream: BoxStream,
    handler: HandlerClient,
    layout: ScanLayout,
) {
    let guest = Arc::new(GuestContext {
        handler,
        layout,
        guest_seen: Arc::new(AtomicBool::new(false)),
        counters: Arc::new(Counters::new(None, std::time::Duration::ZERO)),
    });
    serve_connection(stream, guest, Arc::new(AtomicBool::new(false))).await;
}

/// One request connection: read one message, answer it, close.
async fn serve_connection(
    mut stream: BoxStream,
    guest: Arc<GuestContext>,
    request_arrived: Arc<AtomicBool>,
) {
    let GuestContext {
        handler,
        layout,
        guest_seen,
        counters,
    } = &*guest;
    let layout = *layout;
    // The handler's state, taken before the read if it is free to answer
    // at once, and kept until the reply is written (or released as soon as
    // anything has to wait): so that neither taking nor releasing its lock
    // lies between taking the request and writing the reply.
    let mut at_once = handler.at_once();
    // The clock is read before the read when the request is already there
    // (the usual case), not after it: the time between taking the request
    // and writing the reply decides whether a guest blocked reading its
    // reply is woken once or twice (BENCHMARKS.md).
    let before_read = Instant::now();
    let (read, waited) = within!(REQUEST_READ_TIMEOUT, read_request(&mut stream), {
        at_once = None
    });
    let arrived = if waited { Instant::now() } else { before_read };
    // From here on the connection is being answered, never evicted.
    request_arrived.store(true, Ordering::Release);
    let mut operation = None;
    // Held until the reply is written: the notification sender waits for
    // it, so no notification can overtake this reply.
    let mut written_guard = None;
    // The request's bytes, wiped when dropped: after the reply is out, for
    // the same reason as the clock.
    let mut request_bytes = None;
    let reply = match read {
        Ok(Ok((header, body))) => {
            Counters::bump(&counters.requests);
            if !guest_seen.load(Ordering::Relaxed) {
                guest_seen.store(true, Ordering::SeqCst);
            }
            operation = Some(header.operation);
            let decoded = Request::decode_body(header.operation, &body);
            request_bytes = Some(body);
            match decoded {
                Ok(request) => match at_once.as_ref().and_then(|state| state.answer(&request)) {
                    Some(reply) => reply,
                    None => {
                        // The handler takes the lock itself.
                        at_once = None;
                        tracing::debug!(operation = %header.operation, "guest request");
                        let (reply, guard) = handler.request_until_written(request, arrived).await;
                        written_guard = Some(guard);
                        reply
                    }
                },
                Err(e) => {
                    // Nothing to answer from the state; its log line may wait.
                    at_once = None;
                    undecodable(counters, header.operation, &e)
                }
            }
        }
        Ok(Err(FrameError::Closed)) => {
            tracing::debug!("a guest connection closed without a request");
            return;
        }
        Ok(Err(e)) => {
            at_once = None;
            unreadable(counters, guest_seen, &e)
        }
        Err(_) => read_timed_out(counters),
    };
    let bytes = ReplyBytes::of(&reply, layout);
    let (written, _) = within!(
        REPLY_WRITE_TIMEOUT,
        write_message(&mut stream, bytes.as_ref()),
        {
            if let Some(state) = at_once.take() {
                written_guard = Some(state.release_reply_first());
            }
        }
    );
    // The end of the reply goes out right behind it, the bookkeeping after:
    // the guest reads until the host closes, and work in between can cost
    // it a second wakeup (on another CPU, an interprocessor interrupt).
    if let Ok(Ok(())) = written {
        let mut shutdown = std::pin::pin!(stream.shutdown());
        if futures::poll!(shutdown.as_mut()).is_pending() {
            // The guest reads until the end: the reply is not all there yet.
            if let Some(state) = at_once.take() {
                written_guard = Some(state.release_reply_first());
            }
            let _ = shutdown.await;
        }
    }
    drop(at_once);
    // Measured to here, not to the write: a clock read between the write
    // and the shutdown would delay the end of the reply.
    let elapsed = arrived.elapsed();
    drop(request_bytes);
    counters.answered(operation, &reply, elapsed);
    match written {
        Ok(Ok(())) => {
            tracing::debug!(operation = %reply.operation(), bytes = bytes.as_ref().len(), "reply sent")
        }
        Ok(Err(e)) => tracing::warn!("cannot write the reply: {e}"),
        Err(_) => tracing::warn!("writing the reply timed out"),
    }
    drop(written_guard);
}

// The request path's failures, out of its line: their logging is most of
// its code, and kept inline it spreads the usual path over more of the
// instruction cache, between taking a request and writing its reply.

#[cold]
#[inline(never)]
fn undecodable(counters: &Counters, operation: Operation, e: &DecodeError) -> Message {
    Counters::bump(&counters.invalid_requests);
    tracing::warn!(%operation, "undecodable request ({e}); answering INVALID");
    Message::Invalid
}

#[cold]
#[inline(never)]
fn unreadable(counters: &Counters, guest_seen: &AtomicBool, e: &FrameError) -> Message {
    Counters::bump(&counters.requests);
    Counters::bump(&counters.invalid_requests);
    guest_seen.store(true, Ordering::SeqCst);
    tracing::warn!("unreadable request ({e}); answering INVALID");
    Message::Invalid
}

#[cold]
#[inline(never)]
fn read_timed_out(counters: &Counters) -> Message {
    Counters::bump(&counters.invalid_requests);
    tracing::warn!("no complete request within {REQUEST_READ_TIMEOUT:?}; answering INVALID");
    Message::Invalid
}

/// A reply's bytes. One with an empty body (DISCONNECT_RESPONSE, INVALID)
/// is its header, with no allocation: it is built between taking the
/// request and writing the reply, where every step counts.
enum ReplyBytes {
    Header([u8; HEADER_LEN]),
    Encoded(Vec<u8>),
}

impl ReplyBytes {
    fn of(reply: &Message, layout: ScanLayout) -> ReplyBytes {
        match reply {
            Message::Invalid | Message::DisconnectResponse => {
                ReplyBytes::Header(Header::new(reply.operation(), 0).encode())
            }
            other => ReplyBytes::Encoded(encode_or_invalid(other, layout)),
        }
    }
}

impl AsRef<[u8]> for ReplyBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            ReplyBytes::Header(header) => header,
            ReplyBytes::Encoded(bytes) => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;
    use tokio::io::AsyncReadExt;
    use tokio::sync::mpsc;

    use crate::handler::{self, HandlerSettings};
    use crate::observer::ObserverQueue;
    use crate::protocol::MacAddr;
    use crate::wifi::simulated::SimulatedWifi;

    #[tokio::test(start_paused = true)]
    async fn a_header_announcing_4_gib_is_refused_before_any_wait() {
        let wifi = SimulatedWifi::reference();
        let (notify, _rx) = mpsc::channel(4);
        let handler = handler::spawn(
            wifi,
            None,
            ObserverQueue::default(),
            notify,
            HandlerSettings::default(),
        );
        let (mut guest, host) = tokio::io::duplex(64);
        let started = Instant::now();
        let served = tokio::spawn(serve_request_connection(
            Box::new(host),
            handler.client.clone(),
            ScanLayout::Current,
        ));
        // CONNECT_REQUEST, size u32::MAX; the connection stays open.
        guest
            .write_all(&[3, 0xff, 0xff, 0xff, 0xff, 1, 0])
            .await
            .unwrap();
        let mut reply = [0u8; crate::protocol::HEADER_LEN];
        guest.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [0, 0, 0, 0, 0, 1, 0]);
        // Virtual time: had it waited for a body, the read deadline would
        // have passed.
        assert_eq!(started.elapsed(), Duration::ZERO);
        served.await.unwrap();
        handler.task.abort();
    }

    fn spawn_handler() -> handler::HandlerHandle {
        let (notify, _rx) = mpsc::channel(4);
        handler::spawn(
            SimulatedWifi::reference(),
            None,
            ObserverQueue::default(),
            notify,
            HandlerSettings::default(),
        )
    }

    fn encoded(request: Request) -> Vec<u8> {
        request.encode().unwrap().to_vec()
    }

    fn disconnect_request() -> Request {
        Request::Disconnect(crate::protocol::DisconnectRequest { session_id: 0 })
    }

    fn disconnect_response() -> Vec<u8> {
        Message::DisconnectResponse
            .encode(ScanLayout::Current)
            .unwrap()
    }

    // The request path holds the handler's state from before the read to
    // the written reply (`AtOnce`); these check that it does, and that it
    // lets go whenever it has to wait, so one slow guest connection never
    // holds up the handler.

    /// What a connection's stream saw of the handler at each call the
    /// request path made on it.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Seen {
        call: &'static str,
        /// The handler's state was held (by the request path).
        state_held: bool,
        /// Replies the reply gate was waiting for.
        gate: usize,
    }

    /// A stream that records, at each call, whether the handler's state
    /// is held and what the reply gate counts.
    struct Watched<S> {
        inner: S,
        handler: HandlerClient,
        gate: Arc<crate::handler::ReplyGate>,
        seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    }

    impl<S> Watched<S> {
        fn record(&self, call: &'static str) {
            // The handler is started and no host event waits in these
            // tests, so the state is refused only when it is held.
            let state_held = self.handler.at_once().is_none();
            let gate = self.gate.in_flight();
            self.seen.lock().unwrap().push(Seen {
                call,
                state_held,
                gate,
            });
        }
    }

    impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.record("read");
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.record("write");
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.record("shutdown");
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// A guest connection's host end, watched, served as the service does;
    /// its log and the guest's end.
    fn serve_watched<S: crate::transport::Stream>(
        handler: &handler::HandlerHandle,
        inner: S,
    ) -> (
        tokio::task::JoinHandle<()>,
        Arc<std::sync::Mutex<Vec<Seen>>>,
    ) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stream = Watched {
            inner,
            handler: handler.client.clone(),
            gate: handler.reply_gate.clone(),
            seen: seen.clone(),
        };
        let served = tokio::spawn(serve_request_connection(
            Box::new(stream),
            handler.client.clone(),
            ScanLayout::Current,
        ));
        (served, seen)
    }

    fn seen(call: &'static str, state_held: bool, gate: usize) -> Seen {
        Seen {
            call,
            state_held,
            gate,
        }
    }

    #[tokio::test]
    async fn a_disconnect_is_read_answered_and_closed_with_the_state_held_and_no_gate() {
        let handler = spawn_handler();
        handler.client.sync().await;
        let (mut guest, host) = tokio::io::duplex(64);
        guest
            .write_all(&encoded(disconnect_request()))
            .await
            .unwrap();
        let (served, log) = serve_watched(&handler, host);
        let mut reply = Vec::new();
        guest.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, disconnect_response());
        served.await.unwrap();
        assert_eq!(handler.client.at_once_runs(), 1);
        assert_eq!(
            *log.lock().unwrap(),
            [
                seen("read", true, 0),
                seen("write", true, 0),
                seen("shutdown", true, 0)
            ]
        );
        handler.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_waiting_for_its_request_leaves_the_handler_free() {
        let handler = spawn_handler();
        handler.client.sync().await;
        let (mut guest, host) = tokio::io::duplex(64);
        let (served, log) = serve_watched(&handler, host);
        // The connection takes the state, reads, finds nothing, lets go
        // and waits.
        tokio::task::yield_now().await;
        assert_eq!(
            *log.lock().unwrap(),
            [seen("read", true, 0), seen("read", false, 0)]
        );
        let started = Instant::now();
        let reply = handler.client.request(disconnect_request(), started);
        assert_eq!(reply.await, Message::DisconnectResponse);
        // Virtual time: had the state been held, the request would have
        // waited for the connection's read deadline.
        assert_eq!(started.elapsed(), Duration::ZERO);
        // The connection still answers its own request.
        guest
            .write_all(&encoded(disconnect_request()))
            .await
            .unwrap();
        let mut reply = Vec::new();
        guest.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, disconnect_response());
        served.await.unwrap();
        handler.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_that_must_wait_frees_the_handler_and_holds_back_notifications() {
        let handler = spawn_handler();
        handler.client.sync().await;
        let (mut guest, host) = tokio::io::duplex(1);
        // A guest whose request is all there but that takes its reply one
        // byte at a time: the reply's write has to wait.
        let slow = tokio::io::join(std::io::Cursor::new(encoded(disconnect_request())), host);
        let (served, log) = serve_watched(&handler, slow);
        // The request is answered at once, and its reply waits for the
        // guest after one byte: the state is let go, the gate opened first.
        tokio::task::yield_now().await;
        assert_eq!(
            *log.lock().unwrap(),
            [
                seen("read", true, 0),
                seen("write", true, 0),
                seen("write", true, 0),
                seen("write", false, 1)
            ]
        );
        assert_eq!(handler.client.at_once_runs(), 1);
        // Notifications wait for the reply...
        assert_eq!(handler.reply_gate.in_flight(), 1);
        // ... but the handler does not.
        let started = Instant::now();
        handler.client.sync().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        let mut reply = Vec::new();
        guest.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, disconnect_response());
        served.await.unwrap();
        assert_eq!(handler.reply_gate.in_flight(), 0);
        let log = log.lock().unwrap();
        assert!(
            log[3..].iter().all(|s| !s.state_held && s.gate == 1),
            "{log:?}"
        );
        handler.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_the_state_cannot_answer_goes_to_the_handler() {
        let handler = spawn_handler();
        handler.client.sync().await;
        let (mut guest, host) = tokio::io::duplex(4096);
        let scan = Request::Scan(crate::protocol::ScanRequest { ssid: None });
        guest.write_all(&encoded(scan)).await.unwrap();
        let (served, log) = serve_watched(&handler, host);
        let mut reply = Vec::new();
        // Virtual time: a connection waiting on its own lock would only
        // end at this limit.
        tokio::time::timeout(Duration::from_secs(60), guest.read_to_end(&mut reply))
            .await
            .expect("the scan is answered")
            .unwrap();
        let reply = Message::decode(&reply, ScanLayout::Current).unwrap();
        assert!(matches!(reply, Message::ScanResponse(_)), "{reply:?}");
        served.await.unwrap();
        assert_eq!(handler.client.at_once_runs(), 0);
        // Held for the read, let go for the handler, which opens the gate
        // for its reply.
        let log = log.lock().unwrap();
        assert_eq!(log[0], seen("read", true, 0));
        assert!(
            log[1..].iter().all(|s| !s.state_held && s.gate == 1),
            "{log:?}"
        );
        handler.task.abort();
    }

    #[test]
    fn reply_bytes_are_the_encoded_reply() {
        use crate::protocol::ConnectResponse;
        let replies = [
            Message::Invalid,
            Message::DisconnectResponse,
            Message::ConnectResponse(ConnectResponse {
                result_code: 0,
                bssid: MacAddr([2, 0, 0, 0, 0, 1]),
                session_id: 7,
            }),
        ];
        for reply in replies {
            for layout in [ScanLayout::Current, ScanLayout::Legacy] {
                assert_eq!(
                    ReplyBytes::of(&reply, layout).as_ref(),
                    &reply.encode(layout).unwrap()[..],
                    "{reply:?}"
                );
            }
        }
    }

    #[test]
    fn unencodable_messages_become_invalid() {
        use crate::protocol::{ScanBss, ScanResponse};
        let bad = Message::ScanResponse(ScanResponse {
            scan_complete: true,
            bss: vec![ScanBss {
                bssid: MacAddr([1; 6]),
                capabilities: 1,
                rssi_dbm: -50,
                beacon_interval: 100,
                freq_khz: 1,
                ies: vec![0, 1, b'x'],
            }],
        });
        assert_eq!(
            encode_or_invalid(&bad, ScanLayout::Current),
            vec![0, 0, 0, 0, 0, 1, 0]
        );
    }
}
