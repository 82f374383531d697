// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * vsock_wifi: a Wi-Fi station interface for Linux virtual machines whose
 * scans and connections are made by the host (proxy-wifi) over AF_VSOCK.
 *
 * The interface is a cfg80211 FullMAC station stacked on a lower Ethernet
 * device (the VM's virtio-net NIC) that carries the data frames once the host
 * reports a connection. The control path follows docs/PROTOCOL (version 1):
 * one vsock connection per request to the host, one per notification from it.
 *
 * Locking: one mutex (vsock_wifi.lock) guards all state; it is only taken in
 * process context and nested inside rtnl and the wiphy mutex, never around
 * them. The transmit and receive paths take no lock at all: they read the
 * connection flag with READ_ONCE(). There is no spinlock in this driver.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/etherdevice.h>
#include <linux/if_arp.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/net.h>
#include <linux/netdevice.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/version.h>
#include <linux/vm_sockets.h>
#include <linux/workqueue.h>
#include <net/cfg80211.h>
/* linux/unaligned.h replaced asm/unaligned.h in 6.12. */
#if __has_include(<linux/unaligned.h>)
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif
#include <net/rtnetlink.h>
#include <net/sock.h>

#define VW_DRIVER_NAME "vsock_wifi"

static unsigned int host_cid = VMADDR_CID_HOST;
module_param(host_cid, uint, 0644);
MODULE_PARM_DESC(host_cid, "vsock CID of the proxy-wifi host (default 2)");

static unsigned int request_port = 12345;
module_param(request_port, uint, 0644);
MODULE_PARM_DESC(request_port, "host vsock port receiving requests (default 12345)");

static unsigned int notification_port = 12346;
module_param(notification_port, uint, 0444);
MODULE_PARM_DESC(notification_port, "guest vsock port listening for host notifications (default 12346)");

static char *lower = "";
module_param(lower, charp, 0444);
MODULE_PARM_DESC(lower, "create the interface at load on this Ethernet device; \"auto\": the first virtio-net device");

static char *ifname = "wlan0";
module_param(ifname, charp, 0444);
MODULE_PARM_DESC(ifname, "name of the interface created by the lower parameter (default wlan0)");

/* Wire protocol, version 1 (see PROTOCOL.md in the proxy-wifi sources). */
#define VW_VERSION 1
#define VW_HDR_LEN 7
enum vw_op {
	VW_OP_INVALID = 0,
	VW_OP_SCAN_REQUEST = 1,
	VW_OP_SCAN_RESPONSE = 2,
	VW_OP_CONNECT_REQUEST = 3,
	VW_OP_CONNECT_RESPONSE = 4,
	VW_OP_DISCONNECT_REQUEST = 5,
	VW_OP_DISCONNECT_RESPONSE = 6,
	VW_OP_NOTIF_DISCONNECTED = 7,
	VW_OP_NOTIF_SIGNAL_QUALITY = 8,
};

#define VW_SCAN_REQUEST_LEN 33
#define VW_SCAN_FIXED_LEN 9
#define VW_BSS_ENTRY_LEN 26
#define VW_CONNECT_FIXED_LEN 76
#define VW_CONNECT_RESPONSE_LEN 16
#define VW_SESSION_LEN 8
#define VW_WIRE_MAX_AKM 2
#define VW_WIRE_MAX_CIPHERS 5
/* A host keeps bodies far below 4 MiB; anything larger is refused unread. */
#define VW_MAX_BODY (4U << 20)

#define VW_REPLY_TIMEOUT (20 * HZ)
#define VW_SCAN_COMPLETION_TIMEOUT (10 * HZ)
/*
 * The protocol lets a guest read notifications with a 10 ms timeout; a
 * longer one costs nothing (one listener thread) and survives slow,
 * emulated VMs.
 */
#define VW_NOTIFICATION_TIMEOUT (HZ)
/* How often the listener thread checks whether it must stop. */
#define VW_ACCEPT_POLL (HZ / 2)
/* BSSs remembered to report the joined one after cfg80211 expired it. */
#define VW_MAX_CACHED_BSS 64

struct vw_bss {
	u8 bssid[ETH_ALEN];
	u16 capability;
	u16 beacon_interval;
	s32 rssi_dbm;
	u32 freq_khz;
	unsigned long seen;
	size_t ie_len;
	u8 ies[];
};

enum vw_conn_state {
	VW_IDLE,
	VW_CONNECTING,
	VW_CONNECTED,
};

/* The connect request as handed over by cfg80211, kept until sent. */
struct vw_connect_params {
	u8 ssid[IEEE80211_MAX_SSID_LEN];
	u8 ssid_len;
	u8 bssid[ETH_ALEN];
	u8 auth_type;
	u8 wpa_versions;
	u8 n_akm;
	u32 akm[VW_WIRE_MAX_AKM];
	u8 n_pairwise;
	u32 pairwise[VW_WIRE_MAX_CIPHERS];
	u32 group;
	bool offloaded_auth;
	u8 key_len;
	u8 key[U8_MAX];
};

/* The module-wide state: one wiphy, at most one interface. */
struct vsock_wifi {
	struct wiphy *wiphy;
	struct workqueue_struct *wq;
	struct task_struct *listener_thread;
	struct socket *listener;

	/* Guards everything below it. */
	struct mutex lock;
	struct net_device *netdev;

	struct cfg80211_scan_request *scan_req;
	u64 scan_gen;
	u8 scan_ssid[IEEE80211_MAX_SSID_LEN];
	u8 scan_ssid_len;
	bool scan_waiting;
	unsigned long scan_deadline;
	struct work_struct scan_work;
	struct delayed_work scan_timeout;

	enum vw_conn_state conn_state;
	u64 conn_gen;
	struct vw_connect_params conn;
	struct work_struct connect_work;
	u8 bssid[ETH_ALEN];
	u8 ssid[IEEE80211_MAX_SSID_LEN];
	u8 ssid_len;
	u64 session_id;
	s8 signal_dbm;

	struct vw_bss *cache[VW_MAX_CACHED_BSS];

	/* The request socket in flight, shut down when the module stops. */
	struct mutex inflight_lock;
	struct socket *inflight;
	bool stopping;

	/* Creation of the interface from the lower= parameter. */
	struct work_struct auto_work;
	int auto_ifindex;
	bool auto_done;
};

struct vw_netdev_priv {
	struct wireless_dev wdev;
	struct net_device *lowerdev;
	struct vsock_wifi *vw;
	/* Set while the host reports a connection; read without a lock. */
	bool connected;
	atomic_long_t rx_packets;
	atomic_long_t rx_bytes;
	atomic_long_t tx_dropped;
};

struct vw_disconnect_work {
	struct work_struct work;
	struct vsock_wifi *vw;
	u64 session_id;
};

static struct vsock_wifi *vw_global;
static struct rtnl_link_ops vw_link_ops;

/* ---- channels and rates ------------------------------------------------ */

#define VW_CHAN(_band, _freq) { .band = (_band), .center_freq = (_freq), .max_power = 20 }

static struct ieee80211_channel vw_channels_2ghz[] = {
	VW_CHAN(NL80211_BAND_2GHZ, 2412), VW_CHAN(NL80211_BAND_2GHZ, 2417),
	VW_CHAN(NL80211_BAND_2GHZ, 2422), VW_CHAN(NL80211_BAND_2GHZ, 2427),
	VW_CHAN(NL80211_BAND_2GHZ, 2432), VW_CHAN(NL80211_BAND_2GHZ, 2437),
	VW_CHAN(NL80211_BAND_2GHZ, 2442), VW_CHAN(NL80211_BAND_2GHZ, 2447),
	VW_CHAN(NL80211_BAND_2GHZ, 2452), VW_CHAN(NL80211_BAND_2GHZ, 2457),
	VW_CHAN(NL80211_BAND_2GHZ, 2462), VW_CHAN(NL80211_BAND_2GHZ, 2467),
	VW_CHAN(NL80211_BAND_2GHZ, 2472), VW_CHAN(NL80211_BAND_2GHZ, 2484),
};

static struct ieee80211_channel vw_channels_5ghz[] = {
	VW_CHAN(NL80211_BAND_5GHZ, 5180), VW_CHAN(NL80211_BAND_5GHZ, 5200),
	VW_CHAN(NL80211_BAND_5GHZ, 5220), VW_CHAN(NL80211_BAND_5GHZ, 5240),
	VW_CHAN(NL80211_BAND_5GHZ, 5260), VW_CHAN(NL80211_BAND_5GHZ, 5280),
	VW_CHAN(NL80211_BAND_5GHZ, 5300), VW_CHAN(NL80211_BAND_5GHZ, 5320),
	VW_CHAN(NL80211_BAND_5GHZ, 5500), VW_CHAN(NL80211_BAND_5GHZ, 5520),
	VW_CHAN(NL80211_BAND_5GHZ, 5540), VW_CHAN(NL80211_BAND_5GHZ, 5560),
	VW_CHAN(NL80211_BAND_5GHZ, 5580), VW_CHAN(NL80211_BAND_5GHZ, 5600),
	VW_CHAN(NL80211_BAND_5GHZ, 5620), VW_CHAN(NL80211_BAND_5GHZ, 5640),
	VW_CHAN(NL80211_BAND_5GHZ, 5660), VW_CHAN(NL80211_BAND_5GHZ, 5680),
	VW_CHAN(NL80211_BAND_5GHZ, 5700), VW_CHAN(NL80211_BAND_5GHZ, 5720),
	VW_CHAN(NL80211_BAND_5GHZ, 5745), VW_CHAN(NL80211_BAND_5GHZ, 5765),
	VW_CHAN(NL80211_BAND_5GHZ, 5785), VW_CHAN(NL80211_BAND_5GHZ, 5805),
	VW_CHAN(NL80211_BAND_5GHZ, 5825), VW_CHAN(NL80211_BAND_5GHZ, 5845),
	VW_CHAN(NL80211_BAND_5GHZ, 5865), VW_CHAN(NL80211_BAND_5GHZ, 5885),
};

/* 6 GHz: channels 1 to 233, every 20 MHz from 5955 MHz; filled at init. */
#define VW_N_CHANNELS_6GHZ 59
static struct ieee80211_channel vw_channels_6ghz[VW_N_CHANNELS_6GHZ];

static struct ieee80211_rate vw_rates[] = {
	{ .bitrate = 10 }, { .bitrate = 20 }, { .bitrate = 55 },
	{ .bitrate = 110 }, { .bitrate = 60 }, { .bitrate = 90 },
	{ .bitrate = 120 }, { .bitrate = 180 }, { .bitrate = 240 },
	{ .bitrate = 360 }, { .bitrate = 480 }, { .bitrate = 540 },
};

/* The OFDM rates, the first four (DSSS/CCK) excluded. */
#define VW_OFDM_RATES (vw_rates + 4)
#define VW_N_OFDM_RATES (ARRAY_SIZE(vw_rates) - 4)

static struct ieee80211_supported_band vw_band_2ghz = {
	.band = NL80211_BAND_2GHZ,
	.channels = vw_channels_2ghz,
	.n_channels = ARRAY_SIZE(vw_channels_2ghz),
	.bitrates = vw_rates,
	.n_bitrates = ARRAY_SIZE(vw_rates),
};

static struct ieee80211_supported_band vw_band_5ghz = {
	.band = NL80211_BAND_5GHZ,
	.channels = vw_channels_5ghz,
	.n_channels = ARRAY_SIZE(vw_channels_5ghz),
	.bitrates = VW_OFDM_RATES,
	.n_bitrates = VW_N_OFDM_RATES,
};

/*
 * cfg80211 accepts a 6 GHz band only with HE capabilities. The radio is the
 * host's; this is the minimum (one stream, HE-MCS 0-7) that lets the band,
 * hence the host's 6 GHz networks, be reported.
 */
static const struct ieee80211_sband_iftype_data vw_he_6ghz[] = {
	{
		.types_mask = BIT(NL80211_IFTYPE_STATION),
		.he_cap = {
			.has_he = true,
			.he_mcs_nss_supp = {
				.rx_mcs_80 = cpu_to_le16(0xfffc),
				.tx_mcs_80 = cpu_to_le16(0xfffc),
				.rx_mcs_160 = cpu_to_le16(0xffff),
				.tx_mcs_160 = cpu_to_le16(0xffff),
				.rx_mcs_80p80 = cpu_to_le16(0xffff),
				.tx_mcs_80p80 = cpu_to_le16(0xffff),
			},
		},
	},
};

static struct ieee80211_supported_band vw_band_6ghz = {
	.band = NL80211_BAND_6GHZ,
	.channels = vw_channels_6ghz,
	.n_channels = ARRAY_SIZE(vw_channels_6ghz),
	.bitrates = VW_OFDM_RATES,
	.n_bitrates = VW_N_OFDM_RATES,
};

/* Ciphers the host may negotiate; keys never reach this driver. */
static const u32 vw_cipher_suites[] = {
	WLAN_CIPHER_SUITE_TKIP,
	WLAN_CIPHER_SUITE_CCMP,
	WLAN_CIPHER_SUITE_CCMP_256,
	WLAN_CIPHER_SUITE_GCMP,
	WLAN_CIPHER_SUITE_GCMP_256,
	WLAN_CIPHER_SUITE_AES_CMAC,
	WLAN_CIPHER_SUITE_BIP_CMAC_256,
	WLAN_CIPHER_SUITE_BIP_GMAC_128,
	WLAN_CIPHER_SUITE_BIP_GMAC_256,
};

/* ---- vsock transport --------------------------------------------------- */

static long vw_remaining(unsigned long deadline)
{
	long left = (long)(deadline - jiffies);

	return left > 0 ? left : 1;
}

static int vw_send_all(struct socket *sock, struct kvec *vec, size_t nvec,
		       size_t len, unsigned long deadline)
{
	struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };
	int ret;

	while (len) {
		sock->sk->sk_sndtimeo = vw_remaining(deadline);
		ret = kernel_sendmsg(sock, &msg, vec, nvec, len);
		if (ret < 0)
			return ret;
		if (ret == 0)
			return -EPIPE;
		len -= ret;
		/* Skip what was sent. */
		while (ret) {
			size_t step = min_t(size_t, ret, vec->iov_len);

			vec->iov_base += step;
			vec->iov_len -= step;
			ret -= step;
			if (!vec->iov_len && nvec > 1) {
				vec++;
				nvec--;
			}
		}
		if (time_after(jiffies, deadline) && len)
			return -ETIMEDOUT;
	}
	return 0;
}

