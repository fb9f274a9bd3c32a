//! `omnistock healthcheck`: GET /healthz on the daemon's own address, for a container
//! HEALTHCHECK where the (distroless) image has no shell and no curl. Plain HTTP/1.1 over one
//! TCP connection, the whole exchange under one timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most of the answer read: the status line is all that matters.
const MAX_ANSWER: u64 = 64 * 1024;

/// The address to call for a listen address: a wildcard (`0.0.0.0`, `::`) is reached on
/// loopback.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The status code of `GET {path}` at `addr`, or an error (refused, timed out, not HTTP).
pub async fn status(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    tokio::time::timeout(timeout, exchange(addr, path))
        .await
        .with_context(|| format!("no answer from {addr} within {timeout:?}"))?
}

async fn exchange(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut conn = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: omnistock-healthcheck\r\n\r\n");
    conn.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    conn.take(MAX_ANSWER).read_to_end(&mut answer).await?;
    parse_status(&answer).with_context(|| format!("{addr} did not answer HTTP"))
}

/// The status code of an HTTP/1.x status line.
fn parse_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// Runs the check: Ok when `/healthz` answers 200.
pub async fn run(listen: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let addr = target(listen);
    let code = status(addr, "/healthz", timeout).await?;
    if code != 200 {
        anyhow::bail!("GET http://{addr}/healthz answered {code}");
    }
    println!("ok: GET http://{addr}/healthz answered 200");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_line() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn a_wildcard_listen_address_is_called_on_loopback() {
        let a = target("0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(a, "127.0.0.1:8080".parse().expect("addr"));
        let a = target("[::]:9".parse().expect("addr"));
        assert_eq!(a, "[::1]:9".parse().expect("addr"));
        let a = target("10.1.2.3:80".parse().expect("addr"));
        assert_eq!(a, "10.1.2.3:80".parse().expect("addr"));
    }

    #[tokio::test]
    async fn a_closed_port_fails_and_a_silent_one_times_out() {
        // A listener that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        let err = run(addr, Duration::from_millis(300))
            .await
            .expect_err("no answer");
        assert!(err.to_string().contains("no answer"), "{err:#}");
        drop(silent);
        assert!(run(addr, Duration::from_secs(5)).await.is_err());
    }
}
