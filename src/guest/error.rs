//! What can go wrong when talking to a host as a guest, one variant per
//! distinct cause, each naming the rule a reply broke.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::protocol::{DecodeError, Operation};
use crate::transport::framing::FrameError;
use crate::transport::TransportError;

/// Where an exchange stood when it failed or ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Opening the request connection.
    Connecting,
    /// Writing the request.
    Sending,
    /// Waiting for (or reading) the reply.
    AwaitingReply,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connecting => "connecting",
            Stage::Sending => "sending the request",
            Stage::AwaitingReply => "waiting for the reply",
        })
    }
}

/// A rule of the protocol that a message from the host broke. The guest
/// driver would misread most of these (or crash on some); a careful guest
/// refuses them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The host closed the connection without sending anything.
    #[error("the host closed the connection without sending a message")]
    NoMessage,
    /// The message stopped before the size its header announced (the
    /// driver would read the missing bytes as zeros).
    #[error("the message was cut short: {got} of {expected} bytes arrived")]
    Truncated {
        /// Bytes that arrived.
        got: usize,
        /// Bytes the header announced.
        expected: usize,
    },
    /// The header is refused: version, unknown operation, an operation a
    /// host never sends, or a body larger than the operation allows.
    #[error("bad header: {0}")]
    Header(DecodeError),
    /// A well-formed message of the wrong kind: not the reply to this
    /// request, or not a notification.
    #[error("operation {got} is not {expected}")]
    WrongOperation {
        /// What was acceptable, in words ("a scan_response or invalid reply").
        expected: String,
        /// The operation received.
        got: Operation,
    },
    /// The body breaks a rule of its operation (sizes, counts, offsets,
    /// channels, elements, duplicates).
    #[error("{0}")]
    Body(DecodeError),
    /// A CONNECT_RESPONSE reports success with an all-zero BSSID: the guest
    /// could never find that BSS, so its connection would never come up.
    #[error("connect response reports success but joined BSSID 00:00:00:00:00:00")]
    ZeroBssidOnSuccess,
}

impl Violation {
    /// A short stable name of the rule, for scripts (`--json` errors, exit
    /// reasons): `no-message`, `truncated`, `version`, `operation`,
    /// `body-too-large`, `wrong-operation`, `body-size`, `scan-complete-flag`,
    /// `total-size`, `bss-count`, `ie-out-of-bounds`, `ie-overlaps-entries`,
    /// `malformed-element`, `unknown-channel`, `missing-ssid`,
    /// `duplicate-bssid`, `zero-bssid`.
    pub fn rule(&self) -> &'static str {
        match self {
            Violation::NoMessage => "no-message",
            Violation::Truncated { .. } => "truncated",
            Violation::WrongOperation { .. } => "wrong-operation",
            Violation::ZeroBssidOnSuccess => "zero-bssid",
            Violation::Header(e) | Violation::Body(e) => decode_rule(e),
        }
    }

    pub(crate) fn from_frame(e: FrameError) -> Result<Violation, io::Error> {
        match e {
            FrameError::Closed => Ok(Violation::NoMessage),
            FrameError::Truncated { got, expected } => Ok(Violation::Truncated { got, expected }),
            FrameError::Header(d) => Ok(Violation::Header(d)),
            FrameError::Io(io) => Err(io),
        }
    }
}

fn decode_rule(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Version(_) => "version",
        DecodeError::UnknownOperation(_)
        | DecodeError::NotARequest(_)
        | DecodeError::NotAHostMessage(_) => "operation",
        DecodeError::UnexpectedOperation { .. } => "wrong-operation",
        DecodeError::BodyTooLarge { .. } => "body-too-large",
        DecodeError::Truncated { .. } => "truncated",
        DecodeError::SizeMismatch { .. } | DecodeError::BodySize { .. } => "body-size",
        DecodeError::SsidLength(_) => "ssid-length",
        DecodeError::AkmCount(_) => "akm-count",
        DecodeError::CipherCount(_) => "cipher-count",
        DecodeError::ScanCompleteFlag(_) => "scan-complete-flag",
        DecodeError::TotalSize { .. } => "total-size",
        DecodeError::BssCount { .. } => "bss-count",
        DecodeError::IeOutOfBounds { .. } => "ie-out-of-bounds",
        DecodeError::IeOverlapsEntries { .. } => "ie-overlaps-entries",
        DecodeError::MalformedElement { .. } => "malformed-element",
        DecodeError::UnknownChannel { .. } => "unknown-channel",
        DecodeError::MissingSsid { .. } => "missing-ssid",
        DecodeError::DuplicateBssid { .. } => "duplicate-bssid",
    }
}