static int vw_recv_all(struct socket *sock, void *buf, size_t len,
		       unsigned long deadline)
{
	size_t done = 0;
	int ret;

	while (done < len) {
		struct msghdr msg = { .msg_flags = 0 };
		struct kvec vec = { .iov_base = buf + done, .iov_len = len - done };

		sock->sk->sk_rcvtimeo = vw_remaining(deadline);
		ret = kernel_recvmsg(sock, &msg, &vec, 1, len - done, MSG_WAITALL);
		if (ret < 0)
			return ret == -EAGAIN ? -ETIMEDOUT : ret;
		if (ret == 0)
			return -ECONNRESET;
		done += ret;
		if (done < len && time_after(jiffies, deadline))
			return -ETIMEDOUT;
	}
	return 0;
}

/* Largest body accepted for a message of this operation, or -1. */
static long vw_max_body(u8 op)
{
	switch (op) {
	case VW_OP_INVALID:
	case VW_OP_DISCONNECT_RESPONSE:
		return 0;
	case VW_OP_SCAN_RESPONSE:
		return VW_MAX_BODY;
	case VW_OP_CONNECT_RESPONSE:
		return VW_CONNECT_RESPONSE_LEN;
	case VW_OP_NOTIF_DISCONNECTED:
		return VW_SESSION_LEN;
	case VW_OP_NOTIF_SIGNAL_QUALITY:
		return 1;
	default:
		return -1;
	}
}

