//! Header-then-body framing, shared by every transport and both sides.
//!
//! A reader takes the 7-byte header, checks it (version, operation, size
//! against the largest legal body of that operation) and only then reads
//! exactly `size` bytes. Nothing is allocated from a size that failed the
//! check, so a hostile peer cannot make the reader reserve memory.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::protocol::{DecodeError, Header, HEADER_LEN, MAX_REQUEST_LEN};

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

/// Reads the one request a connection carries (the host's request path):
/// like [`read_message`] with [`Header::decode_request`], but in one read
/// when the request is all there, not one for the header and one for the
/// body. Besides a system call, that takes the request out of the socket
/// sooner, and a guest blocked reading its reply is woken when its request
/// is taken (it frees the guest's send buffer): taken late, after the
/// guest went to sleep, that is a wakeup for nothing (BENCHMARKS.md).
///
/// Reads go into one buffer of the largest request's size, never more,
/// and the header is checked as soon as it is in. Bytes past the request
/// are read and dropped: nothing follows a request on its connection.
pub async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(Header, Zeroizing<Vec<u8>>), FrameError> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_REQUEST_LEN]);
    let got = read_at_least(r, &mut buf, 0, HEADER_LEN).await?;
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&buf[..HEADER_LEN]);
    let header = Header::decode_request(&head)?;
    let need = HEADER_LEN + header.size as usize;
    read_at_least(r, &mut buf, got, need).await?;
    buf.copy_within(HEADER_LEN..need, 0);
    buf.truncate(need - HEADER_LEN);
    Ok((header, buf))
}

/// Reads into `buf`, which holds `got` bytes already, until it holds at
/// least `need`; a read may bring more, up to `buf`'s end. Returns how
/// many it holds.
async fn read_at_least<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    mut got: usize,
    need: usize,
) -> Result<usize, FrameError> {
    while got < need {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(match got {
                0 => FrameError::Closed,
                _ => FrameError::Truncated {
                    got,
                    expected: need,
                },
            });
        }
        got += n;
    }
    Ok(got)
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

    /// Hands out at most `chunk` bytes per read, as a socket may.
    struct Chunked<'a> {
        data: &'a [u8],
        chunk: usize,
        reads: usize,
    }

    fn chunked(data: &[u8], chunk: usize) -> Chunked<'_> {
        Chunked {
            data,
            chunk,
            reads: 0,
        }
    }

    impl AsyncRead for Chunked<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.reads += 1;
            let n = self.chunk.min(self.data.len()).min(buf.remaining());
            let (now, rest) = self.data.split_at(n);
            buf.put_slice(now);
            self.data = rest;
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn outcome(
        read: Result<(Header, Zeroizing<Vec<u8>>), FrameError>,
    ) -> Result<(Header, Vec<u8>), String> {
        read.map(|(h, body)| (h, body.to_vec()))
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_request_is_read_in_one_read_when_it_is_all_there() {
        let mut input = vec![1u8, 33, 0, 0, 0, 1, 0];
        input.extend((0..33).map(|i| i as u8));
        let mut socket = chunked(&input, usize::MAX);
        let (h, body) = read_request(&mut socket).await.unwrap();
        assert_eq!((h.operation, h.size), (Operation::ScanRequest, 33));
        assert_eq!(&body[..], &input[HEADER_LEN..]);
        assert_eq!(socket.reads, 1);
        // What follows the request is not part of it.
        input.extend_from_slice(b"trailing");
        let (_, body) = read_request(&mut &input[..]).await.unwrap();
        assert_eq!(body.len(), 33);
    }

    #[tokio::test]
    async fn a_request_header_is_checked_before_its_body_is_awaited() {
        // CONNECT_REQUEST announcing 4 GiB, and then nothing: refused at
        // once, not read until the peer gives up.
        let (mut guest, mut host) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut guest, &[3, 0xff, 0xff, 0xff, 0xff, 1, 0])
            .await
            .unwrap();
        let err = read_request(&mut host).await.unwrap_err();
        assert!(matches!(
            err,
            FrameError::Header(DecodeError::BodyTooLarge { .. })
        ));
        drop(guest);
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives, in whatever pieces, the one-read framing gives
        /// what the header-then-body framing gives.
        #[test]
        fn read_request_agrees_with_read_message(
            head in proptest::prop_oneof![
                proptest::collection::vec(proptest::num::u8::ANY, 0..12),
                (1u8..=3, 0u32..400).prop_map(|(op, size)| {
                    let mut h = vec![op];
                    h.extend_from_slice(&size.to_le_bytes());
                    h.extend_from_slice(&[1, 0]);
                    h
                }),
            ],
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            chunk in 1usize..64,
        ) {
            let mut input = head;
            input.extend_from_slice(&body);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (one, two) = rt.block_on(async {
                let one = read_request(&mut chunked(&input, chunk)).await;
                let two = read_message(&mut chunked(&input, chunk), Header::decode_request).await;
                (outcome(one), outcome(two))
            });
            prop_assert_eq!(one, two);
        }
    }
}
