//! The proxy_wifi wire protocol, version 1, with no I/O.
//!
//! Every message the Linux `proxy_wifi` guest driver sends or expects is a
//! typed value here, with an encoder and a decoder over byte slices. Decoders
//! of guest input never panic and never allocate a size taken from a header;
//! encoders only produce messages that pass the strict guest rules (sizes,
//! offsets, counts, no duplicate BSSIDs, frequencies of real channels), so a
//! host built on them cannot send anything the driver would trust blindly.
//!
//! Both sides use this module: the host service decodes requests and encodes
//! replies; the guest client encodes requests and validates replies as a
//! careful guest would.

mod channel;
mod error;
mod ie;
mod messages;
mod psk;
mod suites;
mod types;

pub use channel::{channel_for_freq_khz, Band};
pub use error::{DecodeError, EncodeError};
pub use ie::{
    element_ids, parse_elements, rsn_security, ssid_element, wpa2_psk_ccmp_rsn_element, Element,
    ElementIter, RsnSummary,
};
pub use messages::{
    status_code_name, ConnectRequest, ConnectResponse, DisconnectRequest, Message, Request,
    ScanBss, ScanLayout, ScanRequest, ScanResponse, CAPABILITY_ESS, CAPABILITY_PRIVACY,
    STATUS_SUCCESS, STATUS_UNSPECIFIED_FAILURE,
};
pub use psk::{pmk_from_hex, pmk_from_passphrase, PskError};
pub use suites::{akm, cipher};
pub use types::{Key, MacAddr, ParseMacError, Ssid, SsidError};

/// The only protocol version there is.
pub const VERSION: u16 = 0x0001;
/// Size of the message header: operation (1), body size (4), version (2).
pub const HEADER_LEN: usize = 7;
/// The port the guest sends requests to.
pub const DEFAULT_REQUEST_PORT: u32 = 12345;
/// The port the guest listens on for notifications.
pub const DEFAULT_NOTIFICATION_PORT: u32 = 12346;

/// Body size of a SCAN_REQUEST.
pub const SCAN_REQUEST_LEN: usize = 33;
/// Body size of a DISCONNECT_REQUEST (and NOTIF_DISCONNECTED).
pub const DISCONNECT_REQUEST_LEN: usize = 8;
/// Fixed part of a CONNECT_REQUEST; the key follows.
pub const CONNECT_REQUEST_FIXED_LEN: usize = 76;
/// Largest CONNECT_REQUEST body: the key length is one byte.
pub const CONNECT_REQUEST_MAX_LEN: usize = CONNECT_REQUEST_FIXED_LEN + u8::MAX as usize;
/// The largest request, header included.
pub const MAX_REQUEST_LEN: usize = HEADER_LEN
    + max_len(
        CONNECT_REQUEST_MAX_LEN,
        max_len(SCAN_REQUEST_LEN, DISCONNECT_REQUEST_LEN),
    );

const fn max_len(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}
/// Body size of a CONNECT_RESPONSE.
pub const CONNECT_RESPONSE_LEN: usize = 16;
/// Size of one BSS entry of a SCAN_RESPONSE.
pub const BSS_ENTRY_LEN: usize = 26;
/// Largest SCAN_RESPONSE body this host will ever send. The driver allocates
/// whatever size it is told before checking anything, so the host keeps far
/// below the 4 MiB it could swallow. 1 MiB holds more than 3000 realistic BSSs.
pub const MAX_SCAN_RESPONSE_LEN: usize = 1 << 20;

/// Message operations, the first byte of every header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Operation {
    /// Host to guest: the request failed (empty body).
    Invalid = 0,
    /// A scan request (guest to host).
    ScanRequest = 1,
    /// A scan response (host to guest, a reply or a notification).
    ScanResponse = 2,
    /// A connect request (guest to host).
    ConnectRequest = 3,
    /// A connect response (host to guest).
    ConnectResponse = 4,
    /// A disconnect request (guest to host).
    DisconnectRequest = 5,
    /// A disconnect response (host to guest, empty body).
    DisconnectResponse = 6,
    /// Notification: the guest's connection is gone.
    NotifDisconnected = 7,
    /// Notification: the signal of the guest's connection changed.
    NotifSignalQuality = 8,
}

impl Operation {
    /// Every operation, in wire order.
    pub const ALL: [Operation; 9] = [
        Operation::Invalid,
        Operation::ScanRequest,
        Operation::ScanResponse,
        Operation::ConnectRequest,
        Operation::ConnectResponse,
        Operation::DisconnectRequest,
        Operation::DisconnectResponse,
        Operation::NotifDisconnected,
        Operation::NotifSignalQuality,
    ];

    /// The operation with this wire value, if any.
    pub fn from_u8(value: u8) -> Option<Operation> {
        Operation::ALL.get(usize::from(value)).copied()
    }

