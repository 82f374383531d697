/*
 * Test-only wlanapi.dll for scripts/windows-wine.sh: one scripted wireless
 * adapter, so that proxy-wifi.exe's real WlanAPI code (src/wifi/wlanapi/
 * ffi.rs: the notification callback, WLAN_BSS_LIST and connection
 * attributes read from memory WlanAPI allocated, WlanConnect with a
 * temporary profile, WlanFreeMemory) runs under Wine, whose own wlanapi has
 * no adapters and cannot notify.
 *
 * It is loaded instead of Wine's builtin (WINEDLLOVERRIDES=wlanapi=n) only
 * from a test folder; it is never part of the product. Its behaviour:
 *  - one adapter, "Wine Test Wireless Adapter";
 *  - BSS list: "WineAP" (open, 02:11:22:33:44:55, 2437 MHz) and
 *    "WineSecure" (WPA2-PSK/CCMP, 02:11:22:33:44:66, 5180 MHz);
 *  - WlanScan: scan_complete after 100 ms;
 *  - WlanConnect: connects if the SSID is in the list and the profile names
 *    it, then connection_complete (reason 0) after 100 ms and an MSM
 *    signal-quality change (70 %) 500 ms later; otherwise connection_complete
 *    with a failure reason;
 *  - WlanDisconnect: disconnected after 100 ms.
 * Notifications are delivered on a thread of their own, as WlanAPI does.
 */
#include <windows.h>
#include <wlanapi.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define EXPORT __declspec(dllexport)

static const GUID ADAPTER = {0x5eed0001, 0x2222, 0x4333, {0x84, 0x44, 0x55, 0x55, 0x66, 0x66, 0x77, 0x77}};
static HANDLE const CLIENT = (HANDLE)(ULONG_PTR)0x5eed;
/* WLAN_REASON_CODE_NETWORK_NOT_AVAILABLE */
static const DWORD REASON_NOT_AVAILABLE = 0x00028002;
/* wlan_notification_msm_signal_quality_change (mingw-w64 lacks the MSM enum) */
static const DWORD MSM_SIGNAL_QUALITY_CHANGE = 8;

struct network {
    const char *ssid;
    BYTE bssid[6];
    ULONG freq_khz;
    LONG rssi;
    ULONG quality;
    USHORT capability;
    BOOL secure;
};

static const struct network NETWORKS[] = {
    {"WineAP", {0x02, 0x11, 0x22, 0x33, 0x44, 0x55}, 2437000, -45, 90, 0x0001, FALSE},
    {"WineSecure", {0x02, 0x11, 0x22, 0x33, 0x44, 0x66}, 5180000, -60, 70, 0x0011, TRUE},
};
#define NETWORK_COUNT (sizeof(NETWORKS) / sizeof(NETWORKS[0]))

/* RSN element: version 1, CCMP group, one CCMP pairwise, one PSK AKM. */
static const BYTE RSN_IE[] = {0x30, 0x14, 0x01, 0x00, 0x00, 0x0f, 0xac, 0x04, 0x01, 0x00, 0x00, 0x0f,
                              0xac, 0x04, 0x01, 0x00, 0x00, 0x0f, 0xac, 0x02, 0x00, 0x00};

static CRITICAL_SECTION lock;
static WLAN_NOTIFICATION_CALLBACK callback;
static PVOID callback_context;
static DWORD callback_sources;
static int connected = -1; /* index into NETWORKS */

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reserved;
    if (reason == DLL_PROCESS_ATTACH)
        InitializeCriticalSection(&lock);
    return TRUE;
}

struct pending {
    DWORD delay_ms;
    DWORD source;
    DWORD code;
    DWORD size;
    BYTE data[];
};

static DWORD WINAPI deliver(LPVOID param)
{
    struct pending *p = param;
    WLAN_NOTIFICATION_CALLBACK cb;
    PVOID ctx;
    Sleep(p->delay_ms);
    EnterCriticalSection(&lock);
    cb = (callback_sources & p->source) ? callback : NULL;
    ctx = callback_context;
    LeaveCriticalSection(&lock);
    if (cb) {
        WLAN_NOTIFICATION_DATA n;
        n.NotificationSource = p->source;
        n.NotificationCode = p->code;
        n.InterfaceGuid = ADAPTER;
        n.dwDataSize = p->size;
        n.pData = p->size ? p->data : NULL;
        cb(&n, ctx);
    }
    free(p);
    return 0;
}

