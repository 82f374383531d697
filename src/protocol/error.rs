use super::{MacAddr, Operation};

/// Why bytes are not a valid message. Each variant names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header's version field (the value read) is not 1.
    #[error("protocol version {0:#06x} is not 0x0001")]
    Version(u16),
    /// The header's operation byte (the value read) names no operation.
    #[error("unknown operation {0}")]
    UnknownOperation(u8),
    /// A host-to-guest operation arrived where a request was expected.
    #[error("operation {0} is not a request a guest sends")]
    NotARequest(Operation),
    /// A guest-to-host operation arrived where a host message was expected.
    #[error("operation {0} is not a message a host sends")]
    NotAHostMessage(Operation),
    /// Another operation than the one being decoded.
    #[error("expected a {expected} message, got {got}")]
    UnexpectedOperation {
        /// What the decoder was asked for.
        expected: Operation,
        /// What the header says.
        got: Operation,
    },
    /// The header announces a body larger than the operation allows; refused
    /// before the body is read.
    #[error("{operation} body of {size} bytes exceeds the largest legal body ({max} bytes)")]
    BodyTooLarge {
        /// The operation.
        operation: Operation,
        /// The announced body size.
        size: u32,
        /// The largest legal body.
        max: usize,
    },
    /// Fewer bytes than the structure needs.
    #[error("{what} truncated: needs {needed} bytes, got {got}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The header's size field and the body length differ.
    #[error("{operation} header announces {announced} body bytes, {actual} present")]
    SizeMismatch {
        /// The operation.
        operation: Operation,
        /// The header's size field.
        announced: u32,
        /// The body's length.
        actual: usize,
    },
    /// A fixed-size body of the wrong size.
    #[error("{operation} body must be exactly {expected} bytes, got {got}")]
    BodySize {
        /// The operation.
        operation: Operation,
        /// Its body size.
        expected: usize,
        /// The body's length.
        got: usize,
    },
    /// An SSID length (the value read) over 32 bytes.
    #[error("ssid_len {0} exceeds 32")]
    SsidLength(u8),
    /// More AKM suites (the count read) than a connect request holds.
    #[error("num_akm_suites {0} exceeds 2")]
    AkmCount(u8),
    /// More pairwise ciphers (the count read) than a connect request holds.
    #[error("num_pairwise_cipher_suites {0} exceeds 5")]
    CipherCount(u8),
    /// A scan_complete flag (the value read) other than 0 or 1.
    #[error("scan_complete byte is {0}, not 0 or 1")]
    ScanCompleteFlag(u8),
    /// A scan response's total_size field disagrees with its body.
    #[error("scan response total_size {total_size} differs from body size {body}")]
    TotalSize {
        /// The field's value.
        total_size: u32,
        /// The body's length.
        body: usize,
    },
    /// More BSS entries announced than the body can hold.
    #[error("scan response announces {num_bss} BSS entries, which do not fit in {body} bytes")]
    BssCount {
        /// The announced count.
        num_bss: u32,
        /// The body's length.
        body: usize,
    },
    /// A BSS's information elements run past the end of the body.
    #[error("BSS {index}: information elements (offset {offset}, size {size}) run past the end of the body")]
    IeOutOfBounds {
        /// The BSS's position in the response.
        index: usize,
        /// The IE block's offset field.
        offset: u32,
        /// The IE block's size field.
        size: u32,
    },
    /// A BSS's information elements overlap the fixed part or the entries.
    #[error("BSS {index}: information elements overlap the fixed part or the BSS entries")]
    IeOverlapsEntries {
        /// The BSS's position in the response.
        index: usize,
    },
    /// An information element whose length runs past its block.
    #[error("BSS {index}: malformed information element at byte {at}")]
    MalformedElement {
        /// The BSS's position in the response.
        index: usize,
        /// The element's offset in the BSS's IE block.
        at: usize,
    },
    /// A BSS on a frequency that is no known channel.
    #[error("BSS {index}: frequency {freq_khz} kHz is not a known 2.4/5/6 GHz channel")]
    UnknownChannel {
        /// The BSS's position in the response.
        index: usize,
        /// Its frequency.
        freq_khz: u32,
    },
    /// A BSS without an SSID element.
    #[error("BSS {index}: no SSID element")]
    MissingSsid {
        /// The BSS's position in the response.
        index: usize,
    },
    /// A BSSID listed twice in one response.
    #[error("BSS {index}: BSSID {bssid} already listed")]
    DuplicateBssid {
        /// The second BSS's position in the response.
        index: usize,
        /// The repeated BSSID.
        bssid: MacAddr,
    },
}

/// Why a message cannot be encoded: the host refuses to send anything a
/// strict guest would reject or a lax one would misread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A BSSID (the one given) twice in one scan response.
    #[error("BSSID {0} appears twice in one scan response")]
    DuplicateBssid(MacAddr),
    /// A BSS on a frequency that is no known channel.
    #[error("BSS {bssid}: frequency {freq_khz} kHz is not a known 2.4/5/6 GHz channel")]
    UnknownChannel {
        /// The BSS.
        bssid: MacAddr,
        /// Its frequency.
        freq_khz: u32,
    },
    /// A BSS whose information elements do not parse.
    #[error("BSS {bssid}: information elements are malformed")]
    MalformedElements {
        /// The BSS.
        bssid: MacAddr,
    },
    /// A BSS without an SSID element.
    #[error("BSS {bssid}: no SSID element")]
    MissingSsid {
        /// The BSS.
        bssid: MacAddr,
    },
    /// A scan response (of the size given) over `MAX_SCAN_RESPONSE_LEN`.
    #[error("scan response of {0} bytes exceeds the {max} byte limit", max = super::MAX_SCAN_RESPONSE_LEN)]
    TooLarge(usize),
    /// More AKM suites (the count given) than the wire format holds.
    #[error("AKM suite count {0} exceeds 2")]
    AkmCount(usize),
    /// More pairwise ciphers (the count given) than the wire format holds.
    #[error("pairwise cipher count {0} exceeds 5")]
    CipherCount(usize),
    /// A key (of the length given) longer than its one-byte length field.
    #[error("key of {0} bytes exceeds 255")]
    KeyTooLong(usize),
}