    /// Short lowercase name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Invalid => "invalid",
            Operation::ScanRequest => "scan_request",
            Operation::ScanResponse => "scan_response",
            Operation::ConnectRequest => "connect_request",
            Operation::ConnectResponse => "connect_response",
            Operation::DisconnectRequest => "disconnect_request",
            Operation::DisconnectResponse => "disconnect_response",
            Operation::NotifDisconnected => "notif_disconnected",
            Operation::NotifSignalQuality => "notif_signal_quality",
        }
    }

    /// The largest body a guest may legally send with this operation, or
    /// `None` for operations a guest never sends. A reader uses it to refuse a
    /// header before reading (or allocating) its body.
    pub fn max_request_body(self) -> Option<usize> {
        match self {
            Operation::ScanRequest => Some(SCAN_REQUEST_LEN),
            Operation::ConnectRequest => Some(CONNECT_REQUEST_MAX_LEN),
            Operation::DisconnectRequest => Some(DISCONNECT_REQUEST_LEN),
            _ => None,
        }
    }

    /// The largest body a host may legally send with this operation, or
    /// `None` for operations only a guest sends. The guest client uses it to
    /// refuse a reply before reading its body.
    pub fn max_host_body(self) -> Option<usize> {
        match self {
            Operation::Invalid | Operation::DisconnectResponse => Some(0),
            Operation::ScanResponse => Some(MAX_SCAN_RESPONSE_LEN),
            Operation::ConnectResponse => Some(CONNECT_RESPONSE_LEN),
            Operation::NotifDisconnected => Some(DISCONNECT_REQUEST_LEN),
            Operation::NotifSignalQuality => Some(1),
            _ => None,
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the message is.
    pub operation: Operation,
    /// Body length in bytes, header excluded.
    pub size: u32,
}

impl Header {
    /// A header for a body of `size` bytes.
    pub fn new(operation: Operation, size: u32) -> Header {
        Header { operation, size }
    }

    /// Decodes a header, checking the version and the operation.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        let version = u16::from_le_bytes([bytes[5], bytes[6]]);
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let operation =
            Operation::from_u8(bytes[0]).ok_or(DecodeError::UnknownOperation(bytes[0]))?;
        let size = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        Ok(Header { operation, size })
    }

    /// The 7 header bytes as sent on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.operation as u8;
        out[1..5].copy_from_slice(&self.size.to_le_bytes());
        out[5..7].copy_from_slice(&VERSION.to_le_bytes());
        out
    }

    /// Decodes the header of a request from a guest and checks that its
    /// operation is one a guest sends and its size is at most the largest
    /// legal body, so a reader can refuse it before reading the body.
    pub fn decode_request(bytes: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        Header::decode_within(bytes, Operation::max_request_body, DecodeError::NotARequest)
    }

    /// Decodes the header of a message from a host (reply or notification)
    /// and checks its size against the largest legal body of its operation.
    pub fn decode_host(bytes: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        Header::decode_within(
            bytes,
            Operation::max_host_body,
            DecodeError::NotAHostMessage,
        )
    }

    fn decode_within(
        bytes: &[u8; HEADER_LEN],
        max_body: fn(Operation) -> Option<usize>,
        not_allowed: fn(Operation) -> DecodeError,
    ) -> Result<Header, DecodeError> {
        let header = Header::decode(bytes)?;
        let max = max_body(header.operation).ok_or(not_allowed(header.operation))?;
        if header.size as usize > max {
            return Err(DecodeError::BodyTooLarge {
                operation: header.operation,
                size: header.size,
                max,
            });
        }
        Ok(header)
    }
}

/// Splits a whole message into its header and body, checking that the body
/// has exactly the size the header announces.
pub fn split_message(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    let head: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::Truncated {
            what: "header",
            needed: HEADER_LEN,
            got: bytes.len(),
        })?;
    let header = Header::decode(head)?;
    let body = &bytes[HEADER_LEN..];
    if body.len() != header.size as usize {
        return Err(DecodeError::SizeMismatch {
            operation: header.operation,
            announced: header.size,
            actual: body.len(),
        });
    }
    Ok((header, body))
}

/// Percent link quality, as hosts report it, to the dBm the guest expects:
/// `clamp(quality, 0, 100) / 2 - 100`, so 80 % is -60 dBm.
pub fn quality_percent_to_dbm(percent: i32) -> i8 {
    // clamp to 0..=100 first, so the result is always in -100..=-50.
    let q = percent.clamp(0, 100);
    (q / 2 - 100) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_fits_the_largest_request() {
        // `framing::read_request` reads into a buffer of this size.
        for operation in Operation::ALL {
            if let Some(max) = operation.max_request_body() {
                assert!(HEADER_LEN + max <= MAX_REQUEST_LEN, "{operation:?}");
            }
        }
    }

    #[test]
    fn header_layout_is_pinned() {
        let h = Header::new(Operation::ConnectRequest, 0x0102_0304);
        assert_eq!(h.encode(), [3, 0x04, 0x03, 0x02, 0x01, 0x01, 0x00]);
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn header_rejects_bad_version_and_operation() {
        assert_eq!(
            Header::decode(&[1, 33, 0, 0, 0, 2, 0]),
            Err(DecodeError::Version(2))
        );
        assert_eq!(
            Header::decode(&[9, 0, 0, 0, 0, 1, 0]),
            Err(DecodeError::UnknownOperation(9))
        );
    }

    #[test]
    fn request_header_limits_body_before_reading_it() {
        assert!(matches!(
            Header::decode_request(&[1, 34, 0, 0, 0, 1, 0]),
            Err(DecodeError::BodyTooLarge { max: 33, .. })
        ));
        assert!(matches!(
            Header::decode_request(&[3, 0xff, 0xff, 0xff, 0xff, 1, 0]),
            Err(DecodeError::BodyTooLarge { max: 331, .. })
        ));
        assert_eq!(
            Header::decode_request(&[2, 0, 0, 0, 0, 1, 0]),
            Err(DecodeError::NotARequest(Operation::ScanResponse))
        );
        assert!(Header::decode_request(&[5, 8, 0, 0, 0, 1, 0]).is_ok());
    }

    #[test]
    fn quality_to_dbm_follows_reference_formula() {
        assert_eq!(quality_percent_to_dbm(80), -60);
        assert_eq!(quality_percent_to_dbm(100), -50);
        assert_eq!(quality_percent_to_dbm(0), -100);
        assert_eq!(quality_percent_to_dbm(-5), -100);
        assert_eq!(quality_percent_to_dbm(250), -50);
        assert_eq!(quality_percent_to_dbm(55), -73);
    }
}
