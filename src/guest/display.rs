//! A BSS as people and scripts want to see it: SSID, channel, band, signal,
//! security label. Used by the command's table and JSON output.

use crate::protocol::{
    channel_for_freq_khz, element_ids, parse_elements, rsn_security, Band, MacAddr, ScanBss,
    CAPABILITY_PRIVACY,
};

/// Vendor Specific element id, which carries the pre-RSN WPA element.
const VENDOR_SPECIFIC: u8 = 221;
/// Microsoft OUI and type 1: the WPA (version 1) element.
const WPA1_PREFIX: [u8; 4] = [0x00, 0x50, 0xF2, 0x01];

/// One BSS of a scan, with everything derived from its fields and elements.
/// This is also the JSON shape of `proxy-wifi guest scan --json` entries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BssSummary {
    /// The BSS's MAC address.
    pub bssid: MacAddr,
    /// The SSID, lossily decoded as UTF-8 (empty for a hidden network).
    pub ssid: String,
    /// Frequency in kHz, as on the wire.
    pub freq_khz: u32,
    /// Frequency in MHz.
    pub freq_mhz: u32,
    /// Channel number, when the frequency is a known channel (it always is
    /// in a validated reply).
    pub channel: Option<u16>,
    /// The band, when the frequency is a known channel.
    pub band: Option<Band>,
    /// Signal strength in dBm.
    pub rssi_dbm: i32,
    /// Signal as a 0..=100 quality, the inverse of the host's
    /// percent-to-dBm formula (`2 * (dBm + 100)`, clamped).
    pub signal_percent: u8,
    /// `open`, `WEP`, `WPA`, or the RSN label (`WPA2-PSK`, `WPA3-SAE`,
    /// `WPA2-EAP`, `OWE`, joined with `/`).
    pub security: String,
    /// Pairwise ciphers from the RSN element (`CCMP`, ...), empty if none.
    pub ciphers: String,
    /// 802.11 Capability Information.
    pub capabilities: u16,
    /// Beacon interval in TU.
    pub beacon_interval: u16,
    /// The information elements, in hexadecimal.
    pub ies: String,
}

impl BssSummary {
    /// The summary of one BSS of a scan response.
    pub fn new(bss: &ScanBss) -> BssSummary {
        let channel = channel_for_freq_khz(bss.freq_khz);
        let (security, ciphers) = security_labels(bss);
        BssSummary {
            bssid: bss.bssid,
            ssid: bss.ssid().map(|s| s.to_string_lossy()).unwrap_or_default(),
            freq_khz: bss.freq_khz,
            freq_mhz: bss.freq_khz / 1000,
            channel: channel.map(|(_, c)| c),
            band: channel.map(|(b, _)| b),
            rssi_dbm: bss.rssi_dbm,
            signal_percent: signal_percent(bss.rssi_dbm),
            security,
            ciphers,
            capabilities: bss.capabilities,
            beacon_interval: bss.beacon_interval,
            ies: hex::encode(&bss.ies),
        }
    }

    /// Four signal bars in the style of `nmcli`: `▂▄▆█` for a strong
    /// signal, `_` for each missing bar.
    pub fn bars(&self) -> String {
        signal_bars(self.signal_percent)
    }
}

/// `2 * (dBm + 100)` clamped to 0..=100: -50 dBm and above is 100 %,
/// -100 dBm and below is 0 %.
pub fn signal_percent(rssi_dbm: i32) -> u8 {
    let q = rssi_dbm.saturating_add(100).saturating_mul(2).clamp(0, 100);
    q as u8
}

/// Bars for a quality percentage: one per threshold passed (5, 30, 55, 80).
pub fn signal_bars(percent: u8) -> String {
    let glyphs = ['▂', '▄', '▆', '█'];
    let lit = [5u8, 30, 55, 80].iter().filter(|t| percent > **t).count();
    glyphs
        .iter()
        .enumerate()
        .map(|(i, g)| if i < lit { *g } else { '_' })
        .collect()
}

