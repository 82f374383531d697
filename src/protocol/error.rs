use super::{MacAddr, Operation};

/// Why bytes are not a valid message. Each variant names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("protocol version {0:#06x} is not 0x0001")]
    Version(u16),
    #[error("unknown operation {0}")]
    UnknownOperation(u8),
    #[error("operation {0} is not a request a guest sends")]
    NotARequest(Operation),
    #[error("operation {0} is not a message a host sends")]
    NotAHostMessage(Operation),
    #[error("expected a {expected} message, got {got}")]
    UnexpectedOperation { expected: Operation, got: Operation },
    #[error("{operation} body of {size} bytes exceeds the largest legal body ({max} bytes)")]
    BodyTooLarge {
        operation: Operation,
        size: u32,
        max: usize,
    },
    #[error("{what} truncated: needs {needed} bytes, got {got}")]
    Truncated {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    #[error("{operation} header announces {announced} body bytes, {actual} present")]
    SizeMismatch {
        operation: Operation,
        announced: u32,
        actual: usize,
    },
    #[error("{operation} body must be exactly {expected} bytes, got {got}")]
    BodySize {
        operation: Operation,
        expected: usize,
        got: usize,
    },
    #[error("ssid_len {0} exceeds 32")]
    SsidLength(u8),
    #[error("num_akm_suites {0} exceeds 2")]
    AkmCount(u8),
    #[error("num_pairwise_cipher_suites {0} exceeds 5")]
    CipherCount(u8),
    #[error("scan_complete byte is {0}, not 0 or 1")]
    ScanCompleteFlag(u8),
    #[error("scan response total_size {total_size} differs from body size {body}")]
    TotalSize { total_size: u32, body: usize },
    #[error("scan response announces {num_bss} BSS entries, which do not fit in {body} bytes")]
    BssCount { num_bss: u32, body: usize },
    #[error("BSS {index}: information elements (offset {offset}, size {size}) run past the end of the body")]
    IeOutOfBounds {
        index: usize,
        offset: u32,
        size: u32,
    },
    #[error("BSS {index}: information elements overlap the fixed part or the BSS entries")]
    IeOverlapsEntries { index: usize },
    #[error("BSS {index}: malformed information element at byte {at}")]
    MalformedElement { index: usize, at: usize },
    #[error("BSS {index}: frequency {freq_khz} kHz is not a known 2.4/5/6 GHz channel")]
    UnknownChannel { index: usize, freq_khz: u32 },
    #[error("BSS {index}: no SSID element")]
    MissingSsid { index: usize },
    #[error("BSS {index}: BSSID {bssid} already listed")]
    DuplicateBssid { index: usize, bssid: MacAddr },
}

/// Why a message cannot be encoded: the host refuses to send anything a
/// strict guest would reject or a lax one would misread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("BSSID {0} appears twice in one scan response")]
    DuplicateBssid(MacAddr),
    #[error("BSS {bssid}: frequency {freq_khz} kHz is not a known 2.4/5/6 GHz channel")]
    UnknownChannel { bssid: MacAddr, freq_khz: u32 },
    #[error("BSS {bssid}: information elements are malformed")]
    MalformedElements { bssid: MacAddr },
    #[error("BSS {bssid}: no SSID element")]
    MissingSsid { bssid: MacAddr },
    #[error("scan response of {0} bytes exceeds the {max} byte limit", max = super::MAX_SCAN_RESPONSE_LEN)]
    TooLarge(usize),
    #[error("AKM suite count {0} exceeds 2")]
    AkmCount(usize),
    #[error("pairwise cipher count {0} exceeds 5")]
    CipherCount(usize),
    #[error("key of {0} bytes exceeds 255")]
    KeyTooLong(usize),
}
