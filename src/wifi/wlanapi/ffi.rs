//! WlanAPI through `windows-sys`: the client handle, the notification
//! callback, and the calls of [`WlanSys`]. Only FFI lives here; every value
//! is handed to the platform-independent code as bytes or plain numbers.

use std::ffi::c_void;
use std::mem::{offset_of, size_of};
use std::ptr;

use tokio::sync::mpsc;
use tracing::{debug, warn};
use uuid::Uuid;
use windows_sys::core::GUID;
use windows_sys::Win32::Foundation::{ERROR_SUCCESS, HANDLE};
use windows_sys::Win32::NetworkManagement::Ndis::NDIS_OBJECT_TYPE_DEFAULT;
use windows_sys::Win32::NetworkManagement::WiFi::{
    dot11_BSS_type_infrastructure, wlan_connection_mode_temporary_profile,
    wlan_interface_state_connected, wlan_intf_opcode_current_connection, WlanCloseHandle,
    WlanConnect, WlanDisconnect, WlanEnumInterfaces, WlanFreeMemory, WlanGetNetworkBssList,
    WlanOpenHandle, WlanQueryInterface, WlanRegisterNotification, WlanScan, DOT11_BSSID_LIST,
    DOT11_BSSID_LIST_REVISION_1, DOT11_SSID, L2_NOTIFICATION_DATA, WLAN_API_VERSION_2_0,
    WLAN_BSS_ENTRY, WLAN_BSS_LIST, WLAN_CONNECTION_ATTRIBUTES, WLAN_CONNECTION_NOTIFICATION_DATA,
    WLAN_CONNECTION_PARAMETERS, WLAN_INTERFACE_INFO, WLAN_INTERFACE_INFO_LIST,
    WLAN_NOTIFICATION_SOURCE_ACM, WLAN_NOTIFICATION_SOURCE_MSM, WLAN_NOTIFICATION_SOURCE_NONE,
};
use zeroize::Zeroizing;

use super::convert::{self, layout, ParsedBssList};
use super::notify::{self, connection_layout, Notification};
use super::{win32, InterfaceInfo, SysConnect, WlanError, WlanSys};
use crate::protocol::Ssid;
use crate::wifi::ConnectedNetwork;

// The byte layouts the platform-independent parsers use must be the real
// ones: these fail to compile if they differ from windows-sys.
const _: () = {
    assert!(size_of::<WLAN_BSS_ENTRY>() == layout::ENTRY_SIZE);
    assert!(offset_of!(WLAN_BSS_LIST, wlanBssEntries) == layout::LIST_ENTRIES);
    assert!(offset_of!(WLAN_BSS_ENTRY, dot11Ssid) == layout::SSID_LEN);
    assert!(offset_of!(WLAN_BSS_ENTRY, dot11Bssid) == layout::BSSID);
    assert!(offset_of!(WLAN_BSS_ENTRY, dot11BssType) == layout::BSS_TYPE);
    assert!(offset_of!(WLAN_BSS_ENTRY, lRssi) == layout::RSSI);
    assert!(offset_of!(WLAN_BSS_ENTRY, uLinkQuality) == layout::LINK_QUALITY);
    assert!(offset_of!(WLAN_BSS_ENTRY, usBeaconPeriod) == layout::BEACON_PERIOD);
    assert!(offset_of!(WLAN_BSS_ENTRY, usCapabilityInformation) == layout::CAPABILITY);
    assert!(offset_of!(WLAN_BSS_ENTRY, ulChCenterFrequency) == layout::CENTER_FREQUENCY);
    assert!(offset_of!(WLAN_BSS_ENTRY, ulIeOffset) == layout::IE_OFFSET);
    assert!(offset_of!(WLAN_BSS_ENTRY, ulIeSize) == layout::IE_SIZE);
    assert!(
        offset_of!(WLAN_CONNECTION_NOTIFICATION_DATA, dot11Ssid) == connection_layout::SSID_LEN
    );
    assert!(
        offset_of!(WLAN_CONNECTION_NOTIFICATION_DATA, wlanReasonCode)
            == connection_layout::REASON_CODE
    );
    assert!(
        offset_of!(WLAN_CONNECTION_NOTIFICATION_DATA, strProfileXml) >= connection_layout::MIN_SIZE
    );
    assert!(WLAN_NOTIFICATION_SOURCE_ACM == notify::SOURCE_ACM);
    assert!(WLAN_NOTIFICATION_SOURCE_MSM == notify::SOURCE_MSM);
    assert!(dot11_BSS_type_infrastructure == convert::DOT11_BSS_TYPE_INFRASTRUCTURE);
};

