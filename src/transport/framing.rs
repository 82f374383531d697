//! Header-then-body framing, shared by every transport and both sides.
//!
//! A reader takes the 7-byte header, checks it (version, operation, size
//! against the largest legal body of that operation) and only then reads
//! exactly `size` bytes. Nothing is allocated from a size that failed the
//! check, so a hostile peer cannot make the reader reserve memory.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::protocol::{DecodeError, Header, HEADER_LEN};

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection before sending anything.
    #[error("connection closed before a message arrived")]
    Closed,
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed after {got} of {expected} bytes")]
    Truncated {
        /// Bytes read.
        got: usize,
        /// Bytes the message has.
        expected: usize,
    },
    /// The header was refused.
    #[error("bad header: {0}")]
    Header(#[from] DecodeError),
    #[error("i/o error: {0}")]
    /// The connection failed.
    Io(#[from] std::io::Error),
}

async fn read_exact_or<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<usize, std::io::Error> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Reads one message, checking its header with `check` (for instance
/// [`Header::decode_request`] on the host, [`Header::decode_host`] on the
/// guest) before reading the body.
///
/// The body is read straight into one buffer of its exact size, wiped
/// when dropped: a connect request's body holds the key.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    check: fn(&[u8; HEADER_LEN]) -> Result<Header, DecodeError>,
) -> Result<(Header, Zeroizing<Vec<u8>>), FrameError> {
    let mut head = [0u8; HEADER_LEN];
    let got = read_exact_or(r, &mut head).await?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated {
            got,
            expected: HEADER_LEN,
        });
    }
    let header = check(&head)?;
    let mut body = Zeroizing::new(vec![0u8; header.size as usize]);
    let got = read_exact_or(r, &mut body).await?;
    if got < body.len() {
        return Err(FrameError::Truncated {
            got: HEADER_LEN + got,
            expected: HEADER_LEN + body.len(),
        });
    }
    Ok((header, body))
}

/// Writes one whole message (already encoded, header included) and flushes.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    message: &[u8],
) -> Result<(), std::io::Error> {
    w.write_all(message).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Operation;

    #[tokio::test]
    async fn reads_a_request_and_refuses_oversized_headers() {
        let msg = [1u8, 33, 0, 0, 0, 1, 0];
        let mut input: Vec<u8> = msg.to_vec();
        input.extend_from_slice(&[0u8; 33]);
        let (h, body) = read_message(&mut &input[..], Header::decode_request)
            .await
            .unwrap();
        assert_eq!(h.operation, Operation::ScanRequest);
        assert_eq!(body.len(), 33);

        let huge = [3u8, 0xff, 0xff, 0xff, 0x7f, 1, 0];
        let err = read_message(&mut &huge[..], Header::decode_request)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            FrameError::Header(DecodeError::BodyTooLarge { .. })
        ));

        let err = read_message(&mut &msg[..3], Header::decode_request)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            FrameError::Truncated {
                got: 3,
                expected: 7
            }
        ));
        let err = read_message(&mut &msg[..0], Header::decode_request)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Closed));
        let err = read_message(&mut &input[..20], Header::decode_request)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            FrameError::Truncated {
                got: 20,
                expected: 40
            }
        ));
    }
}
