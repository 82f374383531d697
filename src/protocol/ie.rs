//! 802.11 information elements: the few the host builds and the guest reads.

use super::suites::{akm, cipher};
use super::Ssid;

/// Element ids used here.
pub mod element_ids {
    /// SSID element.
    pub const SSID: u8 = 0;
    /// RSN element.
    pub const RSN: u8 = 48;
}

/// One information element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// Element id.
    pub id: u8,
    /// Element body (without id and length).
    pub data: &'a [u8],
}

/// Iterates the elements of a buffer; yields `Err(offset)` once at the first
/// element that runs past the end.
pub struct ElementIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Iterator for ElementIter<'a> {
    type Item = Result<Element<'a>, usize>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let at = self.pos;
        let rest = &self.buf[at..];
        let (id, len) = match rest {
            [id, len, ..] => (*id, usize::from(*len)),
            _ => {
                self.failed = true;
                return Some(Err(at));
            }
        };
        match rest.get(2..2 + len) {
            Some(data) => {
                self.pos = at + 2 + len;
                Some(Ok(Element { id, data }))
            }
            None => {
                self.failed = true;
                Some(Err(at))
            }
        }
    }
}

/// The elements of `buf`, in order.
pub fn parse_elements(buf: &[u8]) -> ElementIter<'_> {
    ElementIter {
        buf,
        pos: 0,
        failed: false,
    }
}

/// An SSID element.
pub fn ssid_element(ssid: &Ssid) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + ssid.len());
    out.push(element_ids::SSID);
    out.push(ssid.len() as u8);
    out.extend_from_slice(ssid.as_bytes());
    out
}

/// The RSN element of a WPA2-PSK network with CCMP as group and pairwise
/// cipher, as the reference sends it for networks the guest cannot use
/// otherwise: `30 14 01 00 00 0F AC 04 01 00 00 0F AC 04 01 00 00 0F AC 02 00 00`.
pub fn wpa2_psk_ccmp_rsn_element() -> [u8; 22] {
    [
        0x30, 0x14, 0x01, 0x00, 0x00, 0x0F, 0xAC, 0x04, 0x01, 0x00, 0x00, 0x0F, 0xAC, 0x04, 0x01,
        0x00, 0x00, 0x0F, 0xAC, 0x02, 0x00, 0x00,
    ]
}

/// What an RSN element says, as far as a guest display needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RsnSummary {
    /// Group cipher suite selector.
    pub group_cipher: u32,
    /// Pairwise cipher suite selectors.
    pub pairwise_ciphers: Vec<u32>,
    /// AKM suite selectors.
    pub akm_suites: Vec<u32>,
}

impl RsnSummary {
    /// A short human name: `WPA2-PSK`, `WPA3-SAE`, `WPA2-EAP`, ...
    pub fn label(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for a in &self.akm_suites {
            let name = match *a {
                akm::PSK | akm::FT_PSK | akm::PSK_SHA256 | akm::PSK_SHA384 | akm::FT_PSK_SHA384 => {
                    "WPA2-PSK"
                }
                akm::SAE | akm::FT_SAE => "WPA3-SAE",
                akm::OWE => "OWE",
                akm::IEEE8021X | akm::FT_8021X | akm::IEEE8021X_SHA256 => "WPA2-EAP",
                _ => "RSN",
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            "RSN".to_string()
        } else {
            names.join("/")
        }
    }

    /// The pairwise cipher names, e.g. `CCMP`.
    pub fn cipher_label(&self) -> String {
        let names: Vec<&str> = self
            .pairwise_ciphers
            .iter()
            .map(|c| match *c {
                cipher::CCMP => "CCMP",
                cipher::GCMP => "GCMP",
                cipher::TKIP => "TKIP",
                cipher::CCMP_256 => "CCMP-256",
                cipher::GCMP_256 => "GCMP-256",
                _ => "?",
            })
            .collect();
        names.join("/")
    }
}

/// Parses the body of an RSN element (without id and length). Suites are
/// returned as `OUI << 8 | type`, e.g. 0x000FAC04 for CCMP.
pub fn rsn_security(data: &[u8]) -> Option<RsnSummary> {
    let mut r = Reader(data);
    let version = r.u16()?;
    if version != 1 {
        return None;
    }
    let mut out = RsnSummary::default();
    match r.suite() {
        Some(s) => out.group_cipher = s,
        None => return Some(out),
    }
    if let Some(n) = r.u16() {
        for _ in 0..n {
            out.pairwise_ciphers.push(r.suite()?);
        }
    }
    if let Some(n) = r.u16() {
        for _ in 0..n {
            out.akm_suites.push(r.suite()?);
        }
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u16(&mut self) -> Option<u16> {
        let (head, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(u16::from_le_bytes(*head))
    }
    fn suite(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rsn_of_reference_element() {
        let e = wpa2_psk_ccmp_rsn_element();
        let elems: Vec<_> = parse_elements(&e).collect();
        assert_eq!(elems.len(), 1);
        let el = elems[0].unwrap();
        assert_eq!(el.id, element_ids::RSN);
        let rsn = rsn_security(el.data).unwrap();
        assert_eq!(rsn.group_cipher, cipher::CCMP);
        assert_eq!(rsn.pairwise_ciphers, vec![cipher::CCMP]);
        assert_eq!(rsn.akm_suites, vec![akm::PSK]);
        assert_eq!(rsn.label(), "WPA2-PSK");
        assert_eq!(rsn.cipher_label(), "CCMP");
    }

    #[test]
    fn element_iter_reports_overrun() {
        let buf = [0, 2, b'a', b'b', 48, 5, 1];
        let items: Vec<_> = parse_elements(&buf).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert_eq!(items[1], Err(4));
        let items: Vec<_> = parse_elements(&[7]).collect();
        assert_eq!(items, vec![Err(0)]);
    }

    #[test]
    fn ssid_element_layout() {
        let s = Ssid::new(b"ab").unwrap();
        assert_eq!(ssid_element(&s), vec![0, 2, b'a', b'b']);
    }
}