fn check(call: &'static str, code: u32) -> Result<(), WlanError> {
    if code == ERROR_SUCCESS {
        Ok(())
    } else {
        Err(WlanError::Api { call, code })
    }
}

fn guid(id: Uuid) -> GUID {
    GUID::from_u128(id.as_u128())
}

fn uuid(g: &GUID) -> Uuid {
    Uuid::from_fields(g.data1, g.data2, g.data3, &g.data4)
}

fn dot11_ssid(ssid: &Ssid) -> DOT11_SSID {
    let (len, bytes) = convert::dot11_ssid(ssid);
    DOT11_SSID {
        uSSIDLength: len,
        ucSSID: bytes,
    }
}

/// Memory WlanAPI allocated, freed with `WlanFreeMemory`.
struct WlanMemory<T>(*mut T);

impl<T> Drop for WlanMemory<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a WlanAPI allocation and is freed once.
            unsafe { WlanFreeMemory(self.0.cast::<c_void>()) };
        }
    }
}

/// Where the notification callback forwards to. Boxed, so its address is
/// stable for as long as the client handle lives.
struct NotificationSink {
    tx: mpsc::UnboundedSender<Notification>,
}

/// Called by WlanAPI on its own thread. Copies what it needs out of the
/// notification (the data is only valid during the call) and forwards it;
/// it never blocks and never panics.
unsafe extern "system" fn on_notification(data: *mut L2_NOTIFICATION_DATA, context: *mut c_void) {
    if data.is_null() || context.is_null() {
        return;
    }
    // SAFETY: WlanAPI passes a valid L2_NOTIFICATION_DATA for the duration of
    // the call, and `context` is the sink registered with it, which lives
    // until the handle is closed (closing waits for running callbacks).
    let (n, sink) = unsafe { (&*data, &*(context as *const NotificationSink)) };
    let block: &[u8] = if n.pData.is_null() || n.dwDataSize == 0 {
        &[]
    } else {
        // SAFETY: pData points to dwDataSize bytes for the duration of the call.
        unsafe { std::slice::from_raw_parts(n.pData as *const u8, n.dwDataSize as usize) }
    };
    if let Some(event) = notify::decode(
        n.NotificationSource,
        n.NotificationCode,
        uuid(&n.InterfaceGuid),
        block,
    ) {
        let _ = sink.tx.send(event);
    }
}

/// An open WlanAPI client handle, registered for ACM and MSM notifications
/// once [`WlanClient::register`] succeeded.
pub struct WlanClient {
    handle: HANDLE,
    // Set once registered; dropped after the handle is closed (see Drop).
    sink: Option<Box<NotificationSink>>,
}

// SAFETY: a WlanAPI client handle may be used from any thread; the sink is
// only read by the callback.
unsafe impl Send for WlanClient {}
unsafe impl Sync for WlanClient {}

impl WlanClient {
    pub fn open() -> Result<WlanClient, WlanError> {
        let mut negotiated = 0u32;
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: out-pointers are valid locals.
        check("WlanOpenHandle", unsafe {
            WlanOpenHandle(
                WLAN_API_VERSION_2_0,
                ptr::null(),
                &mut negotiated,
                &mut handle,
            )
        })?;
        debug!(
            version = format_args!("{}.{}", negotiated & 0xffff, negotiated >> 16),
            "WlanAPI client handle open"
        );
        Ok(WlanClient { handle, sink: None })
    }

