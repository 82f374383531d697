//! 802.11 suite selectors (OUI 00-0F-AC) of RSN elements and connect
//! requests. Their own module so that the messages and the information
//! elements both use them without importing each other.

/// AKM suite selectors (OUI 00-0F-AC), as the driver sends them.
pub mod akm {
    /// IEEE 802.1X (WPA2-Enterprise).
    pub const IEEE8021X: u32 = 0x000F_AC01;
    /// PSK (WPA2-Personal).
    pub const PSK: u32 = 0x000F_AC02;
    /// FT over IEEE 802.1X.
    pub const FT_8021X: u32 = 0x000F_AC03;
    /// FT with PSK.
    pub const FT_PSK: u32 = 0x000F_AC04;
    /// IEEE 802.1X with SHA-256.
    pub const IEEE8021X_SHA256: u32 = 0x000F_AC05;
    /// PSK with SHA-256.
    pub const PSK_SHA256: u32 = 0x000F_AC06;
    /// SAE (WPA3-Personal).
    pub const SAE: u32 = 0x000F_AC08;
    /// FT with SAE.
    pub const FT_SAE: u32 = 0x000F_AC09;
    /// OWE (Enhanced Open).
    pub const OWE: u32 = 0x000F_AC12;
    /// FT with PSK, SHA-384.
    pub const FT_PSK_SHA384: u32 = 0x000F_AC13;
    /// PSK with SHA-384.
    pub const PSK_SHA384: u32 = 0x000F_AC14;
}

/// Cipher suite selectors (OUI 00-0F-AC).
pub mod cipher {
    /// WEP-40.
    pub const WEP40: u32 = 0x000F_AC01;
    /// TKIP.
    pub const TKIP: u32 = 0x000F_AC02;
    /// CCMP-128 (AES).
    pub const CCMP: u32 = 0x000F_AC04;
    /// WEP-104.
    pub const WEP104: u32 = 0x000F_AC05;
    /// GCMP-128.
    pub const GCMP: u32 = 0x000F_AC08;
    /// GCMP-256.
    pub const GCMP_256: u32 = 0x000F_AC09;
    /// CCMP-256.
    pub const CCMP_256: u32 = 0x000F_AC0A;
}
