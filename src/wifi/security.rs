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
    /// Open system, no encryption.
    Open,
    /// WEP shared key.
    SharedKey,
    /// WPA-Enterprise (802.1X).
    Wpa,
    /// WPA-Personal.
    WpaPsk,
    /// WPA2-Enterprise (802.1X).
    Wpa2,
    /// WPA2-Personal.
    Wpa2Psk,
    /// WPA3-Personal (SAE).
    Wpa3Sae,
    /// WPA3-Enterprise.
    Wpa3Enterprise,
    /// Enhanced Open (OWE).
    Owe,
    /// Anything else.
    Other,
}

/// Pairwise cipher of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CipherAlgorithm {
    /// No encryption.
    None,
    /// WEP.
    Wep,
    /// TKIP.
    Tkip,
    /// CCMP (AES).
    Ccmp,
    /// GCMP.
    Gcmp,
    /// Anything else.
    Other,
}

/// Authentication and cipher of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Security {
    /// How a station authenticates.
    pub auth: AuthAlgorithm,
    /// The pairwise cipher.
    pub cipher: CipherAlgorithm,
}

impl Security {
    /// An open network.
    pub const OPEN: Security = Security {
        auth: AuthAlgorithm::Open,
        cipher: CipherAlgorithm::None,
    };
    /// WPA2-Personal with CCMP, what fake networks and unusable networks are
    /// shown as.
    pub const WPA2_PSK_CCMP: Security = Security {
        auth: AuthAlgorithm::Wpa2Psk,
        cipher: CipherAlgorithm::Ccmp,
    };

    /// WPA3-Personal: SAE with CCMP (and management frame protection).
    pub const WPA3_SAE_CCMP: Security = Security {
        auth: AuthAlgorithm::Wpa3Sae,
        cipher: CipherAlgorithm::Ccmp,
    };

