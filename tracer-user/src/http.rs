//! A deliberately tiny HTTP/1.1 GET for health endpoints: one request, `Connection: close`,
//! the response read to at most 16 KiB, everything under one timeout. Enough for `/healthz`
//! and a `Date` header; no redirects, no bodies of interest.
use std::time::{Duration, Instant, SystemTime};

use nodehealth_proto::node::HttpAttempt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::host::now_unix_ms;

/// A parsed response head and the start of its body.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub date: Option<SystemTime>,
    pub body: String,
}

const LIMIT: usize = 16 * 1024;

/// Sends one GET on an established stream and reads the response.
pub async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
) -> std::io::Result<Response> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nodehealth-agent\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: keep what arrived.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() >= LIMIT || complete(&buf) {
            break;
        }
    }
    parse(&buf).ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}

/// Whether a full response (head plus Content-Length bytes) is in `buf`.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    len.is_some_and(|len| buf.len() >= end + 4 + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn parse(buf: &[u8]) -> Option<Response> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let date = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("date"))
        .and_then(|(_, v)| httpdate::parse_http_date(v.trim()).ok());
    let body = &buf[end + 4..];
    let body = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
    Some(Response { status, date, body })
}

/// GET over plain TCP, fully bounded by `timeout`.
pub async fn get_plain(addr: &str, path: &str, timeout: Duration) -> HttpAttempt {
    let at = now_unix_ms();
    let started = Instant::now();
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        get(&mut s, addr, path).await
    };
    let result = tokio::time::timeout(timeout, fut).await;
    attempt(at, started.elapsed(), timeout, result)
}

/// One request's outcome as evidence: the response, the error, or the timeout.
pub fn attempt(
    at_unix_ms: i64,
    elapsed: Duration,
    timeout: Duration,
    result: Result<std::io::Result<Response>, tokio::time::error::Elapsed>,
) -> HttpAttempt {
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    match result {
        Ok(Ok(r)) => HttpAttempt {
            at_unix_ms,
            latency_ms,
            status: Some(r.status),
            body: Some(r.body),
            ..Default::default()
        },
        Ok(Err(e)) => HttpAttempt {
            at_unix_ms,
            latency_ms,
            error: Some(e.to_string()),
            ..Default::default()
        },
        Err(_) => HttpAttempt {
            at_unix_ms,
            latency_ms,
            error: Some(format!("no answer within {timeout:?}")),
            timed_out: true,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_date_and_body() {
        let r = parse(
            b"HTTP/1.1 401 Unauthorized\r\nDate: Tue, 24 Nov 2026 14:00:00 GMT\r\n\
              Content-Length: 2\r\n\r\nno",
        )
        .unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.body, "no");
        let date = crate::host::unix_ms(r.date.unwrap());
        assert_eq!(date, 1_795_528_800_000);
    }
}
