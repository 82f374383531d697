//! WlanAPI notifications, decoded from what the callback receives
//! (`L2_NOTIFICATION_DATA`: source, code, interface GUID and a data block)
//! into [`Notification`] values. No FFI: the Windows callback copies the data
//! block into a slice and calls [`decode`].

use uuid::Uuid;

use crate::protocol::Ssid;

/// `WLAN_NOTIFICATION_SOURCE_ACM` (auto configuration module).
pub const SOURCE_ACM: u32 = 0x08;
/// `WLAN_NOTIFICATION_SOURCE_MSM` (media specific module).
pub const SOURCE_MSM: u32 = 0x10;

/// `WLAN_NOTIFICATION_ACM` codes this backend listens to.
pub mod acm {
    pub const SCAN_COMPLETE: u32 = 7;
    pub const SCAN_FAIL: u32 = 8;
    pub const CONNECTION_COMPLETE: u32 = 10;
    pub const INTERFACE_ARRIVAL: u32 = 13;
    pub const INTERFACE_REMOVAL: u32 = 14;
    pub const DISCONNECTED: u32 = 21;
}

/// `WLAN_NOTIFICATION_MSM` codes this backend listens to.
pub mod msm {
    pub const SIGNAL_QUALITY_CHANGE: u32 = 8;
}

/// Layout of `WLAN_CONNECTION_NOTIFICATION_DATA` (wlanapi.h): connection
/// mode, a 256-WCHAR profile name, the `DOT11_SSID`, BSS type, security flag,
/// reason code, flags, then the profile XML.
pub mod connection_layout {
    pub const SSID_LEN: usize = 516;
    pub const SSID: usize = 520;
    pub const REASON_CODE: usize = 560;
    /// Everything up to and including `dwFlags`.
    pub const MIN_SIZE: usize = 568;
}

/// A host Wi-Fi event WlanAPI reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// A connection attempt ended; `reason` 0 is success.
    ConnectionComplete {
        iface: Uuid,
        ssid: Option<Ssid>,
        reason: u32,
    },
    Disconnected {
        iface: Uuid,
    },
    ScanComplete {
        iface: Uuid,
    },
    ScanFailed {
        iface: Uuid,
        reason: u32,
    },
    InterfaceArrival {
        iface: Uuid,
    },
    InterfaceRemoval {
        iface: Uuid,
    },
    /// Link quality in percent (0..=100).
    SignalQuality {
        iface: Uuid,
        percent: u8,
    },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes a notification; `None` for the ones this backend ignores or
