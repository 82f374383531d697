use std::collections::HashSet;

use zeroize::Zeroizing;

use super::ie::{element_ids, parse_elements};
use super::{
    channel_for_freq_khz, split_message, DecodeError, EncodeError, Header, Key, MacAddr, Operation,
    Ssid, BSS_ENTRY_LEN, CONNECT_REQUEST_FIXED_LEN, CONNECT_RESPONSE_LEN, DISCONNECT_REQUEST_LEN,
    HEADER_LEN, MAX_SCAN_RESPONSE_LEN, SCAN_REQUEST_LEN,
};

/// Capability Information bit: the BSS is an infrastructure network.
pub const CAPABILITY_ESS: u16 = 0x0001;
/// Capability Information bit: the BSS requires encryption.
pub const CAPABILITY_PRIVACY: u16 = 0x0010;

/// 802.11 status code: success.
pub const STATUS_SUCCESS: u16 = 0;
/// 802.11 status code: unspecified failure.
pub const STATUS_UNSPECIFIED_FAILURE: u16 = 1;

/// The IEEE 802.11 name of a status code, for people.
pub fn status_code_name(code: u16) -> &'static str {
    match code {
        0 => "SUCCESS",
        1 => "UNSPECIFIED_FAILURE",
        2 => "TDLS_WAKEUP_ALTERNATE",
        10 => "CAPS_UNSUPPORTED",
        11 => "REASSOC_NO_ASSOC",
        12 => "ASSOC_DENIED_UNSPEC",
        13 => "NOT_SUPPORTED_AUTH_ALG",
        14 => "UNKNOWN_AUTH_TRANSACTION",
        15 => "CHALLENGE_FAIL",
        16 => "AUTH_TIMEOUT",
        17 => "AP_UNABLE_TO_HANDLE_NEW_STA",
        18 => "ASSOC_DENIED_RATES",
        30 => "ASSOC_REJECTED_TEMPORARILY",
        31 => "ROBUST_MGMT_FRAME_POLICY_VIOLATION",
        37 => "REQUEST_DECLINED",
        40 => "INVALID_IE",
        41 => "GROUP_CIPHER_NOT_VALID",
        42 => "PAIRWISE_CIPHER_NOT_VALID",
        43 => "AKMP_NOT_VALID",
        44 => "UNSUPPORTED_RSN_IE_VERSION",
        45 => "INVALID_RSN_IE_CAPAB",
        46 => "CIPHER_REJECTED_PER_POLICY",
        53 => "INVALID_PMKID",
        72 => "INVALID_RSNIE",
        _ => "UNKNOWN_STATUS",
    }
}

/// Which SCAN_RESPONSE layout the guest speaks. Both carry version 1, so the
/// host cannot tell them apart: it is configured per guest, never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanLayout {
    /// 9-byte fixed part with a scan_complete byte.
    #[default]
    Current,
    /// 8-byte fixed part of the kernel 5.10 WSA driver: no scan_complete
    /// byte (every response completes the scan), and notifications of scan
    /// results are dropped by that guest.
    Legacy,
}

impl ScanLayout {
    /// Size of the fixed part before the BSS entries (9 bytes, 8 for legacy).
    pub fn fixed_len(self) -> usize {
        match self {
            ScanLayout::Current => 9,
            ScanLayout::Legacy => 8,
        }
    }
}

/// SCAN_REQUEST: a wildcard scan, or a scan targeted at one SSID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanRequest {
    /// The SSID to look for; `None` scans for every network.
    pub ssid: Option<Ssid>,
}

/// CONNECT_REQUEST. Not `Clone`: it carries the key.
#[derive(Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The network to join.
    pub ssid: Ssid,
    /// `None` (all zero on the wire) means any BSS.
    pub bssid: Option<MacAddr>,
    /// nl80211 auth type: 0 open system, 1 shared key, 2 FT, 3 network EAP, 4 SAE.
    pub auth_type: u8,
    /// Bit flags: 1 WPA, 2 WPA2, 4 WPA3.
    pub wpa_versions: u8,
    /// At most 2.
    pub akm_suites: Vec<u32>,
    /// At most 5.
    pub pairwise_ciphers: Vec<u32>,
    /// Group cipher suite selector.
    pub group_cipher: u32,
    /// For WPA2-PSK the 32-byte PMK; empty for an open network.
    pub key: Key,
}

/// DISCONNECT_REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisconnectRequest {
    /// The session id of the connection to end.
    pub session_id: u64,
}

/// A request from the guest. Not `Clone`: a connect carries the key.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// SCAN_REQUEST.
    Scan(ScanRequest),
    /// CONNECT_REQUEST.
    Connect(ConnectRequest),
    /// DISCONNECT_REQUEST.
    Disconnect(DisconnectRequest),
}

