//! Which frequencies the guest accepts: the 20 MHz channel centres of the
//! 2.4, 5 and 6 GHz bands. The guest drops a BSS on any other frequency, so
//! the host never sends one and the guest client rejects one.

/// A Wi-Fi band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Band {
    #[serde(rename = "2.4GHz")]
    /// 2.4 GHz.
    Ghz2_4,
    #[serde(rename = "5GHz")]
    /// 5 GHz.
    Ghz5,
    #[serde(rename = "6GHz")]
    /// 6 GHz.
    Ghz6,
}

/// The band and channel number of a centre frequency in kHz, or `None` when
/// it is not a channel centre the guest knows.
pub fn channel_for_freq_khz(freq_khz: u32) -> Option<(Band, u16)> {
    if !freq_khz.is_multiple_of(1000) {
        return None;
    }
    let mhz = freq_khz / 1000;
    match mhz {
        2484 => Some((Band::Ghz2_4, 14)),
        2412..=2472 if (mhz - 2407).is_multiple_of(5) => {
            Some((Band::Ghz2_4, ((mhz - 2407) / 5) as u16))
        }
        // 5 GHz: UNII-1..UNII-4, channels 36..177 step 4, except the gap
        // 68..96 that no regulatory domain opens (149 starts the odd run).
        5180..=5885 if (mhz - 5000).is_multiple_of(5) => {
            let ch = (mhz - 5000) / 5;
            let valid = matches!(ch, 36..=64 | 100..=144) && ch.is_multiple_of(4)
                || matches!(ch, 149..=177) && (ch - 149).is_multiple_of(4);
            valid.then_some((Band::Ghz5, ch as u16))
        }
        5935 => Some((Band::Ghz6, 2)),
        5955..=7115 if (mhz - 5950) % 20 == 5 => Some((Band::Ghz6, ((mhz - 5950) / 5) as u16)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_channels() {
        assert_eq!(channel_for_freq_khz(2_412_000), Some((Band::Ghz2_4, 1)));
        assert_eq!(channel_for_freq_khz(2_432_000), Some((Band::Ghz2_4, 5)));
        assert_eq!(channel_for_freq_khz(2_472_000), Some((Band::Ghz2_4, 13)));
        assert_eq!(channel_for_freq_khz(2_484_000), Some((Band::Ghz2_4, 14)));
        assert_eq!(channel_for_freq_khz(5_180_000), Some((Band::Ghz5, 36)));
        assert_eq!(channel_for_freq_khz(5_240_000), Some((Band::Ghz5, 48)));
        assert_eq!(channel_for_freq_khz(5_720_000), Some((Band::Ghz5, 144)));
        assert_eq!(channel_for_freq_khz(5_745_000), Some((Band::Ghz5, 149)));
        assert_eq!(channel_for_freq_khz(5_885_000), Some((Band::Ghz5, 177)));
        assert_eq!(channel_for_freq_khz(5_935_000), Some((Band::Ghz6, 2)));
        assert_eq!(channel_for_freq_khz(5_955_000), Some((Band::Ghz6, 1)));
        assert_eq!(channel_for_freq_khz(6_115_000), Some((Band::Ghz6, 33)));
        assert_eq!(channel_for_freq_khz(7_115_000), Some((Band::Ghz6, 233)));
    }

    #[test]
    fn rejects_non_channels_and_mhz_units() {
        for f in [
            0,
            2437,
            2_413_000,
            2_437_500,
            5_190_000,
            5_340_000,
            5_750_000,
            5_960_000,
            7_135_000,
            u32::MAX,
        ] {
            assert_eq!(channel_for_freq_khz(f), None, "{f}");
        }
    }
}
