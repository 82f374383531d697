//! WLAN profile XML for the temporary profile a guest-directed connect uses.
//!
//! WlanAPI connects through a profile, an XML document in the
//! `http://www.microsoft.com/networking/WLAN/profile/v1` schema. The backend
//! builds one per connect and hands it to `WlanConnect` in temporary-profile
//! mode, so nothing is stored on the host. The document carries the key: it
//! is returned in a [`Zeroizing`] string and must never be logged.

use std::fmt::Write as _;

use zeroize::Zeroizing;

use crate::protocol::{Key, Ssid};
use crate::wifi::{AuthAlgorithm, CipherAlgorithm, Security};

/// Length of a WPA2 PMK in bytes (its network key is twice as many hex digits).
pub const PMK_LEN: usize = 32;

/// The key a profile carries.
#[derive(Clone, Copy)]
pub enum ProfileKey<'a> {
    /// The 32-byte PMK a guest sends: a `networkKey` of 64 hex digits.
    Pmk(&'a Key),
    /// A WPA2 passphrase or an SAE password (8 to 63 printable ASCII
    /// characters): a `passPhrase`.
    Passphrase(&'a str),
}

/// Why a profile cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("an empty SSID cannot be connected to")]
    EmptySsid,
    #[error("security {0} is not one a guest can ask the host to connect with")]
    UnsupportedSecurity(String),
    #[error("WPA2-PSK needs a key")]
    MissingKey,
    #[error("an open network takes no key")]
    UnexpectedKey,
    #[error("a WPA2 PMK is {PMK_LEN} bytes, got {0}")]
    PmkLength(usize),
    #[error("a WPA2 passphrase or SAE password is 8 to 63 printable ASCII characters")]
    Passphrase,
}

/// The `authentication` and `encryption` values of the profile schema for a
/// security the guest may ask for: open/none, WPA2PSK or WPA3SAE with AES
/// (CCMP).
///
/// The schema has no value for 128-bit GCMP (only `GCMP256`), so a WPA2-PSK
/// GCMP request is expressed as `AES`: Windows then joins the network when
/// it also offers CCMP, which nearly every GCMP-capable access point does;
/// a GCMP-only network fails to connect, and the guest is told so.
pub fn auth_encryption(security: &Security) -> Result<(&'static str, &'static str), ProfileError> {
    match (security.auth, security.cipher) {
        (AuthAlgorithm::Open, CipherAlgorithm::None) => Ok(("open", "none")),
        (AuthAlgorithm::Wpa2Psk, CipherAlgorithm::Ccmp | CipherAlgorithm::Gcmp) => {
            Ok(("WPA2PSK", "AES"))
        }
        // WPA3-Personal: the profile schema's WPA3SAE with AES, and the SAE
        // password as a `passPhrase` (as in Microsoft's WPA3-Personal
        // profile sample).
        (AuthAlgorithm::Wpa3Sae, CipherAlgorithm::Ccmp | CipherAlgorithm::Gcmp) => {
            Ok(("WPA3SAE", "AES"))
        }
        _ => Err(ProfileError::UnsupportedSecurity(security.label())),
    }
}

/// Escapes text for XML character data. Callers only pass text without
/// control characters (see [`xml_safe_text`]).
fn xml_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// The SSID as text when it can appear in an XML document as is: valid
/// UTF-8 without control characters (XML 1.0 cannot carry most of them).
pub fn xml_safe_text(ssid: &Ssid) -> Option<&str> {
    let text = std::str::from_utf8(ssid.as_bytes()).ok()?;
    if text.is_empty() || text.chars().any(char::is_control) {
        None
    } else {
        Some(text)
    }
}

/// The profile's own name: the SSID when it is printable text, else its hex
/// form, so the host's Wi-Fi UI shows something meaningful.
pub fn profile_name(ssid: &Ssid) -> String {
    match xml_safe_text(ssid) {
        Some(text) => text.to_string(),
        None => hex::encode_upper(ssid.as_bytes()),
    }
}

