//! Pure conversions between NetworkManager's D-Bus values and this crate's
//! types: no I/O, unit tested here.

use std::collections::HashMap;
use std::str::FromStr;

use zbus::zvariant::{Array, OwnedValue, Value};
use zeroize::Zeroizing;

use crate::protocol::{quality_percent_to_dbm, MacAddr, Ssid, CAPABILITY_ESS, CAPABILITY_PRIVACY};
use crate::wifi::{
    AuthAlgorithm, CipherAlgorithm, ConnectParams, InterfaceError, ScannedBss, Security,
};

use super::proxies::Settings;

/// `NM80211ApFlags`: the AP's beacon has the Privacy bit.
pub const AP_FLAGS_PRIVACY: u32 = 0x1;

/// `NM80211ApSecurityFlags` values (WpaFlags and RsnFlags).
pub mod sec {
    /// Pairwise WEP-40.
    pub const PAIR_WEP40: u32 = 0x1;
    /// Pairwise WEP-104.
    pub const PAIR_WEP104: u32 = 0x2;
    /// Pairwise TKIP.
    pub const PAIR_TKIP: u32 = 0x4;
    /// Pairwise CCMP.
    pub const PAIR_CCMP: u32 = 0x8;
    /// Group WEP-40.
    pub const GROUP_WEP40: u32 = 0x10;
    /// Group WEP-104.
    pub const GROUP_WEP104: u32 = 0x20;
    /// Group TKIP.
    pub const GROUP_TKIP: u32 = 0x40;
    /// Group CCMP.
    pub const GROUP_CCMP: u32 = 0x80;
    /// Key management PSK.
    pub const KEY_MGMT_PSK: u32 = 0x100;
    /// Key management 802.1X.
    pub const KEY_MGMT_802_1X: u32 = 0x200;
    /// Key management SAE.
    pub const KEY_MGMT_SAE: u32 = 0x400;
    /// Key management OWE.
    pub const KEY_MGMT_OWE: u32 = 0x800;
    /// Key management OWE transition mode.
    pub const KEY_MGMT_OWE_TM: u32 = 0x1000;
    /// Key management EAP Suite B 192-bit.
    pub const KEY_MGMT_EAP_SUITE_B_192: u32 = 0x2000;
}

/// `NM80211Mode`: ad-hoc.
const MODE_ADHOC: u32 = 1;
/// 802.11 Capability Information: IBSS.
const CAPABILITY_IBSS: u16 = 0x0002;

/// `NMDeviceType` of a Wi-Fi device.
pub const DEVICE_TYPE_WIFI: u32 = 2;

/// `NMDeviceState` values the backend acts on.
pub mod state {
    /// Not managed by NetworkManager.
    pub const UNMANAGED: u32 = 10;
    /// Disconnected.
    pub const DISCONNECTED: u32 = 30;
    /// Preparing a connection.
    pub const PREPARE: u32 = 40;
    /// Associated (and authenticated): the link is up, IP configuration
    /// starts.
    pub const IP_CONFIG: u32 = 70;
    /// Connected.
    pub const ACTIVATED: u32 = 100;
    /// The connection failed.
    pub const FAILED: u32 = 120;
}

/// `NMDeviceStateReason` values with a meaning for the guest.
pub mod reason {
    /// Secrets were required but not given (a wrong key, for instance).
    pub const NO_SECRETS: u32 = 7;
    /// The supplicant disconnected.
    pub const SUPPLICANT_DISCONNECT: u32 = 8;
    /// The supplicant timed out.
    pub const SUPPLICANT_TIMEOUT: u32 = 11;
    /// The SSID was not found.
    pub const SSID_NOT_FOUND: u32 = 53;
}

/// Prefix of the `connection.id` of every profile the proxy creates.
pub const PROFILE_ID_PREFIX: &str = "proxy-wifi-";
/// Key of the marker the proxy puts in the `user` setting of its profiles.
pub const PROFILE_MARKER_KEY: &str = "org.proxy-wifi.managed";
/// Its value.
pub const PROFILE_MARKER_VALUE: &str = "1";

pub use crate::wifi::dbus::interface_id;

