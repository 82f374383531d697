//! Provisioning files: how the proxy gives iwd a guest's PMK.
//!
//! iwd's agent hands over a passphrase of 8-63 characters and rejects the
//! 64 hex digits of a PMK (`InvalidFormat`), so a guest that only sends the
//! PMK is joined through a network file in iwd's state directory,
//! `<SSID>.psk` with `[Security] PreSharedKey=<64 hex>` (see iwd.network(5)).
//! iwd notices the file on its own (inotify) and the network becomes known.
//!
//! Every file the proxy writes starts with [`MARKER`], a comment line iwd
//! ignores: only files with it are ever removed, so the host's own known
//! networks are never touched. Files are created 0600 under a temporary
//! name and renamed into place, so iwd never reads half a file. Their
//! content is key material: it is never logged.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::protocol::{pmk_from_passphrase, Ssid};

/// First line of every file the proxy provisions.
pub const MARKER: &str =
    "# proxy-wifi: provisioned for a guest; removed when the guest leaves. Do not edit.";

/// The kind of network a file is for: its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An open network (`.open`).
    Open,
    /// A WPA2/WPA3-Personal network (`.psk`).
    Psk,
}

impl FileKind {
    /// The file extension iwd reads for this kind.
    pub fn extension(self) -> &'static str {
        match self {
            FileKind::Open => "open",
            FileKind::Psk => "psk",
        }
    }

    /// iwd's `Network.Type` of the networks this file is for.
    pub fn network_type(self) -> &'static str {
        self.extension()
    }
}

/// The name iwd gives the file of a network: the SSID verbatim when it is
/// only alphanumerics, spaces, underscores and minus signs, else `=` and the
/// lower-case hex of its bytes; then the extension.
pub fn file_name(ssid: &Ssid, kind: FileKind) -> String {
    let bytes = ssid.as_bytes();
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'-'));
    let stem = if plain {
        // Plain ASCII, checked above.
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        format!("={}", hex::encode(bytes))
    };
    format!("{stem}.{}", kind.extension())
}

/// The content of a provisioning file: never autoconnecting, `Hidden` when
/// the network does not broadcast its SSID, and for WPA2-PSK the PMK as a
/// pre-shared key. Wiped from memory when dropped.
pub fn contents(pmk: Option<&[u8]>, hidden: bool) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(256));
    out.push_str(MARKER);
    out.push_str("\n[Settings]\nAutoConnect=false\n");
    if hidden {
        out.push_str("Hidden=true\n");
    }
    if let Some(pmk) = pmk {
        out.push_str("\n[Security]\nPreSharedKey=");
        out.push_str(&Zeroizing::new(hex::encode(pmk)));
        out.push('\n');
    }
    out
}

/// Whether a file's content is one the proxy wrote.
pub fn is_proxy_file(content: &str) -> bool {
    content.lines().next().map(str::trim_end) == Some(MARKER)
}

/// Undoes iwd.network(5)'s value escapes (`\s`, `\t`, `\r`, `\n`, `\\`).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Whether the host's own profile of a WPA2-PSK network holds the key the
/// guest sent, from its `PreSharedKey` or else its `Passphrase`. `None` when
/// the profile has neither (it cannot be told).
pub fn host_key_matches(content: &str, ssid: &Ssid, pmk: &[u8]) -> Option<bool> {
    let mut group = "";
    let mut psk: Option<Zeroizing<String>> = None;
    let mut passphrase: Option<Zeroizing<String>> = None;
    for line in content.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|l| l.trim_end().strip_suffix(']'))
        {
            group = name;
            continue;
        }
        if group != "Security" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "PreSharedKey" => psk = Some(Zeroizing::new(value.trim().to_ascii_lowercase())),
            "Passphrase" => passphrase = Some(Zeroizing::new(unescape(value.trim_start()))),
            _ => {}
        }
    }
    if let Some(psk) = psk {
        return Some(*psk == *Zeroizing::new(hex::encode(pmk)));
    }
    let passphrase = passphrase?;
    let derived = pmk_from_passphrase(&passphrase, ssid).ok()?;
    Some(derived.expose() == pmk)
}

/// A file the proxy provisioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// Where it was written.
    pub path: PathBuf,
}

/// Why a file could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot write {path}: {source}")]
    /// The file could not be written.
    Write {
        /// The file.
        path: PathBuf,
        #[source]
        /// The operating system's error.
        source: io::Error,
    },
}

/// Writes `content` to `dir/name`, readable by its owner only, replacing a
/// file of the proxy with the same name. The caller checks beforehand that
/// no host file has that name.
pub fn write(dir: &Path, name: &str, content: &str) -> Result<Provisioned, ProfileError> {
    let path = dir.join(name);
    // A dot file with an extension iwd does not read: invisible until the
    // rename.
    let tmp = dir.join(format!(".proxy-wifi-{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    match result {
        Ok(()) => Ok(Provisioned { path }),
        Err(source) => {
            let _ = fs::remove_file(&tmp);
            Err(ProfileError::Write { path, source })
        }
    }
}

/// What is at a network's file name now.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    /// No file.
    Nothing,
    /// A file of the proxy (an earlier connection, or a crash).
    Proxy,
    /// The host's own known network, with its content. Never modified.
    Host(Zeroizing<String>),
    /// The host's own known network, unreadable to the proxy.
    HostUnreadable,
}

