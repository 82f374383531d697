//! WlanAPI values to this crate's types, with no FFI: DOT11 algorithm
//! numbers to [`Security`], the `WLAN_BSS_LIST` memory block to
//! [`ScannedBss`] values, and signal quality.
//!
//! The BSS list is parsed from bytes with the documented `WLAN_BSS_ENTRY`
//! layout (pinned here as offsets, and checked against the `windows-sys`
//! definitions at compile time on Windows), so every bound is checked in
//! code that the Linux test suite runs.

use std::collections::HashSet;

use crate::protocol::{
    akm, channel_for_freq_khz, cipher, parse_elements, rsn_security, MacAddr, RsnSummary, Ssid,
    CAPABILITY_PRIVACY,
};
use crate::wifi::{AuthAlgorithm, CipherAlgorithm, ConnectedNetwork, ScannedBss, Security};

/// `DOT11_AUTH_ALGORITHM` values (wlantypes.h).
// The whole enum, so the tests can name every value; some are read nowhere
// else.
#[allow(dead_code)]
pub mod dot11_auth {
    pub const OPEN: i32 = 1;
    pub const SHARED_KEY: i32 = 2;
    pub const WPA: i32 = 3;
    pub const WPA_PSK: i32 = 4;
    pub const WPA_NONE: i32 = 5;
    pub const RSNA: i32 = 6;
    pub const RSNA_PSK: i32 = 7;
    /// Also `DOT11_AUTH_ALGO_WPA3_ENT_192`.
    pub const WPA3: i32 = 8;
    pub const WPA3_SAE: i32 = 9;
    pub const OWE: i32 = 10;
    pub const WPA3_ENT: i32 = 11;
}

/// `DOT11_CIPHER_ALGORITHM` values (wlantypes.h).
// The whole enum, as for `dot11_auth`.
#[allow(dead_code)]
pub mod dot11_cipher {
    pub const NONE: i32 = 0;
    pub const WEP40: i32 = 1;
    pub const TKIP: i32 = 2;
    pub const CCMP: i32 = 4;
    pub const WEP104: i32 = 5;
    pub const GCMP: i32 = 8;
    pub const GCMP_256: i32 = 9;
    pub const CCMP_256: i32 = 10;
    pub const WPA_USE_GROUP: i32 = 0x100;
    pub const WEP: i32 = 0x101;
}

/// The host's authentication algorithm.
pub fn auth_from_dot11(value: i32) -> AuthAlgorithm {
    match value {
        dot11_auth::OPEN => AuthAlgorithm::Open,
        dot11_auth::SHARED_KEY => AuthAlgorithm::SharedKey,
        dot11_auth::WPA => AuthAlgorithm::Wpa,
        dot11_auth::WPA_PSK => AuthAlgorithm::WpaPsk,
        dot11_auth::RSNA => AuthAlgorithm::Wpa2,
        dot11_auth::RSNA_PSK => AuthAlgorithm::Wpa2Psk,
        dot11_auth::WPA3 | dot11_auth::WPA3_ENT => AuthAlgorithm::Wpa3Enterprise,
        dot11_auth::WPA3_SAE => AuthAlgorithm::Wpa3Sae,
        dot11_auth::OWE => AuthAlgorithm::Owe,
        _ => AuthAlgorithm::Other,
    }
}

/// The host's pairwise cipher. The 256-bit ciphers are not the guest's CCMP
/// or GCMP, so they read as `Other`.
pub fn cipher_from_dot11(value: i32) -> CipherAlgorithm {
    match value {
        dot11_cipher::NONE => CipherAlgorithm::None,
        dot11_cipher::WEP40 | dot11_cipher::WEP104 | dot11_cipher::WEP => CipherAlgorithm::Wep,
        dot11_cipher::TKIP => CipherAlgorithm::Tkip,
        dot11_cipher::CCMP => CipherAlgorithm::Ccmp,
        dot11_cipher::GCMP => CipherAlgorithm::Gcmp,
        _ => CipherAlgorithm::Other,
    }
}

/// The security of a connection as `WLAN_SECURITY_ATTRIBUTES` reports it.
pub fn security_from_dot11(auth: i32, cipher: i32) -> Security {
    Security {
        auth: auth_from_dot11(auth),
        cipher: cipher_from_dot11(cipher),
    }
}

