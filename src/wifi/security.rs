//! Network security as hosts report it, and the rules of what a guest can use.

use crate::protocol::{
    akm, cipher, element_ids, parse_elements, ssid_element, wpa2_psk_ccmp_rsn_element,
    ConnectRequest, ScanBss, CAPABILITY_ESS, CAPABILITY_PRIVACY,
};

use super::ScannedBss;

/// Beacon interval reported when the host does not know the real one. The
/// reference sends 0, which guests accept but display as nonsense; 100 TU is
/// what nearly every access point uses.
pub const DEFAULT_BEACON_INTERVAL_TU: u16 = 100;

/// Authentication algorithm of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthAlgorithm {
    Open,
    SharedKey,
    Wpa,
    WpaPsk,
    Wpa2,
    Wpa2Psk,
    Wpa3Sae,
    Wpa3Enterprise,
    Owe,
    Other,
}

/// Pairwise cipher of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CipherAlgorithm {
    None,
    Wep,
    Tkip,
    Ccmp,
    Gcmp,
    Other,
}

/// Authentication and cipher of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Security {
    pub auth: AuthAlgorithm,
    pub cipher: CipherAlgorithm,
}

impl Security {
    pub const OPEN: Security = Security {
        auth: AuthAlgorithm::Open,
        cipher: CipherAlgorithm::None,
    };
    pub const WPA2_PSK_CCMP: Security = Security {
        auth: AuthAlgorithm::Wpa2Psk,
        cipher: CipherAlgorithm::Ccmp,
    };

    /// Whether the guest driver can use this network itself: open, or
    /// WPA2-PSK with CCMP or GCMP.
    pub fn guest_supported(&self) -> bool {
        matches!(
            (self.auth, self.cipher),
            (AuthAlgorithm::Open, CipherAlgorithm::None)
                | (
                    AuthAlgorithm::Wpa2Psk,
                    CipherAlgorithm::Ccmp | CipherAlgorithm::Gcmp
                )
        )
    }

    /// The security the guest is shown: unchanged when it can use it,
    /// otherwise WPA2-PSK/CCMP, so the guest can still "connect" by mirroring
    /// a host connection.
    pub fn as_seen_by_guest(&self) -> Security {
        if self.guest_supported() {
            *self
        } else {
            Security::WPA2_PSK_CCMP
        }
    }

    /// The security a connect request asks for, when it is one a host can
    /// honour: open system with no WPA, or open system, WPA2, a PSK AKM and
    /// CCMP or GCMP as pairwise cipher. `None` for anything else.
    pub fn from_connect_request(req: &ConnectRequest) -> Option<Security> {
        if req.auth_type != 0 {
            return None;
        }
        if req.wpa_versions == 0 && req.akm_suites.is_empty() && req.pairwise_ciphers.is_empty() {
            return Some(Security::OPEN);
        }
        if req.wpa_versions != 2 {
            return None;
        }
        let psk_akm = req.akm_suites.iter().any(|a| {
            matches!(
                *a,
                akm::PSK | akm::PSK_SHA256 | akm::PSK_SHA384 | akm::FT_PSK | akm::FT_PSK_SHA384
            )
        });
        if !psk_akm {
            return None;
        }
        // Prefer CCMP when the guest offers both.
        let cipher = if req.pairwise_ciphers.contains(&cipher::CCMP) {
            CipherAlgorithm::Ccmp
        } else if req.pairwise_ciphers.contains(&cipher::GCMP) {
            CipherAlgorithm::Gcmp
        } else {
            return None;
        };
        Some(Security {
            auth: AuthAlgorithm::Wpa2Psk,
            cipher,
        })
    }

    /// A short label: `open`, `wpa2-psk/ccmp`, ...
    pub fn label(&self) -> String {
        let auth = serde_json::to_value(self.auth)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if self.cipher == CipherAlgorithm::None {
            auth
        } else {
            let c = serde_json::to_value(self.cipher)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("{auth}/{c}")
        }
    }
}

