//! The HTTP/1.1 probe: one `GET`, and only the status line of the answer is read.
//!
//! A full client (hyper) would parse headers and bodies the probe never looks at; the status line
//! is all a health check needs, and reading at most [`MAX_STATUS_LINE`] bytes keeps a misbehaving
//! backend from making the checker buffer without bound.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::ProbeError;

/// The most the probe reads while looking for the end of the status line. RFC 9112 recommends
/// servers accept request lines of at least 8000 octets; status lines are far shorter in practice
/// (`HTTP/1.1 200 OK`), and a reason phrase longer than this is no sign of health.
pub(crate) const MAX_STATUS_LINE: usize = 1024;

/// Sends `GET path` with `Host: host` and returns the status code of the answer.
pub(crate) async fn get_status(
    mut stream: TcpStream,
    path: &str,
    host: &str,
) -> Result<u16, ProbeError> {
    // `Connection: close` tells the backend not to wait for a second request; the probe drops
    // the connection as soon as it has the status line.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: divvy-health-check\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    let mut buf = [0u8; MAX_STATUS_LINE];
    let mut filled = 0;
    loop {
        let n = stream
            .read(&mut buf[filled..])
            .await
            .map_err(ProbeError::Io)?;
        if n == 0 {
            return Err(ProbeError::BadStatusLine);
        }
        let searched = filled;
        filled += n;
        if let Some(end) = buf[searched..filled].iter().position(|&b| b == b'\n') {
            return parse_status_line(&buf[..searched + end]).ok_or(ProbeError::BadStatusLine);
        }
        if filled == buf.len() {
            return Err(ProbeError::BadStatusLine);
        }
    }
}

/// Parses `HTTP/1.x SSS[ reason][\r]` (RFC 9112 §4) and returns `SSS`; the line excludes its `\n`.
pub(crate) fn parse_status_line(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    if !minor.is_ascii_digit() {
        return None;
    }
    let rest = rest.strip_prefix(b" ")?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match rest.get(3) {
        None | Some(b' ' | b'\r') => {}
        Some(_) => return None,
    }
    let code = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..=999).contains(&code).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_lines_of_both_http1_versions_parse_with_or_without_a_reason() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Some(204));
    }

    #[test]
    fn lines_that_are_not_http1_status_lines_are_rejected() {
        for line in [
            &b""[..],
            b"HTTP/2 200 OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.x 200 OK",
            b"SSH-2.0-OpenSSH_9.6",
            b"HTTP/1.1 099 low",
        ] {
            assert_eq!(
                parse_status_line(line),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_status_line(&line);
        }

        #[test]
        fn every_three_digit_code_reads_back(code in 100u16..=999, minor in 0u8..=9, reason in "[ -~]{0,20}") {
            let line = format!("HTTP/1.{minor} {code} {reason}\r");
            prop_assert_eq!(parse_status_line(line.as_bytes()), Some(code));
        }
    }
}
