//! `--vip-probe=tcp`: does anything answer on an address before we hand it to a Cluster?

use std::{net::IpAddr, time::Duration};

/// How long a probe waits for a TCP handshake.
pub const TIMEOUT: Duration = Duration::from_millis(300);

/// Whether a TCP connect to `vip:port` succeeds within [`TIMEOUT`]. Refused, unreachable, timed out or not an
/// address: nobody answers.
pub async fn answers(vip: &str, port: u16) -> bool {
    let Ok(ip) = vip.trim().parse::<IpAddr>() else {
        return false;
    };
    matches!(
        tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect((ip, port))).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_answers_and_a_closed_port_does_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(answers("127.0.0.1", port).await);
        drop(listener);
        assert!(!answers("127.0.0.1", port).await);
        assert!(!answers("not-an-ip", port).await);
    }
}