/// One BSS of a SCAN_RESPONSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanBss {
    /// The BSS's MAC address.
    pub bssid: MacAddr,
    /// 802.11 Capability Information (ESS = 0x1, Privacy = 0x10, ...).
    pub capabilities: u16,
    /// Signal strength in dBm.
    pub rssi_dbm: i32,
    /// In TU.
    pub beacon_interval: u16,
    /// Channel centre frequency in kHz.
    pub freq_khz: u32,
    /// The BSS's information elements, back to back.
    pub ies: Vec<u8>,
}

impl ScanBss {
    /// The SSID from the first SSID element, if there is one.
    pub fn ssid(&self) -> Option<Ssid> {
        parse_elements(&self.ies)
            .map_while(Result::ok)
            .find(|e| e.id == element_ids::SSID)
            .and_then(|e| Ssid::new(e.data).ok())
    }
}

/// SCAN_RESPONSE, as a reply or as a notification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanResponse {
    /// Whether this response finishes the guest's scan. The legacy layout
    /// has no such byte; decoding it yields `true`.
    pub scan_complete: bool,
    /// The BSSs found.
    pub bss: Vec<ScanBss>,
}

/// CONNECT_RESPONSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectResponse {
    /// IEEE 802.11 status code, 0 on success.
    pub result_code: u16,
    /// The BSS actually joined.
    pub bssid: MacAddr,
    /// The session id the guest must give to disconnect.
    pub session_id: u64,
}

/// A message from the host: a reply or a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The request failed.
    Invalid,
    /// SCAN_RESPONSE.
    ScanResponse(ScanResponse),
    /// CONNECT_RESPONSE.
    ConnectResponse(ConnectResponse),
    /// DISCONNECT_RESPONSE (empty body).
    DisconnectResponse,
    /// NOTIF_DISCONNECTED: the host lost the guest's connection.
    NotifDisconnected {
        /// The session that ended.
        session_id: u64,
    },
    /// NOTIF_SIGNAL_QUALITY: the signal of the guest's connection changed.
    NotifSignalQuality {
        /// The new signal strength in dBm.
        dbm: i8,
    },
}

fn with_header(op: Operation, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&Header::new(op, body.len() as u32).encode());
    out.extend_from_slice(body);
    out
}