/*
 * Reads one whole message. Checks the version and the size against the
 * operation before allocating; the body (NULL when empty) is kvfree()d by
 * the caller.
 */
static int vw_read_message(struct socket *sock, unsigned long deadline,
			   u8 *op, u8 **body, u32 *len)
{
	u8 hdr[VW_HDR_LEN];
	long max;
	u32 size;
	u8 *buf;
	int ret;

	ret = vw_recv_all(sock, hdr, sizeof(hdr), deadline);
	if (ret)
		return ret;
	if (get_unaligned_le16(hdr + 5) != VW_VERSION)
		return -EPROTO;
	size = get_unaligned_le32(hdr + 1);
	max = vw_max_body(hdr[0]);
	if (max < 0 || size > max)
		return -EPROTO;
	/* Fixed-size messages must have exactly their size. */
	if (hdr[0] != VW_OP_SCAN_RESPONSE && size != max)
		return -EPROTO;
	if (hdr[0] == VW_OP_SCAN_RESPONSE && size < VW_SCAN_FIXED_LEN)
		return -EPROTO;

	buf = NULL;
	if (size) {
		buf = kvmalloc(size, GFP_KERNEL);
		if (!buf)
			return -ENOMEM;
		ret = vw_recv_all(sock, buf, size, deadline);
		if (ret) {
			kvfree(buf);
			return ret;
		}
	}
	*op = hdr[0];
	*body = buf;
	*len = size;
	return 0;
}

/*
 * Sends one request to the host on a new connection and reads its reply,
 * within the protocol's 20 s. Returns 0 with the reply, -EREMOTEIO when the
 * host answered INVALID or with another operation, or another error.
 */
static int vw_request(struct vsock_wifi *vw, u8 op, const void *body, u32 len,
		      u8 reply_op, u8 **reply, u32 *reply_len)
{
	unsigned long deadline = jiffies + VW_REPLY_TIMEOUT;
	struct sockaddr_vm addr = {
		.svm_family = AF_VSOCK,
		.svm_cid = READ_ONCE(host_cid),
		.svm_port = READ_ONCE(request_port),
	};
	u8 hdr[VW_HDR_LEN];
	struct kvec vec[2];
	struct socket *sock;
	u8 got_op;
	int ret;

	ret = sock_create_kern(&init_net, AF_VSOCK, SOCK_STREAM, 0, &sock);
	if (ret)
		return ret;

	mutex_lock(&vw->inflight_lock);
	if (vw->stopping) {
		mutex_unlock(&vw->inflight_lock);
		sock_release(sock);
		return -ESHUTDOWN;
	}
	vw->inflight = sock;
	mutex_unlock(&vw->inflight_lock);

	ret = kernel_connect(sock, (struct sockaddr *)&addr, sizeof(addr), 0);
	if (ret)
		goto out;

	hdr[0] = op;
	put_unaligned_le32(len, hdr + 1);
	put_unaligned_le16(VW_VERSION, hdr + 5);
	vec[0].iov_base = hdr;
	vec[0].iov_len = sizeof(hdr);
	vec[1].iov_base = (void *)body;
	vec[1].iov_len = len;
	ret = vw_send_all(sock, vec, len ? 2 : 1, sizeof(hdr) + len, deadline);
	if (ret)
		goto out;

	ret = vw_read_message(sock, deadline, &got_op, reply, reply_len);
	if (ret)
		goto out;
	if (got_op != reply_op) {
		kvfree(*reply);
		*reply = NULL;
		ret = -EREMOTEIO;
	}
out:
	pr_debug("request %u (%u bytes): %d\n", op, len, ret);
	mutex_lock(&vw->inflight_lock);
	vw->inflight = NULL;
	mutex_unlock(&vw->inflight_lock);
	sock_release(sock);
	return ret;
}

/* ---- BSS reports ------------------------------------------------------- */

static void vw_cache_bss(struct vsock_wifi *vw, const u8 *entry,
			 const u8 *ies, size_t ie_len, u32 freq_khz)
{
	struct vw_bss *bss, **slot = NULL;
	int i;

	lockdep_assert_held(&vw->lock);

	for (i = 0; i < VW_MAX_CACHED_BSS; i++) {
		if (vw->cache[i] && ether_addr_equal(vw->cache[i]->bssid, entry)) {
			slot = &vw->cache[i];
			break;
		}
		if (!vw->cache[i] && !slot)
			slot = &vw->cache[i];
	}
	if (!slot) {
		/* Full: replace the one seen longest ago. */
		slot = &vw->cache[0];
		for (i = 1; i < VW_MAX_CACHED_BSS; i++)
			if (time_before(vw->cache[i]->seen, (*slot)->seen))
				slot = &vw->cache[i];
	}

	bss = kmalloc(struct_size(bss, ies, ie_len), GFP_KERNEL);
	if (!bss)
		return;
	ether_addr_copy(bss->bssid, entry);
	bss->capability = get_unaligned_le16(entry + 6);
	bss->rssi_dbm = (s32)get_unaligned_le32(entry + 8);
	bss->beacon_interval = get_unaligned_le16(entry + 12);
	bss->freq_khz = freq_khz;
	bss->seen = jiffies;
	bss->ie_len = ie_len;
	memcpy(bss->ies, ies, ie_len);
	kfree(*slot);
	*slot = bss;
}

static struct cfg80211_bss *vw_inform(struct vsock_wifi *vw, const struct vw_bss *b)
{
	struct ieee80211_channel *chan;

	chan = ieee80211_get_channel_khz(vw->wiphy, b->freq_khz);
	if (!chan)
		return NULL;
	return cfg80211_inform_bss(vw->wiphy, chan, CFG80211_BSS_FTYPE_UNKNOWN,
				   b->bssid, 0, b->capability, b->beacon_interval,
				   b->ies, b->ie_len, b->rssi_dbm * 100, GFP_KERNEL);
}

/*
 * Reports the BSSs of a SCAN_RESPONSE body to cfg80211 and remembers them.
 * Returns false when the body is malformed as a whole (nothing reported);
 * single BSSs on unknown channels or with IEs out of bounds are dropped.
 */
static bool vw_process_scan(struct vsock_wifi *vw, const u8 *body, u32 len,
			    bool *complete)
{
	u32 num_bss, i;
	u64 entries_end;

	lockdep_assert_held(&vw->lock);

	if (len < VW_SCAN_FIXED_LEN || get_unaligned_le32(body + 5) != len)
		return false;
	num_bss = get_unaligned_le32(body + 1);
	entries_end = VW_SCAN_FIXED_LEN + (u64)num_bss * VW_BSS_ENTRY_LEN;
	if (entries_end > len)
		return false;
	*complete = body[0] != 0;

	for (i = 0; i < num_bss; i++) {
		const u8 *entry = body + VW_SCAN_FIXED_LEN + i * VW_BSS_ENTRY_LEN;
		u64 ie_start = (entry - body) + (u64)get_unaligned_le32(entry + 22);
		u32 ie_len = get_unaligned_le32(entry + 18);
		u32 freq_khz = get_unaligned_le32(entry + 14);
		struct cfg80211_bss *cbss;
		int slot;

		if (ie_start < entries_end || ie_start + ie_len > len)
			continue;
		if (!ieee80211_get_channel_khz(vw->wiphy, freq_khz))
			continue;
		vw_cache_bss(vw, entry, body + ie_start, ie_len, freq_khz);
		for (slot = 0; slot < VW_MAX_CACHED_BSS; slot++) {
			if (vw->cache[slot] &&
			    ether_addr_equal(vw->cache[slot]->bssid, entry)) {
				cbss = vw_inform(vw, vw->cache[slot]);
				if (cbss)
					cfg80211_put_bss(vw->wiphy, cbss);
				break;
			}
		}
	}
	return true;
}