/// What is at `path` now.
pub fn existing(path: &Path) -> Existing {
    match fs::read_to_string(path) {
        Ok(content) if is_proxy_file(&content) => Existing::Proxy,
        Ok(content) => Existing::Host(Zeroizing::new(content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Existing::Nothing,
        Err(_) => Existing::HostUnreadable,
    }
}

/// Removes a file the proxy provisioned, if it is still the proxy's.
pub fn remove(path: &Path) -> io::Result<bool> {
    match fs::read_to_string(path) {
        Ok(content) if is_proxy_file(&content) => fs::remove_file(path).map(|()| true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes every file of the proxy in `dir` (leftovers of a crash) and
/// returns their paths. Files without the marker are left alone.
pub fn remove_leftovers(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let ours_by_name = name.ends_with(".psk") || name.ends_with(".open");
        let stale_tmp = name.starts_with(".proxy-wifi-") && name.ends_with(".tmp");
        if stale_tmp {
            if fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        } else if ours_by_name && remove(&path)? {
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn ssid(s: &[u8]) -> Ssid {
        Ssid::new(s).unwrap()
    }

    #[test]
    fn file_names_follow_iwd_encoding() {
        assert_eq!(
            file_name(&ssid(b"home-net_2"), FileKind::Psk),
            "home-net_2.psk"
        );
        assert_eq!(file_name(&ssid(b"My Net"), FileKind::Open), "My Net.open");
        assert_eq!(
            file_name(&ssid(b"caf\xc3\xa9"), FileKind::Psk),
            "=636166c3a9.psk"
        );
        assert_eq!(file_name(&ssid(b"a.b"), FileKind::Psk), "=612e62.psk");
        assert_eq!(file_name(&ssid(b"../x"), FileKind::Psk), "=2e2e2f78.psk");
    }

    #[test]
    fn contents_hold_marker_settings_and_key() {
        let c = contents(Some(&[0xab; 32]), true);
        assert!(is_proxy_file(&c));
        assert!(c.contains("[Settings]\nAutoConnect=false\nHidden=true\n"));
        assert!(c.contains(&format!("[Security]\nPreSharedKey={}\n", "ab".repeat(32))));
        assert!(!c.contains("Passphrase"));
        let open = contents(None, false);
        assert!(!open.contains("Hidden") && !open.contains("[Security]"));
        assert!(!is_proxy_file("[Security]\nPassphrase=x\n"));
    }

    #[test]
    fn host_keys_are_checked_by_psk_or_passphrase() {
        let s = ssid(b"IEEE");
        let pmk = pmk_from_passphrase("password", &s).unwrap();
        let hexed = hex::encode(pmk.expose()).to_uppercase();
        let by_psk = format!("[Security]\nPreSharedKey={hexed}\n");
        assert_eq!(host_key_matches(&by_psk, &s, pmk.expose()), Some(true));
        assert_eq!(host_key_matches(&by_psk, &s, &[0; 32]), Some(false));
        let by_pass = "# c\n[Settings]\nPassphrase=nope\n[Security]\nPassphrase=password\n";
        assert_eq!(host_key_matches(by_pass, &s, pmk.expose()), Some(true));
        let escaped = "[Security]\nPassphrase=\\spass word\n";
        let k = pmk_from_passphrase(" pass word", &s).unwrap();
        assert_eq!(host_key_matches(escaped, &s, k.expose()), Some(true));
        assert_eq!(
            host_key_matches("[Settings]\nAutoConnect=true\n", &s, &[0; 32]),
            None
        );
    }

    #[test]
    fn files_are_private_and_only_the_proxys_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "net.psk", &contents(Some(&[1; 32]), false)).unwrap();
        let mode = fs::metadata(&p.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(existing(&p.path), Existing::Proxy);
        fs::write(
            dir.path().join("host.psk"),
            "[Security]\nPassphrase=secret12\n",
        )
        .unwrap();
        fs::write(dir.path().join("host.open"), "").unwrap();
        fs::write(dir.path().join(".proxy-wifi-dead.tmp"), "x").unwrap();
        assert!(matches!(
            existing(&dir.path().join("host.psk")),
            Existing::Host(_)
        ));
        assert_eq!(existing(&dir.path().join("none.psk")), Existing::Nothing);
        assert!(!remove(&dir.path().join("host.psk")).unwrap());
        let mut removed = remove_leftovers(dir.path()).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                dir.path().join(".proxy-wifi-dead.tmp"),
                dir.path().join("net.psk")
            ]
        );
        assert!(dir.path().join("host.psk").exists());
        assert!(dir.path().join("host.open").exists());
        assert!(!remove(&p.path).unwrap());
    }
}
