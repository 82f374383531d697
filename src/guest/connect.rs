//! What to connect to, turned into exactly the CONNECT_REQUEST the driver
//! sends for such a network.

use crate::protocol::{
    akm, cipher, pmk_from_hex, pmk_from_passphrase, ConnectRequest, Key, MacAddr, PskError, Ssid,
};

/// nl80211 auth type "open system", which the driver sends for both open and
/// WPA2-PSK networks.
const AUTH_OPEN_SYSTEM: u8 = 0;
/// The WPA2 bit of the driver's wpa_versions flags.
const WPA_VERSION_2: u8 = 2;

/// How to authenticate.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectSecurity {
    /// No security: every security field is zero and the key empty.
    Open,
    /// WPA2-PSK with CCMP; the key is the 32-byte PMK (the driver offloads
    /// the PSK, never sends the passphrase).
    Wpa2Psk(Key),
}

/// A connect request: network, security, optionally one BSS.
///
/// ```
/// use proxy_wifi::guest::ConnectSpec;
/// use proxy_wifi::protocol::Ssid;
/// let ssid = Ssid::new(b"home").unwrap();
/// let spec = ConnectSpec::wpa2_passphrase(ssid, "correct horse").unwrap();
/// assert_eq!(spec.to_request().key.len(), 32);
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct ConnectSpec {
    ssid: Ssid,
    bssid: Option<MacAddr>,
    security: ConnectSecurity,
}

impl ConnectSpec {
    /// An open network.
    pub fn open(ssid: Ssid) -> ConnectSpec {
        ConnectSpec {
            ssid,
            bssid: None,
            security: ConnectSecurity::Open,
        }
    }

    /// A WPA2-PSK network from its passphrase (8 to 63 printable ASCII
    /// characters); the PMK is derived here, PBKDF2-HMAC-SHA1 over the SSID.
    pub fn wpa2_passphrase(ssid: Ssid, passphrase: &str) -> Result<ConnectSpec, PskError> {
        let pmk = pmk_from_passphrase(passphrase, &ssid)?;
        Ok(ConnectSpec::wpa2_psk(ssid, pmk))
    }

    /// A WPA2-PSK network from the raw PSK in 64 hexadecimal digits.
    pub fn wpa2_psk_hex(ssid: Ssid, hex_digits: &str) -> Result<ConnectSpec, PskError> {
        Ok(ConnectSpec::wpa2_psk(ssid, pmk_from_hex(hex_digits)?))
    }

    /// A WPA2-PSK network from its PMK (32 bytes; sent as given).
    pub fn wpa2_psk(ssid: Ssid, pmk: Key) -> ConnectSpec {
        ConnectSpec {
            ssid,
            bssid: None,
            security: ConnectSecurity::Wpa2Psk(pmk),
        }
    }

    /// Restricts the connection to one BSS.
    pub fn bssid(mut self, bssid: MacAddr) -> ConnectSpec {
        self.bssid = (!bssid.is_zero()).then_some(bssid);
        self
    }

    /// The network to join.
    pub fn ssid(&self) -> &Ssid {
        &self.ssid
    }

    /// The BSS asked for, if the connection is restricted to one.
    pub fn requested_bssid(&self) -> Option<MacAddr> {
        self.bssid
    }

    /// The credentials.
    pub fn security(&self) -> &ConnectSecurity {
        &self.security
    }

    /// The request the driver sends for this network: auth type 0; for
    /// WPA2-PSK wpa_versions 2, AKM [PSK], pairwise [CCMP], group CCMP and
    /// the PMK as key; for an open network every security field zero.
    pub fn to_request(&self) -> ConnectRequest {
        let base = ConnectRequest {
            ssid: self.ssid,
            bssid: self.bssid,
            auth_type: AUTH_OPEN_SYSTEM,
            wpa_versions: 0,
            akm_suites: Vec::new(),
            pairwise_ciphers: Vec::new(),
            group_cipher: 0,
            key: Key::default(),
        };
        match &self.security {
            ConnectSecurity::Open => base,
            ConnectSecurity::Wpa2Psk(pmk) => ConnectRequest {
                wpa_versions: WPA_VERSION_2,
                akm_suites: vec![akm::PSK],
                pairwise_ciphers: vec![cipher::CCMP],
                group_cipher: cipher::CCMP,
                key: pmk.duplicate(),
                ..base
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Request;

    #[test]
    fn open_request_has_every_security_field_zero() {
        let spec = ConnectSpec::open(Ssid::new(b"cafe").unwrap());
        let bytes = Request::Connect(spec.to_request()).encode().unwrap();
        assert_eq!(bytes.len(), 7 + 76);
        assert_eq!(&bytes[..7], &[3, 76, 0, 0, 0, 1, 0]);
        assert_eq!(bytes[7], 4);
        assert_eq!(&bytes[8..12], b"cafe");
        // Everything after the SSID is zero: the rest of the SSID field,
        // bssid, auth, wpa, counts, suites, group, key_len.
        assert!(bytes[12..].iter().all(|b| *b == 0));
    }

    #[test]
    fn passphrase_request_carries_the_pmk_and_driver_suites() {
        // IEEE 802.11i test vector.
        let spec = ConnectSpec::wpa2_passphrase(Ssid::new(b"IEEE").unwrap(), "password")
            .unwrap()
            .bssid("02:00:00:00:00:01".parse().unwrap());
        let req = spec.to_request();
        assert_eq!(
            hex::encode(req.key.expose()),
            "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
        );
        let body = &Request::Connect(req).encode().unwrap()[7..];
        assert_eq!(body.len(), 76 + 32);
        assert_eq!(&body[33..39], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(body[39], 0, "auth_type open system");
        assert_eq!(body[40], 2, "wpa_versions WPA2");
        assert_eq!(body[41], 1);
        assert_eq!(&body[42..50], &[0x02, 0xAC, 0x0F, 0, 0, 0, 0, 0]);
        assert_eq!(body[50], 1);
        assert_eq!(&body[51..55], &[0x04, 0xAC, 0x0F, 0]);
        assert!(body[55..71].iter().all(|b| *b == 0));
        assert_eq!(&body[71..75], &[0x04, 0xAC, 0x0F, 0]);
        assert_eq!(body[75], 32);
    }

    #[test]
    fn hex_psk_and_zero_bssid() {
        let ssid = Ssid::new(b"x").unwrap();
        let spec = ConnectSpec::wpa2_psk_hex(ssid, &"ab".repeat(32))
            .unwrap()
            .bssid(MacAddr::ZERO);
        assert_eq!(spec.requested_bssid(), None);
        assert_eq!(spec.to_request().key.expose(), &[0xab; 32]);
        assert_eq!(
            ConnectSpec::wpa2_psk_hex(ssid, "abc"),
            Err(PskError::RawPsk)
        );
        assert_eq!(
            ConnectSpec::wpa2_passphrase(ssid, "short"),
            Err(PskError::PassphraseLength(5))
        );
    }
}