/* A BSS for the SSID alone, when the host joined one never reported. */
static struct cfg80211_bss *vw_inform_unknown(struct vsock_wifi *vw,
					      const u8 *bssid)
{
	u8 ies[2 + IEEE80211_MAX_SSID_LEN];
	struct ieee80211_channel *chan;
	u16 capability = WLAN_CAPABILITY_ESS;

	/*
	 * The protocol's reply carries no channel: report the first one of
	 * the 2.4 GHz band rather than fail a connection the host made.
	 */
	chan = &vw_channels_2ghz[0];
	ies[0] = WLAN_EID_SSID;
	ies[1] = vw->ssid_len;
	memcpy(ies + 2, vw->ssid, vw->ssid_len);
	if (vw->conn.wpa_versions || vw->conn.n_pairwise)
		capability |= WLAN_CAPABILITY_PRIVACY;
	return cfg80211_inform_bss(vw->wiphy, chan, CFG80211_BSS_FTYPE_UNKNOWN,
				   bssid, 0, capability, 100, ies,
				   2 + vw->ssid_len, -5000, GFP_KERNEL);
}

static const struct vw_bss *vw_cached(struct vsock_wifi *vw, const u8 *bssid)
{
	int i;

	for (i = 0; i < VW_MAX_CACHED_BSS; i++)
		if (vw->cache[i] && ether_addr_equal(vw->cache[i]->bssid, bssid))
			return vw->cache[i];
	return NULL;
}

static void vw_clear_cache(struct vsock_wifi *vw)
{
	int i;

	for (i = 0; i < VW_MAX_CACHED_BSS; i++) {
		kfree(vw->cache[i]);
		vw->cache[i] = NULL;
	}
}

/* ---- scan -------------------------------------------------------------- */

static void vw_finish_scan(struct vsock_wifi *vw, bool aborted)
{
	struct cfg80211_scan_info info = { .aborted = aborted };

	lockdep_assert_held(&vw->lock);
	if (!vw->scan_req)
		return;
	cfg80211_scan_done(vw->scan_req, &info);
	vw->scan_req = NULL;
	vw->scan_waiting = false;
}

static void vw_scan_work(struct work_struct *work)
{
	struct vsock_wifi *vw = container_of(work, struct vsock_wifi, scan_work);
	u8 req[VW_SCAN_REQUEST_LEN] = {};
	bool complete = false;
	u8 *reply = NULL;
	u32 reply_len = 0;
	u64 gen;
	int ret;

	mutex_lock(&vw->lock);
	if (!vw->scan_req || vw->scan_waiting) {
		mutex_unlock(&vw->lock);
		return;
	}
	gen = vw->scan_gen;
	req[0] = vw->scan_ssid_len;
	memcpy(req + 1, vw->scan_ssid, vw->scan_ssid_len);
	mutex_unlock(&vw->lock);

	ret = vw_request(vw, VW_OP_SCAN_REQUEST, req, sizeof(req),
			 VW_OP_SCAN_RESPONSE, &reply, &reply_len);

	mutex_lock(&vw->lock);
	if (!ret && !vw_process_scan(vw, reply, reply_len, &complete))
		ret = -EPROTO;
	if (vw->scan_req && vw->scan_gen == gen) {
		if (ret) {
			pr_info_ratelimited("scan failed: %d\n", ret);
			vw_finish_scan(vw, true);
		} else if (complete) {
			vw_finish_scan(vw, false);
		} else {
			/* The host finishes it with a notification, or we do. */
			vw->scan_waiting = true;
			vw->scan_deadline = jiffies + VW_SCAN_COMPLETION_TIMEOUT;
			mod_delayed_work(system_wq, &vw->scan_timeout,
					 VW_SCAN_COMPLETION_TIMEOUT);
		}
	}
	mutex_unlock(&vw->lock);
	kvfree(reply);
}

static void vw_scan_timeout(struct work_struct *work)
{
	struct vsock_wifi *vw = container_of(to_delayed_work(work),
					     struct vsock_wifi, scan_timeout);

	mutex_lock(&vw->lock);
	/* A stale timer from an earlier scan leaves the current one alone. */
	if (vw->scan_waiting && !time_before(jiffies, vw->scan_deadline))
		vw_finish_scan(vw, false);
	mutex_unlock(&vw->lock);
}

static int vw_scan(struct wiphy *wiphy, struct cfg80211_scan_request *request)
{
	struct vsock_wifi *vw = *(struct vsock_wifi **)wiphy_priv(wiphy);

	mutex_lock(&vw->lock);
	if (vw->scan_req) {
		mutex_unlock(&vw->lock);
		return -EBUSY;
	}
	vw->scan_req = request;
	vw->scan_gen++;
	vw->scan_waiting = false;
	vw->scan_ssid_len = 0;
	if (request->n_ssids && request->ssids[0].ssid_len) {
		vw->scan_ssid_len = request->ssids[0].ssid_len;
		memcpy(vw->scan_ssid, request->ssids[0].ssid, vw->scan_ssid_len);
	}
	queue_work(vw->wq, &vw->scan_work);
	mutex_unlock(&vw->lock);
	return 0;
}

static void vw_abort_scan(struct wiphy *wiphy, struct wireless_dev *wdev)
{
	struct vsock_wifi *vw = *(struct vsock_wifi **)wiphy_priv(wiphy);

	mutex_lock(&vw->lock);
	vw_finish_scan(vw, true);
	mutex_unlock(&vw->lock);
}

/* ---- connect and disconnect -------------------------------------------- */

static void vw_set_connected(struct net_device *netdev, bool connected)
{
	struct vw_netdev_priv *priv = netdev_priv(netdev);

	WRITE_ONCE(priv->connected, connected);
	if (connected)
		netif_carrier_on(netdev);
	else
		netif_carrier_off(netdev);
}

static void vw_disconnect_work(struct work_struct *work)
{
	struct vw_disconnect_work *dw = container_of(work, struct vw_disconnect_work, work);
	u8 body[VW_SESSION_LEN];
	u8 *reply = NULL;
	u32 reply_len;
	int ret;

	put_unaligned_le64(dw->session_id, body);
	ret = vw_request(dw->vw, VW_OP_DISCONNECT_REQUEST, body, sizeof(body),
			 VW_OP_DISCONNECT_RESPONSE, &reply, &reply_len);
	if (ret)
		pr_info_ratelimited("host disconnect failed: %d (disconnected locally)\n", ret);
	kvfree(reply);
	kfree(dw);
}

/* Tells the host to leave a session; the guest side is already down. */
static void vw_queue_host_disconnect(struct vsock_wifi *vw, u64 session_id)
{
	struct vw_disconnect_work *dw;

	dw = kmalloc(sizeof(*dw), GFP_KERNEL);
	if (!dw)
		return;
	INIT_WORK(&dw->work, vw_disconnect_work);
	dw->vw = vw;
	dw->session_id = session_id;
	queue_work(vw->wq, &dw->work);
}

static void vw_port_authorized(struct net_device *netdev, const u8 *bssid)
{
#ifdef VW_PORT_AUTHORIZED_TD_BITMAP
	cfg80211_port_authorized(netdev, bssid, NULL, 0, GFP_KERNEL);
#else
	cfg80211_port_authorized(netdev, bssid, GFP_KERNEL);
#endif
}