    /// Registers for ACM and MSM notifications, forwarded to `tx`.
    pub fn register(&mut self, tx: mpsc::UnboundedSender<Notification>) -> Result<(), WlanError> {
        let sink = Box::new(NotificationSink { tx });
        let context: *const NotificationSink = &*sink;
        // SAFETY: the handle is open; the callback and its context stay valid
        // until WlanCloseHandle returns (the box is kept in `self.sink`).
        check("WlanRegisterNotification", unsafe {
            WlanRegisterNotification(
                self.handle,
                WLAN_NOTIFICATION_SOURCE_ACM | WLAN_NOTIFICATION_SOURCE_MSM,
                1,
                Some(on_notification),
                context.cast::<c_void>(),
                ptr::null(),
                ptr::null_mut(),
            )
        })?;
        self.sink = Some(sink);
        Ok(())
    }
}

impl Drop for WlanClient {
    fn drop(&mut self) {
        // SAFETY: the handle is open. Unregistering then closing makes sure
        // no callback runs once the sink is freed.
        unsafe {
            if self.sink.is_some() {
                let _ = WlanRegisterNotification(
                    self.handle,
                    WLAN_NOTIFICATION_SOURCE_NONE,
                    0,
                    None,
                    ptr::null(),
                    ptr::null(),
                    ptr::null_mut(),
                );
            }
            let code = WlanCloseHandle(self.handle, ptr::null());
            if code != ERROR_SUCCESS {
                warn!("WlanCloseHandle failed with error {code}");
            } else {
                debug!("WlanAPI client handle closed");
            }
        }
    }
}

impl WlanSys for WlanClient {
    fn interfaces(&self) -> Result<Vec<InterfaceInfo>, WlanError> {
        let mut list: *mut WLAN_INTERFACE_INFO_LIST = ptr::null_mut();
        // SAFETY: the handle is open; the list is freed by WlanMemory.
        check("WlanEnumInterfaces", unsafe {
            WlanEnumInterfaces(self.handle, ptr::null(), &mut list)
        })?;
        let list = WlanMemory(list);
        if list.0.is_null() {
            return Err(WlanError::Malformed("no interface list"));
        }
        // SAFETY: WlanAPI returns a list of dwNumberOfItems entries laid out
        // from InterfaceInfo onwards.
        let infos: &[WLAN_INTERFACE_INFO] = unsafe {
            let count = (*list.0).dwNumberOfItems as usize;
            let first = ptr::addr_of!((*list.0).InterfaceInfo).cast::<WLAN_INTERFACE_INFO>();
            std::slice::from_raw_parts(first, count)
        };
        Ok(infos
            .iter()
            .map(|i| {
                let name = &i.strInterfaceDescription;
                let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                InterfaceInfo {
                    id: uuid(&i.InterfaceGuid),
                    description: String::from_utf16_lossy(&name[..len]),
                }
            })
            .collect())
    }

    fn bss_list(&self, iface: Uuid) -> Result<ParsedBssList, WlanError> {
        let g = guid(iface);
        let mut list: *mut WLAN_BSS_LIST = ptr::null_mut();
        // SAFETY: the handle is open; no SSID filter; the list is freed by WlanMemory.
        check("WlanGetNetworkBssList", unsafe {
            WlanGetNetworkBssList(
                self.handle,
                &g,
                ptr::null(),
                dot11_BSS_type_infrastructure,
                0,
                ptr::null(),
                &mut list,
            )
        })?;
        let list = WlanMemory(list);
        if list.0.is_null() {
            return Err(WlanError::Malformed("no BSS list"));
        }
        // SAFETY: the block is dwTotalSize bytes long, as WlanAPI documents.
        let block = unsafe {
            let total = (*list.0).dwTotalSize as usize;
            std::slice::from_raw_parts(list.0 as *const u8, total)
        };
        Ok(convert::parse_bss_list(block)?)
    }

