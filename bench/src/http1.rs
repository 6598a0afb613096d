//! The least of HTTP/1.1 a load generator needs on a keep-alive connection:
//! read one response (its status, and a `Content-Length` body skipped), and
//! send the same request many times. Shared by the token flood, the event
//! fillers (admin requests, refused tokens) and nothing else: the
//! measurements proper use real clients.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one response from `stream` with `buf` as scratch space; its status,
/// or `None` when the peer closed before a whole response arrived.
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> anyhow::Result<Option<u16>> {
    let mut have = 0;
    let (status, head_end, body_len) = loop {
        let n = stream.read(&mut buf[have..]).await?;
        if n == 0 {
            return Ok(None);
        }
        have += n;
        if let Some(pos) = find(&buf[..have], b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..pos]).unwrap_or("");
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            break (status, pos + 4, length);
        }
        anyhow::ensure!(have < buf.len(), "response head too large");
    };
    let mut body_have = have - head_end;
    while body_have < body_len {
        let n = stream.read(buf).await?;
        if n == 0 {
            return Ok(None);
        }
        body_have += n;
    }
    Ok(Some(status))
}

/// Sends `request` `count` times on `stream`, one at a time, each answer read
/// before the next; an error unless every answer has status `expect`.
pub async fn repeat<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    count: usize,
    expect: u16,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 16 << 10];
    for k in 0..count {
        stream.write_all(request).await?;
        match read_response(&mut stream, &mut buf).await? {
            Some(status) if status == expect => {}
            Some(status) => anyhow::bail!("answer {k}: status {status}, expected {expect}"),
            None => anyhow::bail!("the connection closed after {k} of {count} answers"),
        }
    }
    Ok(())
}

/// The access endpoint's GET with `token` and no upgrade headers: a refusal
/// (401) for a bad token, 400 after the checks for a good one.
pub fn access_request(target: SocketAddr, token: &str) -> String {
    format!("GET /v0/envelope/access?access_token={token} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_response_is_read_with_its_body_and_a_short_one_is_none() {
        let mut buf = vec![0u8; 256];
        let answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nnope!";
        assert_eq!(
            read_response(&mut &answer[..], &mut buf).await.unwrap(),
            Some(401)
        );
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort";
        assert_eq!(read_response(&mut &cut[..], &mut buf).await.unwrap(), None);
        assert_eq!(
            read_response(&mut &b"HTTP/1.1 2"[..], &mut buf)
                .await
                .unwrap(),
            None
        );
        let mut small = vec![0u8; 8];
        assert!(read_response(&mut &answer[..], &mut small).await.is_err());
    }
}