/// Pairwise cipher from security flags: the strongest one advertised.
fn pairwise_cipher(flags: u32) -> CipherAlgorithm {
    if flags & sec::PAIR_CCMP != 0 {
        CipherAlgorithm::Ccmp
    } else if flags & sec::PAIR_TKIP != 0 {
        CipherAlgorithm::Tkip
    } else if flags & (sec::PAIR_WEP40 | sec::PAIR_WEP104) != 0 {
        CipherAlgorithm::Wep
    } else {
        // NetworkManager has no flag for GCMP and others.
        CipherAlgorithm::Other
    }
}

/// The security of an access point from its `Flags`, `WpaFlags` and
/// `RsnFlags`.
///
/// An RSN network offering PSK is WPA2-PSK even when it also offers SAE
/// (WPA3 transition mode), since a WPA2-PSK client can join it. The open
/// half of an OWE transition pair (only `KEY_MGMT_OWE_TM`) is open.
pub fn security_from_flags(flags: u32, wpa_flags: u32, rsn_flags: u32) -> Security {
    let key_mgmt = |f: u32| {
        f & (sec::KEY_MGMT_PSK
            | sec::KEY_MGMT_802_1X
            | sec::KEY_MGMT_SAE
            | sec::KEY_MGMT_OWE
            | sec::KEY_MGMT_EAP_SUITE_B_192)
    };
    if key_mgmt(rsn_flags) != 0 {
        let auth = if rsn_flags & sec::KEY_MGMT_PSK != 0 {
            AuthAlgorithm::Wpa2Psk
        } else if rsn_flags & sec::KEY_MGMT_SAE != 0 {
            AuthAlgorithm::Wpa3Sae
        } else if rsn_flags & sec::KEY_MGMT_EAP_SUITE_B_192 != 0 {
            AuthAlgorithm::Wpa3Enterprise
        } else if rsn_flags & sec::KEY_MGMT_802_1X != 0 {
            AuthAlgorithm::Wpa2
        } else {
            AuthAlgorithm::Owe
        };
        return Security {
            auth,
            cipher: pairwise_cipher(rsn_flags),
        };
    }
    if key_mgmt(wpa_flags) != 0 {
        let auth = if wpa_flags & sec::KEY_MGMT_PSK != 0 {
            AuthAlgorithm::WpaPsk
        } else if wpa_flags & sec::KEY_MGMT_802_1X != 0 {
            AuthAlgorithm::Wpa
        } else {
            AuthAlgorithm::Other
        };
        return Security {
            auth,
            cipher: pairwise_cipher(wpa_flags),
        };
    }
    if flags & AP_FLAGS_PRIVACY != 0 {
        // Privacy without WPA or RSN: static WEP (open or shared key, the
        // beacon does not say which).
        return Security {
            auth: AuthAlgorithm::Open,
            cipher: CipherAlgorithm::Wep,
        };
    }
    Security::OPEN
}

/// 802.11 capability bits from the AP's mode and flags.
pub fn capabilities(mode: u32, flags: u32) -> u16 {
    let base = if mode == MODE_ADHOC {
        CAPABILITY_IBSS
    } else {
        CAPABILITY_ESS
    };
    if flags & AP_FLAGS_PRIVACY != 0 {
        base | CAPABILITY_PRIVACY
    } else {
        base
    }
}

/// Signal strength in percent, as NetworkManager reports it, to dBm.
pub fn strength_to_dbm(percent: u8) -> i32 {
    i32::from(quality_percent_to_dbm(i32::from(percent)))
}

/// NetworkManager frequencies are in MHz; the guest wants kHz.
pub fn mhz_to_khz(mhz: u32) -> u32 {
    mhz.saturating_mul(1000)
}

fn get<'a, T>(props: &'a HashMap<String, OwnedValue>, name: &str) -> Option<T>
where
    T: TryFrom<&'a Value<'a>>,
{
    let v: &'a Value<'a> = props.get(name)?;
    T::try_from(v).ok()
}

/// An `ay` value as bytes.
pub fn bytes_of(value: &Value<'_>) -> Option<Vec<u8>> {
    let array: &Array<'_> = value.try_into().ok()?;
    array
        .iter()
        .map(|b| u8::try_from(b).ok())
        .collect::<Option<Vec<u8>>>()
}