fn rsn_element_for(cipher: CipherAlgorithm) -> Vec<u8> {
    let mut rsn = wpa2_psk_ccmp_rsn_element().to_vec();
    if cipher == CipherAlgorithm::Gcmp {
        // Group and pairwise suite types become GCMP (8).
        rsn[7] = 0x08;
        rsn[13] = 0x08;
    }
    rsn
}

/// The host's own IEs with their SSID element made to carry `ssid`: a
/// hidden network's beacon has an empty or zeroed SSID element, and the
/// guest's cfg80211 must find the requested SSID in the BSS it joins. The
/// other elements are kept in order. `None` when the IEs are malformed.
fn ies_with_ssid(ies: &[u8], ssid: &crate::protocol::Ssid) -> Option<Vec<u8>> {
    let mut first_ssid = None;
    for e in parse_elements(ies) {
        let e = e.ok()?;
        if e.id == element_ids::SSID && first_ssid.is_none() {
            first_ssid = Some(e.data);
        }
    }
    if first_ssid == Some(ssid.as_bytes()) {
        return Some(ies.to_vec());
    }
    let mut out = ssid_element(ssid);
    for e in parse_elements(ies).flatten() {
        if e.id != element_ids::SSID {
            out.push(e.id);
            out.push(e.data.len() as u8);
            out.extend_from_slice(e.data);
        }
    }
    Some(out)
}

