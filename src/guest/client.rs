//! The request side: one connection per request, one validated reply.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::{timeout_at, Instant};

use super::error::{GuestError, Stage, Violation};
use super::ConnectSpec;
use crate::protocol::{
    ConnectResponse, DisconnectRequest, Header, Message, Operation, Request, ScanLayout,
    ScanRequest, ScanResponse, Ssid,
};
use crate::transport::framing::{read_message, write_message};
use crate::transport::{RequestConnector, TransportConfig};

/// How long the driver waits for a reply, connect included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A guest talking to a host: scan, connect, disconnect.
///
/// Like the driver, every request opens its own connection, sends one
/// message, reads exactly one reply within the time limit (20 s by default,
/// connect included) and closes; requests made through one client are
/// serialized, so there is never more than one outstanding. Every reply is
/// checked as a careful guest would (see [`Violation`]).
///
/// ```no_run
/// # async fn demo() -> Result<(), proxy_wifi::guest::GuestError> {
/// use proxy_wifi::guest::{ConnectSpec, GuestClient};
/// use proxy_wifi::protocol::{ScanLayout, Ssid};
/// use proxy_wifi::transport::TransportConfig;
///
/// let config = TransportConfig::tcp("127.0.0.1".parse().unwrap());
/// let client = GuestClient::new(&config)?.scan_layout(ScanLayout::Current);
/// let scan = client.scan(None).await?;
/// println!("{} networks", scan.bss.len());
/// let ssid = Ssid::new(b"home").unwrap();
/// let spec = ConnectSpec::wpa2_passphrase(ssid, "correct horse").unwrap();
/// let joined = client.connect(&spec).await?;
/// client.disconnect(joined.session_id).await?;
/// # Ok(()) }
/// ```
pub struct GuestClient {
    requests: Arc<dyn RequestConnector>,
    layout: ScanLayout,
    timeout: Duration,
    /// Held for a whole exchange: one request outstanding at a time.
    turn: Mutex<()>,
}

impl GuestClient {
    /// A client for the guest end of `config` (nothing is connected until a
    /// request is made). Fails if the transport is not available here.
    pub fn new(config: &TransportConfig) -> Result<GuestClient, GuestError> {
        let endpoint = config.guest()?;
        Ok(GuestClient::from_connector(endpoint.requests))
    }

    /// A client over any request connector (tests, custom transports).
    pub fn from_connector(requests: Arc<dyn RequestConnector>) -> GuestClient {
        GuestClient {
            requests,
            layout: ScanLayout::Current,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            turn: Mutex::new(()),
        }
    }

    /// Which SCAN_RESPONSE layout to expect (configured, never guessed).
    pub fn scan_layout(mut self, layout: ScanLayout) -> GuestClient {
        self.layout = layout;
        self
    }

    /// The limit for a whole exchange, connect included (default 20 s).
    pub fn timeout(mut self, limit: Duration) -> GuestClient {
        self.timeout = limit;
        self
    }

    /// Where requests go, for messages.
    pub fn host(&self) -> String {
        self.requests.describe()
    }

    /// Scans: every network, or only `ssid` (a targeted scan, which also
    /// finds hidden networks).
    pub async fn scan(&self, ssid: Option<Ssid>) -> Result<ScanResponse, GuestError> {
        let ssid = ssid.filter(|s| !s.is_empty());
        match self.request(&Request::Scan(ScanRequest { ssid })).await? {
            Message::ScanResponse(scan) => Ok(scan),
            other => Err(self.unexpected(Operation::ScanRequest, other.operation())),
        }
    }

    /// Connects. A reply with a non-zero status code is returned as is
    /// (`result_code`); a success must name the BSS joined.
    pub async fn connect(&self, spec: &ConnectSpec) -> Result<ConnectResponse, GuestError> {
        match self.request(&Request::Connect(spec.to_request())).await? {
            Message::ConnectResponse(reply) => Ok(reply),
            other => Err(self.unexpected(Operation::ConnectRequest, other.operation())),
        }
    }

    /// Disconnects the session a successful connect returned.
    pub async fn disconnect(&self, session_id: u64) -> Result<(), GuestError> {
        let request = Request::Disconnect(DisconnectRequest { session_id });
        match self.request(&request).await? {
            Message::DisconnectResponse => Ok(()),
            other => Err(self.unexpected(Operation::DisconnectRequest, other.operation())),
        }
    }

    /// Sends any request and returns its validated reply: always the reply
    /// operation of the request, never INVALID (that is
    /// [`GuestError::Invalid`]).
    pub async fn request(&self, request: &Request) -> Result<Message, GuestError> {
        let bytes = request.encode()?;
        let op = request.operation();
        let _turn = self.turn.lock().await;
        let deadline = Instant::now() + self.timeout;
        let host = self.requests.describe();
        let timed_out = |stage| GuestError::Timeout {
            host: host.clone(),
            limit: self.timeout,
            stage,
        };
        let mut stream = match timeout_at(deadline, self.requests.connect()).await {
            Err(_) => return Err(timed_out(Stage::Connecting)),
            Ok(Err(source)) => return Err(GuestError::Unreachable { host, source }),
            Ok(Ok(stream)) => stream,
        };
        match timeout_at(deadline, write_message(&mut stream, &bytes)).await {
            Err(_) => return Err(timed_out(Stage::Sending)),
            Ok(Err(source)) => {
                return Err(GuestError::Connection {
                    host,
                    stage: Stage::Sending,
                    source,
                })
            }
            Ok(Ok(())) => {}
        }
        let (header, body) =
            match timeout_at(deadline, read_message(&mut stream, Header::decode_host)).await {
                Err(_) => return Err(timed_out(Stage::AwaitingReply)),
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) => {
                    return Err(match Violation::from_frame(e) {
                        Ok(violation) => self.malformed(op, violation),
                        Err(source) => GuestError::Connection {
                            host,
                            stage: Stage::AwaitingReply,
                            source,
                        },
                    })
                }
            };
        drop(stream);
        let expected = reply_operation(op);
        if header.operation == Operation::Invalid {
            // decode_host already checked that INVALID has an empty body.
            return Err(GuestError::Invalid { host, request: op });
        }
        if header.operation != expected {
            return Err(self.unexpected(op, header.operation));
        }
        let message = Message::decode_body(header.operation, &body, self.layout)
            .map_err(|e| self.malformed(op, Violation::Body(e)))?;
        if let Message::ConnectResponse(reply) = &message {
            if reply.result_code == 0 && reply.bssid.is_zero() {
                return Err(self.malformed(op, Violation::ZeroBssidOnSuccess));
            }
        }
        Ok(message)
    }

    fn malformed(&self, request: Operation, violation: Violation) -> GuestError {
        GuestError::MalformedReply {
            host: self.requests.describe(),
            request,
            violation,
        }
    }

    fn unexpected(&self, request: Operation, got: Operation) -> GuestError {
        let expected = reply_operation(request);
        self.malformed(
            request,
            Violation::WrongOperation {
                expected: format!("a {expected} or invalid reply to a {request}"),
                got,
            },
        )
    }
}

/// The operation that answers a request.
pub fn reply_operation(request: Operation) -> Operation {
    match request {
        Operation::ScanRequest => Operation::ScanResponse,
        Operation::ConnectRequest => Operation::ConnectResponse,
        Operation::DisconnectRequest => Operation::DisconnectResponse,
        // Not requests: nothing answers them.
        _ => Operation::Invalid,
    }
}