/// One BSS from the properties of an AccessPoint object
/// (`GetAll("org.freedesktop.NetworkManager.AccessPoint")`). `None` when a
/// property the guest needs is missing or malformed (the BSS is skipped).
pub fn bss_from_properties(props: &HashMap<String, OwnedValue>) -> Option<ScannedBss> {
    let bssid = MacAddr::from_str(get::<&str>(props, "HwAddress")?).ok()?;
    let ssid = Ssid::new(&bytes_of(props.get("Ssid")?)?).ok()?;
    let freq_khz = mhz_to_khz(get::<u32>(props, "Frequency")?);
    let strength = get::<u8>(props, "Strength").unwrap_or(0);
    let flags = get::<u32>(props, "Flags").unwrap_or(0);
    let wpa = get::<u32>(props, "WpaFlags").unwrap_or(0);
    let rsn = get::<u32>(props, "RsnFlags").unwrap_or(0);
    let mode = get::<u32>(props, "Mode").unwrap_or(0);
    Some(ScannedBss {
        bssid,
        ssid,
        capabilities: Some(capabilities(mode, flags)),
        rssi_dbm: strength_to_dbm(strength),
        beacon_interval: None,
        freq_khz,
        security: security_from_flags(flags, wpa, rsn),
        ies: vec![],
    })
}

/// The `RsnFlags` of an access point's properties (0 when absent).
pub fn rsn_flags(props: &HashMap<String, OwnedValue>) -> u32 {
    get::<u32>(props, "RsnFlags").unwrap_or(0)
}

/// Whether RSN flags offer both WPA2-PSK and WPA3-SAE: a WPA3 transition
/// network, which a WPA2-PSK client may join.
pub fn is_psk_sae_transition(rsn_flags: u32) -> bool {
    rsn_flags & sec::KEY_MGMT_PSK != 0 && rsn_flags & sec::KEY_MGMT_SAE != 0
}

/// 802.11 status "invalid AKMP": what a guest gets when it asks to join a
/// WPA2/WPA3 transition network with a PMK (see
/// [`is_psk_sae_transition`] and docs/networkmanager.md).
pub const STATUS_INVALID_AKMP: u16 = 43;

/// The PMK as the 64 hex digits NetworkManager takes as a raw PSK. Wiped
/// from memory when dropped; never log it.
pub fn psk_hex(key: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(hex::encode(key))
}

/// The value of the profile's `psk` setting for a connect: the PMK as 64 hex
/// digits for WPA2-PSK, the SAE password as is for WPA3-SAE (key-mgmt
/// `sae` takes the password), nothing for an open network or a key that
/// cannot be one (the profile then refuses it). Wiped when dropped.
pub fn profile_secret(params: &ConnectParams) -> Option<Zeroizing<String>> {
    let key = params.key.as_ref()?;
    match params.security.auth {
        AuthAlgorithm::Wpa3Sae => std::str::from_utf8(key.expose())
            .ok()
            .map(|p| Zeroizing::new(p.to_string())),
        _ => Some(psk_hex(key.expose())),
    }
}

/// The profile name of a guest connection to `ssid`.
pub fn profile_id(ssid: &Ssid) -> String {
    format!("{PROFILE_ID_PREFIX}{}", ssid.to_string_lossy())
}

/// Why a connect request cannot become a NetworkManager profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("a WPA2-PSK connection needs a 32-byte PMK, got {0} bytes")]
    /// A PMK (of the length given) that is not 32 bytes.
    BadKey(usize),
    #[error("a WPA3-SAE connection needs an SAE password of 8 to 63 printable ASCII characters")]
    /// An SAE password that is not 8 to 63 printable ASCII characters.
    BadSaePassword,
    #[error("security {0} is not one a guest can ask for")]
    /// A security (named) a guest cannot ask for.
    Unsupported(String),
}