/// The security label and cipher list, read from the RSN element (then the
/// WPA vendor element, then the Privacy capability bit).
fn security_labels(bss: &ScanBss) -> (String, String) {
    let mut wpa1 = false;
    for element in parse_elements(&bss.ies).map_while(Result::ok) {
        if element.id == element_ids::RSN {
            return match rsn_security(element.data) {
                Some(rsn) => (rsn.label(), rsn.cipher_label()),
                None => ("RSN?".to_string(), String::new()),
            };
        }
        if element.id == VENDOR_SPECIFIC && element.data.starts_with(&WPA1_PREFIX) {
            wpa1 = true;
        }
    }
    let label = if wpa1 {
        "WPA"
    } else if bss.capabilities & CAPABILITY_PRIVACY != 0 {
        "WEP"
    } else {
        "open"
    };
    (label.to_string(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ssid_element, wpa2_psk_ccmp_rsn_element, Ssid, CAPABILITY_ESS};

    fn bss(ies: Vec<u8>, caps: u16, rssi: i32) -> ScanBss {
        ScanBss {
            bssid: MacAddr([2, 0, 0, 0, 0, 1]),
            capabilities: caps,
            rssi_dbm: rssi,
            beacon_interval: 100,
            freq_khz: 2_437_000,
            ies,
        }
    }

    #[test]
    fn wpa2_bss_summary() {
        let mut ies = ssid_element(&Ssid::new(b"home").unwrap());
        ies.extend_from_slice(&wpa2_psk_ccmp_rsn_element());
        let s = BssSummary::new(&bss(ies, CAPABILITY_ESS | CAPABILITY_PRIVACY, -60));
        assert_eq!(s.ssid, "home");
        assert_eq!(s.security, "WPA2-PSK");
        assert_eq!(s.ciphers, "CCMP");
        assert_eq!(s.channel, Some(6));
        assert_eq!(s.band, Some(Band::Ghz2_4));
        assert_eq!(s.freq_mhz, 2437);
        assert_eq!(s.signal_percent, 80);
        assert_eq!(s.bars(), "▂▄▆_");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["bssid"], "02:00:00:00:00:01");
        assert_eq!(json["band"], "2.4GHz");
        assert_eq!(json["freq_khz"], 2_437_000);
    }

    #[test]
    fn open_wep_and_wpa1_labels() {
        let ssid = ssid_element(&Ssid::new(b"x").unwrap());
        assert_eq!(BssSummary::new(&bss(ssid.clone(), 1, -50)).security, "open");
        assert_eq!(
            BssSummary::new(&bss(ssid.clone(), CAPABILITY_PRIVACY, -50)).security,
            "WEP"
        );
        let mut wpa = ssid.clone();
        wpa.extend_from_slice(&[221, 6, 0x00, 0x50, 0xF2, 0x01, 1, 0]);
        assert_eq!(
            BssSummary::new(&bss(wpa, CAPABILITY_PRIVACY, -50)).security,
            "WPA"
        );
        let mut bad_rsn = ssid;
        bad_rsn.extend_from_slice(&[48, 2, 9, 0]);
        assert_eq!(BssSummary::new(&bss(bad_rsn, 1, -50)).security, "RSN?");
    }

    #[test]
    fn signal_scale() {
        assert_eq!(signal_percent(-30), 100);
        assert_eq!(signal_percent(-50), 100);
        assert_eq!(signal_percent(-73), 54);
        assert_eq!(signal_percent(-100), 0);
        assert_eq!(signal_percent(i32::MIN), 0);
        assert_eq!(signal_percent(i32::MAX), 100);
        assert_eq!(signal_bars(100), "▂▄▆█");
        assert_eq!(signal_bars(0), "____");
        assert_eq!(signal_bars(31), "▂▄__");
    }
}