fn check_body_len(op: Operation, body: &[u8], expected: usize) -> Result<(), DecodeError> {
    if body.len() != expected {
        return Err(DecodeError::BodySize {
            operation: op,
            expected,
            got: body.len(),
        });
    }
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn ssid_at(b: &[u8], at: usize) -> Result<Ssid, DecodeError> {
    let len = b[at];
    if usize::from(len) > Ssid::MAX_LEN {
        return Err(DecodeError::SsidLength(len));
    }
    Ssid::new(&b[at + 1..at + 1 + usize::from(len)]).map_err(|_| DecodeError::SsidLength(len))
}

fn put_ssid(out: &mut Vec<u8>, ssid: &Ssid) {
    out.push(ssid.len() as u8);
    let mut field = [0u8; 32];
    field[..ssid.len()].copy_from_slice(ssid.as_bytes());
    out.extend_from_slice(&field);
}

impl Request {
    /// The request's operation (its header's first byte).
    pub fn operation(&self) -> Operation {
        match self {
            Request::Scan(_) => Operation::ScanRequest,
            Request::Connect(_) => Operation::ConnectRequest,
            Request::Disconnect(_) => Operation::DisconnectRequest,
        }
    }

    /// Decodes a whole request (header and body), as received from a guest.
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let (header, body) = split_message(bytes)?;
        Request::decode_body(header.operation, body)
    }

    /// Decodes a request body whose header announced `op` and exactly
    /// `body.len()` bytes. Every size is checked before it is used.
    pub fn decode_body(op: Operation, body: &[u8]) -> Result<Request, DecodeError> {
        match op {
            Operation::ScanRequest => {
                check_body_len(op, body, SCAN_REQUEST_LEN)?;
                let ssid = ssid_at(body, 0)?;
                Ok(Request::Scan(ScanRequest {
                    ssid: (!ssid.is_empty()).then_some(ssid),
                }))
            }
            Operation::DisconnectRequest => {
                check_body_len(op, body, DISCONNECT_REQUEST_LEN)?;
                Ok(Request::Disconnect(DisconnectRequest {
                    session_id: u64_at(body, 0),
                }))
            }
            Operation::ConnectRequest => {
                if body.len() < CONNECT_REQUEST_FIXED_LEN {
                    return Err(DecodeError::Truncated {
                        what: "connect request",
                        needed: CONNECT_REQUEST_FIXED_LEN,
                        got: body.len(),
                    });
                }
                let key_len = usize::from(body[75]);
                check_body_len(op, body, CONNECT_REQUEST_FIXED_LEN + key_len)?;
                let ssid = ssid_at(body, 0)?;
                let mut bssid = [0u8; 6];
                bssid.copy_from_slice(&body[33..39]);
                let bssid = MacAddr(bssid);
                let num_akm = body[41];
                if num_akm > 2 {
                    return Err(DecodeError::AkmCount(num_akm));
                }
                let num_cipher = body[50];
                if num_cipher > 5 {
                    return Err(DecodeError::CipherCount(num_cipher));
                }
                let akm_suites = (0..usize::from(num_akm))
                    .map(|i| u32_at(body, 42 + 4 * i))
                    .collect();
                let pairwise_ciphers = (0..usize::from(num_cipher))
                    .map(|i| u32_at(body, 51 + 4 * i))
                    .collect();
                Ok(Request::Connect(ConnectRequest {
                    ssid,
                    bssid: (!bssid.is_zero()).then_some(bssid),
                    auth_type: body[39],
                    wpa_versions: body[40],
                    akm_suites,
                    pairwise_ciphers,
                    group_cipher: u32_at(body, 71),
                    key: Key::new(body[76..].to_vec()),
                }))
            }
            other => Err(DecodeError::NotARequest(other)),
        }
    }

    /// Encodes a whole request as the guest driver sends it.
    ///
    /// A connect carries the key, so the message is built in one buffer
    /// sized up front (a buffer that grew or was copied would leave a copy
    /// behind) and wiped when dropped.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            HEADER_LEN + CONNECT_REQUEST_FIXED_LEN + usize::from(u8::MAX),
        ));
        // The header goes in front once the body's size is known.
        out.extend_from_slice(&[0; HEADER_LEN]);
        let body: &mut Vec<u8> = &mut out;
        match self {
            Request::Scan(req) => put_ssid(body, &req.ssid.unwrap_or_default()),
            Request::Disconnect(req) => body.extend_from_slice(&req.session_id.to_le_bytes()),
            Request::Connect(req) => {
                if req.akm_suites.len() > 2 {
                    return Err(EncodeError::AkmCount(req.akm_suites.len()));
                }
                if req.pairwise_ciphers.len() > 5 {
                    return Err(EncodeError::CipherCount(req.pairwise_ciphers.len()));
                }
                if req.key.len() > usize::from(u8::MAX) {
                    return Err(EncodeError::KeyTooLong(req.key.len()));
                }
                put_ssid(body, &req.ssid);
                body.extend_from_slice(&req.bssid.unwrap_or_default().0);
                body.push(req.auth_type);
                body.push(req.wpa_versions);
                body.push(req.akm_suites.len() as u8);
                for i in 0..2 {
                    let v = req.akm_suites.get(i).copied().unwrap_or(0);
                    body.extend_from_slice(&v.to_le_bytes());
                }
                body.push(req.pairwise_ciphers.len() as u8);
                for i in 0..5 {
                    let v = req.pairwise_ciphers.get(i).copied().unwrap_or(0);
                    body.extend_from_slice(&v.to_le_bytes());
                }
                body.extend_from_slice(&req.group_cipher.to_le_bytes());
                body.push(req.key.len() as u8);
                body.extend_from_slice(req.key.expose());
            }
        }
        let size = (out.len() - HEADER_LEN) as u32;
        out[..HEADER_LEN].copy_from_slice(&Header::new(self.operation(), size).encode());
        Ok(out)
    }
}

/// Checks that `ies` is a well-formed element list with an SSID element.
fn check_ies(ies: &[u8]) -> Result<(), IeProblem> {
    let mut has_ssid = false;
    for e in parse_elements(ies) {
        match e {
            Ok(e) if e.id == element_ids::SSID => has_ssid = true,
            Ok(_) => {}
            Err(at) => return Err(IeProblem::Malformed(at)),
        }
    }
    if has_ssid {
        Ok(())
    } else {
        Err(IeProblem::NoSsid)
    }
}

enum IeProblem {
    Malformed(usize),
    NoSsid,
}