/// Builds the profile for a connection to `ssid` with `security` and `key`.
///
/// The SSID is given as `hex` (exact for any bytes) and, when it is
/// printable text, also as an escaped `name`. A PMK becomes a `networkKey`
/// of 64 hex digits with `protected` false, a passphrase a `passPhrase`.
/// Open networks carry no `sharedKey` element.
pub fn profile_xml(
    ssid: &Ssid,
    security: &Security,
    key: Option<ProfileKey<'_>>,
) -> Result<Zeroizing<String>, ProfileError> {
    if ssid.is_empty() {
        return Err(ProfileError::EmptySsid);
    }
    let (authentication, encryption) = auth_encryption(security)?;
    let shared_key = match (security.auth, key) {
        (AuthAlgorithm::Open, None) => None,
        (AuthAlgorithm::Open, Some(_)) => return Err(ProfileError::UnexpectedKey),
        (_, None) => return Err(ProfileError::MissingKey),
        // An SAE password is never a PMK: a `networkKey` would be taken as
        // the password's hex text.
        (AuthAlgorithm::Wpa3Sae, Some(ProfileKey::Pmk(_))) => return Err(ProfileError::Passphrase),
        (_, Some(ProfileKey::Pmk(pmk))) => {
            if pmk.len() != PMK_LEN {
                return Err(ProfileError::PmkLength(pmk.len()));
            }
            Some((
                "networkKey",
                Zeroizing::new(hex::encode_upper(pmk.expose())),
            ))
        }
        (_, Some(ProfileKey::Passphrase(p))) => {
            let n = p.chars().count();
            if !(8..=63).contains(&n) || !p.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                return Err(ProfileError::Passphrase);
            }
            // Escaping at most sextuples a character: no reallocation copies the key.
            let mut escaped = Zeroizing::new(String::with_capacity(p.len() * 6));
            xml_escape(p, &mut escaped);
            Some(("passPhrase", escaped))
        }
    };

    // Sized up front so the key is never copied by a reallocation.
    let mut xml = Zeroizing::new(String::with_capacity(4096));
    let out: &mut String = &mut xml;
    out.push_str("<?xml version=\"1.0\"?>\n");
    out.push_str("<WLANProfile xmlns=\"http://www.microsoft.com/networking/WLAN/profile/v1\">\n");
    out.push_str("  <name>");
    xml_escape(&profile_name(ssid), out);
    out.push_str("</name>\n");
    out.push_str("  <SSIDConfig>\n    <SSID>\n");
    let _ = writeln!(
        out,
        "      <hex>{}</hex>",
        hex::encode_upper(ssid.as_bytes())
    );
    if let Some(text) = xml_safe_text(ssid) {
        out.push_str("      <name>");
        xml_escape(text, out);
        out.push_str("</name>\n");
    }
    out.push_str("    </SSID>\n  </SSIDConfig>\n");
    out.push_str("  <connectionType>ESS</connectionType>\n");
    out.push_str("  <connectionMode>manual</connectionMode>\n");
    out.push_str("  <MSM>\n    <security>\n      <authEncryption>\n");
    let _ = writeln!(
        out,
        "        <authentication>{authentication}</authentication>"
    );
    let _ = writeln!(out, "        <encryption>{encryption}</encryption>");
    out.push_str("        <useOneX>false</useOneX>\n");
    out.push_str("      </authEncryption>\n");
    if let Some((key_type, material)) = &shared_key {
        out.push_str("      <sharedKey>\n");
        let _ = writeln!(out, "        <keyType>{key_type}</keyType>");
        out.push_str("        <protected>false</protected>\n");
        out.push_str("        <keyMaterial>");
        out.push_str(material);
        out.push_str("</keyMaterial>\n");
        out.push_str("      </sharedKey>\n");
    }
    out.push_str("    </security>\n  </MSM>\n</WLANProfile>\n");
    Ok(xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssid(b: &[u8]) -> Ssid {
        Ssid::new(b).unwrap()
    }

    fn between<'a>(xml: &'a str, open: &str, close: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut rest = xml;
        while let Some(i) = rest.find(open) {
            let after = &rest[i + open.len()..];
            let Some(j) = after.find(close) else { break };
            out.push(&after[..j]);
            rest = &after[j + close.len()..];
        }
        out
    }

    #[test]
    fn open_profile_has_no_shared_key() {
        let xml = profile_xml(&ssid(b"Cafe"), &Security::OPEN, None).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\"?>"));
        assert_eq!(between(&xml, "<hex>", "</hex>"), vec!["43616665"]);
        assert_eq!(between(&xml, "<name>", "</name>"), vec!["Cafe", "Cafe"]);
        assert_eq!(
            between(&xml, "<authentication>", "</authentication>"),
            vec!["open"]
        );
        assert_eq!(between(&xml, "<encryption>", "</encryption>"), vec!["none"]);
        assert!(!xml.contains("sharedKey"));
        assert!(xml.contains("<connectionType>ESS</connectionType>"));
        assert!(xml.contains("<useOneX>false</useOneX>"));
    }

    #[test]
    fn pmk_is_a_64_hex_digit_unprotected_network_key() {
        let pmk = Key::new((0u8..32).collect());
        let xml = profile_xml(
            &ssid(b"Home"),
            &Security::WPA2_PSK_CCMP,
            Some(ProfileKey::Pmk(&pmk)),
        )
        .unwrap();
        assert_eq!(
            between(&xml, "<authentication>", "</authentication>"),
            vec!["WPA2PSK"]
        );
        assert_eq!(between(&xml, "<encryption>", "</encryption>"), vec!["AES"]);
        assert_eq!(between(&xml, "<keyType>", "</keyType>"), vec!["networkKey"]);
        assert_eq!(between(&xml, "<protected>", "</protected>"), vec!["false"]);
        let material = between(&xml, "<keyMaterial>", "</keyMaterial>");
        assert_eq!(material.len(), 1);
        assert_eq!(material[0].len(), 64);
        assert_eq!(material[0], hex::encode_upper(pmk.expose()));
    }

    #[test]
    fn the_key_is_never_moved_by_a_reallocation() {
        // Worst case: every SSID byte escaped (twice), and a passphrase of
        // 63 characters that all need escaping. The buffer is sized up front,
        // so no copy of the key is left behind in freed memory.
        let xml = profile_xml(
            &ssid(&[b'&'; 32]),
            &Security::WPA2_PSK_CCMP,
            Some(ProfileKey::Passphrase(&"<".repeat(63))),
        )
        .unwrap();
        assert_eq!(xml.capacity(), 4096);
        let pmk = Key::new(vec![0xff; 32]);
        let xml = profile_xml(
            &ssid(&[b'&'; 32]),
            &Security::WPA2_PSK_CCMP,
            Some(ProfileKey::Pmk(&pmk)),
        )
        .unwrap();
        assert_eq!(xml.capacity(), 4096);
    }

    #[test]
    fn passphrase_is_a_pass_phrase_and_escaped() {
        let xml = profile_xml(
            &ssid(b"Home"),
            &Security::WPA2_PSK_CCMP,
            Some(ProfileKey::Passphrase("se<cret&1")),
        )
        .unwrap();
        assert_eq!(between(&xml, "<keyType>", "</keyType>"), vec!["passPhrase"]);
        assert_eq!(
            between(&xml, "<keyMaterial>", "</keyMaterial>"),
            vec!["se&lt;cret&amp;1"]
        );
        for bad in ["short", "tab\there!", &"x".repeat(64)] {
            assert_eq!(
                profile_xml(
                    &ssid(b"Home"),
                    &Security::WPA2_PSK_CCMP,
                    Some(ProfileKey::Passphrase(bad))
                )
                .unwrap_err(),
                ProfileError::Passphrase
            );
        }
    }

    #[test]
    fn sae_is_wpa3sae_with_the_password_as_pass_phrase() {
        let xml = profile_xml(
            &ssid(b"Home"),
            &Security::WPA3_SAE_CCMP,
            Some(ProfileKey::Passphrase("correct horse")),
        )
        .unwrap();
        assert_eq!(
            between(&xml, "<authentication>", "</authentication>"),
            vec!["WPA3SAE"]
        );
        assert_eq!(between(&xml, "<encryption>", "</encryption>"), vec!["AES"]);
        assert_eq!(between(&xml, "<keyType>", "</keyType>"), vec!["passPhrase"]);
        assert_eq!(
            between(&xml, "<keyMaterial>", "</keyMaterial>"),
            vec!["correct horse"]
        );
        assert_eq!(
            profile_xml(
                &ssid(b"Home"),
                &Security::WPA3_SAE_CCMP,
                Some(ProfileKey::Passphrase("short"))
            )
            .unwrap_err(),
            ProfileError::Passphrase
        );
    }

    #[test]
    fn gcmp_uses_the_schema_aes_value() {
        let gcmp = Security {
            auth: AuthAlgorithm::Wpa2Psk,
            cipher: CipherAlgorithm::Gcmp,
        };
        assert_eq!(auth_encryption(&gcmp), Ok(("WPA2PSK", "AES")));
    }

    #[test]
    fn ssid_is_escaped_or_given_in_hex_only() {
        let xml = profile_xml(&ssid(b"<a&b>\"'"), &Security::OPEN, None).unwrap();
        assert_eq!(
            between(&xml, "<name>", "</name>"),
            vec!["&lt;a&amp;b&gt;&quot;&apos;", "&lt;a&amp;b&gt;&quot;&apos;"]
        );
        // Not UTF-8, or with control characters: hex only, and the profile
        // is named by the hex form.
        for raw in [&b"\xff\xfe"[..], &b"a\nb"[..], &b"\x00"[..]] {
            let xml = profile_xml(&ssid(raw), &Security::OPEN, None).unwrap();
            let hex = hex::encode_upper(raw);
            assert_eq!(between(&xml, "<hex>", "</hex>"), vec![hex.as_str()]);
            assert_eq!(between(&xml, "<name>", "</name>"), vec![hex.as_str()]);
            assert!(!xml.contains("a\nb"));
        }
    }

    #[test]
    fn refuses_what_the_guest_cannot_ask_for() {
        let pmk = Key::new(vec![1; 32]);
        assert_eq!(
            profile_xml(&Ssid::default(), &Security::OPEN, None).unwrap_err(),
            ProfileError::EmptySsid
        );
        assert_eq!(
            profile_xml(&ssid(b"x"), &Security::WPA2_PSK_CCMP, None).unwrap_err(),
            ProfileError::MissingKey
        );
        assert_eq!(
            profile_xml(&ssid(b"x"), &Security::OPEN, Some(ProfileKey::Pmk(&pmk))).unwrap_err(),
            ProfileError::UnexpectedKey
        );
        assert_eq!(
            profile_xml(
                &ssid(b"x"),
                &Security::WPA2_PSK_CCMP,
                Some(ProfileKey::Pmk(&Key::new(vec![1; 31])))
            )
            .unwrap_err(),
            ProfileError::PmkLength(31)
        );
        // An SAE password is never a PMK.
        assert_eq!(
            profile_xml(
                &ssid(b"x"),
                &Security::WPA3_SAE_CCMP,
                Some(ProfileKey::Pmk(&pmk))
            )
            .unwrap_err(),
            ProfileError::Passphrase
        );
        for sec in [
            Security {
                auth: AuthAlgorithm::Wpa3Enterprise,
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
            assert!(matches!(
                profile_xml(&ssid(b"x"), &sec, Some(ProfileKey::Pmk(&pmk))),
                Err(ProfileError::UnsupportedSecurity(_))
            ));
        }
    }
}
