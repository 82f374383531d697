//! The BSSes behind iwd's networks, from the kernel's scan cache.
//!
//! iwd 2.3 reports networks (SSID, type, best signal) over D-Bus but not
//! their access points: no BSSID, channel or information elements, which a
//! guest's cfg80211 needs to know a BSS and later accept a connection to it.
//! The kernel keeps every BSS that iwd's scans found (nl80211
//! `NL80211_CMD_GET_SCAN`, readable without privileges), so the backend
//! takes the BSSes from there and the control (scan, connect, disconnect,
//! state) from iwd. [`BssCache`] is the seam: tests of the D-Bus side give
//! a fixed list.

use std::io::{self, Read, Write};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::protocol::{
    akm, cipher, element_ids, parse_elements, rsn_security, MacAddr, Ssid, CAPABILITY_PRIVACY,
};
use crate::wifi::{AuthAlgorithm, CipherAlgorithm, ScannedBss, Security};

/// Where the backend reads the BSSes an interface sees.
pub trait BssCache: Send + Sync + 'static {
    /// Every BSS the kernel has for the network interface `ifname`.
    fn dump(&self, ifname: &str) -> io::Result<Vec<ScannedBss>>;
}

/// The kernel's scan cache over generic netlink.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelBssCache;

impl BssCache for KernelBssCache {
    fn dump(&self, ifname: &str) -> io::Result<Vec<ScannedBss>> {
        let c_name = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
        // SAFETY: c_name is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut nl = Netlink::open()?;
        let family = nl.nl80211_family()?;
        let mut attrs = Vec::new();
        put_attr(&mut attrs, NL80211_ATTR_IFINDEX, &ifindex.to_ne_bytes());
        let messages = nl.request(family, NL80211_CMD_GET_SCAN, NLM_F_DUMP, &attrs)?;
        Ok(messages
            .iter()
            .filter_map(|payload| {
                let bss = attrs_of(payload).find(|(t, _)| *t == NL80211_ATTR_BSS)?.1;
                bss_from_attrs(bss)
            })
            .collect())
    }
}

// --- netlink constants (linux/netlink.h, linux/genetlink.h, nl80211.h) -----

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NL80211_CMD_GET_SCAN: u8 = 32;
const NL80211_ATTR_IFINDEX: u16 = 3;
const NL80211_ATTR_BSS: u16 = 47;
const NL80211_BSS_BSSID: u16 = 1;
const NL80211_BSS_FREQUENCY: u16 = 2;
const NL80211_BSS_BEACON_INTERVAL: u16 = 4;
const NL80211_BSS_CAPABILITY: u16 = 5;
const NL80211_BSS_INFORMATION_ELEMENTS: u16 = 6;
const NL80211_BSS_SIGNAL_MBM: u16 = 7;
const NL80211_BSS_SIGNAL_UNSPEC: u16 = 8;
const NL80211_BSS_BEACON_IES: u16 = 11;
const NL80211_BSS_FREQUENCY_OFFSET: u16 = 20;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDR_LEN: usize = 16;
const GENL_HDR_LEN: usize = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// The attributes of a netlink payload, as (type, data); stops at the
/// first malformed one.
fn attrs_of(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let data = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((kind, data))
    })
}

struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW.cloexec(),
            Some(Protocol::from(libc::NETLINK_GENERIC)),
        )?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(Netlink { socket, seq: 1 })
    }

    /// Sends a generic netlink request and collects the payloads (after the
    /// genetlink header) of every reply until the end of the dump or the ack.
    fn request(
        &mut self,
        family: u16,
        cmd: u8,
        flags: u16,
        attrs: &[u8],
    ) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = NLMSG_HDR_LEN + GENL_HDR_LEN + attrs.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&family.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[cmd, 1, 0, 0]);
        msg.extend_from_slice(attrs);
        (&self.socket).write_all(&msg)?;

        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = (&self.socket).read(&mut buf)?;
            let mut rest = &buf[..n];
            while rest.len() >= NLMSG_HDR_LEN {
                let mlen = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let mtype = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if mlen < NLMSG_HDR_LEN || mlen > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink message length",
                    ));
                }
                let body = &rest[NLMSG_HDR_LEN..mlen];
                rest = &rest[align4(mlen).min(rest.len())..];
                if mseq != seq {
                    continue;
                }
                match mtype {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        if code == 0 {
                            // The ack of a non-dump request.
                            if flags & NLM_F_DUMP == 0 {
                                return Ok(out);
                            }
                            continue;
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ => {
                        if body.len() >= GENL_HDR_LEN {
                            out.push(body[GENL_HDR_LEN..].to_vec());
                        }
                    }
                }
            }
        }
    }

    fn nl80211_family(&mut self) -> io::Result<u16> {
        let mut attrs = Vec::new();
        put_attr(&mut attrs, CTRL_ATTR_FAMILY_NAME, b"nl80211\0");
        let replies = self.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 0, &attrs)?;
        let id = replies
            .iter()
            .flat_map(|p| attrs_of(p))
            .find(|(t, d)| *t == CTRL_ATTR_FAMILY_ID && d.len() >= 2)
            .map(|(_, d)| u16::from_ne_bytes([d[0], d[1]]));
        id.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no nl80211 (no Wi-Fi driver)"))
    }
}

