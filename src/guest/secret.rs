//! Reading a passphrase or PSK without putting it on the command line
//! (where every local user can read it in `/proc/PID/cmdline`): from a
//! file, standard input or an environment variable, into memory that is
//! wiped when dropped.

use std::io::Read;

use zeroize::{Zeroize, Zeroizing};

/// Longest secret line read. A WPA2 passphrase is at most 63 characters
/// and a PSK 64 hex digits; the bound only stops a runaway input (a device
/// file, a binary given by mistake).
pub const MAX_SECRET_LEN: usize = 1024;
/// The read buffer. At least std's 8 KiB stdin buffer, so that a read from
/// standard input goes straight into this buffer (std bypasses its own
/// buffer for large reads) and no unwiped copy stays in std's.
const READ_BUFFER: usize = 16 * 1024;

/// Why a secret could not be read. No variant carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Nothing before the end of the first line.
    #[error("the secret is empty")]
    Empty,
    /// The first line is longer than [`MAX_SECRET_LEN`].
    #[error("the secret's line is longer than {MAX_SECRET_LEN} bytes")]
    TooLong,
    /// The secret is not UTF-8.
    #[error("the secret is not UTF-8 text")]
    NotUtf8,
    /// The source could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The first line of `source`, without its line end (`\n` or `\r\n`), in
/// a string wiped on drop. What follows the first line is ignored (and
/// wiped too).
pub fn read_secret(mut source: impl Read) -> Result<Zeroizing<String>, SecretError> {
    // One buffer, never grown: every byte read is wiped with it.
    let mut buf = Zeroizing::new(vec![0u8; READ_BUFFER]);
    let mut filled = 0;
    let line_end = loop {
        if let Some(at) = buf[..filled].iter().position(|b| *b == b'\n') {
            break at;
        }
        if filled == buf.len() {
            return Err(SecretError::TooLong);
        }
        match source.read(&mut buf[filled..]) {
            Ok(0) => break filled,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    };
    let mut line = &buf[..line_end];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    if line.len() > MAX_SECRET_LEN {
        return Err(SecretError::TooLong);
    }
    if line.is_empty() {
        return Err(SecretError::Empty);
    }
    let text = std::str::from_utf8(line).map_err(|_| SecretError::NotUtf8)?;
    let mut secret = Zeroizing::new(String::with_capacity(text.len()));
    secret.push_str(text);
    Ok(secret)
}

/// The value of the environment variable `name`, if set, in a string
/// wiped on drop. (The process environment keeps its own copy; unlike the
/// command line, only the same user and root can read it.)
pub fn secret_from_env(name: &str) -> Result<Option<Zeroizing<String>>, SecretError> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    match value.into_string() {
        Ok(text) if text.is_empty() => Err(SecretError::Empty),
        Ok(text) => Ok(Some(Zeroizing::new(text))),
        Err(raw) => {
            raw.into_encoded_bytes().zeroize();
            Err(SecretError::NotUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_without_its_end() {
        let s = read_secret(&b"correct horse\nrest"[..]).unwrap();
        assert_eq!(s.as_str(), "correct horse");
        let s = read_secret(&b"with cr\r\n"[..]).unwrap();
        assert_eq!(s.as_str(), "with cr");
        let s = read_secret(&b"no newline"[..]).unwrap();
        assert_eq!(s.as_str(), "no newline");
        // Spaces are part of a passphrase.
        let s = read_secret(&b" spaced out \n"[..]).unwrap();
        assert_eq!(s.as_str(), " spaced out ");
    }

    #[test]
    fn refuses_empty_long_and_binary_input() {
        assert!(matches!(read_secret(&b""[..]), Err(SecretError::Empty)));
        assert!(matches!(read_secret(&b"\n"[..]), Err(SecretError::Empty)));
        let long = vec![b'a'; MAX_SECRET_LEN + 1];
        assert!(matches!(read_secret(&long[..]), Err(SecretError::TooLong)));
        // An endless source without a newline (say /dev/zero) ends.
        assert!(matches!(
            read_secret(std::io::repeat(0)),
            Err(SecretError::TooLong)
        ));
        assert!(matches!(
            read_secret(&b"\xff\xfe\n"[..]),
            Err(SecretError::NotUtf8)
        ));
        let e = read_secret(&b"\xffsecret-ish\n"[..])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret-ish"), "{e}");
    }
}