impl ScanResponse {
    /// Encodes the body in `layout`, checking every rule a strict guest
    /// applies: unique BSSIDs, real channels, well-formed IEs with an SSID
    /// element, and a size far below what the driver would swallow.
    pub fn encode_body(&self, layout: ScanLayout) -> Result<Vec<u8>, EncodeError> {
        let mut seen = HashSet::with_capacity(self.bss.len());
        let mut ies_len = 0usize;
        for bss in &self.bss {
            if !seen.insert(bss.bssid) {
                return Err(EncodeError::DuplicateBssid(bss.bssid));
            }
            if channel_for_freq_khz(bss.freq_khz).is_none() {
                return Err(EncodeError::UnknownChannel {
                    bssid: bss.bssid,
                    freq_khz: bss.freq_khz,
                });
            }
            check_ies(&bss.ies).map_err(|p| match p {
                IeProblem::Malformed(_) => EncodeError::MalformedElements { bssid: bss.bssid },
                IeProblem::NoSsid => EncodeError::MissingSsid { bssid: bss.bssid },
            })?;
            ies_len += bss.ies.len();
        }
        let fixed = layout.fixed_len();
        let entries_end = fixed + BSS_ENTRY_LEN * self.bss.len();
        let total = entries_end + ies_len;
        if total > MAX_SCAN_RESPONSE_LEN {
            return Err(EncodeError::TooLarge(total));
        }
        let mut body = Vec::with_capacity(total);
        if layout == ScanLayout::Current {
            body.push(u8::from(self.scan_complete));
        }
        body.extend_from_slice(&(self.bss.len() as u32).to_le_bytes());
        body.extend_from_slice(&(total as u32).to_le_bytes());
        let mut ie_at = entries_end;
        for (i, bss) in self.bss.iter().enumerate() {
            let entry_at = fixed + BSS_ENTRY_LEN * i;
            body.extend_from_slice(&bss.bssid.0);
            body.extend_from_slice(&bss.capabilities.to_le_bytes());
            body.extend_from_slice(&bss.rssi_dbm.to_le_bytes());
            body.extend_from_slice(&bss.beacon_interval.to_le_bytes());
            body.extend_from_slice(&bss.freq_khz.to_le_bytes());
            body.extend_from_slice(&(bss.ies.len() as u32).to_le_bytes());
            // The offset counts from the start of this entry, not the body.
            body.extend_from_slice(&((ie_at - entry_at) as u32).to_le_bytes());
            ie_at += bss.ies.len();
        }
        for bss in &self.bss {
            body.extend_from_slice(&bss.ies);
        }
        debug_assert_eq!(body.len(), total);
        Ok(body)
    }

    /// Decodes a body as a careful guest: every count, offset and size is
    /// checked, IEs must lie after the entries and inside the body, each BSS
    /// must be on a real channel, carry an SSID element and a unique BSSID.
    pub fn decode_body(body: &[u8], layout: ScanLayout) -> Result<ScanResponse, DecodeError> {
        let fixed = layout.fixed_len();
        if body.len() < fixed {
            return Err(DecodeError::Truncated {
                what: "scan response",
                needed: fixed,
                got: body.len(),
            });
        }
        let (scan_complete, counts_at) = match layout {
            ScanLayout::Current => match body[0] {
                0 => (false, 1),
                1 => (true, 1),
                other => return Err(DecodeError::ScanCompleteFlag(other)),
            },
            ScanLayout::Legacy => (true, 0),
        };
        let num_bss = u32_at(body, counts_at);
        let total_size = u32_at(body, counts_at + 4);
        if total_size as usize != body.len() {
            return Err(DecodeError::TotalSize {
                total_size,
                body: body.len(),
            });
        }
        let entries_end = (num_bss as usize)
            .checked_mul(BSS_ENTRY_LEN)
            .and_then(|n| n.checked_add(fixed))
            .filter(|end| *end <= body.len())
            .ok_or(DecodeError::BssCount {
                num_bss,
                body: body.len(),
            })?;
        let mut seen = HashSet::new();
        let mut bss = Vec::with_capacity(num_bss as usize);
        for index in 0..num_bss as usize {
            let at = fixed + BSS_ENTRY_LEN * index;
            let e = &body[at..at + BSS_ENTRY_LEN];
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&e[0..6]);
            let bssid = MacAddr(mac);
            let freq_khz = u32_at(e, 14);
            let ie_size = u32_at(e, 18);
            let ie_offset = u32_at(e, 22);
            let ie_start = at.checked_add(ie_offset as usize);
            let ie_end = ie_start.and_then(|s| s.checked_add(ie_size as usize));
            let (ie_start, ie_end) = match (ie_start, ie_end) {
                (Some(s), Some(end)) if end <= body.len() => (s, end),
                _ => {
                    return Err(DecodeError::IeOutOfBounds {
                        index,
                        offset: ie_offset,
                        size: ie_size,
                    })
                }
            };
            if ie_size > 0 && ie_start < entries_end {
                return Err(DecodeError::IeOverlapsEntries { index });
            }
            if channel_for_freq_khz(freq_khz).is_none() {
                return Err(DecodeError::UnknownChannel { index, freq_khz });
            }
            let ies = &body[ie_start..ie_end];
            check_ies(ies).map_err(|p| match p {
                IeProblem::Malformed(at) => DecodeError::MalformedElement { index, at },
                IeProblem::NoSsid => DecodeError::MissingSsid { index },
            })?;
            if !seen.insert(bssid) {
                return Err(DecodeError::DuplicateBssid { index, bssid });
            }
            bss.push(ScanBss {
                bssid,
                capabilities: u16::from_le_bytes([e[6], e[7]]),
                rssi_dbm: i32::from_le_bytes([e[8], e[9], e[10], e[11]]),
                beacon_interval: u16::from_le_bytes([e[12], e[13]]),
                freq_khz,
                ies: ies.to_vec(),
            });
        }
        Ok(ScanResponse { scan_complete, bss })
    }
}