static void notify_later(DWORD delay_ms, DWORD source, DWORD code, const void *data, DWORD size)
{
    struct pending *p = malloc(sizeof(*p) + size);
    HANDLE thread;
    if (!p)
        return;
    p->delay_ms = delay_ms;
    p->source = source;
    p->code = code;
    p->size = size;
    if (size)
        memcpy(p->data, data, size);
    thread = CreateThread(NULL, 0, deliver, p, 0, NULL);
    if (thread)
        CloseHandle(thread);
    else
        free(p);
}

static void notify_connection(DWORD delay_ms, DWORD code, const DOT11_SSID *ssid, DWORD reason)
{
    WLAN_CONNECTION_NOTIFICATION_DATA d;
    memset(&d, 0, sizeof(d));
    d.wlanConnectionMode = wlan_connection_mode_temporary_profile;
    d.dot11Ssid = *ssid;
    d.dot11BssType = dot11_BSS_type_infrastructure;
    d.wlanReasonCode = reason;
    notify_later(delay_ms, WLAN_NOTIFICATION_SOURCE_ACM, code, &d, sizeof(d));
}

static BOOL is_adapter(const GUID *id)
{
    return id && memcmp(id, &ADAPTER, sizeof(GUID)) == 0;
}

static DOT11_SSID dot11_ssid(const char *name)
{
    DOT11_SSID s;
    memset(&s, 0, sizeof(s));
    s.uSSIDLength = (ULONG)strlen(name);
    memcpy(s.ucSSID, name, s.uSSIDLength);
    return s;
}

EXPORT PVOID WINAPI WlanAllocateMemory(DWORD size)
{
    return HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, size ? size : 1);
}

EXPORT VOID WINAPI WlanFreeMemory(PVOID memory)
{
    if (memory)
        HeapFree(GetProcessHeap(), 0, memory);
}

EXPORT DWORD WINAPI WlanOpenHandle(DWORD client_version, PVOID reserved, PDWORD negotiated, PHANDLE handle)
{
    if (reserved || !negotiated || !handle || client_version < 1)
        return ERROR_INVALID_PARAMETER;
    *negotiated = 2;
    *handle = CLIENT;
    return ERROR_SUCCESS;
}

EXPORT DWORD WINAPI WlanCloseHandle(HANDLE handle, PVOID reserved)
{
    if (handle != CLIENT || reserved)
        return ERROR_INVALID_PARAMETER;
    EnterCriticalSection(&lock);
    callback = NULL;
    callback_sources = 0;
    LeaveCriticalSection(&lock);
    return ERROR_SUCCESS;
}

EXPORT DWORD WINAPI WlanRegisterNotification(HANDLE handle, DWORD sources, BOOL ignore_duplicate,
                                             WLAN_NOTIFICATION_CALLBACK cb, PVOID context, PVOID reserved,
                                             PDWORD previous)
{
    (void)ignore_duplicate;
    if (handle != CLIENT || reserved)
        return ERROR_INVALID_PARAMETER;
    EnterCriticalSection(&lock);
    if (previous)
        *previous = callback_sources;
    callback_sources = sources;
    callback = sources ? cb : NULL;
    callback_context = context;
    LeaveCriticalSection(&lock);
    return ERROR_SUCCESS;
}

EXPORT DWORD WINAPI WlanEnumInterfaces(HANDLE handle, PVOID reserved, PWLAN_INTERFACE_INFO_LIST *list)
{
    PWLAN_INTERFACE_INFO_LIST l;
    if (handle != CLIENT || reserved || !list)
        return ERROR_INVALID_PARAMETER;
    l = WlanAllocateMemory(sizeof(WLAN_INTERFACE_INFO_LIST) + sizeof(WLAN_INTERFACE_INFO));
    if (!l)
        return ERROR_NOT_ENOUGH_MEMORY;
    l->dwNumberOfItems = 1;
    l->InterfaceInfo[0].InterfaceGuid = ADAPTER;
    wcscpy(l->InterfaceInfo[0].strInterfaceDescription, L"Wine Test Wireless Adapter");
    EnterCriticalSection(&lock);
    l->InterfaceInfo[0].isState = connected >= 0 ? wlan_interface_state_connected : wlan_interface_state_disconnected;
    LeaveCriticalSection(&lock);
    *list = l;
    return ERROR_SUCCESS;
}