    /// Whether the guest driver can use this network itself: open, or
    /// WPA2-PSK or WPA3-SAE with CCMP or GCMP. A WPA3-SAE network is shown
    /// as such (a guest without SAE cannot join it, nor mirror it).
    pub fn guest_supported(&self) -> bool {
        matches!(
            (self.auth, self.cipher),
            (AuthAlgorithm::Open, CipherAlgorithm::None)
                | (
                    AuthAlgorithm::Wpa2Psk | AuthAlgorithm::Wpa3Sae,
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

    /// The security a connect request asks for, or why it cannot be
    /// honoured.
    ///
    /// By the nl80211 authentication type (decided for issue 13, documented
    /// in docs/guest-tools.md):
    /// - 0 (open system) and 8 (automatic, what `iw dev wlan0 connect`
    ///   sends) are open system authentication, then whatever the WPA
    ///   versions and AKMs say: no WPA at all (open), or WPA2 with a PSK AKM
    ///   and CCMP or GCMP (the key is the 32-byte PMK);
    /// - 4 (SAE) is WPA3-Personal: the key is the SAE password (8 to 63
    ///   printable ASCII bytes, not a PMK), the AKMs (if any) include SAE,
    ///   the pairwise cipher is CCMP or GCMP (CCMP when none is given);
    /// - 1 (shared key/WEP), 2 (FT), 3 (network EAP) and anything else are
    ///   refused: [`ConnectRefusal::UnsupportedAuthType`] (status 13).
    pub fn from_connect_request(req: &ConnectRequest) -> Result<Security, ConnectRefusal> {
        match AuthType::from_u8(req.auth_type) {
            AuthType::OpenSystem | AuthType::Automatic => Self::open_system_request(req),
            AuthType::Sae => Self::sae_request(req),
            other => Err(ConnectRefusal::UnsupportedAuthType(other)),
        }
    }

    fn open_system_request(req: &ConnectRequest) -> Result<Security, ConnectRefusal> {
        if req.wpa_versions == 0 && req.akm_suites.is_empty() && req.pairwise_ciphers.is_empty() {
            return Ok(Security::OPEN);
        }
        if req.wpa_versions != 2 {
            return Err(ConnectRefusal::Unsupported);
        }
        let psk_akm = req.akm_suites.iter().any(|a| {
            matches!(
                *a,
                akm::PSK | akm::PSK_SHA256 | akm::PSK_SHA384 | akm::FT_PSK | akm::FT_PSK_SHA384
            )
        });
        if !psk_akm {
            return Err(ConnectRefusal::Unsupported);
        }
        Ok(Security {
            auth: AuthAlgorithm::Wpa2Psk,
            cipher: preferred_cipher(&req.pairwise_ciphers).ok_or(ConnectRefusal::Unsupported)?,
        })
    }

    fn sae_request(req: &ConnectRequest) -> Result<Security, ConnectRefusal> {
        // WPA (version 1) has no SAE; WPA2 or WPA3 flags (or none) are
        // what drivers send with an SAE connect.
        if req.wpa_versions & !(2 | 4) != 0 {
            return Err(ConnectRefusal::Unsupported);
        }
        let sae_akm = req.akm_suites.is_empty()
            || req
                .akm_suites
                .iter()
                .any(|a| matches!(*a, akm::SAE | akm::FT_SAE));
        if !sae_akm {
            return Err(ConnectRefusal::Unsupported);
        }
        let cipher = if req.pairwise_ciphers.is_empty() {
            CipherAlgorithm::Ccmp
        } else {
            preferred_cipher(&req.pairwise_ciphers).ok_or(ConnectRefusal::Unsupported)?
        };
        if !is_sae_password(req.key.expose()) {
            return Err(ConnectRefusal::BadSaePassword);
        }
        Ok(Security::WPA3_SAE_CCMP.with_cipher(cipher))
    }

    fn with_cipher(self, cipher: CipherAlgorithm) -> Security {
        Security { cipher, ..self }
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

/// Whether `key` can be an SAE password: 8 to 63 printable ASCII bytes
/// (the rule the project applies to passphrases; a longer or binary SAE
/// password is refused rather than guessed at).
pub fn is_sae_password(key: &[u8]) -> bool {
    (8..=63).contains(&key.len()) && key.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// CCMP when the guest offers it, else GCMP, else nothing usable.
fn preferred_cipher(offered: &[u32]) -> Option<CipherAlgorithm> {
    if offered.contains(&cipher::CCMP) {
        Some(CipherAlgorithm::Ccmp)
    } else if offered.contains(&cipher::GCMP) {
        Some(CipherAlgorithm::Gcmp)
    } else {
        None
    }
}

/// An nl80211 authentication type (`enum nl80211_auth_type`), as a connect
/// request carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// 0: open system.
    OpenSystem,
    /// 1: shared key.
    SharedKey,
    /// 2: fast BSS transition.
    FastTransition,
    /// 3: network EAP.
    NetworkEap,
    /// 4: SAE (WPA3-Personal).
    Sae,
    /// 8: automatic (open system for the networks served here).
    Automatic,
    /// Any other value.
    Other(u8),
}

impl AuthType {
    /// The type for a connect request's `auth_type` byte.
    pub fn from_u8(value: u8) -> AuthType {
        match value {
            0 => AuthType::OpenSystem,
            1 => AuthType::SharedKey,
            2 => AuthType::FastTransition,
            3 => AuthType::NetworkEap,
            4 => AuthType::Sae,
            8 => AuthType::Automatic,
            v => AuthType::Other(v),
        }
    }

    /// A name for logs.
    pub fn name(self) -> String {
        match self {
            AuthType::OpenSystem => "open-system".into(),
            AuthType::SharedKey => "shared-key".into(),
            AuthType::FastTransition => "fast-transition".into(),
            AuthType::NetworkEap => "network-eap".into(),
            AuthType::Sae => "sae".into(),
            AuthType::Automatic => "automatic".into(),
            AuthType::Other(v) => format!("unknown ({v})"),
        }
    }
}

/// Why a connect request cannot be honoured as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// An authentication algorithm the host never uses for a guest: the
    /// guest gets IEEE 802.11 status 13 at once.
    UnsupportedAuthType(AuthType),
    /// A WPA version, AKM or cipher the host cannot honour.
    Unsupported,
    /// An SAE connect whose key is not an SAE password.
    BadSaePassword,
}

/// IEEE 802.11 status 13: "responding station does not support the
/// specified authentication algorithm".
pub const STATUS_UNSUPPORTED_AUTH_ALGORITHM: u16 = 13;

/// RSN capabilities: management frame protection capable (bit 7) and
/// required (bit 6), as WPA3-Personal requires.
const RSN_CAPABILITIES_MFP_REQUIRED: [u8; 2] = [0xc0, 0x00];

fn rsn_element_for(security: Security) -> Vec<u8> {
    let mut rsn = wpa2_psk_ccmp_rsn_element().to_vec();
    if security.auth == AuthAlgorithm::Wpa3Sae {
        // AKM suite type 8 (SAE), and MFP capable and required.
        rsn[19] = 0x08;
        rsn[20..22].copy_from_slice(&RSN_CAPABILITIES_MFP_REQUIRED);
    }
    let cipher = security.cipher;
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
                ies.extend_from_slice(&rsn_element_for(bss.security));
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
                auth: AuthAlgorithm::Wpa3Enterprise,
                cipher: CipherAlgorithm::Ccmp,
            },
            Security {
                auth: AuthAlgorithm::Wpa3Sae,
                cipher: CipherAlgorithm::Tkip,
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

        // WPA3-Personal: SAE AKM, MFP capable and required.
        let sae = guest_bss(&scanned(Security::WPA3_SAE_CCMP));
        assert_eq!(sae.capabilities, CAPABILITY_ESS | CAPABILITY_PRIVACY);
        let rsn = &sae.ies[7..];
        assert_eq!(rsn_security(rsn).unwrap().akm_suites, vec![akm::SAE]);
        assert_eq!(
            rsn_security(rsn).unwrap().pairwise_ciphers,
            vec![cipher::CCMP]
        );
        assert_eq!(&rsn[rsn.len() - 2..], &[0xc0, 0x00]);

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
        use ConnectRefusal::*;
        let sec = |r: ConnectRequest| Security::from_connect_request(&r);
        // Open system and automatic (iw connect) alike.
        for auth in [0, 8] {
            assert_eq!(sec(request(auth, 0, vec![], vec![])), Ok(Security::OPEN));
            assert_eq!(
                sec(request(auth, 2, vec![akm::PSK], vec![cipher::CCMP])),
                Ok(Security::WPA2_PSK_CCMP)
            );
        }
        for a in [
            akm::PSK_SHA256,
            akm::PSK_SHA384,
            akm::FT_PSK,
            akm::FT_PSK_SHA384,
        ] {
            assert!(sec(request(0, 2, vec![a], vec![cipher::GCMP])).is_ok());
        }
        // SAE carries the password.
        let sae = |wpa: u8, akms: Vec<u32>, ciphers: Vec<u32>, key: &[u8]| {
            let mut r = request(4, wpa, akms, ciphers);
            r.key = Key::new(key.to_vec());
            sec(r)
        };
        assert_eq!(
            sae(4, vec![akm::SAE], vec![cipher::CCMP], b"correct horse"),
            Ok(Security::WPA3_SAE_CCMP)
        );
        assert_eq!(
            sae(2, vec![akm::FT_SAE], vec![cipher::GCMP], b"correct horse"),
            Ok(Security {
                auth: AuthAlgorithm::Wpa3Sae,
                cipher: CipherAlgorithm::Gcmp
            })
        );
        assert_eq!(
            sae(0, vec![], vec![], b"12345678"),
            Ok(Security::WPA3_SAE_CCMP)
        );
        assert_eq!(
            sae(4, vec![akm::SAE], vec![], b"short"),
            Err(BadSaePassword)
        );
        assert_eq!(
            sae(4, vec![akm::SAE], vec![], &[0xAB; 32]),
            Err(BadSaePassword)
        );
        assert_eq!(
            sae(4, vec![akm::SAE], vec![], &[b'a'; 64]),
            Err(BadSaePassword)
        );
        assert_eq!(
            sae(4, vec![akm::PSK], vec![cipher::CCMP], b"correct horse"),
            Err(Unsupported)
        );
        assert_eq!(
            sae(1, vec![akm::SAE], vec![cipher::CCMP], b"correct horse"),
            Err(Unsupported)
        );
        // Shared key, FT, network EAP and unknown types: status 13.
        for (auth, t) in [
            (1, AuthType::SharedKey),
            (2, AuthType::FastTransition),
            (3, AuthType::NetworkEap),
            (5, AuthType::Other(5)),
        ] {
            assert_eq!(
                sec(request(auth, 0, vec![], vec![])),
                Err(UnsupportedAuthType(t))
            );
        }
        assert_eq!(AuthType::SharedKey.name(), "shared-key");
        assert_eq!(
            sec(request(0, 2, vec![akm::PSK], vec![cipher::TKIP])),
            Err(Unsupported)
        );
        assert_eq!(
            sec(request(0, 1, vec![akm::PSK], vec![cipher::CCMP])),
            Err(Unsupported)
        );
        assert_eq!(
            sec(request(0, 2, vec![akm::IEEE8021X], vec![cipher::CCMP])),
            Err(Unsupported)
        );
        assert_eq!(Security::WPA2_PSK_CCMP.label(), "wpa2-psk/ccmp");
        assert_eq!(Security::OPEN.label(), "open");
    }
}