impl ConnectResponse {
    /// The 16-byte body as sent on the wire.
    pub fn encode_body(&self) -> [u8; CONNECT_RESPONSE_LEN] {
        let mut out = [0u8; CONNECT_RESPONSE_LEN];
        out[0..2].copy_from_slice(&self.result_code.to_le_bytes());
        out[2..8].copy_from_slice(&self.bssid.0);
        // bytes 8..8 are the packed session id; there is no padding.
        out[8..16].copy_from_slice(&self.session_id.to_le_bytes());
        out
    }

    /// Decodes a 16-byte body.
    pub fn decode_body(body: &[u8]) -> Result<ConnectResponse, DecodeError> {
        check_body_len(Operation::ConnectResponse, body, CONNECT_RESPONSE_LEN)?;
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&body[2..8]);
        Ok(ConnectResponse {
            result_code: u16::from_le_bytes([body[0], body[1]]),
            bssid: MacAddr(mac),
            session_id: u64_at(body, 8),
        })
    }
}

impl Message {
    /// The message's operation (its header's first byte).
    pub fn operation(&self) -> Operation {
        match self {
            Message::Invalid => Operation::Invalid,
            Message::ScanResponse(_) => Operation::ScanResponse,
            Message::ConnectResponse(_) => Operation::ConnectResponse,
            Message::DisconnectResponse => Operation::DisconnectResponse,
            Message::NotifDisconnected { .. } => Operation::NotifDisconnected,
            Message::NotifSignalQuality { .. } => Operation::NotifSignalQuality,
        }
    }

    /// Encodes the whole message, header included.
    pub fn encode(&self, layout: ScanLayout) -> Result<Vec<u8>, EncodeError> {
        Ok(match self {
            Message::Invalid | Message::DisconnectResponse => with_header(self.operation(), &[]),
            Message::ScanResponse(scan) => {
                let body = scan.encode_body(layout)?;
                with_header(self.operation(), &body)
            }
            Message::ConnectResponse(resp) => with_header(self.operation(), &resp.encode_body()),
            Message::NotifDisconnected { session_id } => {
                with_header(self.operation(), &session_id.to_le_bytes())
            }
            Message::NotifSignalQuality { dbm } => {
                with_header(self.operation(), &dbm.to_le_bytes())
            }
        })
    }

    /// Decodes a whole message from a host, strictly.
    pub fn decode(bytes: &[u8], layout: ScanLayout) -> Result<Message, DecodeError> {
        let (header, body) = split_message(bytes)?;
        Message::decode_body(header.operation, body, layout)
    }