static void vw_connect_done(struct vsock_wifi *vw, int ret, const u8 *reply)
{
	struct net_device *netdev = vw->netdev;
	const struct vw_bss *cached = NULL;
	struct cfg80211_bss *cbss = NULL;
	u16 status = WLAN_STATUS_UNSPECIFIED_FAILURE;
	const u8 *bssid = NULL;

	lockdep_assert_held(&vw->lock);

	if (!ret) {
		status = get_unaligned_le16(reply);
		bssid = reply + 2;
	} else {
		pr_info_ratelimited("connect failed: %d\n", ret);
	}

	if (status == WLAN_STATUS_SUCCESS) {
		cached = vw_cached(vw, bssid);
		/*
		 * Re-report the joined BSS: cfg80211 drops scan results after
		 * 30 s and would otherwise never see the connection.
		 */
		cbss = cached ? vw_inform(vw, cached) : vw_inform_unknown(vw, bssid);
		if (!cbss) {
			status = WLAN_STATUS_UNSPECIFIED_FAILURE;
			vw_queue_host_disconnect(vw, get_unaligned_le64(reply + 8));
		}
	}

	if (status != WLAN_STATUS_SUCCESS) {
		cfg80211_connect_bss(netdev, NULL, NULL, NULL, 0, NULL, 0, status,
				     GFP_KERNEL, NL80211_TIMEOUT_UNSPECIFIED);
		vw->conn_state = VW_IDLE;
		return;
	}

	ether_addr_copy(vw->bssid, bssid);
	vw->session_id = get_unaligned_le64(reply + 8);
	vw->signal_dbm = cached ? clamp_t(s32, cached->rssi_dbm, S8_MIN, 0) : -50;
	vw->conn_state = VW_CONNECTED;
	cfg80211_connect_bss(netdev, bssid, cbss, NULL, 0, NULL, 0,
			     WLAN_STATUS_SUCCESS, GFP_KERNEL,
			     NL80211_TIMEOUT_UNSPECIFIED);
	/* cfg80211 now owns the reference vw_inform() returned. */
	/* The host ran the 4-way handshake or SAE for us. */
	if (vw->conn.offloaded_auth)
		vw_port_authorized(netdev, bssid);
	vw_set_connected(netdev, true);
}

static void vw_connect_work(struct work_struct *work)
{
	struct vsock_wifi *vw = container_of(work, struct vsock_wifi, connect_work);
	struct vw_connect_params *p = &vw->conn;
	u8 *reply = NULL;
	u32 reply_len = 0;
	u32 len;
	u64 gen;
	u8 *req;
	int ret, i;

	mutex_lock(&vw->lock);
	if (vw->conn_state != VW_CONNECTING) {
		mutex_unlock(&vw->lock);
		return;
	}
	gen = vw->conn_gen;
	len = VW_CONNECT_FIXED_LEN + p->key_len;
	req = kzalloc(len, GFP_KERNEL);
	if (!req) {
		memzero_explicit(p->key, sizeof(p->key));
		vw_connect_done(vw, -ENOMEM, NULL);
		mutex_unlock(&vw->lock);
		return;
	}
	req[0] = p->ssid_len;
	memcpy(req + 1, p->ssid, p->ssid_len);
	ether_addr_copy(req + 33, p->bssid);
	req[39] = p->auth_type;
	req[40] = p->wpa_versions;
	req[41] = p->n_akm;
	for (i = 0; i < p->n_akm; i++)
		put_unaligned_le32(p->akm[i], req + 42 + 4 * i);
	req[50] = p->n_pairwise;
	for (i = 0; i < p->n_pairwise; i++)
		put_unaligned_le32(p->pairwise[i], req + 51 + 4 * i);
	put_unaligned_le32(p->group, req + 71);
	req[75] = p->key_len;
	memcpy(req + VW_CONNECT_FIXED_LEN, p->key, p->key_len);
	memzero_explicit(p->key, sizeof(p->key));
	mutex_unlock(&vw->lock);

	ret = vw_request(vw, VW_OP_CONNECT_REQUEST, req, len,
			 VW_OP_CONNECT_RESPONSE, &reply, &reply_len);
	kfree_sensitive(req);

	mutex_lock(&vw->lock);
	if (vw->conn_state == VW_CONNECTING && vw->conn_gen == gen && vw->netdev) {
		vw_connect_done(vw, ret, reply);
	} else if (!ret && get_unaligned_le16(reply) == WLAN_STATUS_SUCCESS) {
		/* Cancelled meanwhile: the host must not stay connected for us. */
		vw_queue_host_disconnect(vw, get_unaligned_le64(reply + 8));
	}
	mutex_unlock(&vw->lock);
	kvfree(reply);
}

static int vw_connect(struct wiphy *wiphy, struct net_device *netdev,
		      struct cfg80211_connect_params *sme)
{
	struct vsock_wifi *vw = *(struct vsock_wifi **)wiphy_priv(wiphy);
	struct vw_connect_params *p = &vw->conn;
	const u8 *key = NULL;
	size_t key_len = 0;
	int i;

	if (sme->crypto.psk) {
		key = sme->crypto.psk;
		key_len = WLAN_PMK_LEN;
	} else if (sme->crypto.sae_pwd) {
		key = sme->crypto.sae_pwd;
		key_len = sme->crypto.sae_pwd_len;
	} else if (sme->key_len) {
		/* WEP is not offered (no WEP cipher advertised). */
		return -EOPNOTSUPP;
	}
	if (key_len > U8_MAX || sme->ssid_len > IEEE80211_MAX_SSID_LEN)
		return -EINVAL;

	mutex_lock(&vw->lock);
	if (vw->conn_state != VW_IDLE) {
		mutex_unlock(&vw->lock);
		return -EALREADY;
	}
	memset(p, 0, sizeof(*p));
	p->ssid_len = sme->ssid_len;
	memcpy(p->ssid, sme->ssid, sme->ssid_len);
	if (sme->bssid)
		ether_addr_copy(p->bssid, sme->bssid);
	/*
	 * Resolve "automatic" here: with no WEP on offer it can only mean
	 * SAE when wpa_supplicant handed over an SAE password, open system
	 * otherwise. The host then never has to guess.
	 */
	if (sme->auth_type == NL80211_AUTHTYPE_AUTOMATIC)
		p->auth_type = sme->crypto.sae_pwd ? NL80211_AUTHTYPE_SAE :
						     NL80211_AUTHTYPE_OPEN_SYSTEM;
	else
		p->auth_type = sme->auth_type;
	p->wpa_versions = sme->crypto.wpa_versions;
	p->n_akm = min_t(int, sme->crypto.n_akm_suites, VW_WIRE_MAX_AKM);
	for (i = 0; i < p->n_akm; i++)
		p->akm[i] = sme->crypto.akm_suites[i];
	p->n_pairwise = min_t(int, sme->crypto.n_ciphers_pairwise, VW_WIRE_MAX_CIPHERS);
	for (i = 0; i < p->n_pairwise; i++)
		p->pairwise[i] = sme->crypto.ciphers_pairwise[i];
	p->group = sme->crypto.cipher_group;
	p->offloaded_auth = key != NULL;
	p->key_len = key_len;
	if (key)
		memcpy(p->key, key, key_len);

	vw->ssid_len = sme->ssid_len;
	memcpy(vw->ssid, sme->ssid, sme->ssid_len);
	vw->conn_state = VW_CONNECTING;
	vw->conn_gen++;
	queue_work(vw->wq, &vw->connect_work);
	mutex_unlock(&vw->lock);
	return 0;
}

