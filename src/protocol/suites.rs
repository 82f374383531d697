//! 802.11 suite selectors (OUI 00-0F-AC) of RSN elements and connect
//! requests. Their own module so that the messages and the information
//! elements both use them without importing each other.

/// AKM suite selectors (OUI 00-0F-AC), as the driver sends them.
pub mod akm {
    pub const IEEE8021X: u32 = 0x000F_AC01;
    pub const PSK: u32 = 0x000F_AC02;
    pub const FT_8021X: u32 = 0x000F_AC03;
    pub const FT_PSK: u32 = 0x000F_AC04;
    pub const IEEE8021X_SHA256: u32 = 0x000F_AC05;
    pub const PSK_SHA256: u32 = 0x000F_AC06;
    pub const SAE: u32 = 0x000F_AC08;
    pub const FT_SAE: u32 = 0x000F_AC09;
    pub const OWE: u32 = 0x000F_AC12;
    pub const FT_PSK_SHA384: u32 = 0x000F_AC13;
    pub const PSK_SHA384: u32 = 0x000F_AC14;
}

/// Cipher suite selectors (OUI 00-0F-AC).
pub mod cipher {
    pub const WEP40: u32 = 0x000F_AC01;
    pub const TKIP: u32 = 0x000F_AC02;
    pub const CCMP: u32 = 0x000F_AC04;
    pub const WEP104: u32 = 0x000F_AC05;
    pub const GCMP: u32 = 0x000F_AC08;
    pub const GCMP_256: u32 = 0x000F_AC09;
    pub const CCMP_256: u32 = 0x000F_AC0A;
}