    /// Decodes the body of a host message whose header announced `op`.
    pub fn decode_body(
        op: Operation,
        body: &[u8],
        layout: ScanLayout,
    ) -> Result<Message, DecodeError> {
        match op {
            Operation::Invalid => {
                check_body_len(op, body, 0)?;
                Ok(Message::Invalid)
            }
            Operation::DisconnectResponse => {
                check_body_len(op, body, 0)?;
                Ok(Message::DisconnectResponse)
            }
            Operation::ScanResponse => Ok(Message::ScanResponse(ScanResponse::decode_body(
                body, layout,
            )?)),
            Operation::ConnectResponse => Ok(Message::ConnectResponse(
                ConnectResponse::decode_body(body)?,
            )),
            Operation::NotifDisconnected => {
                check_body_len(op, body, DISCONNECT_REQUEST_LEN)?;
                Ok(Message::NotifDisconnected {
                    session_id: u64_at(body, 0),
                })
            }
            Operation::NotifSignalQuality => {
                check_body_len(op, body, 1)?;
                Ok(Message::NotifSignalQuality { dbm: body[0] as i8 })
            }
            other => Err(DecodeError::NotAHostMessage(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{akm, cipher, ssid_element, wpa2_psk_ccmp_rsn_element};
    use super::*;
    use proptest::prelude::*;

    fn bss(mac: u8, ssid: &str, freq_khz: u32) -> ScanBss {
        let mut ies = ssid_element(&Ssid::new(ssid.as_bytes()).unwrap());
        ies.extend_from_slice(&wpa2_psk_ccmp_rsn_element());
        ScanBss {
            bssid: MacAddr([0, 0, 0, 0, 0, mac]),
            capabilities: CAPABILITY_ESS | CAPABILITY_PRIVACY,
            rssi_dbm: -50,
            beacon_interval: 100,
            freq_khz,
            ies,
        }
    }

    #[test]
    fn scan_request_layout() {
        let req = Request::Scan(ScanRequest {
            ssid: Some(Ssid::new(b"ab").unwrap()),
        });
        let bytes = req.encode().unwrap();
        let mut expected = vec![1, 33, 0, 0, 0, 1, 0, 2, b'a', b'b'];
        expected.extend_from_slice(&[0; 30]);
        assert_eq!(*bytes, expected);
        assert_eq!(Request::decode(&bytes).unwrap(), req);
        // ssid_len 0 is a wildcard scan.
        let wildcard = Request::Scan(ScanRequest::default()).encode().unwrap();
        assert_eq!(wildcard.len(), 40);
        assert_eq!(
            Request::decode(&wildcard).unwrap(),
            Request::Scan(ScanRequest { ssid: None })
        );
    }

    #[test]
    fn connect_request_layout() {
        // Built twice: a request is not Clone (it carries the key).
        let req = || ConnectRequest {
            ssid: Ssid::new(b"FakeWpa2Psk").unwrap(),
            bssid: Some(MacAddr([1, 2, 3, 4, 5, 6])),
            auth_type: 0,
            wpa_versions: 2,
            akm_suites: vec![akm::PSK],
            pairwise_ciphers: vec![cipher::CCMP],
            group_cipher: cipher::CCMP,
            key: Key::new(vec![0xAB; 32]),
        };
        let bytes = Request::Connect(req()).encode().unwrap();
        let mut expected = vec![3, 108, 0, 0, 0, 1, 0];
        expected.push(11);
        let mut ssid = [0u8; 32];
        ssid[..11].copy_from_slice(b"FakeWpa2Psk");
        expected.extend_from_slice(&ssid);
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        expected.extend_from_slice(&[0, 2, 1]);
        expected.extend_from_slice(&[0x02, 0xAC, 0x0F, 0x00, 0, 0, 0, 0]);
        expected.push(1);
        expected.extend_from_slice(&[0x04, 0xAC, 0x0F, 0x00]);
        expected.extend_from_slice(&[0; 16]);
        expected.extend_from_slice(&[0x04, 0xAC, 0x0F, 0x00]);
        expected.push(32);
        expected.extend_from_slice(&[0xAB; 32]);
        assert_eq!(*bytes, expected);
        assert_eq!(Request::decode(&bytes).unwrap(), Request::Connect(req()));
    }

    #[test]
    fn connect_request_checks() {
        let base = Request::Connect(ConnectRequest {
            ssid: Ssid::new(b"x").unwrap(),
            bssid: None,
            auth_type: 0,
            wpa_versions: 0,
            akm_suites: vec![],
            pairwise_ciphers: vec![],
            group_cipher: 0,
            key: Key::default(),
        })
        .encode()
        .unwrap();
        assert_eq!(base.len(), 7 + 76);
        let body = &base[7..];
        let mut b = body.to_vec();
        b[0] = 33;
        assert_eq!(
            Request::decode_body(Operation::ConnectRequest, &b),
            Err(DecodeError::SsidLength(33))
        );
        let mut b = body.to_vec();
        b[41] = 3;
        assert_eq!(
            Request::decode_body(Operation::ConnectRequest, &b),
            Err(DecodeError::AkmCount(3))
        );
        let mut b = body.to_vec();
        b[50] = 6;
        assert_eq!(
            Request::decode_body(Operation::ConnectRequest, &b),
            Err(DecodeError::CipherCount(6))
        );
        let mut b = body.to_vec();
        b[75] = 1; // announces a key byte that is not there
        assert!(matches!(
            Request::decode_body(Operation::ConnectRequest, &b),
            Err(DecodeError::BodySize {
                expected: 77,
                got: 76,
                ..
            })
        ));
        assert!(matches!(
            Request::decode_body(Operation::ConnectRequest, &body[..75]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn disconnect_and_exact_sizes() {
        let bytes = Request::Disconnect(DisconnectRequest { session_id: 0x0102 })
            .encode()
            .unwrap();
        assert_eq!(*bytes, vec![5, 8, 0, 0, 0, 1, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            Request::decode_body(Operation::DisconnectRequest, &[0; 9]),
            Err(DecodeError::BodySize { .. })
        ));
        assert!(matches!(
            Request::decode_body(Operation::ScanRequest, &[0; 32]),
            Err(DecodeError::BodySize { .. })
        ));
        assert_eq!(
            Request::decode_body(Operation::ConnectResponse, &[]),
            Err(DecodeError::NotARequest(Operation::ConnectResponse))
        );
    }

    #[test]
    fn scan_response_current_layout_is_pinned() {
        let resp = ScanResponse {
            scan_complete: true,
            bss: vec![bss(1, "ab", 2_432_000)],
        };
        let bytes = Message::ScanResponse(resp.clone())
            .encode(ScanLayout::Current)
            .unwrap();
        let ie_len = 4 + 22;
        let body_len = 9 + 26 + ie_len;
        let mut expected = vec![2];
        expected.extend_from_slice(&(body_len as u32).to_le_bytes());
        expected.extend_from_slice(&[1, 0]);
        expected.push(1); // scan_complete
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&(body_len as u32).to_le_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0x11, 0x00]);
        expected.extend_from_slice(&(-50i32).to_le_bytes());
        expected.extend_from_slice(&[100, 0]);
        expected.extend_from_slice(&2_432_000u32.to_le_bytes());
        expected.extend_from_slice(&(ie_len as u32).to_le_bytes());
        expected.extend_from_slice(&26u32.to_le_bytes()); // right after this entry
        expected.extend_from_slice(&[0, 2, b'a', b'b']);
        expected.extend_from_slice(&wpa2_psk_ccmp_rsn_element());
        assert_eq!(bytes, expected);
        assert_eq!(
            Message::decode(&bytes, ScanLayout::Current).unwrap(),
            Message::ScanResponse(resp)
        );
    }

    #[test]
    fn scan_response_offsets_are_relative_to_each_entry() {
        let resp = ScanResponse {
            scan_complete: false,
            bss: vec![bss(1, "a", 2_412_000), bss(2, "bcd", 5_240_000)],
        };
        for layout in [ScanLayout::Current, ScanLayout::Legacy] {
            let body = resp.encode_body(layout).unwrap();
            let fixed = layout.fixed_len();
            let first = fixed;
            let second = fixed + 26;
            let ies_start = fixed + 52;
            assert_eq!(u32_at(&body, first + 22) as usize, ies_start - first);
            assert_eq!(
                u32_at(&body, second + 22) as usize,
                ies_start + resp.bss[0].ies.len() - second
            );
            let decoded = ScanResponse::decode_body(&body, layout).unwrap();
            assert_eq!(decoded.bss, resp.bss);
            assert_eq!(decoded.scan_complete, layout == ScanLayout::Legacy);
        }
    }

    #[test]
    fn scan_response_legacy_layout_is_pinned() {
        let resp = ScanResponse {
            scan_complete: true,
            bss: vec![],
        };
        let bytes = Message::ScanResponse(resp)
            .encode(ScanLayout::Legacy)
            .unwrap();
        assert_eq!(bytes, vec![2, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 8, 0, 0, 0]);
    }

    #[test]
    fn encoder_refuses_what_a_strict_guest_rejects() {
        let dup = ScanResponse {
            scan_complete: true,
            bss: vec![bss(1, "a", 2_412_000), bss(1, "b", 2_412_000)],
        };
        assert!(matches!(
            dup.encode_body(ScanLayout::Current),
            Err(EncodeError::DuplicateBssid(_))
        ));
        let mhz = ScanResponse {
            scan_complete: true,
            bss: vec![bss(1, "a", 2412)],
        };
        assert!(matches!(
            mhz.encode_body(ScanLayout::Current),
            Err(EncodeError::UnknownChannel { .. })
        ));
        let mut no_ssid = bss(1, "a", 2_412_000);
        no_ssid.ies = wpa2_psk_ccmp_rsn_element().to_vec();
        let r = ScanResponse {
            scan_complete: true,
            bss: vec![no_ssid.clone()],
        };
        assert!(matches!(
            r.encode_body(ScanLayout::Current),
            Err(EncodeError::MissingSsid { .. })
        ));
        no_ssid.ies = vec![0, 5, b'a'];
        let r = ScanResponse {
            scan_complete: true,
            bss: vec![no_ssid],
        };
        assert!(matches!(
            r.encode_body(ScanLayout::Current),
            Err(EncodeError::MalformedElements { .. })
        ));
    }

    #[test]
    fn strict_decoder_names_each_rule() {
        let good = ScanResponse {
            scan_complete: true,
            bss: vec![bss(1, "a", 2_412_000)],
        }
        .encode_body(ScanLayout::Current)
        .unwrap();
        let dec = |b: &[u8]| ScanResponse::decode_body(b, ScanLayout::Current);
        let mut b = good.clone();
        b[0] = 2;
        assert_eq!(dec(&b), Err(DecodeError::ScanCompleteFlag(2)));
        let mut b = good.clone();
        b[1] = 200;
        assert!(matches!(dec(&b), Err(DecodeError::BssCount { .. })));
        let mut b = good.clone();
        b[5] = 0;
        assert!(matches!(dec(&b), Err(DecodeError::TotalSize { .. })));
        let mut b = good.clone();
        b[9 + 22] = 200; // offset past the end
        assert!(matches!(dec(&b), Err(DecodeError::IeOutOfBounds { .. })));
        let mut b = good.clone();
        b[9 + 22] = 0; // IEs pointing at the entry itself
        assert!(matches!(
            dec(&b),
            Err(DecodeError::IeOverlapsEntries { .. })
        ));
        let mut b = good.clone();
        b[9 + 14..9 + 18].copy_from_slice(&2412u32.to_le_bytes());
        assert!(matches!(dec(&b), Err(DecodeError::UnknownChannel { .. })));
        assert!(matches!(
            dec(&good[..5]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn small_messages_are_pinned() {
        let l = ScanLayout::Current;
        assert_eq!(
            Message::Invalid.encode(l).unwrap(),
            vec![0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(
            Message::DisconnectResponse.encode(l).unwrap(),
            vec![6, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(
            Message::NotifSignalQuality { dbm: -60 }.encode(l).unwrap(),
            vec![8, 1, 0, 0, 0, 1, 0, 0xC4]
        );
        assert_eq!(
            Message::NotifDisconnected { session_id: 3 }
                .encode(l)
                .unwrap(),
            vec![7, 8, 0, 0, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0]
        );
        let c = Message::ConnectResponse(ConnectResponse {
            result_code: 1,
            bssid: MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
            session_id: 0x0102,
        });
        let bytes = c.encode(l).unwrap();
        assert_eq!(
            bytes,
            vec![
                4, 16, 0, 0, 0, 1, 0, 1, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 2, 1, 0, 0, 0, 0,
                0, 0
            ]
        );
        assert_eq!(Message::decode(&bytes, l).unwrap(), c);
    }

    fn arb_bss() -> impl Strategy<Value = ScanBss> {
        let freqs = prop::sample::select(vec![
            2_412_000u32,
            2_437_000,
            2_484_000,
            5_180_000,
            5_745_000,
            5_955_000,
            6_115_000,
        ]);
        (
            any::<[u8; 6]>(),
            any::<u16>(),
            any::<i32>(),
            any::<u16>(),
            freqs,
            prop::collection::vec(any::<u8>(), 0..=32),
            prop::collection::vec((1u8..=255, prop::collection::vec(any::<u8>(), 0..40)), 0..4),
        )
            .prop_map(|(mac, caps, rssi, bi, freq, ssid, extra)| {
                let mut ies = ssid_element(&Ssid::new(&ssid).unwrap());
                for (id, data) in extra {
                    ies.push(id);
                    ies.push(data.len() as u8);
                    ies.extend_from_slice(&data);
                }
                ScanBss {
                    bssid: MacAddr(mac),
                    capabilities: caps,
                    rssi_dbm: rssi,
                    beacon_interval: bi,
                    freq_khz: freq,
                    ies,
                }
            })
    }

    proptest! {
        #[test]
        fn scan_response_round_trips(complete: bool, list in prop::collection::vec(arb_bss(), 0..20), legacy: bool) {
            let mut seen = HashSet::new();
            let bss: Vec<_> = list.into_iter().filter(|b| seen.insert(b.bssid)).collect();
            let layout = if legacy { ScanLayout::Legacy } else { ScanLayout::Current };
            let resp = ScanResponse { scan_complete: complete || legacy, bss };
            let bytes = Message::ScanResponse(resp.clone()).encode(layout).unwrap();
            prop_assert_eq!(Message::decode(&bytes, layout).unwrap(), Message::ScanResponse(resp));
        }

        #[test]
        fn connect_request_round_trips(
            ssid in prop::collection::vec(any::<u8>(), 0..=32),
            mac: [u8; 6],
            auth: u8, wpa: u8,
            akms in prop::collection::vec(any::<u32>(), 0..=2),
            ciphers in prop::collection::vec(any::<u32>(), 0..=5),
            group: u32,
            key in prop::collection::vec(any::<u8>(), 0..=255),
        ) {
            let req = Request::Connect(ConnectRequest {
                ssid: Ssid::new(&ssid).unwrap(),
                bssid: (mac != [0; 6]).then_some(MacAddr(mac)),
                auth_type: auth, wpa_versions: wpa,
                akm_suites: akms, pairwise_ciphers: ciphers, group_cipher: group,
                key: Key::new(key),
            });
            let bytes = req.encode().unwrap();
            prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = Request::decode(&bytes);
            let _ = Message::decode(&bytes, ScanLayout::Current);
            let _ = Message::decode(&bytes, ScanLayout::Legacy);
            if bytes.len() >= HEADER_LEN {
                let _ = Header::decode_request(bytes[..HEADER_LEN].try_into().unwrap());
            }
            for op in Operation::ALL {
                let _ = Request::decode_body(op, &bytes);
                let _ = Message::decode_body(op, &bytes, ScanLayout::Current);
            }
        }

        #[test]
        fn decoding_mutated_scan_responses_never_panics(
            list in prop::collection::vec(arb_bss(), 0..5),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut seen = HashSet::new();
            let bss: Vec<_> = list.into_iter().filter(|b| seen.insert(b.bssid)).collect();
            let mut body = ScanResponse { scan_complete: true, bss }.encode_body(ScanLayout::Current).unwrap();
            for (i, v) in flips {
                let at = i.index(body.len());
                body[at] = v;
            }
            let _ = ScanResponse::decode_body(&body, ScanLayout::Current);
        }
    }
}