EXPORT DWORD WINAPI WlanGetNetworkBssList(HANDLE handle, const GUID *iface, const PDOT11_SSID ssid,
                                          DOT11_BSS_TYPE type, BOOL security_enabled, PVOID reserved,
                                          PWLAN_BSS_LIST *list)
{
    DWORD header = offsetof(WLAN_BSS_LIST, wlanBssEntries);
    DWORD total = header + NETWORK_COUNT * sizeof(WLAN_BSS_ENTRY);
    DWORD ies_at;
    size_t i;
    BYTE *block;
    PWLAN_BSS_LIST l;
    (void)ssid;
    (void)type;
    (void)security_enabled;
    if (handle != CLIENT || reserved || !list)
        return ERROR_INVALID_PARAMETER;
    if (!is_adapter(iface))
        return ERROR_NOT_FOUND;
    for (i = 0; i < NETWORK_COUNT; i++)
        total += 2 + strlen(NETWORKS[i].ssid) + (NETWORKS[i].secure ? sizeof(RSN_IE) : 0);
    block = WlanAllocateMemory(total);
    if (!block)
        return ERROR_NOT_ENOUGH_MEMORY;
    l = (PWLAN_BSS_LIST)block;
    l->dwTotalSize = total;
    l->dwNumberOfItems = NETWORK_COUNT;
    ies_at = header + NETWORK_COUNT * sizeof(WLAN_BSS_ENTRY);
    for (i = 0; i < NETWORK_COUNT; i++) {
        const struct network *n = &NETWORKS[i];
        PWLAN_BSS_ENTRY e = &l->wlanBssEntries[i];
        DWORD entry_at = header + (DWORD)(i * sizeof(WLAN_BSS_ENTRY));
        BYTE *ie = block + ies_at;
        size_t len = strlen(n->ssid);
        e->dot11Ssid = dot11_ssid(n->ssid);
        memcpy(e->dot11Bssid, n->bssid, 6);
        e->dot11BssType = dot11_BSS_type_infrastructure;
        e->lRssi = n->rssi;
        e->uLinkQuality = n->quality;
        e->bInRegDomain = TRUE;
        e->usBeaconPeriod = 100;
        e->usCapabilityInformation = n->capability;
        e->ulChCenterFrequency = n->freq_khz;
        ie[0] = 0; /* SSID element */
        ie[1] = (BYTE)len;
        memcpy(ie + 2, n->ssid, len);
        e->ulIeSize = (ULONG)(2 + len);
        if (n->secure) {
            memcpy(ie + 2 + len, RSN_IE, sizeof(RSN_IE));
            e->ulIeSize += sizeof(RSN_IE);
        }
        e->ulIeOffset = ies_at - entry_at; /* from the start of the entry */
        ies_at += e->ulIeSize;
    }
    *list = l;
    return ERROR_SUCCESS;
}

EXPORT DWORD WINAPI WlanScan(HANDLE handle, const GUID *iface, const PDOT11_SSID ssid, const PWLAN_RAW_DATA ie,
                             PVOID reserved)
{
    (void)ssid;
    (void)ie;
    if (handle != CLIENT || reserved)
        return ERROR_INVALID_PARAMETER;
    if (!is_adapter(iface))
        return ERROR_NOT_FOUND;
    notify_later(100, WLAN_NOTIFICATION_SOURCE_ACM, wlan_notification_acm_scan_complete, NULL, 0);
    return ERROR_SUCCESS;
}