fn u16_of(d: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(d.get(..2)?.try_into().ok()?))
}

fn u32_of(d: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(d.get(..4)?.try_into().ok()?))
}

/// One BSS from the attributes nested in `NL80211_ATTR_BSS`. Its SSID is the
/// one of its elements; a hidden network's is empty.
pub fn bss_from_attrs(attrs: &[u8]) -> Option<ScannedBss> {
    let mut bssid = None;
    let mut freq_mhz = None;
    let mut freq_offset_khz = 0;
    let mut beacon_interval = None;
    let mut capability = None;
    let mut ies: Option<Vec<u8>> = None;
    let mut beacon_ies: Option<Vec<u8>> = None;
    let mut signal_mbm = None;
    let mut signal_unspec = None;
    for (kind, data) in attrs_of(attrs) {
        match kind {
            NL80211_BSS_BSSID => bssid = <[u8; 6]>::try_from(data).ok().map(MacAddr),
            NL80211_BSS_FREQUENCY => freq_mhz = u32_of(data),
            NL80211_BSS_FREQUENCY_OFFSET => freq_offset_khz = u32_of(data).unwrap_or(0),
            NL80211_BSS_BEACON_INTERVAL => beacon_interval = u16_of(data),
            NL80211_BSS_CAPABILITY => capability = u16_of(data),
            NL80211_BSS_INFORMATION_ELEMENTS => ies = Some(data.to_vec()),
            NL80211_BSS_BEACON_IES => beacon_ies = Some(data.to_vec()),
            NL80211_BSS_SIGNAL_MBM => signal_mbm = u32_of(data).map(|v| v as i32),
            NL80211_BSS_SIGNAL_UNSPEC => signal_unspec = data.first().copied(),
            _ => {}
        }
    }
    let ies = ies.or(beacon_ies).unwrap_or_default();
    let ssid = ssid_of(&ies)?;
    let rssi_dbm = match (signal_mbm, signal_unspec) {
        (Some(mbm), _) => mbm / 100,
        (None, Some(q)) => i32::from(crate::protocol::quality_percent_to_dbm(i32::from(q))),
        (None, None) => -100,
    };
    let capabilities = capability;
    Some(ScannedBss {
        bssid: bssid?,
        ssid,
        capabilities,
        rssi_dbm,
        beacon_interval,
        freq_khz: freq_mhz?
            .saturating_mul(1000)
            .saturating_add(freq_offset_khz),
        security: security_from_ies(&ies, capability.unwrap_or(0)),
        ies,
    })
}

/// The SSID element's content; empty for a hidden network (an empty or
/// zeroed element). `None` when the elements are malformed.
fn ssid_of(ies: &[u8]) -> Option<Ssid> {
    let element = parse_elements(ies)
        .find(|e| matches!(e, Ok(e) if e.id == element_ids::SSID) || e.is_err())?
        .ok()?;
    if element.data.iter().all(|b| *b == 0) {
        return Ssid::new(&[]).ok();
    }
    Ssid::new(element.data).ok()
}

/// Whether a BSS hides its SSID.
pub fn is_hidden(bss: &ScannedBss) -> bool {
    bss.ssid.is_empty()
}

const VENDOR_SPECIFIC: u8 = 221;
const WPA_OUI_TYPE: [u8; 4] = [0x00, 0x50, 0xf2, 0x01];