/// whose data block is too short for its type.
pub fn decode(source: u32, code: u32, iface: Uuid, data: &[u8]) -> Option<Notification> {
    match (source, code) {
        (SOURCE_ACM, acm::CONNECTION_COMPLETE) => {
            if data.len() < connection_layout::MIN_SIZE {
                return None;
            }
            let ssid_len = u32_at(data, connection_layout::SSID_LEN)? as usize;
            let ssid = data
                .get(connection_layout::SSID..connection_layout::SSID + ssid_len.min(33))
                .and_then(|b| Ssid::new(b).ok());
            Some(Notification::ConnectionComplete {
                iface,
                ssid,
                reason: u32_at(data, connection_layout::REASON_CODE)?,
            })
        }
        (SOURCE_ACM, acm::DISCONNECTED) => Some(Notification::Disconnected { iface }),
        (SOURCE_ACM, acm::SCAN_COMPLETE) => Some(Notification::ScanComplete { iface }),
        (SOURCE_ACM, acm::SCAN_FAIL) => Some(Notification::ScanFailed {
            iface,
            // The data is the WLAN_REASON_CODE; report 0 when it is missing.
            reason: u32_at(data, 0).unwrap_or(0),
        }),
        (SOURCE_ACM, acm::INTERFACE_ARRIVAL) => Some(Notification::InterfaceArrival { iface }),
        (SOURCE_ACM, acm::INTERFACE_REMOVAL) => Some(Notification::InterfaceRemoval { iface }),
        (SOURCE_MSM, msm::SIGNAL_QUALITY_CHANGE) => Some(Notification::SignalQuality {
            iface,
            percent: super::convert::signal_percent(u32_at(data, 0)?),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection_data(ssid: &[u8], reason: u32) -> Vec<u8> {
        let mut d = vec![0u8; connection_layout::MIN_SIZE + 4];
        d[connection_layout::SSID_LEN..][..4].copy_from_slice(&(ssid.len() as u32).to_le_bytes());
        d[connection_layout::SSID..][..ssid.len()].copy_from_slice(ssid);
        d[connection_layout::REASON_CODE..][..4].copy_from_slice(&reason.to_le_bytes());
        d
    }

    #[test]
    fn decodes_the_notifications_the_backend_uses() {
        let id = Uuid::from_u128(42);
        assert_eq!(
            decode(
                SOURCE_ACM,
                acm::CONNECTION_COMPLETE,
                id,
                &connection_data(b"Home", 0)
            ),
            Some(Notification::ConnectionComplete {
                iface: id,
                ssid: Some(Ssid::new(b"Home").unwrap()),
                reason: 0
            })
        );
        assert_eq!(
            decode(
                SOURCE_ACM,
                acm::CONNECTION_COMPLETE,
                id,
                &connection_data(b"Home", 0x0004_0007)
            ),
            Some(Notification::ConnectionComplete {
                iface: id,
                ssid: Some(Ssid::new(b"Home").unwrap()),
                reason: 0x0004_0007
            })
        );
        let mut bad_len = connection_data(b"x", 1);
        bad_len[connection_layout::SSID_LEN..][..4].copy_from_slice(&40u32.to_le_bytes());
        assert_eq!(
            decode(SOURCE_ACM, acm::CONNECTION_COMPLETE, id, &bad_len),
            Some(Notification::ConnectionComplete {
                iface: id,
                ssid: None,
                reason: 1
            })
        );
        assert_eq!(
            decode(SOURCE_ACM, acm::CONNECTION_COMPLETE, id, &[0; 100]),
            None
        );
        assert_eq!(
            decode(SOURCE_ACM, acm::DISCONNECTED, id, &[]),
            Some(Notification::Disconnected { iface: id })
        );
        assert_eq!(
            decode(SOURCE_ACM, acm::SCAN_COMPLETE, id, &[]),
            Some(Notification::ScanComplete { iface: id })
        );
        assert_eq!(
            decode(SOURCE_ACM, acm::SCAN_FAIL, id, &9u32.to_le_bytes()),
            Some(Notification::ScanFailed {
                iface: id,
                reason: 9
            })
        );
        assert_eq!(
            decode(SOURCE_ACM, acm::INTERFACE_ARRIVAL, id, &[]),
            Some(Notification::InterfaceArrival { iface: id })
        );
        assert_eq!(
            decode(SOURCE_ACM, acm::INTERFACE_REMOVAL, id, &[]),
            Some(Notification::InterfaceRemoval { iface: id })
        );
        assert_eq!(
            decode(
                SOURCE_MSM,
                msm::SIGNAL_QUALITY_CHANGE,
                id,
                &80u32.to_le_bytes()
            ),
            Some(Notification::SignalQuality {
                iface: id,
                percent: 80
            })
        );
        assert_eq!(
            decode(SOURCE_MSM, msm::SIGNAL_QUALITY_CHANGE, id, &[1, 2]),
            None
        );
        // MSM code 8 is not ACM code 8 (scan fail) and vice versa.
        assert_eq!(decode(SOURCE_MSM, acm::SCAN_COMPLETE, id, &[]), None);
        assert_eq!(decode(0x04, acm::DISCONNECTED, id, &[]), None);
    }
}