    fn scan(&self, iface: Uuid, ssid: Option<&Ssid>) -> Result<(), WlanError> {
        let g = guid(iface);
        let target = ssid.filter(|s| !s.is_empty()).map(dot11_ssid);
        let target_ptr = target
            .as_ref()
            .map_or(ptr::null(), |t| t as *const DOT11_SSID);
        // SAFETY: the handle is open; the SSID outlives the call.
        check("WlanScan", unsafe {
            WlanScan(self.handle, &g, target_ptr, ptr::null(), ptr::null())
        })
    }

    fn current_connection(&self, iface: Uuid) -> Result<Option<ConnectedNetwork>, WlanError> {
        let g = guid(iface);
        let mut size = 0u32;
        let mut data: *mut c_void = ptr::null_mut();
        // SAFETY: the handle is open; the data is freed by WlanMemory.
        let code = unsafe {
            WlanQueryInterface(
                self.handle,
                &g,
                wlan_intf_opcode_current_connection,
                ptr::null(),
                &mut size,
                &mut data,
                ptr::null_mut(),
            )
        };
        if code == win32::ERROR_INVALID_STATE {
            // Not connected.
            return Ok(None);
        }
        check("WlanQueryInterface", code)?;
        let data = WlanMemory(data.cast::<WLAN_CONNECTION_ATTRIBUTES>());
        if data.0.is_null() || (size as usize) < size_of::<WLAN_CONNECTION_ATTRIBUTES>() {
            return Err(WlanError::Malformed("short connection attributes"));
        }
        // SAFETY: checked non-null and large enough.
        let attrs = unsafe { &*data.0 };
        if attrs.isState != wlan_interface_state_connected {
            return Ok(None);
        }
        let assoc = &attrs.wlanAssociationAttributes;
        let sec = &attrs.wlanSecurityAttributes;
        convert::connected_network(
            assoc.dot11Ssid.uSSIDLength,
            &assoc.dot11Ssid.ucSSID,
            assoc.dot11Bssid,
            sec.dot11AuthAlgorithm,
            sec.dot11CipherAlgorithm,
        )
        .map(Some)
        .ok_or(WlanError::Malformed("SSID longer than 32 bytes"))
    }

    fn connect(&self, iface: Uuid, request: &SysConnect) -> Result<(), WlanError> {
        let g = guid(iface);
        // The profile carries the key: wiped once the call returns.
        let profile: Zeroizing<Vec<u16>> = Zeroizing::new(
            request
                .profile_xml
                .encode_utf16()
                .chain(std::iter::once(0))
                .collect(),
        );
        let mut ssid = dot11_ssid(&request.ssid);
        let mut bssids = request.bssid.map(|b| DOT11_BSSID_LIST {
            Header: windows_sys::Win32::NetworkManagement::Ndis::NDIS_OBJECT_HEADER {
                Type: NDIS_OBJECT_TYPE_DEFAULT as u8,
                Revision: DOT11_BSSID_LIST_REVISION_1 as u8,
                Size: size_of::<DOT11_BSSID_LIST>() as u16,
            },
            uNumOfEntries: 1,
            uTotalNumOfEntries: 1,
            BSSIDs: b.0,
        });
        let params = WLAN_CONNECTION_PARAMETERS {
            wlanConnectionMode: wlan_connection_mode_temporary_profile,
            strProfile: profile.as_ptr(),
            pDot11Ssid: &mut ssid,
            pDesiredBssidList: bssids
                .as_mut()
                .map_or(ptr::null_mut(), |b| b as *mut DOT11_BSSID_LIST),
            dot11BssType: dot11_BSS_type_infrastructure,
            dwFlags: 0,
        };
        // SAFETY: the handle is open; every pointer in params outlives the call.
        check("WlanConnect", unsafe {
            WlanConnect(self.handle, &g, &params, ptr::null())
        })
    }

    fn disconnect(&self, iface: Uuid) -> Result<(), WlanError> {
        let g = guid(iface);
        // SAFETY: the handle is open.
        check("WlanDisconnect", unsafe {
            WlanDisconnect(self.handle, &g, ptr::null())
        })
    }
}
