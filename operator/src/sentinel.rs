//! Asks a Redis Sentinel which master it currently follows (`SENTINEL get-master-addr-by-name`), with a
//! tiny RESP exchange of its own: one short-lived TCP connection per question, bounded by a timeout, so
//! the status never waits on a sentinel that is gone.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Errors of a sentinel query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, writing or reading failed.
    #[error("sentinel {addr}: {source}")]
    Io {
        /// The sentinel.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("sentinel {0}: no answer in time")]
    Timeout(String),
    /// The sentinel answered with an error or something unexpected.
    #[error("sentinel {addr}: {detail}")]
    Reply {
        /// The sentinel.
        addr: String,
        /// What it said.
        detail: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `host:port` of the master `master_name` as the sentinel at `addr` (`host:port`) sees it, or `None` if
/// it does not monitor such a master.
pub async fn master_addr(
    addr: &str,
    master_name: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Option<String>> {
    tokio::time::timeout(timeout, query(addr, master_name, password))
        .await
        .map_err(|_| Error::Timeout(addr.to_owned()))?
}

/// Asks each sentinel in turn; the first answer wins.
pub async fn current_master(
    sentinels: &[String],
    master_name: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Option<String>> {
    let mut last = None;
    for addr in sentinels {
        match master_addr(addr, master_name, password, timeout).await {
            Ok(Some(master)) => return Ok(Some(master)),
            Ok(None) => last = None,
            Err(err) => last = Some(err),
        }
    }
    last.map_or(Ok(None), Err)
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn query(addr: &str, master_name: &str, password: Option<&str>) -> Result<Option<String>> {
    let io = |source| Error::Io {
        addr: addr.to_owned(),
        source,
    };
    let reply_err = |detail: String| Error::Reply {
        addr: addr.to_owned(),
        detail,
    };
    let stream = TcpStream::connect(addr).await.map_err(io)?;
    let mut stream = BufReader::new(stream);
    if let Some(password) = password {
        stream
            .get_mut()
            .write_all(&encode(&["AUTH", password]))
            .await
            .map_err(io)?;
        let line = read_line(&mut stream).await.map_err(io)?;
        if !line.starts_with('+') {
            return Err(reply_err(format!("AUTH refused: {line}")));
        }
    }
    stream
        .get_mut()
        .write_all(&encode(&[
            "SENTINEL",
            "get-master-addr-by-name",
            master_name,
        ]))
        .await
        .map_err(io)?;
    let header = read_line(&mut stream).await.map_err(io)?;
    if header == "*-1" || header == "$-1" || header == "_" {
        return Ok(None);
    }
    let Some(count) = header
        .strip_prefix('*')
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return Err(reply_err(header));
    };
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        let len_line = read_line(&mut stream).await.map_err(io)?;
        let len: usize = len_line
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| reply_err(len_line.clone()))?;
        let mut buf = vec![0u8; len + 2];
        stream.read_exact(&mut buf).await.map_err(io)?;
        buf.truncate(len);
        items.push(String::from_utf8_lossy(&buf).into_owned());
    }
    match items.as_slice() {
        [host, port] => Ok(Some(format!("{host}:{port}"))),
        _ => Err(reply_err(format!("{count} items"))),
    }
}

async fn read_line(stream: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    let n = stream.read_line(&mut line).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end().to_owned())
}

/// `host:port` of a Redis URL (`redis://[user:pass@]host:port[/db]`), for the status of External mode.
pub fn url_host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next()?;
    if host_port.is_empty() {
        return None;
    }
    Some(if host_port.contains(':') && !host_port.ends_with(']') {
        host_port.to_owned()
    } else {
        format!("{host_port}:6379")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_port_drops_scheme_credentials_and_db() {
        assert_eq!(
            url_host_port("redis://:pw@10.0.0.1:6380/2").as_deref(),
            Some("10.0.0.1:6380")
        );
        assert_eq!(
            url_host_port("rediss://redis.example").as_deref(),
            Some("redis.example:6379")
        );
        assert_eq!(url_host_port("redis://").as_deref(), None);
    }

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(encode(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
    }
}