/// The settings of a profile for a guest-directed connection: bound to
/// `interface`, never autoconnecting, marked as the proxy's, with the guest's
/// PMK as a raw 64-hex-digit PSK for WPA2-PSK, or key-mgmt `sae` with the
/// guest's SAE password as `psk` for WPA3-SAE (`psk` is
/// [`profile_secret`]'s value). The values borrow `psk`.
pub fn profile_settings<'a>(
    params: &ConnectParams,
    interface: &'a str,
    uuid: &'a str,
    id: &'a str,
    psk: Option<&'a str>,
) -> Result<HashMap<&'static str, HashMap<&'static str, Value<'a>>>, ProfileError> {
    let mut connection: HashMap<&'static str, Value<'a>> = HashMap::new();
    connection.insert("id", Value::from(id));
    connection.insert("uuid", Value::from(uuid));
    connection.insert("type", Value::from("802-11-wireless"));
    connection.insert("autoconnect", Value::from(false));
    connection.insert("interface-name", Value::from(interface));

    let mut wireless: HashMap<&'static str, Value<'a>> = HashMap::new();
    wireless.insert("ssid", Value::from(params.ssid.as_bytes().to_vec()));
    wireless.insert("mode", Value::from("infrastructure"));
    if let Some(bssid) = params.bssid.filter(|b| !b.is_zero()) {
        wireless.insert("bssid", Value::from(bssid.0.to_vec()));
    }

    let mut marker = HashMap::new();
    marker.insert(
        PROFILE_MARKER_KEY.to_string(),
        PROFILE_MARKER_VALUE.to_string(),
    );
    let mut user: HashMap<&'static str, Value<'a>> = HashMap::new();
    user.insert("data", Value::from(marker));

    let mut settings = HashMap::new();
    match (params.security.auth, params.security.cipher) {
        (AuthAlgorithm::Open, CipherAlgorithm::None) => {}
        (AuthAlgorithm::Wpa2Psk, CipherAlgorithm::Ccmp | CipherAlgorithm::Gcmp) => {
            let psk = match (psk, params.key.as_ref()) {
                (Some(psk), Some(key)) if key.len() == 32 => psk,
                (_, key) => return Err(ProfileError::BadKey(key.map_or(0, |k| k.len()))),
            };
            let mut security: HashMap<&'static str, Value<'a>> = HashMap::new();
            security.insert("key-mgmt", Value::from("wpa-psk"));
            security.insert("auth-alg", Value::from("open"));
            security.insert("psk", Value::from(psk));
            settings.insert("802-11-wireless-security", security);
            wireless.insert("security", Value::from("802-11-wireless-security"));
        }
        (AuthAlgorithm::Wpa3Sae, CipherAlgorithm::Ccmp | CipherAlgorithm::Gcmp) => {
            let password = match (psk, params.key.as_ref()) {
                (Some(p), Some(key)) if crate::wifi::is_sae_password(key.expose()) => p,
                _ => return Err(ProfileError::BadSaePassword),
            };
            let mut security: HashMap<&'static str, Value<'a>> = HashMap::new();
            security.insert("key-mgmt", Value::from("sae"));
            security.insert("psk", Value::from(password));
            settings.insert("802-11-wireless-security", security);
            wireless.insert("security", Value::from("802-11-wireless-security"));
        }
        _ => return Err(ProfileError::Unsupported(params.security.label())),
    }
    settings.insert("connection", connection);
    settings.insert("802-11-wireless", wireless);
    settings.insert("user", user);
    Ok(settings)
}

/// Whether a profile is one the proxy created: its id has the proxy's prefix
/// and it carries the proxy's marker. Profiles of the host never match.
pub fn is_proxy_profile(settings: &Settings) -> bool {
    let id_ok = settings
        .get("connection")
        .and_then(|c| c.get("id"))
        .and_then(|v| <&str>::try_from(&**v).ok())
        .is_some_and(|id| id.starts_with(PROFILE_ID_PREFIX));
    let marker_ok = settings
        .get("user")
        .and_then(|u| u.get("data"))
        .and_then(|v| HashMap::<String, String>::try_from(v.try_clone().ok()?).ok())
        .is_some_and(|data| {
            data.get(PROFILE_MARKER_KEY).map(String::as_str) == Some(PROFILE_MARKER_VALUE)
        });
    id_ok && marker_ok
}

/// The SSID of a profile's `802-11-wireless` setting.
pub fn profile_ssid(settings: &Settings) -> Option<Ssid> {
    let v = settings.get("802-11-wireless")?.get("ssid")?;
    Ssid::new(&bytes_of(v)?).ok()
}