static int vw_disconnect(struct wiphy *wiphy, struct net_device *netdev,
			 u16 reason_code)
{
	struct vsock_wifi *vw = *(struct vsock_wifi **)wiphy_priv(wiphy);

	mutex_lock(&vw->lock);
	switch (vw->conn_state) {
	case VW_CONNECTING:
		/* The work sees the new generation and drops the reply. */
		vw->conn_gen++;
		memzero_explicit(vw->conn.key, sizeof(vw->conn.key));
		cfg80211_connect_bss(netdev, NULL, NULL, NULL, 0, NULL, 0,
				     WLAN_STATUS_UNSPECIFIED_FAILURE, GFP_KERNEL,
				     NL80211_TIMEOUT_UNSPECIFIED);
		break;
	case VW_CONNECTED:
		vw_set_connected(netdev, false);
		cfg80211_disconnected(netdev, reason_code, NULL, 0, true, GFP_KERNEL);
		vw_queue_host_disconnect(vw, vw->session_id);
		break;
	case VW_IDLE:
		break;
	}
	vw->conn_state = VW_IDLE;
	mutex_unlock(&vw->lock);
	return 0;
}

static int vw_fill_station(struct vsock_wifi *vw, struct station_info *sinfo)
{
	sinfo->filled = BIT_ULL(NL80211_STA_INFO_SIGNAL) |
			BIT_ULL(NL80211_STA_INFO_SIGNAL_AVG);
	sinfo->signal = vw->signal_dbm;
	sinfo->signal_avg = vw->signal_dbm;
	return 0;
}

static int vw_get_station(struct wiphy *wiphy, struct net_device *dev,
			  const u8 *mac, struct station_info *sinfo)
{
	struct vsock_wifi *vw = *(struct vsock_wifi **)wiphy_priv(wiphy);
	int ret = -ENOENT;

	mutex_lock(&vw->lock);
	if (vw->conn_state == VW_CONNECTED && ether_addr_equal(mac, vw->bssid))
		ret = vw_fill_station(vw, sinfo);
	mutex_unlock(&vw->lock);
	return ret;
}

static int vw_dump_station(struct wiphy *wiphy, struct net_device *dev,
			   int idx, u8 *mac, struct station_info *sinfo)
{
	struct vsock_wifi *vw = *(struct vsock_wifi **)wiphy_priv(wiphy);
	int ret = -ENOENT;

	mutex_lock(&vw->lock);
	if (idx == 0 && vw->conn_state == VW_CONNECTED) {
		ether_addr_copy(mac, vw->bssid);
		ret = vw_fill_station(vw, sinfo);
	}
	mutex_unlock(&vw->lock);
	return ret;
}

static const struct cfg80211_ops vw_cfg80211_ops = {
	.scan = vw_scan,
	.abort_scan = vw_abort_scan,
	.connect = vw_connect,
	.disconnect = vw_disconnect,
	.get_station = vw_get_station,
	.dump_station = vw_dump_station,
};

/* ---- notifications ----------------------------------------------------- */

static void vw_handle_notification(struct vsock_wifi *vw, u8 op,
				   const u8 *body, u32 len)
{
	bool complete = false;

	mutex_lock(&vw->lock);
	switch (op) {
	case VW_OP_SCAN_RESPONSE:
		if (!vw_process_scan(vw, body, len, &complete))
			break;
		/* Only a scan the host said was still running is finished. */
		if (complete && vw->scan_waiting)
			vw_finish_scan(vw, false);
		break;
	case VW_OP_NOTIF_DISCONNECTED:
		if (vw->conn_state != VW_CONNECTED || !vw->netdev ||
		    get_unaligned_le64(body) < vw->session_id)
			break;
		vw->conn_state = VW_IDLE;
		vw_set_connected(vw->netdev, false);
		cfg80211_disconnected(vw->netdev, WLAN_REASON_UNSPECIFIED, NULL, 0,
				      false, GFP_KERNEL);
		break;
	case VW_OP_NOTIF_SIGNAL_QUALITY:
		vw->signal_dbm = (s8)body[0];
		break;
	default:
		break;
	}
	mutex_unlock(&vw->lock);
}

static void vw_read_notification(struct vsock_wifi *vw, struct socket *conn)
{
	struct sockaddr_vm peer = {};
	u8 *body = NULL;
	u32 len = 0;
	u8 op;
	int ret;

	ret = kernel_getpeername(conn, (struct sockaddr *)&peer);
	if (ret < 0 || peer.svm_cid != READ_ONCE(host_cid)) {
		pr_info_ratelimited("notification from CID %u refused\n", peer.svm_cid);
		return;
	}
	ret = vw_read_message(conn, jiffies + VW_NOTIFICATION_TIMEOUT, &op, &body, &len);
	pr_debug("notification %u (%u bytes): %d\n", ret ? 0 : op, len, ret);
	if (ret) {
		pr_info_ratelimited("notification dropped: %d\n", ret);
		return;
	}
	if (op == VW_OP_SCAN_RESPONSE || op == VW_OP_NOTIF_DISCONNECTED ||
	    op == VW_OP_NOTIF_SIGNAL_QUALITY)
		vw_handle_notification(vw, op, body, len);
	kvfree(body);
}

static int vw_listener_fn(void *data)
{
	struct vsock_wifi *vw = data;
	struct socket *conn;
	int ret;

	while (!kthread_should_stop()) {
		ret = kernel_accept(vw->listener, &conn, 0);
		if (ret == -EAGAIN || ret == -EINTR || ret == -ERESTARTSYS)
			continue;
		if (ret) {
			/* Do not spin on a persistent error. */
			schedule_timeout_interruptible(VW_ACCEPT_POLL);
			continue;
		}
		vw_read_notification(vw, conn);
		sock_release(conn);
	}
	return 0;
}

static int vw_start_listener(struct vsock_wifi *vw)
{
	struct sockaddr_vm addr = {
		.svm_family = AF_VSOCK,
		.svm_cid = VMADDR_CID_ANY,
		.svm_port = notification_port,
	};
	struct socket *sock;
	int ret;

	ret = sock_create_kern(&init_net, AF_VSOCK, SOCK_STREAM, 0, &sock);
	if (ret)
		return ret;
	ret = kernel_bind(sock, (struct sockaddr *)&addr, sizeof(addr));
	if (ret) {
		pr_err("cannot listen on vsock port %u: %d (another driver using it?)\n",
		       notification_port, ret);
		goto err;
	}
	ret = kernel_listen(sock, 8);
	if (ret)
		goto err;
	/* accept() returns -EAGAIN this often, to notice kthread_stop(). */
	sock->sk->sk_rcvtimeo = VW_ACCEPT_POLL;
	vw->listener = sock;

	vw->listener_thread = kthread_run(vw_listener_fn, vw, "vsock_wifi_notif");
	if (IS_ERR(vw->listener_thread)) {
		ret = PTR_ERR(vw->listener_thread);
		vw->listener = NULL;
		goto err;
	}
	return 0;
err:
	sock_release(sock);
	return ret;
}

/* ---- network device ---------------------------------------------------- */

static rx_handler_result_t vw_rx_handler(struct sk_buff **pskb)
{
	struct sk_buff *skb = *pskb;
	struct vw_netdev_priv *priv = rcu_dereference(skb->dev->rx_handler_data);
	struct net_device *upper = priv->wdev.netdev;

	if (!READ_ONCE(priv->connected))
		return RX_HANDLER_PASS;

	skb = skb_share_check(skb, GFP_ATOMIC);
	if (!skb)
		return RX_HANDLER_CONSUMED;
	*pskb = skb;
	atomic_long_inc(&priv->rx_packets);
	atomic_long_add(skb->len, &priv->rx_bytes);
	skb->dev = upper;
	skb->pkt_type = PACKET_HOST;
	return RX_HANDLER_ANOTHER;
}

static netdev_tx_t vw_start_xmit(struct sk_buff *skb, struct net_device *dev)
{
	struct vw_netdev_priv *priv = netdev_priv(dev);

	if (!READ_ONCE(priv->connected)) {
		atomic_long_inc(&priv->tx_dropped);
		kfree_skb(skb);
		return NETDEV_TX_OK;
	}
	dev->stats.tx_packets++;
	dev->stats.tx_bytes += skb->len;
	skb->dev = priv->lowerdev;
	dev_queue_xmit(skb);
	return NETDEV_TX_OK;
}