/// The OUI and type that mark the legacy WPA vendor element.
const WPA_VENDOR_PREFIX: [u8; 4] = [0x00, 0x50, 0xF2, 0x01];
const VENDOR_SPECIFIC: u8 = 221;
/// WPA (vendor) AKM and cipher selectors, OUI 00-50-F2.
const WPA_AKM_PSK: u32 = 0x0050_F202;
const WPA_CIPHER_TKIP: u32 = 0x0050_F202;
const WPA_CIPHER_CCMP: u32 = 0x0050_F204;

fn pairwise(summary: &RsnSummary, ccmp: u32, gcmp: Option<u32>, tkip: u32) -> CipherAlgorithm {
    let offered: &[u32] = if summary.pairwise_ciphers.is_empty() {
        std::slice::from_ref(&summary.group_cipher)
    } else {
        &summary.pairwise_ciphers
    };
    // Prefer what the guest can use.
    if offered.contains(&ccmp) {
        CipherAlgorithm::Ccmp
    } else if gcmp.is_some_and(|g| offered.contains(&g)) {
        CipherAlgorithm::Gcmp
    } else if offered.contains(&tkip) {
        CipherAlgorithm::Tkip
    } else {
        CipherAlgorithm::Other
    }
}

/// The security a BSS advertises, from its information elements and its
/// Capability Information: RSN first (a PSK AKM wins over SAE, so a WPA2/WPA3
/// transition network stays usable by the guest), then the legacy WPA
/// element, then the Privacy bit alone (WEP), else open.
pub fn security_from_ies(capabilities: u16, ies: &[u8]) -> Security {
    let mut rsn = None;
    let mut wpa = None;
    for element in parse_elements(ies).map_while(Result::ok) {
        match element.id {
            48 if rsn.is_none() => rsn = rsn_security(element.data),
            VENDOR_SPECIFIC if wpa.is_none() && element.data.starts_with(&WPA_VENDOR_PREFIX) => {
                wpa = rsn_security(&element.data[WPA_VENDOR_PREFIX.len()..]);
            }
            _ => {}
        }
    }
    if let Some(r) = rsn {
        let has = |set: &[u32]| r.akm_suites.iter().any(|a| set.contains(a));
        let auth = if has(&[
            akm::PSK,
            akm::PSK_SHA256,
            akm::FT_PSK,
            akm::PSK_SHA384,
            akm::FT_PSK_SHA384,
        ]) {
            AuthAlgorithm::Wpa2Psk
        } else if has(&[akm::SAE, akm::FT_SAE]) {
            AuthAlgorithm::Wpa3Sae
        } else if has(&[akm::OWE]) {
            AuthAlgorithm::Owe
        } else if has(&[akm::IEEE8021X, akm::FT_8021X, akm::IEEE8021X_SHA256]) {
            AuthAlgorithm::Wpa2
        } else {
            AuthAlgorithm::Other
        };
        return Security {
            auth,
            cipher: pairwise(&r, cipher::CCMP, Some(cipher::GCMP), cipher::TKIP),
        };
    }
    if let Some(w) = wpa {
        let auth = if w.akm_suites.contains(&WPA_AKM_PSK) {
            AuthAlgorithm::WpaPsk
        } else {
            AuthAlgorithm::Wpa
        };
        return Security {
            auth,
            cipher: pairwise(&w, WPA_CIPHER_CCMP, None, WPA_CIPHER_TKIP),
        };
    }
    if capabilities & CAPABILITY_PRIVACY != 0 {
        Security {
            auth: AuthAlgorithm::Open,
            cipher: CipherAlgorithm::Wep,
        }
    } else {
        Security::OPEN
    }
}

/// Link quality in percent as WlanAPI reports it (0..=100), clamped.
pub fn signal_percent(raw: u32) -> u8 {
    raw.min(100) as u8
}

/// `DOT11_BSS_TYPE` of an infrastructure network.
pub const DOT11_BSS_TYPE_INFRASTRUCTURE: i32 = 1;

