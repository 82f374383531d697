use std::fmt;
use std::str::FromStr;

use zeroize::Zeroize;

/// An 802.11 SSID: 0 to 32 arbitrary bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ssid {
    bytes: [u8; 32],
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSID is at most 32 bytes, got {0}")]
/// An SSID longer than 32 bytes (its length given).
pub struct SsidError(pub usize);

impl Ssid {
    /// The longest SSID, in bytes.
    pub const MAX_LEN: usize = 32;

    /// An SSID from raw bytes (any bytes, at most 32).
    pub fn new(bytes: &[u8]) -> Result<Ssid, SsidError> {
        if bytes.len() > Self::MAX_LEN {
            return Err(SsidError(bytes.len()));
        }
        let mut ssid = Ssid::default();
        ssid.bytes[..bytes.len()].copy_from_slice(bytes);
        ssid.len = bytes.len() as u8;
        Ok(ssid)
    }

    /// The SSID's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether the SSID is empty (a hidden network's).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The SSID as text, with bytes that are not UTF-8 replaced, for display.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl FromStr for Ssid {
    type Err = SsidError;
    fn from_str(s: &str) -> Result<Ssid, SsidError> {
        Ssid::new(s.as_bytes())
    }
}

impl TryFrom<&str> for Ssid {
    type Error = SsidError;
    fn try_from(s: &str) -> Result<Ssid, SsidError> {
        Ssid::new(s.as_bytes())
    }
}

impl fmt::Display for Ssid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Escape non-printable bytes so a hostile SSID cannot forge log lines.
        for chunk in self.as_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    write!(f, "\\x{:02x}", c as u32)?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Ssid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ssid(\"{self}\")")
    }
}

impl serde::Serialize for Ssid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string_lossy())
    }
}

impl<'de> serde::Deserialize<'de> for Ssid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ssid, D::Error> {
        let s = String::deserialize(d)?;
        Ssid::new(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// A 48-bit MAC address (a BSSID here).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a MAC address of the form aa:bb:cc:dd:ee:ff")]
/// Text that is not a MAC address (the text given).
pub struct ParseMacError(pub String);

impl MacAddr {
    /// 00:00:00:00:00:00, "any BSS" in a connect request.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Whether this is [`MacAddr::ZERO`].
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<MacAddr, ParseMacError> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Key material from a connect request (for WPA2-PSK, the 32-byte PMK).
///
/// Its `Debug` shows only the length, so a key cannot reach a log line by
/// accident, and it is wiped from memory when dropped. It is not `Clone`:
/// a key is moved or lent, and the few places that need a second copy say
/// so with [`Key::duplicate`].
#[derive(PartialEq, Eq, Default)]
pub struct Key(Vec<u8>);

impl Key {
    /// Takes ownership of `bytes` (no copy is made; they are wiped with
    /// the key).
    pub fn new(bytes: Vec<u8>) -> Key {
        Key(bytes)
    }

    /// A second copy of the key, wiped on drop like the first. Explicit so
    /// that copies stay few and visible.
    pub fn duplicate(&self) -> Key {
        Key(self.0.clone())
    }

    /// The key bytes. Callers must not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key is empty (an open network).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_errors() {
        let m: MacAddr = "aa:BB:0c:dd:ee:ff".parse().unwrap();
        assert_eq!(m.0, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]);
        assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:ff");
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "a:bb:cc:dd:ee:ff",
            "zz:bb:cc:dd:ee:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ssid_limits_and_display_escapes() {
        assert!(Ssid::new(&[b'a'; 32]).is_ok());
        assert_eq!(Ssid::new(&[b'a'; 33]), Err(SsidError(33)));
        let s = Ssid::new(b"a\nb\xff").unwrap();
        assert_eq!(s.to_string(), "a\\x0ab\\xff");
    }

    #[test]
    fn key_debug_never_shows_bytes() {
        let k = Key::new(vec![0xde, 0xad, 0xbe, 0xef]);
        let shown = format!("{k:?}");
        assert!(!shown.contains("de") && !shown.contains("222"), "{shown}");
    }
}