static void vw_get_stats64(struct net_device *dev, struct rtnl_link_stats64 *stats)
{
	struct vw_netdev_priv *priv = netdev_priv(dev);

	stats->tx_packets = dev->stats.tx_packets;
	stats->tx_bytes = dev->stats.tx_bytes;
	stats->tx_dropped = atomic_long_read(&priv->tx_dropped);
	stats->rx_packets = atomic_long_read(&priv->rx_packets);
	stats->rx_bytes = atomic_long_read(&priv->rx_bytes);
}

static int vw_ndo_init(struct net_device *dev)
{
	/* Stacked on another device: its own lock classes, as vlan does. */
	netdev_lockdep_set_classes(dev);
	return 0;
}

static int vw_ndo_open(struct net_device *dev)
{
	struct vw_netdev_priv *priv = netdev_priv(dev);
	int ret;

	netif_carrier_off(dev);
	/*
	 * The lower device is this interface's radio: bring it up with it,
	 * or nothing would pass once the host reports a connection.
	 */
	if (!(priv->lowerdev->flags & IFF_UP)) {
		ret = dev_open(priv->lowerdev, NULL);
		if (ret)
			return ret;
	}
	/* Frames for the interface's address, if it changed, must get in. */
	return dev_set_promiscuity(priv->lowerdev, 1);
}

static int vw_ndo_stop(struct net_device *dev)
{
	struct vw_netdev_priv *priv = netdev_priv(dev);
	struct vsock_wifi *vw = priv->vw;

	mutex_lock(&vw->lock);
	/* cfg80211 requires the scan to be finished before the device is down. */
	if (vw->scan_req && vw->scan_req->wdev == &priv->wdev)
		vw_finish_scan(vw, true);
	mutex_unlock(&vw->lock);
	WRITE_ONCE(priv->connected, false);
	netif_carrier_off(dev);
	dev_set_promiscuity(priv->lowerdev, -1);
	return 0;
}

static int vw_get_iflink(const struct net_device *dev)
{
	struct vw_netdev_priv *priv = netdev_priv(dev);

	return priv->lowerdev->ifindex;
}

static const struct net_device_ops vw_netdev_ops = {
	.ndo_init = vw_ndo_init,
	.ndo_open = vw_ndo_open,
	.ndo_stop = vw_ndo_stop,
	.ndo_start_xmit = vw_start_xmit,
	.ndo_get_stats64 = vw_get_stats64,
	.ndo_set_mac_address = eth_mac_addr,
	.ndo_validate_addr = eth_validate_addr,
	.ndo_get_iflink = vw_get_iflink,
};

static void vw_setup(struct net_device *dev)
{
	ether_setup(dev);
	dev->netdev_ops = &vw_netdev_ops;
	dev->needs_free_netdev = true;
	dev->priv_flags |= IFF_NO_QUEUE;
}

static void vw_set_hw_addr(struct net_device *dev, const u8 *addr)
{
#ifdef VW_HAVE_ETH_HW_ADDR_SET
	eth_hw_addr_set(dev, addr);
#else
	memcpy(dev->dev_addr, addr, ETH_ALEN);
#endif
}

/* Called with rtnl held, for `ip link add` and for the lower= parameter. */
static int vw_attach(struct vsock_wifi *vw, struct net_device *dev,
		     struct net_device *lowerdev, bool have_addr,
		     struct netlink_ext_ack *extack)
{
	struct vw_netdev_priv *priv = netdev_priv(dev);
	int ret;

	ASSERT_RTNL();
	if (lowerdev->type != ARPHRD_ETHER || lowerdev->ieee80211_ptr ||
	    lowerdev->rtnl_link_ops == &vw_link_ops) {
		NL_SET_ERR_MSG(extack, "the lower device must be a wired Ethernet device");
		return -EINVAL;
	}
	if (netdev_is_rx_handler_busy(lowerdev)) {
		NL_SET_ERR_MSG(extack, "the lower device is already enslaved");
		return -EBUSY;
	}

	mutex_lock(&vw->lock);
	ret = vw->netdev ? -EBUSY : 0;
	mutex_unlock(&vw->lock);
	if (ret) {
		NL_SET_ERR_MSG(extack, "one " VW_DRIVER_NAME " interface per VM: the host has one connection per guest");
		return ret;
	}

	priv->vw = vw;
	priv->lowerdev = lowerdev;
	priv->wdev.wiphy = vw->wiphy;
	priv->wdev.iftype = NL80211_IFTYPE_STATION;
	priv->wdev.netdev = dev;
	dev->ieee80211_ptr = &priv->wdev;
	SET_NETDEV_DEV(dev, &lowerdev->dev);
	if (!have_addr)
		vw_set_hw_addr(dev, lowerdev->dev_addr);
	dev->mtu = lowerdev->mtu;
	netif_carrier_off(dev);

	ret = register_netdevice(dev);
	if (ret)
		return ret;
	ret = netdev_rx_handler_register(lowerdev, vw_rx_handler, priv);
	if (ret)
		goto err_unregister;
	ret = netdev_upper_dev_link(lowerdev, dev, extack);
	if (ret)
		goto err_rx;

	mutex_lock(&vw->lock);
	vw->netdev = dev;
	mutex_unlock(&vw->lock);
	return 0;

err_rx:
	netdev_rx_handler_unregister(lowerdev);
err_unregister:
	unregister_netdevice(dev);
	return ret;
}

static int vw_newlink(struct net *src_net, struct net_device *dev,
		      struct nlattr *tb[], struct nlattr *data[],
		      struct netlink_ext_ack *extack)
{
	struct net_device *lowerdev;

	if (!tb[IFLA_LINK]) {
		NL_SET_ERR_MSG(extack, "give the lower Ethernet device: ip link add link eth0 ...");
		return -EINVAL;
	}
	lowerdev = __dev_get_by_index(src_net, nla_get_u32(tb[IFLA_LINK]));
	if (!lowerdev)
		return -ENODEV;
	return vw_attach(vw_global, dev, lowerdev, tb[IFLA_ADDRESS] != NULL, extack);
}

static void vw_dellink(struct net_device *dev, struct list_head *head)
{
	struct vw_netdev_priv *priv = netdev_priv(dev);
	struct vsock_wifi *vw = priv->vw;

	mutex_lock(&vw->lock);
	if (vw->netdev == dev)
		vw->netdev = NULL;
	mutex_unlock(&vw->lock);
	netdev_rx_handler_unregister(priv->lowerdev);
	netdev_upper_dev_unlink(priv->lowerdev, dev);
	unregister_netdevice_queue(dev, head);
}

static struct rtnl_link_ops vw_link_ops = {
	.kind = VW_DRIVER_NAME,
	.priv_size = sizeof(struct vw_netdev_priv),
	.setup = vw_setup,
	.newlink = vw_newlink,
	.dellink = vw_dellink,
};

/* ---- interface creation at load (lower=) ------------------------------- */

static bool vw_is_auto_lower(struct net_device *dev)
{
	struct device *parent = dev->dev.parent;

	if (dev->type != ARPHRD_ETHER || dev->ieee80211_ptr ||
	    dev->rtnl_link_ops == &vw_link_ops)
		return false;
	if (!strcmp(lower, "auto"))
		return parent && parent->driver &&
		       !strcmp(parent->driver->name, "virtio_net");
	return !strcmp(dev->name, lower);
}