/// Layout of `WLAN_BSS_LIST` and `WLAN_BSS_ENTRY` (wlanapi.h), identical on
/// every Windows target (the entry is 8-aligned because of its `ULONGLONG`
/// timestamps).
pub mod layout {
    /// `WLAN_BSS_LIST.wlanBssEntries`: after `dwTotalSize` and `dwNumberOfItems`.
    pub const LIST_ENTRIES: usize = 8;
    pub const ENTRY_SIZE: usize = 360;
    pub const SSID_LEN: usize = 0;
    pub const SSID: usize = 4;
    pub const BSSID: usize = 40;
    pub const BSS_TYPE: usize = 48;
    pub const RSSI: usize = 56;
    pub const LINK_QUALITY: usize = 60;
    pub const BEACON_PERIOD: usize = 66;
    pub const CAPABILITY: usize = 88;
    pub const CENTER_FREQUENCY: usize = 92;
    pub const IE_OFFSET: usize = 352;
    pub const IE_SIZE: usize = 356;
}

/// Why a BSS list could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BssListError {
    #[error("BSS list shorter than its header")]
    Truncated,
    #[error("BSS list announces {items} entries of which only {fit} fit in {size} bytes")]
    TooManyEntries { items: u32, fit: usize, size: usize },
}

/// What parsing a BSS list produced: the usable entries and how many were
/// left out (malformed, not infrastructure, off-channel, duplicate BSSID).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedBssList {
    pub bss: Vec<ScannedBss>,
    pub skipped: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One `WLAN_BSS_ENTRY` at `start` of the list block `list`, or `None` when
/// it is malformed or not a network the guest can be shown.
fn parse_entry(list: &[u8], start: usize) -> Option<ScannedBss> {
    let entry = list.get(start..start.checked_add(layout::ENTRY_SIZE)?)?;
    let ssid_len = usize::try_from(u32_at(entry, layout::SSID_LEN)?).ok()?;
    if ssid_len > Ssid::MAX_LEN {
        return None;
    }
    let ssid = Ssid::new(entry.get(layout::SSID..layout::SSID + ssid_len)?).ok()?;
    let bssid = MacAddr(
        entry
            .get(layout::BSSID..layout::BSSID + 6)?
            .try_into()
            .ok()?,
    );
    if i32_at(entry, layout::BSS_TYPE)? != DOT11_BSS_TYPE_INFRASTRUCTURE {
        return None;
    }
    let freq_khz = u32_at(entry, layout::CENTER_FREQUENCY)?;
    channel_for_freq_khz(freq_khz)?;
    let capabilities = u16_at(entry, layout::CAPABILITY)?;
    let beacon = u16_at(entry, layout::BEACON_PERIOD)?;
    // The IE blob lies at ulIeOffset from the start of the entry, inside the
    // list block.
    let ie_start = start.checked_add(usize::try_from(u32_at(entry, layout::IE_OFFSET)?).ok()?)?;
    let ie_len = usize::try_from(u32_at(entry, layout::IE_SIZE)?).ok()?;
    let ies = list.get(ie_start..ie_start.checked_add(ie_len)?)?.to_vec();
    Some(ScannedBss {
        bssid,
        ssid,
        capabilities: Some(capabilities),
        rssi_dbm: i32_at(entry, layout::RSSI)?,
        beacon_interval: (beacon != 0).then_some(beacon),
        freq_khz,
        security: security_from_ies(capabilities, &ies),
        ies,
    })
}

/// Parses a `WLAN_BSS_LIST` block (`dwTotalSize` bytes as WlanAPI returned
/// them). Entries that are malformed, not infrastructure networks, not on a
/// channel the guest knows, or repeat a BSSID are skipped and counted.
pub fn parse_bss_list(block: &[u8]) -> Result<ParsedBssList, BssListError> {
    let total = u32_at(block, 0).ok_or(BssListError::Truncated)?;
    let items = u32_at(block, 4).ok_or(BssListError::Truncated)?;
    // Trust neither the announced size beyond what we hold nor the count.
    let size = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .min(block.len());
    let list = &block[..size];
    let fit = size.saturating_sub(layout::LIST_ENTRIES) / layout::ENTRY_SIZE;
    if usize::try_from(items).map_or(true, |n| n > fit) {
        return Err(BssListError::TooManyEntries { items, fit, size });
    }
    let mut out = ParsedBssList::default();
    let mut seen = HashSet::new();
    for i in 0..items as usize {
        let start = layout::LIST_ENTRIES + i * layout::ENTRY_SIZE;
        match parse_entry(list, start) {
            Some(bss) if seen.insert(bss.bssid) => out.bss.push(bss),
            _ => out.skipped += 1,
        }
    }
    Ok(out)
}