/// The security of a BSS from its elements and capability.
///
/// A network offering SAE is WPA3-SAE even when it also offers PSK (WPA3
/// transition mode): iwd always picks SAE there, which needs the
/// passphrase, and the guest only has the PMK, so only mirroring a host
/// connection can serve it.
pub fn security_from_ies(ies: &[u8], capability: u16) -> Security {
    let mut rsn = None;
    let mut wpa = false;
    for e in parse_elements(ies).map_while(Result::ok) {
        if e.id == element_ids::RSN {
            rsn = rsn_security(e.data);
        } else if e.id == VENDOR_SPECIFIC && e.data.starts_with(&WPA_OUI_TYPE) {
            wpa = true;
        }
    }
    if let Some(rsn) = rsn {
        let pc = &rsn.pairwise_ciphers;
        let c = if pc.contains(&cipher::CCMP) {
            CipherAlgorithm::Ccmp
        } else if pc.contains(&cipher::GCMP) {
            CipherAlgorithm::Gcmp
        } else if pc.contains(&cipher::TKIP) {
            CipherAlgorithm::Tkip
        } else {
            CipherAlgorithm::Other
        };
        let has = |list: &[u32]| rsn.akm_suites.iter().any(|a| list.contains(a));
        let auth = if has(&[akm::SAE, akm::FT_SAE]) {
            AuthAlgorithm::Wpa3Sae
        } else if has(&[
            akm::PSK,
            akm::FT_PSK,
            akm::PSK_SHA256,
            akm::PSK_SHA384,
            akm::FT_PSK_SHA384,
        ]) {
            AuthAlgorithm::Wpa2Psk
        } else if has(&[akm::IEEE8021X, akm::FT_8021X, akm::IEEE8021X_SHA256]) {
            AuthAlgorithm::Wpa2
        } else if has(&[akm::OWE]) {
            AuthAlgorithm::Owe
        } else {
            AuthAlgorithm::Other
        };
        return Security { auth, cipher: c };
    }
    if wpa {
        return Security {
            auth: AuthAlgorithm::WpaPsk,
            cipher: CipherAlgorithm::Tkip,
        };
    }
    if capability & CAPABILITY_PRIVACY != 0 {
        return Security {
            auth: AuthAlgorithm::Open,
            cipher: CipherAlgorithm::Wep,
        };
    }
    Security::OPEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ssid_element, wpa2_psk_ccmp_rsn_element};

    fn rsn_with_akms(akms: &[u32]) -> Vec<u8> {
        let mut body = vec![1, 0, 0x00, 0x0f, 0xac, 4, 1, 0, 0x00, 0x0f, 0xac, 4];
        body.extend_from_slice(&(akms.len() as u16).to_le_bytes());
        for a in akms {
            body.extend_from_slice(&a.to_be_bytes());
        }
        body.extend_from_slice(&[0, 0]);
        let mut e = vec![element_ids::RSN, body.len() as u8];
        e.extend_from_slice(&body);
        e
    }

    #[test]
    fn security_from_elements() {
        assert_eq!(
            security_from_ies(&wpa2_psk_ccmp_rsn_element(), 0x11),
            Security::WPA2_PSK_CCMP
        );
        assert_eq!(security_from_ies(&[], 0x01), Security::OPEN);
        let transition = rsn_with_akms(&[akm::PSK, akm::SAE]);
        assert_eq!(
            security_from_ies(&transition, 0x11).auth,
            AuthAlgorithm::Wpa3Sae
        );
        let eap = rsn_with_akms(&[akm::IEEE8021X]);
        assert_eq!(security_from_ies(&eap, 0x11).auth, AuthAlgorithm::Wpa2);
        assert_eq!(security_from_ies(&[], 0x11).cipher, CipherAlgorithm::Wep);
        let wpa1 = [VENDOR_SPECIFIC, 6, 0x00, 0x50, 0xf2, 0x01, 1, 0];
        assert_eq!(security_from_ies(&wpa1, 0x11).auth, AuthAlgorithm::WpaPsk);
    }

    fn bss_attrs(ssid: &[u8], ies_extra: &[u8]) -> Vec<u8> {
        let mut ies = ssid_element(&Ssid::new(ssid).unwrap());
        ies.extend_from_slice(ies_extra);
        let mut a = Vec::new();
        put_attr(&mut a, NL80211_BSS_BSSID, &[2, 0, 0, 0, 1, 0]);
        put_attr(&mut a, NL80211_BSS_FREQUENCY, &2437u32.to_ne_bytes());
        put_attr(&mut a, NL80211_BSS_BEACON_INTERVAL, &100u16.to_ne_bytes());
        put_attr(&mut a, NL80211_BSS_CAPABILITY, &0x11u16.to_ne_bytes());
        put_attr(&mut a, NL80211_BSS_INFORMATION_ELEMENTS, &ies);
        put_attr(&mut a, NL80211_BSS_SIGNAL_MBM, &(-4500i32).to_ne_bytes());
        a
    }

    #[test]
    fn bss_attributes_become_a_scanned_bss() {
        let a = bss_attrs(b"home", &wpa2_psk_ccmp_rsn_element());
        let bss = bss_from_attrs(&a).unwrap();
        assert_eq!(bss.bssid, MacAddr([2, 0, 0, 0, 1, 0]));
        assert_eq!(bss.ssid.as_bytes(), b"home");
        assert_eq!(bss.freq_khz, 2_437_000);
        assert_eq!(bss.rssi_dbm, -45);
        assert_eq!(bss.beacon_interval, Some(100));
        assert_eq!(bss.capabilities, Some(0x11));
        assert_eq!(bss.security, Security::WPA2_PSK_CCMP);
        assert!(!is_hidden(&bss));

        let hidden = bss_from_attrs(&bss_attrs(&[0, 0, 0], &[])).unwrap();
        assert!(is_hidden(&hidden));
        // Truncated attributes: no BSSID, no BSS.
        assert!(bss_from_attrs(&a[..8]).is_none());
    }
}
