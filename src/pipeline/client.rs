//! Who is calling: the client IP (the peer, or, when the peer is a trusted
//! proxy, `X-Forwarded-For` walked from the right past trusted addresses,
//! SPEC §10 and §15) and the request id (kept when the client sent a sane
//! one, else generated).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// The caller as seen through any trusted proxies.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    pub ip: IpAddr,
}

pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client address: walking `X-Forwarded-For` from the right, each
/// trusted hop hands over to the entry before it; the first untrusted address
/// is the client. An entry that is not an IP address (`unknown`, a name, an
/// obfuscated id) ends the walk at the last trusted hop: what lies left of it
/// was written by someone no trusted proxy vouches for.
pub fn client_info(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> ClientInfo {
    let peer_trusted = is_trusted(trusted, peer);
    let mut ip = peer;
    if peer_trusted {
        let values: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap_or("invalid"))
            .collect();
        let entries = values.iter().flat_map(|v| v.split(',')).map(str::trim);
        let entries: Vec<&str> = entries.collect();
        for entry in entries.iter().rev() {
            match entry.parse::<IpAddr>() {
                Ok(hop) => {
                    ip = hop;
                    if !is_trusted(trusted, hop) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    ClientInfo {
        peer,
        peer_trusted,
        ip,
    }
}

/// `X-Request-Id` (the mutator writes it upstream as `identity_headers::REQUEST_ID`).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id` when it is 1–128 visible ASCII characters, else a new UUID.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// A UUIDv7 from the thread-local userspace CSPRNG: `Uuid::now_v7` asks the
/// kernel (`getrandom`) twice per id, a syscall pair on every proxied request.
fn new_request_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut random = [0u8; 10];
    rand::fill(&mut random);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pipeline::test_support::headers;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted = vec!["10.0.0.0/8".parse::<IpNet>().unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]);
        let via_proxy = client_info(&trusted, "10.0.0.2".parse().unwrap(), &h);
        assert_eq!(via_proxy.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        let direct = client_info(&trusted, "198.51.100.7".parse().unwrap(), &h);
        assert_eq!(direct.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert!(!direct.peer_trusted);
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_or_unreadable_entry() {
        let trusted = vec!["127.0.0.0/8".parse::<IpNet>().unwrap()];
        let peer = "127.0.0.1".parse().unwrap();
        let ip = |xff: &str| client_info(&trusted, peer, &headers(&[("x-forwarded-for", xff)])).ip;
        // a client-written entry left of a non-IP one is never the key
        assert_eq!(ip("198.51.100.7, unknown"), peer);
        assert_eq!(
            ip("198.51.100.7, unknown, 127.0.0.2"),
            "127.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("198.51.100.7, 203.0.113.1"),
            "203.0.113.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("198.51.100.7, 127.0.0.3"),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(ip("127.0.0.9"), "127.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(ip(""), peer);
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        assert_eq!(request_id(&headers(&[("x-request-id", "abc-1")])), "abc-1");
        let long = "x".repeat(200);
        assert_ne!(request_id(&headers(&[("x-request-id", &long)])), long);
        assert!(!request_id(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn generated_request_ids_are_distinct_v7_uuids() {
        let a = request_id(&HeaderMap::new());
        let b = request_id(&HeaderMap::new());
        assert_ne!(a, b);
        for id in [a, b] {
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 7, "{id}");
        }
    }
}