/// Shapes a BSS for the guest: networks the guest cannot use are shown as
/// WPA2-PSK/CCMP with ESS|Privacy and rebuilt IEs (an SSID element and the
/// reference RSN element); a usable network keeps its own IEs when they are
/// well formed, with the SSID element set to the BSS's SSID (a hidden
/// network's beacon carries an empty one), else gets SSID (+ RSN) built
/// here. An unknown beacon interval is reported as 100 TU.
pub fn guest_bss(bss: &ScannedBss) -> ScanBss {
    let supported = bss.security.guest_supported();
    let secured = bss.security.auth != AuthAlgorithm::Open;
    let (capabilities, ies) = if !supported {
        let mut ies = ssid_element(&bss.ssid);
        ies.extend_from_slice(&wpa2_psk_ccmp_rsn_element());
        (CAPABILITY_ESS | CAPABILITY_PRIVACY, ies)
    } else {
        let caps = bss.capabilities.unwrap_or(if secured {
            CAPABILITY_ESS | CAPABILITY_PRIVACY
        } else {
            CAPABILITY_ESS
        });
        let own = (!bss.ies.is_empty())
            .then(|| ies_with_ssid(&bss.ies, &bss.ssid))
            .flatten();
        let ies = own.unwrap_or_else(|| {
            let mut ies = ssid_element(&bss.ssid);
            if secured {
                ies.extend_from_slice(&rsn_element_for(bss.security.cipher));
            }
            ies
        });
        (caps, ies)
    };
    ScanBss {
        bssid: bss.bssid,
        capabilities,
        rssi_dbm: bss.rssi_dbm,
        beacon_interval: match bss.beacon_interval {
            Some(0) | None => DEFAULT_BEACON_INTERVAL_TU,
            Some(bi) => bi,
        },
        freq_khz: bss.freq_khz,
        ies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{rsn_security, Key, MacAddr, Ssid};

    fn scanned(security: Security) -> ScannedBss {
        ScannedBss {
            bssid: MacAddr([1, 2, 3, 4, 5, 6]),
            ssid: Ssid::new(b"net").unwrap(),
            capabilities: None,
            rssi_dbm: -40,
            beacon_interval: None,
            freq_khz: 2_437_000,
            security,
            ies: vec![],
        }
    }

    #[test]
    fn unsupported_networks_are_shown_as_wpa2_psk() {
        for sec in [
            Security {
                auth: AuthAlgorithm::Wpa3Sae,
                cipher: CipherAlgorithm::Ccmp,
            },
            Security {
                auth: AuthAlgorithm::Wpa2Psk,
                cipher: CipherAlgorithm::Tkip,
            },
            Security {
                auth: AuthAlgorithm::Open,
                cipher: CipherAlgorithm::Wep,
            },
        ] {
            let mut b = scanned(sec);
            b.ies = vec![0, 3, b'n', b'e', b't', 221, 1, 0];
            let g = guest_bss(&b);
            assert_eq!(g.capabilities, CAPABILITY_ESS | CAPABILITY_PRIVACY);
            let mut expected = vec![0, 3, b'n', b'e', b't'];
            expected.extend_from_slice(&wpa2_psk_ccmp_rsn_element());
            assert_eq!(g.ies, expected);
            assert_eq!(g.beacon_interval, 100);
        }
    }

    #[test]
    fn supported_networks_keep_or_build_ies() {
        let open = guest_bss(&scanned(Security::OPEN));
        assert_eq!(open.capabilities, CAPABILITY_ESS);
        assert_eq!(open.ies, vec![0, 3, b'n', b'e', b't']);
        let gcmp = guest_bss(&scanned(Security {
            auth: AuthAlgorithm::Wpa2Psk,
            cipher: CipherAlgorithm::Gcmp,
        }));
        let rsn = rsn_security(&gcmp.ies[7..]).unwrap();
        assert_eq!(rsn.pairwise_ciphers, vec![cipher::GCMP]);
        let mut own = scanned(Security::OPEN);
        own.ies = vec![0, 3, b'n', b'e', b't', 1, 1, 0x82];
        own.beacon_interval = Some(200);
        let g = guest_bss(&own);
        assert_eq!(g.ies, own.ies);
        assert_eq!(g.beacon_interval, 200);

        // A hidden network's beacon: an empty SSID element. The guest must
        // see the real SSID, and the other elements stay.
        let mut hidden = scanned(Security::OPEN);
        hidden.ies = vec![0, 0, 1, 1, 0x82, 0, 3, 0, 0, 0];
        assert_eq!(
            guest_bss(&hidden).ies,
            vec![0, 3, b'n', b'e', b't', 1, 1, 0x82]
        );
        // Malformed host IEs are rebuilt.
        hidden.ies = vec![0, 9, b'n'];
        assert_eq!(guest_bss(&hidden).ies, vec![0, 3, b'n', b'e', b't']);
    }

    fn request(auth: u8, wpa: u8, akms: Vec<u32>, ciphers: Vec<u32>) -> ConnectRequest {
        ConnectRequest {
            ssid: Ssid::new(b"x").unwrap(),
            bssid: None,
            auth_type: auth,
            wpa_versions: wpa,
            akm_suites: akms,
            pairwise_ciphers: ciphers,
            group_cipher: cipher::CCMP,
            key: Key::default(),
        }
    }

    #[test]
    fn connect_request_support_rules() {
        assert_eq!(
            Security::from_connect_request(&request(0, 0, vec![], vec![])),
            Some(Security::OPEN)
        );
        assert_eq!(
            Security::from_connect_request(&request(0, 2, vec![akm::PSK], vec![cipher::CCMP])),
            Some(Security::WPA2_PSK_CCMP)
        );
        for a in [
            akm::PSK_SHA256,
            akm::PSK_SHA384,
            akm::FT_PSK,
            akm::FT_PSK_SHA384,
        ] {
            assert!(
                Security::from_connect_request(&request(0, 2, vec![a], vec![cipher::GCMP]))
                    .is_some()
            );
        }
        assert_eq!(
            Security::from_connect_request(&request(4, 4, vec![akm::SAE], vec![cipher::CCMP])),
            None
        );
        assert_eq!(
            Security::from_connect_request(&request(0, 2, vec![akm::PSK], vec![cipher::TKIP])),
            None
        );
        assert_eq!(
            Security::from_connect_request(&request(0, 1, vec![akm::PSK], vec![cipher::CCMP])),
            None
        );
        assert_eq!(
            Security::from_connect_request(&request(
                0,
                2,
                vec![akm::IEEE8021X],
                vec![cipher::CCMP]
            )),
            None
        );
        assert_eq!(Security::WPA2_PSK_CCMP.label(), "wpa2-psk/ccmp");
        assert_eq!(Security::OPEN.label(), "open");
    }
}