/// The broad kind of a [`GuestError`]; the command maps each to its own exit
/// code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// No conversation: the host could not be reached, or the connection
    /// failed with an I/O error.
    Unreachable,
    /// The 20 s limit (or the configured one) ran out.
    Timeout,
    /// The host sent something a careful guest refuses.
    Malformed,
    /// The host answered INVALID: it could not carry out the request.
    Invalid,
    /// A local problem: the transport is not available here, a port cannot
    /// be bound, a request cannot be encoded.
    Local,
}

/// Why a request or a notification failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The transport cannot be set up here (unsupported platform, a port
    /// that cannot be bound).
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The request connection could not be opened.
    #[error("cannot reach the host at {host}: {source}")]
    Unreachable {
        /// The host's address.
        host: String,
        #[source]
        /// The operating system's error.
        source: io::Error,
    },
    /// The connection failed after it was opened.
    #[error("connection to {host} failed while {stage}: {source}")]
    Connection {
        /// The host's address.
        host: String,
        /// What the client was doing.
        stage: Stage,
        #[source]
        /// The operating system's error.
        source: io::Error,
    },
    /// The whole exchange (connect included) took longer than the limit.
    #[error("no reply from {host} within {}s (timed out while {stage})", limit.as_secs_f64())]
    Timeout {
        /// The host's address.
        host: String,
        /// The limit.
        limit: Duration,
        /// What the client was doing when it ran out.
        stage: Stage,
    },
    /// The reply breaks a rule of the protocol.
    #[error("malformed reply to {request} from {host} [{}]: {violation}", violation.rule())]
    MalformedReply {
        /// The host's address.
        host: String,
        /// The request answered.
        request: Operation,
        /// The rule broken.
        violation: Violation,
    },
    /// The host answered INVALID.
    #[error("the host at {host} answered INVALID to the {request}: it could not carry it out")]
    Invalid {
        /// The host's address.
        host: String,
        /// The request refused.
        request: Operation,
    },
    /// A notification breaks a rule of the protocol. Only that connection
    /// is lost; the watcher keeps listening.
    #[error("malformed notification [{rule}]: {violation}", rule = .0.rule(), violation = .0)]
    MalformedNotification(Violation),
    /// A notification connection carried no whole message within the read
    /// limit (the driver allows 10 ms).
    #[error("a notification connection sent no whole message within {}ms", limit.as_millis())]
    NotificationTimeout {
        /// The read limit.
        limit: Duration,
    },
    /// Accepting or reading a notification connection failed.
    #[error("notification connection failed: {0}")]
    NotificationIo(#[source] io::Error),
    /// The request cannot be put on the wire.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] crate::protocol::EncodeError),
}

impl GuestError {
    /// How the error is reported: the class sets the command's exit code.
    pub fn class(&self) -> ErrorClass {
        match self {
            GuestError::Unreachable { .. } | GuestError::Connection { .. } => {
                ErrorClass::Unreachable
            }
            GuestError::NotificationIo(_) => ErrorClass::Unreachable,
            GuestError::Timeout { .. } | GuestError::NotificationTimeout { .. } => {
                ErrorClass::Timeout
            }
            GuestError::MalformedReply { .. } | GuestError::MalformedNotification(_) => {
                ErrorClass::Malformed
            }
            GuestError::Invalid { .. } => ErrorClass::Invalid,
            GuestError::Transport(_) | GuestError::Encode(_) => ErrorClass::Local,
        }
    }

    /// The protocol rule broken, for malformed replies and notifications.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            GuestError::MalformedReply { violation, .. }
            | GuestError::MalformedNotification(violation) => Some(violation),
            _ => None,
        }
    }
}