EXPORT DWORD WINAPI WlanQueryInterface(HANDLE handle, const GUID *iface, WLAN_INTF_OPCODE opcode, PVOID reserved,
                                       PDWORD size, PVOID *data, PWLAN_OPCODE_VALUE_TYPE value_type)
{
    PWLAN_CONNECTION_ATTRIBUTES a;
    int index;
    if (handle != CLIENT || reserved || !size || !data)
        return ERROR_INVALID_PARAMETER;
    if (!is_adapter(iface))
        return ERROR_NOT_FOUND;
    if (opcode != wlan_intf_opcode_current_connection)
        return ERROR_NOT_SUPPORTED;
    EnterCriticalSection(&lock);
    index = connected;
    LeaveCriticalSection(&lock);
    if (index < 0)
        return ERROR_INVALID_STATE;
    a = WlanAllocateMemory(sizeof(*a));
    if (!a)
        return ERROR_NOT_ENOUGH_MEMORY;
    a->isState = wlan_interface_state_connected;
    a->wlanConnectionMode = wlan_connection_mode_temporary_profile;
    a->wlanAssociationAttributes.dot11Ssid = dot11_ssid(NETWORKS[index].ssid);
    a->wlanAssociationAttributes.dot11BssType = dot11_BSS_type_infrastructure;
    memcpy(a->wlanAssociationAttributes.dot11Bssid, NETWORKS[index].bssid, 6);
    a->wlanAssociationAttributes.wlanSignalQuality = NETWORKS[index].quality;
    a->wlanSecurityAttributes.bSecurityEnabled = NETWORKS[index].secure;
    a->wlanSecurityAttributes.dot11AuthAlgorithm =
        NETWORKS[index].secure ? DOT11_AUTH_ALGO_RSNA_PSK : DOT11_AUTH_ALGO_80211_OPEN;
    a->wlanSecurityAttributes.dot11CipherAlgorithm =
        NETWORKS[index].secure ? DOT11_CIPHER_ALGO_CCMP : DOT11_CIPHER_ALGO_NONE;
    *size = sizeof(*a);
    *data = a;
    if (value_type)
        *value_type = wlan_opcode_value_type_query_only;
    return ERROR_SUCCESS;
}

EXPORT DWORD WINAPI WlanConnect(HANDLE handle, const GUID *iface, const PWLAN_CONNECTION_PARAMETERS params,
                                PVOID reserved)
{
    size_t i;
    int found = -1;
    WCHAR wanted[64];
    DWORD signal = 70;
    if (handle != CLIENT || reserved || !params)
        return ERROR_INVALID_PARAMETER;
    if (!is_adapter(iface))
        return ERROR_NOT_FOUND;
    if (params->wlanConnectionMode != wlan_connection_mode_temporary_profile || !params->strProfile ||
        !params->pDot11Ssid || params->pDot11Ssid->uSSIDLength > 32)
        return ERROR_INVALID_PARAMETER;
    for (i = 0; i < NETWORK_COUNT; i++) {
        const struct network *n = &NETWORKS[i];
        if (params->pDot11Ssid->uSSIDLength == strlen(n->ssid) &&
            memcmp(params->pDot11Ssid->ucSSID, n->ssid, strlen(n->ssid)) == 0 &&
            (!params->pDesiredBssidList || params->pDesiredBssidList->uNumOfEntries == 0 ||
             memcmp(params->pDesiredBssidList->BSSIDs[0], n->bssid, 6) == 0))
            found = (int)i;
    }
    /* The profile must name the network and carry a key exactly when it is secured. */
    if (found >= 0) {
        swprintf(wanted, 64, L"<name>%hs</name>", NETWORKS[found].ssid);
        if (!wcsstr(params->strProfile, wanted) ||
            (wcsstr(params->strProfile, L"<keyMaterial>") != NULL) != (NETWORKS[found].secure != 0))
            found = -1;
    }
    if (found < 0) {
        notify_connection(100, wlan_notification_acm_connection_complete, params->pDot11Ssid, REASON_NOT_AVAILABLE);
        return ERROR_SUCCESS;
    }
    EnterCriticalSection(&lock);
    connected = found;
    LeaveCriticalSection(&lock);
    notify_connection(100, wlan_notification_acm_connection_complete, params->pDot11Ssid, 0);
    notify_later(600, WLAN_NOTIFICATION_SOURCE_MSM, MSM_SIGNAL_QUALITY_CHANGE, &signal,
                 sizeof(signal));
    return ERROR_SUCCESS;
}

EXPORT DWORD WINAPI WlanDisconnect(HANDLE handle, const GUID *iface, PVOID reserved)
{
    int was;
    DOT11_SSID ssid;
    if (handle != CLIENT || reserved)
        return ERROR_INVALID_PARAMETER;
    if (!is_adapter(iface))
        return ERROR_NOT_FOUND;
    EnterCriticalSection(&lock);
    was = connected;
    connected = -1;
    LeaveCriticalSection(&lock);
    if (was >= 0) {
        ssid = dot11_ssid(NETWORKS[was].ssid);
        notify_connection(100, wlan_notification_acm_disconnected, &ssid, 0);
    }
    return ERROR_SUCCESS;
}