static void vw_auto_work(struct work_struct *work)
{
	struct vsock_wifi *vw = container_of(work, struct vsock_wifi, auto_work);
	struct net_device *lowerdev, *dev;
	int ret;

	rtnl_lock();
	lowerdev = __dev_get_by_index(&init_net, vw->auto_ifindex);
	if (!lowerdev || vw->netdev) {
		rtnl_unlock();
		return;
	}
	dev = alloc_netdev(sizeof(struct vw_netdev_priv), ifname,
			   NET_NAME_USER, vw_setup);
	if (!dev) {
		rtnl_unlock();
		return;
	}
	dev->rtnl_link_ops = &vw_link_ops;
	ret = vw_attach(vw, dev, lowerdev, false, NULL);
	if (ret) {
		pr_err("cannot create %s on %s: %d\n", ifname, lowerdev->name, ret);
		free_netdev(dev);
	} else {
		pr_info("created %s on %s\n", dev->name, lowerdev->name);
	}
	rtnl_unlock();
}

static int vw_netdev_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	struct net_device *dev = netdev_notifier_info_to_dev(ptr);
	struct vsock_wifi *vw = vw_global;
	struct vw_netdev_priv *priv;
	LIST_HEAD(kill);

	switch (event) {
	case NETDEV_REGISTER:
		if (!lower[0] || vw->auto_done || !net_eq(dev_net(dev), &init_net) ||
		    !vw_is_auto_lower(dev))
			break;
		vw->auto_done = true;
		vw->auto_ifindex = dev->ifindex;
		schedule_work(&vw->auto_work);
		break;
	case NETDEV_UNREGISTER:
		/* The lower device goes away: so does the interface on it. */
		mutex_lock(&vw->lock);
		priv = vw->netdev ? netdev_priv(vw->netdev) : NULL;
		mutex_unlock(&vw->lock);
		if (priv && priv->lowerdev == dev) {
			vw_dellink(priv->wdev.netdev, &kill);
			unregister_netdevice_many(&kill);
		}
		break;
	}
	return NOTIFY_DONE;
}

static struct notifier_block vw_netdev_notifier = {
	.notifier_call = vw_netdev_event,
};

/* ---- module ------------------------------------------------------------ */

static void vw_stop_requests(struct vsock_wifi *vw)
{
	mutex_lock(&vw->inflight_lock);
	vw->stopping = true;
	if (vw->inflight)
		kernel_sock_shutdown(vw->inflight, SHUT_RDWR);
	mutex_unlock(&vw->inflight_lock);
}

static int vw_register_wiphy(struct vsock_wifi *vw)
{
	struct wiphy *wiphy;
	int i, ret;

	for (i = 0; i < VW_N_CHANNELS_6GHZ; i++) {
		vw_channels_6ghz[i].band = NL80211_BAND_6GHZ;
		vw_channels_6ghz[i].center_freq = 5955 + 20 * i;
		vw_channels_6ghz[i].hw_value = 1 + 4 * i;
		vw_channels_6ghz[i].max_power = 20;
	}

	wiphy = wiphy_new(&vw_cfg80211_ops, sizeof(vw));
	if (!wiphy)
		return -ENOMEM;
	*(struct vsock_wifi **)wiphy_priv(wiphy) = vw;

	wiphy->interface_modes = BIT(NL80211_IFTYPE_STATION);
	wiphy->bands[NL80211_BAND_2GHZ] = &vw_band_2ghz;
	wiphy->bands[NL80211_BAND_5GHZ] = &vw_band_5ghz;
#ifdef VW_HAVE_SET_SBAND_IFTYPE_DATA
	ieee80211_set_sband_iftype_data(&vw_band_6ghz, vw_he_6ghz);
#else
	vw_band_6ghz.iftype_data = vw_he_6ghz;
	vw_band_6ghz.n_iftype_data = ARRAY_SIZE(vw_he_6ghz);
#endif
	wiphy->bands[NL80211_BAND_6GHZ] = &vw_band_6ghz;
	wiphy->signal_type = CFG80211_SIGNAL_TYPE_MBM;
	wiphy->max_scan_ssids = 1;
	/* Extra scan IEs from wpa_supplicant are accepted and not forwarded. */
	wiphy->max_scan_ie_len = IEEE80211_MAX_DATA_LEN;
	wiphy->cipher_suites = vw_cipher_suites;
	wiphy->n_cipher_suites = ARRAY_SIZE(vw_cipher_suites);
	wiphy->flags |= WIPHY_FLAG_NETNS_OK;
	wiphy_ext_feature_set(wiphy, NL80211_EXT_FEATURE_4WAY_HANDSHAKE_STA_PSK);
	/*
	 * SAE offload only, not NL80211_FEATURE_SAE: with that flag and no
	 * authenticate/associate operations, iwd takes the driver for one
	 * that expects SAE in user space through NL80211_CMD_EXTERNAL_AUTH
	 * and refuses WPA3 networks (iwd 2.3). wpa_supplicant 2.10 would
	 * select SAE with the flag but never sends the password, so it gains
	 * nothing from it.
	 */
	wiphy_ext_feature_set(wiphy, NL80211_EXT_FEATURE_SAE_OFFLOAD);
	wiphy_ext_feature_set(wiphy, NL80211_EXT_FEATURE_MFP_OPTIONAL);

	ret = wiphy_register(wiphy);
	if (ret) {
		wiphy_free(wiphy);
		return ret;
	}
	vw->wiphy = wiphy;
	return 0;
}

static int __init vw_init(void)
{
	struct vsock_wifi *vw;
	int ret;

	vw = kzalloc(sizeof(*vw), GFP_KERNEL);
	if (!vw)
		return -ENOMEM;
	mutex_init(&vw->lock);
	mutex_init(&vw->inflight_lock);
	INIT_WORK(&vw->scan_work, vw_scan_work);
	INIT_DELAYED_WORK(&vw->scan_timeout, vw_scan_timeout);
	INIT_WORK(&vw->connect_work, vw_connect_work);
	INIT_WORK(&vw->auto_work, vw_auto_work);

	/* One request at a time, in order, as the protocol requires. */
	vw->wq = alloc_ordered_workqueue("vsock_wifi", 0);
	if (!vw->wq) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = vw_register_wiphy(vw);
	if (ret)
		goto err_wq;
	ret = vw_start_listener(vw);
	if (ret)
		goto err_wiphy;
	vw_global = vw;
	ret = rtnl_link_register(&vw_link_ops);
	if (ret)
		goto err_listener;
	ret = register_netdevice_notifier(&vw_netdev_notifier);
	if (ret)
		goto err_link;
	return 0;

err_link:
	rtnl_link_unregister(&vw_link_ops);
err_listener:
	kthread_stop(vw->listener_thread);
	sock_release(vw->listener);
	vw_global = NULL;
err_wiphy:
	wiphy_unregister(vw->wiphy);
	wiphy_free(vw->wiphy);
err_wq:
	destroy_workqueue(vw->wq);
err_free:
	kfree(vw);
	return ret;
}

static void __exit vw_exit(void)
{
	struct vsock_wifi *vw = vw_global;

	unregister_netdevice_notifier(&vw_netdev_notifier);
	cancel_work_sync(&vw->auto_work);
	/* Deletes the interface: cfg80211 disconnects and aborts scans. */
	rtnl_link_unregister(&vw_link_ops);

	kthread_stop(vw->listener_thread);
	sock_release(vw->listener);
	vw_stop_requests(vw);
	destroy_workqueue(vw->wq);
	cancel_delayed_work_sync(&vw->scan_timeout);

	wiphy_unregister(vw->wiphy);
	wiphy_free(vw->wiphy);
	vw_clear_cache(vw);
	kfree(vw);
	vw_global = NULL;
}

module_init(vw_init);
module_exit(vw_exit);

MODULE_DESCRIPTION("Wi-Fi station whose connections are made by the host over vsock (proxy-wifi)");
MODULE_AUTHOR("The proxy-wifi authors");
MODULE_LICENSE("Dual MIT/GPL");
MODULE_ALIAS_RTNL_LINK(VW_DRIVER_NAME);