/// The network of a `WLAN_CONNECTION_ATTRIBUTES`, from its association and
/// security attributes; `None` when the SSID length is impossible.
pub fn connected_network(
    ssid_len: u32,
    ssid_bytes: &[u8; 32],
    bssid: [u8; 6],
    auth: i32,
    cipher: i32,
) -> Option<ConnectedNetwork> {
    let len = usize::try_from(ssid_len).ok()?;
    Some(ConnectedNetwork {
        ssid: Ssid::new(ssid_bytes.get(..len)?).ok()?,
        bssid: MacAddr(bssid),
        security: security_from_dot11(auth, cipher),
    })
}

/// An SSID as the 36-byte `DOT11_SSID` WlanAPI takes: length, then bytes.
pub fn dot11_ssid(ssid: &Ssid) -> (u32, [u8; 32]) {
    let mut bytes = [0u8; 32];
    bytes[..ssid.len()].copy_from_slice(ssid.as_bytes());
    (ssid.len() as u32, bytes)
}

/// A WlanAPI reason code that means success.
pub const WLAN_REASON_CODE_SUCCESS: u32 = 0;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{ssid_element, wpa2_psk_ccmp_rsn_element, CAPABILITY_ESS};

    /// Writes one `WLAN_BSS_ENTRY` the way WlanAPI lays it out, with its IEs
    /// appended after the entry array (as WlanAPI does).
    pub(crate) struct EntrySpec {
        pub ssid: Vec<u8>,
        pub bssid: [u8; 6],
        pub bss_type: i32,
        pub rssi: i32,
        pub quality: u32,
        pub beacon: u16,
        pub capability: u16,
        pub freq_khz: u32,
        pub ies: Vec<u8>,
    }

    impl EntrySpec {
        pub(crate) fn new(ssid: &[u8], last: u8, ies: Vec<u8>) -> EntrySpec {
            EntrySpec {
                ssid: ssid.to_vec(),
                bssid: [2, 0, 0, 0, 0, last],
                bss_type: DOT11_BSS_TYPE_INFRASTRUCTURE,
                rssi: -55,
                quality: 90,
                beacon: 100,
                capability: CAPABILITY_ESS | CAPABILITY_PRIVACY,
                freq_khz: 2_437_000,
                ies,
            }
        }
    }

    pub(crate) fn bss_list(entries: &[EntrySpec]) -> Vec<u8> {
        let head = layout::LIST_ENTRIES + entries.len() * layout::ENTRY_SIZE;
        let mut block = vec![0u8; head];
        for (i, e) in entries.iter().enumerate() {
            let start = layout::LIST_ENTRIES + i * layout::ENTRY_SIZE;
            let ie_offset = block.len() - start;
            block.extend_from_slice(&e.ies);
            let entry = &mut block[start..start + layout::ENTRY_SIZE];
            entry[layout::SSID_LEN..][..4].copy_from_slice(&(e.ssid.len() as u32).to_le_bytes());
            let n = e.ssid.len().min(32);
            entry[layout::SSID..][..n].copy_from_slice(&e.ssid[..n]);
            entry[layout::BSSID..][..6].copy_from_slice(&e.bssid);
            entry[layout::BSS_TYPE..][..4].copy_from_slice(&e.bss_type.to_le_bytes());
            entry[layout::RSSI..][..4].copy_from_slice(&e.rssi.to_le_bytes());
            entry[layout::LINK_QUALITY..][..4].copy_from_slice(&e.quality.to_le_bytes());
            entry[layout::BEACON_PERIOD..][..2].copy_from_slice(&e.beacon.to_le_bytes());
            entry[layout::CAPABILITY..][..2].copy_from_slice(&e.capability.to_le_bytes());
            entry[layout::CENTER_FREQUENCY..][..4].copy_from_slice(&e.freq_khz.to_le_bytes());
            entry[layout::IE_OFFSET..][..4].copy_from_slice(&(ie_offset as u32).to_le_bytes());
            entry[layout::IE_SIZE..][..4].copy_from_slice(&(e.ies.len() as u32).to_le_bytes());
        }
        let total = block.len() as u32;
        block[0..4].copy_from_slice(&total.to_le_bytes());
        block[4..8].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        block
    }

    pub(crate) fn wpa2_ies(ssid: &[u8]) -> Vec<u8> {
        let mut ies = ssid_element(&Ssid::new(ssid).unwrap());
        ies.extend_from_slice(&wpa2_psk_ccmp_rsn_element());
        ies
    }

    fn rsn(pairwise: &[u32], akms: &[u32]) -> Vec<u8> {
        let mut data = vec![1, 0];
        data.extend_from_slice(&cipher::CCMP.to_be_bytes());
        data.extend_from_slice(&(pairwise.len() as u16).to_le_bytes());
        for p in pairwise {
            data.extend_from_slice(&p.to_be_bytes());
        }
        data.extend_from_slice(&(akms.len() as u16).to_le_bytes());
        for a in akms {
            data.extend_from_slice(&a.to_be_bytes());
        }
        let mut ie = vec![48, data.len() as u8];
        ie.extend_from_slice(&data);
        ie
    }

    #[test]
    fn dot11_algorithms_map_to_security() {
        assert_eq!(
            security_from_dot11(dot11_auth::RSNA_PSK, dot11_cipher::CCMP),
            Security::WPA2_PSK_CCMP
        );
        assert_eq!(
            security_from_dot11(dot11_auth::OPEN, dot11_cipher::NONE),
            Security::OPEN
        );
        assert_eq!(
            security_from_dot11(dot11_auth::RSNA_PSK, dot11_cipher::GCMP).cipher,
            CipherAlgorithm::Gcmp
        );
        assert_eq!(
            auth_from_dot11(dot11_auth::WPA3_SAE),
            AuthAlgorithm::Wpa3Sae
        );
        assert_eq!(auth_from_dot11(dot11_auth::WPA_PSK), AuthAlgorithm::WpaPsk);
        assert_eq!(auth_from_dot11(dot11_auth::RSNA), AuthAlgorithm::Wpa2);
        assert_eq!(auth_from_dot11(dot11_auth::OWE), AuthAlgorithm::Owe);
        assert_eq!(
            auth_from_dot11(dot11_auth::WPA3_ENT),
            AuthAlgorithm::Wpa3Enterprise
        );
        assert_eq!(auth_from_dot11(dot11_auth::WPA_NONE), AuthAlgorithm::Other);
        assert_eq!(auth_from_dot11(i32::MIN), AuthAlgorithm::Other);
        for wep in [dot11_cipher::WEP40, dot11_cipher::WEP104, dot11_cipher::WEP] {
            assert_eq!(cipher_from_dot11(wep), CipherAlgorithm::Wep);
        }
        assert_eq!(cipher_from_dot11(dot11_cipher::TKIP), CipherAlgorithm::Tkip);
        for other in [
            dot11_cipher::CCMP_256,
            dot11_cipher::GCMP_256,
            dot11_cipher::WPA_USE_GROUP,
        ] {
            assert_eq!(cipher_from_dot11(other), CipherAlgorithm::Other);
        }
        // The guest-support rules of REFERENCE.md apply to what WlanAPI reports.
        assert!(security_from_dot11(dot11_auth::RSNA_PSK, dot11_cipher::GCMP).guest_supported());
        assert!(!security_from_dot11(dot11_auth::RSNA_PSK, dot11_cipher::TKIP).guest_supported());
        assert!(security_from_dot11(dot11_auth::WPA3_SAE, dot11_cipher::CCMP).guest_supported());
        assert!(!security_from_dot11(dot11_auth::WPA3_ENT, dot11_cipher::CCMP).guest_supported());
        assert!(!security_from_dot11(dot11_auth::OPEN, dot11_cipher::WEP40).guest_supported());
        assert_eq!(
            security_from_dot11(dot11_auth::RSNA_PSK, dot11_cipher::CCMP_256).as_seen_by_guest(),
            Security::WPA2_PSK_CCMP
        );
    }

    #[test]
    fn security_from_elements() {
        assert_eq!(
            security_from_ies(CAPABILITY_ESS | CAPABILITY_PRIVACY, &wpa2_ies(b"x")),
            Security::WPA2_PSK_CCMP
        );
        // WPA2/WPA3 transition: PSK wins, so the guest can use it.
        assert_eq!(
            security_from_ies(0x11, &rsn(&[cipher::CCMP], &[akm::SAE, akm::PSK])),
            Security::WPA2_PSK_CCMP
        );
        assert_eq!(
            security_from_ies(0x11, &rsn(&[cipher::CCMP], &[akm::SAE])).auth,
            AuthAlgorithm::Wpa3Sae
        );
        assert_eq!(
            security_from_ies(0x11, &rsn(&[cipher::GCMP], &[akm::PSK_SHA256])),
            Security {
                auth: AuthAlgorithm::Wpa2Psk,
                cipher: CipherAlgorithm::Gcmp
            }
        );
        assert_eq!(
            security_from_ies(0x11, &rsn(&[cipher::TKIP], &[akm::PSK])).cipher,
            CipherAlgorithm::Tkip
        );
        assert_eq!(
            security_from_ies(0x11, &rsn(&[cipher::CCMP], &[akm::IEEE8021X])).auth,
            AuthAlgorithm::Wpa2
        );
        assert_eq!(
            security_from_ies(0x11, &rsn(&[cipher::CCMP], &[akm::OWE])).auth,
            AuthAlgorithm::Owe
        );
        // No pairwise list: the group cipher is used.
        assert_eq!(
            security_from_ies(0x11, &rsn(&[], &[akm::PSK])).cipher,
            CipherAlgorithm::Ccmp
        );
        // Legacy WPA vendor element.
        let mut wpa = vec![221, 22, 0x00, 0x50, 0xF2, 0x01, 1, 0];
        wpa.extend_from_slice(&WPA_CIPHER_TKIP.to_be_bytes());
        wpa.extend_from_slice(&[1, 0]);
        wpa.extend_from_slice(&WPA_CIPHER_TKIP.to_be_bytes());
        wpa.extend_from_slice(&[1, 0]);
        wpa.extend_from_slice(&WPA_AKM_PSK.to_be_bytes());
        assert_eq!(
            security_from_ies(0x11, &wpa),
            Security {
                auth: AuthAlgorithm::WpaPsk,
                cipher: CipherAlgorithm::Tkip
            }
        );
        // Privacy bit alone is WEP; nothing at all is open.
        assert_eq!(
            security_from_ies(CAPABILITY_ESS | CAPABILITY_PRIVACY, &[0, 1, b'x']).cipher,
            CipherAlgorithm::Wep
        );
        assert_eq!(
            security_from_ies(CAPABILITY_ESS, &[0, 1, b'x']),
            Security::OPEN
        );
    }

    #[test]
    fn bss_list_entries_become_scanned_bss() {
        let mut open = EntrySpec::new(b"Open", 2, ssid_element(&Ssid::new(b"Open").unwrap()));
        open.capability = CAPABILITY_ESS;
        open.freq_khz = 5_180_000;
        open.rssi = -71;
        open.beacon = 0;
        let block = bss_list(&[EntrySpec::new(b"Home", 1, wpa2_ies(b"Home")), open]);
        let parsed = parse_bss_list(&block).unwrap();
        assert_eq!(parsed.skipped, 0);
        assert_eq!(parsed.bss.len(), 2);
        let home = &parsed.bss[0];
        assert_eq!(home.ssid, Ssid::new(b"Home").unwrap());
        assert_eq!(home.bssid, MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(home.rssi_dbm, -55);
        assert_eq!(home.freq_khz, 2_437_000);
        assert_eq!(home.beacon_interval, Some(100));
        assert_eq!(home.capabilities, Some(CAPABILITY_ESS | CAPABILITY_PRIVACY));
        assert_eq!(home.security, Security::WPA2_PSK_CCMP);
        assert_eq!(home.ies, wpa2_ies(b"Home"));
        let open = &parsed.bss[1];
        assert_eq!(open.security, Security::OPEN);
        assert_eq!(open.freq_khz, 5_180_000);
        assert_eq!(open.rssi_dbm, -71);
        assert_eq!(open.beacon_interval, None);
    }

    #[test]
    fn bad_entries_are_skipped_and_counted() {
        let mut long_ssid = EntrySpec::new(b"x", 1, vec![]);
        long_ssid.ssid = vec![b'a'; 32];
        let mut adhoc = EntrySpec::new(b"adhoc", 2, vec![]);
        adhoc.bss_type = 2;
        let mut off_channel = EntrySpec::new(b"odd", 3, vec![]);
        off_channel.freq_khz = 2_440_000;
        let dup = EntrySpec::new(b"dup", 1, vec![]);
        let mut block = bss_list(&[long_ssid, adhoc, off_channel, dup]);
        // Make the first entry's SSID length impossible (33).
        block[layout::LIST_ENTRIES..][..4].copy_from_slice(&33u32.to_le_bytes());
        let parsed = parse_bss_list(&block).unwrap();
        assert_eq!(parsed.bss.len(), 1, "{parsed:?}");
        assert_eq!(parsed.bss[0].ssid, Ssid::new(b"dup").unwrap());
        assert_eq!(parsed.skipped, 3);

        // IEs pointing past the block: the entry is skipped, nothing panics.
        let mut block = bss_list(&[EntrySpec::new(b"a", 1, wpa2_ies(b"a"))]);
        let ie_size_at = layout::LIST_ENTRIES + layout::IE_SIZE;
        block[ie_size_at..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_bss_list(&block).unwrap().skipped, 1);
        let ie_off_at = layout::LIST_ENTRIES + layout::IE_OFFSET;
        block[ie_off_at..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_bss_list(&block).unwrap().skipped, 1);
    }

    #[test]
    fn list_header_is_not_trusted() {
        assert_eq!(parse_bss_list(&[0; 7]), Err(BssListError::Truncated));
        let mut block = bss_list(&[EntrySpec::new(b"a", 1, vec![])]);
        block[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            parse_bss_list(&block),
            Err(BssListError::TooManyEntries {
                items: 2,
                fit: 1,
                ..
            })
        ));
        // dwTotalSize smaller than the data: only what it announces is read.
        let mut block = bss_list(&[EntrySpec::new(b"a", 1, vec![])]);
        block[0..4].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(
            parse_bss_list(&block),
            Err(BssListError::TooManyEntries { fit: 0, .. })
        ));
        let empty = bss_list(&[]);
        assert_eq!(parse_bss_list(&empty).unwrap(), ParsedBssList::default());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut block = bss_list(&[
            EntrySpec::new(b"a", 1, wpa2_ies(b"a")),
            EntrySpec::new(b"b", 2, vec![1, 2, 3]),
        ]);
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let at = seed as usize % block.len();
            block[at] = (seed >> 8) as u8;
            let _ = parse_bss_list(&block);
        }
    }

    #[test]
    fn signal_and_connection_conversions() {
        assert_eq!(signal_percent(80), 80);
        assert_eq!(signal_percent(250), 100);
        assert_eq!(crate::protocol::quality_percent_to_dbm(80), -60);
        let (len, bytes) = dot11_ssid(&Ssid::new(b"Home").unwrap());
        assert_eq!(len, 4);
        assert_eq!(&bytes[..4], b"Home");
        let net = connected_network(
            len,
            &bytes,
            [1, 2, 3, 4, 5, 6],
            dot11_auth::RSNA_PSK,
            dot11_cipher::CCMP,
        )
        .unwrap();
        assert_eq!(net.ssid, Ssid::new(b"Home").unwrap());
        assert_eq!(net.bssid, MacAddr([1, 2, 3, 4, 5, 6]));
        assert_eq!(net.security, Security::WPA2_PSK_CCMP);
        assert!(connected_network(33, &bytes, [0; 6], 1, 0).is_none());
    }
}