/// The error a failed activation becomes, from the device's state reason.
pub fn activation_failure(reason: u32, ssid: &Ssid) -> InterfaceError {
    match reason {
        reason::SSID_NOT_FOUND => InterfaceError::NotFound(ssid.to_string_lossy()),
        // NetworkManager does not pass on an 802.11 status code, so a refused
        // key is a plain failure (status 1 for the guest), with a clear log.
        reason::NO_SECRETS | reason::SUPPLICANT_DISCONNECT | reason::SUPPLICANT_TIMEOUT => {
            InterfaceError::KeyRefused { reason }
        }
        other => InterfaceError::ActivationFailed { reason: other },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Key;

    fn props(entries: Vec<(&str, Value<'static>)>) -> HashMap<String, OwnedValue> {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), OwnedValue::try_from(v).unwrap()))
            .collect()
    }

    #[test]
    fn security_flags_map_to_auth_and_cipher() {
        let psk_ccmp = sec::KEY_MGMT_PSK | sec::PAIR_CCMP | sec::GROUP_CCMP;
        assert_eq!(
            security_from_flags(AP_FLAGS_PRIVACY, 0, psk_ccmp),
            Security::WPA2_PSK_CCMP
        );
        // WPA3 transition mode: a WPA2-PSK client can join.
        assert_eq!(
            security_from_flags(AP_FLAGS_PRIVACY, 0, psk_ccmp | sec::KEY_MGMT_SAE),
            Security::WPA2_PSK_CCMP
        );
        assert_eq!(
            security_from_flags(AP_FLAGS_PRIVACY, 0, sec::KEY_MGMT_SAE | sec::PAIR_CCMP).auth,
            AuthAlgorithm::Wpa3Sae
        );
        assert_eq!(
            security_from_flags(AP_FLAGS_PRIVACY, 0, sec::KEY_MGMT_802_1X | sec::PAIR_CCMP),
            Security {
                auth: AuthAlgorithm::Wpa2,
                cipher: CipherAlgorithm::Ccmp
            }
        );
        assert_eq!(
            security_from_flags(
                AP_FLAGS_PRIVACY,
                0,
                sec::KEY_MGMT_EAP_SUITE_B_192 | sec::KEY_MGMT_802_1X
            )
            .auth,
            AuthAlgorithm::Wpa3Enterprise
        );
        assert_eq!(
            security_from_flags(AP_FLAGS_PRIVACY, 0, sec::KEY_MGMT_OWE | sec::PAIR_CCMP).auth,
            AuthAlgorithm::Owe
        );
        // TKIP-only WPA2 and WPA1.
        assert_eq!(
            security_from_flags(
                AP_FLAGS_PRIVACY,
                0,
                sec::KEY_MGMT_PSK | sec::PAIR_TKIP | sec::GROUP_TKIP
            ),
            Security {
                auth: AuthAlgorithm::Wpa2Psk,
                cipher: CipherAlgorithm::Tkip
            }
        );
        assert_eq!(
            security_from_flags(AP_FLAGS_PRIVACY, sec::KEY_MGMT_PSK | sec::PAIR_TKIP, 0),
            Security {
                auth: AuthAlgorithm::WpaPsk,
                cipher: CipherAlgorithm::Tkip
            }
        );
        // RSN wins over WPA on a mixed network.
        assert_eq!(
            security_from_flags(
                AP_FLAGS_PRIVACY,
                sec::KEY_MGMT_PSK | sec::PAIR_TKIP,
                sec::KEY_MGMT_PSK | sec::PAIR_CCMP
            ),
            Security::WPA2_PSK_CCMP
        );
        // PSK with a pairwise cipher NetworkManager has no flag for.
        assert_eq!(
            security_from_flags(AP_FLAGS_PRIVACY, 0, sec::KEY_MGMT_PSK),
            Security {
                auth: AuthAlgorithm::Wpa2Psk,
                cipher: CipherAlgorithm::Other
            }
        );
        assert_eq!(
            security_from_flags(AP_FLAGS_PRIVACY, 0, 0),
            Security {
                auth: AuthAlgorithm::Open,
                cipher: CipherAlgorithm::Wep
            }
        );
        assert_eq!(security_from_flags(0, 0, 0), Security::OPEN);
        assert_eq!(
            security_from_flags(0, 0, sec::KEY_MGMT_OWE_TM),
            Security::OPEN
        );
        // What the guest sees: unsupported networks read as WPA2-PSK/CCMP.
        assert!(
            security_from_flags(AP_FLAGS_PRIVACY, 0, sec::KEY_MGMT_PSK | sec::PAIR_CCMP)
                .guest_supported()
        );
        assert!(!security_from_flags(AP_FLAGS_PRIVACY, 0, sec::KEY_MGMT_SAE).guest_supported());
    }

    #[test]
    fn capabilities_follow_mode_and_privacy() {
        assert_eq!(capabilities(2, 0), CAPABILITY_ESS);
        assert_eq!(
            capabilities(2, AP_FLAGS_PRIVACY),
            CAPABILITY_ESS | CAPABILITY_PRIVACY
        );
        assert_eq!(capabilities(MODE_ADHOC, 0), CAPABILITY_IBSS);
    }

    #[test]
    fn units_convert() {
        assert_eq!(mhz_to_khz(2437), 2_437_000);
        assert_eq!(mhz_to_khz(u32::MAX), u32::MAX);
        assert_eq!(strength_to_dbm(80), -60);
        assert_eq!(strength_to_dbm(0), -100);
        assert_eq!(strength_to_dbm(255), -50);
    }

    #[test]
    fn interface_ids_are_stable_and_distinct() {
        let a = interface_id(Some("11:22:33:44:55:66"), "wlan0");
        assert_eq!(a, interface_id(Some("11:22:33:44:55:66"), "wlp2s0"));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, interface_id(Some("11:22:33:44:55:67"), "wlan0"));
        let by_name = interface_id(None, "wlan0");
        assert_eq!(by_name, interface_id(Some("00:00:00:00:00:00"), "wlan0"));
        assert_eq!(by_name, interface_id(Some(""), "wlan0"));
        assert_ne!(by_name, interface_id(None, "wlan1"));
        assert_ne!(by_name, a);
    }

    #[test]
    fn access_point_properties_become_a_bss() {
        let p = props(vec![
            ("HwAddress", Value::from("AA:BB:CC:00:11:22")),
            ("Ssid", Value::from(b"home".to_vec())),
            ("Frequency", Value::from(5180u32)),
            ("Strength", Value::from(70u8)),
            ("Flags", Value::from(AP_FLAGS_PRIVACY)),
            ("WpaFlags", Value::from(0u32)),
            ("RsnFlags", Value::from(sec::KEY_MGMT_PSK | sec::PAIR_CCMP)),
            ("Mode", Value::from(2u32)),
        ]);
        let bss = bss_from_properties(&p).unwrap();
        assert_eq!(bss.bssid, MacAddr([0xaa, 0xbb, 0xcc, 0, 0x11, 0x22]));
        assert_eq!(bss.ssid.as_bytes(), b"home");
        assert_eq!(bss.freq_khz, 5_180_000);
        assert_eq!(bss.rssi_dbm, -65);
        assert_eq!(bss.security, Security::WPA2_PSK_CCMP);
        assert_eq!(bss.capabilities, Some(CAPABILITY_ESS | CAPABILITY_PRIVACY));
        assert_eq!(bss.beacon_interval, None);
        assert!(bss.ies.is_empty());

        let mut bad = p.clone();
        bad.insert(
            "HwAddress".into(),
            OwnedValue::try_from(Value::from("nonsense")).unwrap(),
        );
        assert_eq!(bss_from_properties(&bad), None);
        let mut long = p.clone();
        long.insert(
            "Ssid".into(),
            OwnedValue::try_from(Value::from(vec![b'x'; 33])).unwrap(),
        );
        assert_eq!(bss_from_properties(&long), None);
        let mut no_freq = p;
        no_freq.remove("Frequency");
        assert_eq!(bss_from_properties(&no_freq), None);
    }

    fn params(security: Security, key: Option<Vec<u8>>) -> ConnectParams {
        ConnectParams {
            ssid: Ssid::new(b"cafe").unwrap(),
            bssid: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            security,
            key: key.map(Key::new),
        }
    }

    fn owned(s: HashMap<&'static str, HashMap<&'static str, Value<'_>>>) -> Settings {
        s.into_iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.into_iter()
                        .map(|(k, v)| (k.to_string(), OwnedValue::try_from(v).unwrap()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn wpa2_profile_carries_pmk_as_hex_psk_and_marker() {
        let p = params(Security::WPA2_PSK_CCMP, Some(vec![0xab; 32]));
        let psk = psk_hex(p.key.as_ref().unwrap().expose());
        assert_eq!(psk.len(), 64);
        let s = profile_settings(&p, "wlan0", "u-u-i-d", "proxy-wifi-cafe", Some(&psk)).unwrap();
        let sec = &s["802-11-wireless-security"];
        assert_eq!(<&str>::try_from(&sec["key-mgmt"]).unwrap(), "wpa-psk");
        assert_eq!(<&str>::try_from(&sec["psk"]).unwrap(), "ab".repeat(32));
        let wifi = &s["802-11-wireless"];
        assert_eq!(bytes_of(&wifi["ssid"]).unwrap(), b"cafe");
        assert_eq!(bytes_of(&wifi["bssid"]).unwrap(), vec![2, 0, 0, 0, 0, 1]);
        let conn = &s["connection"];
        assert!(!bool::try_from(&conn["autoconnect"]).unwrap());
        assert_eq!(<&str>::try_from(&conn["interface-name"]).unwrap(), "wlan0");
        let owned = owned(s);
        assert!(is_proxy_profile(&owned));
        assert_eq!(profile_ssid(&owned).unwrap().as_bytes(), b"cafe");
    }

    #[test]
    fn open_profile_has_no_security_and_bad_requests_are_refused() {
        let mut p = params(Security::OPEN, None);
        p.bssid = None;
        let s = profile_settings(&p, "wlan0", "u", "proxy-wifi-cafe", None).unwrap();
        assert!(!s.contains_key("802-11-wireless-security"));
        assert!(!s["802-11-wireless"].contains_key("bssid"));
        let short = params(Security::WPA2_PSK_CCMP, Some(vec![1; 8]));
        let psk = psk_hex(&[1; 8]);
        assert_eq!(
            profile_settings(&short, "wlan0", "u", "i", Some(&psk)),
            Err(ProfileError::BadKey(8))
        );
        let sae = params(
            Security {
                auth: AuthAlgorithm::Wpa3Sae,
                cipher: CipherAlgorithm::Ccmp,
            },
            Some(vec![1; 32]),
        );
        // SAE with a binary key: not a password.
        let secret = profile_secret(&sae);
        assert_eq!(
            profile_settings(
                &sae,
                "wlan0",
                "u",
                "i",
                secret.as_deref().map(String::as_str)
            ),
            Err(ProfileError::BadSaePassword)
        );
        let wpa3e = params(
            Security {
                auth: AuthAlgorithm::Wpa3Enterprise,
                cipher: CipherAlgorithm::Ccmp,
            },
            None,
        );
        assert!(matches!(
            profile_settings(&wpa3e, "wlan0", "u", "i", None),
            Err(ProfileError::Unsupported(_))
        ));
    }

    #[test]
    fn sae_profile_carries_the_password_with_key_mgmt_sae() {
        let p = params(Security::WPA3_SAE_CCMP, Some(b"correct horse".to_vec()));
        let secret = profile_secret(&p).unwrap();
        assert_eq!(secret.as_str(), "correct horse");
        let s = profile_settings(&p, "wlan0", "u", "proxy-wifi-x", Some(&secret)).unwrap();
        let sec = &s["802-11-wireless-security"];
        assert_eq!(<&str>::try_from(&sec["key-mgmt"]).unwrap(), "sae");
        assert_eq!(<&str>::try_from(&sec["psk"]).unwrap(), "correct horse");
    }

    #[test]
    fn host_profiles_are_never_taken_for_the_proxys() {
        let p = params(Security::OPEN, None);
        // Right prefix, no marker: a host profile that happens to be named so.
        let mut s = owned(profile_settings(&p, "wlan0", "u", "proxy-wifi-cafe", None).unwrap());
        s.remove("user");
        assert!(!is_proxy_profile(&s));
        // Marker but another name.
        let s = owned(profile_settings(&p, "wlan0", "u", "cafe", None).unwrap());
        assert!(!is_proxy_profile(&s));
        assert!(!is_proxy_profile(&Settings::new()));
    }

    #[test]
    fn activation_failures_map_to_guest_errors() {
        let ssid = Ssid::new(b"x").unwrap();
        assert_eq!(
            activation_failure(reason::SSID_NOT_FOUND, &ssid),
            InterfaceError::NotFound("x".into())
        );
        assert_eq!(
            activation_failure(reason::NO_SECRETS, &ssid),
            InterfaceError::KeyRefused {
                reason: reason::NO_SECRETS
            }
        );
        assert_eq!(
            activation_failure(1, &ssid),
            InterfaceError::ActivationFailed { reason: 1 }
        );
    }
}
