//! WPA2-PSK key derivation: what a guest sends as the key of a connect
//! request is the PMK, never the passphrase.

use super::{Key, Ssid};

/// Why a passphrase or PSK cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    #[error("a WPA2 passphrase is 8 to 63 printable ASCII characters, got {0} characters")]
    /// The passphrase is not 8 to 63 characters long (its length given).
    PassphraseLength(usize),
    #[error("a WPA2 passphrase is printable ASCII only")]
    /// The passphrase has a character outside printable ASCII.
    PassphraseCharacters,
    #[error("a raw PSK is exactly 64 hexadecimal digits")]
    /// A raw PSK that is not 64 hexadecimal digits.
    RawPsk,
}

/// PMK = PBKDF2-HMAC-SHA1(passphrase, SSID, 4096 iterations, 32 bytes), as
/// IEEE 802.11i defines it.
pub fn pmk_from_passphrase(passphrase: &str, ssid: &Ssid) -> Result<Key, PskError> {
    let n = passphrase.chars().count();
    if !(8..=63).contains(&n) {
        return Err(PskError::PassphraseLength(n));
    }
    if !passphrase.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(PskError::PassphraseCharacters);
    }
    let mut pmk = vec![0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(passphrase.as_bytes(), ssid.as_bytes(), 4096, &mut pmk);
    Ok(Key::new(pmk))
}

/// A raw PSK given as 64 hex digits.
pub fn pmk_from_hex(hex_digits: &str) -> Result<Key, PskError> {
    if hex_digits.len() != 64 {
        return Err(PskError::RawPsk);
    }
    hex::decode(hex_digits)
        .map(Key::new)
        .map_err(|_| PskError::RawPsk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ieee_802_11i_test_vectors() {
        // IEEE 802.11i-2004 Annex H.4.
        let k = pmk_from_passphrase("password", &Ssid::new(b"IEEE").unwrap()).unwrap();
        assert_eq!(
            hex::encode(k.expose()),
            "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
        );
        let k =
            pmk_from_passphrase("ThisIsAPassword", &Ssid::new(b"ThisIsASSID").unwrap()).unwrap();
        assert_eq!(
            hex::encode(k.expose()),
            "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"
        );
    }

    #[test]
    fn rejects_bad_passphrases_and_psks() {
        let s = Ssid::new(b"x").unwrap();
        assert_eq!(
            pmk_from_passphrase("short", &s),
            Err(PskError::PassphraseLength(5))
        );
        assert_eq!(
            pmk_from_passphrase("tab\there!", &s),
            Err(PskError::PassphraseCharacters)
        );
        assert!(pmk_from_hex(&"ab".repeat(32)).is_ok());
        assert_eq!(pmk_from_hex("abc"), Err(PskError::RawPsk));
        assert_eq!(pmk_from_hex(&"zz".repeat(32)), Err(PskError::RawPsk));
    }
}
