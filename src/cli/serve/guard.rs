//! Who may use the server: the checks every request passes before a route sees it (README, "Commands", `serve`).
//!
//! A local model server is reachable by every web page the user opens: a page may send a "simple" cross-site POST
//! (no preflight) and, by rebinding a DNS name of its own to 127.0.0.1, even read the answers. So, unless told
//! otherwise:
//! - the `Host` must name this server: `localhost`, `127.0.0.1`, `[::1]` or the address the client connected to, with
//!   the server's port, or a name given with `--allow-host` (a rebinding page's own name is none of these);
//! - a request from a page (`Origin`) must come from the server's own origin, unless `--cors` opens it to all;
//! - a POST must carry JSON (`Content-Type: application/json`), which no page can send cross-site without a
//!   preflight;
//! - with `--api-key`, `Authorization: Bearer KEY` (the scheme in any case), compared in constant time.

use std::net::IpAddr;

/// The request's `Host` names this server. `port` is the one it listens on, `local` the address the client
/// connected to (one of the machine's own when the server listens on `0.0.0.0` or `::`), `allowed` the names of
/// `--allow-host` (`*` allows any).
pub fn host_allowed(host: &str, port: u16, local: Option<IpAddr>, allowed: &[String]) -> bool {
    let Some((name, host_port)) = split_host(host) else { return false };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if allowed.iter().any(|a| a == "*" || a.trim_end_matches('.').eq_ignore_ascii_case(&name)) {
        return true;
    }
    let port_ok = match host_port {
        Some(p) => p == port,
        None => port == 80,
    };
    let local_name = local.map(|ip| match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
    });
    port_ok && (["localhost", "127.0.0.1", "[::1]"].contains(&name.as_str()) || local_name.as_deref() == Some(&name))
}

/// `name:port`, `[v6]:port`, or a name alone; `None` when the port is not a number.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let host = host.trim();
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        (&host[..=end], if rest.is_empty() { None } else { Some(rest.strip_prefix(':')?) })
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') => (name, Some(port)),
            Some(_) => return None, // an IPv6 address without brackets is no valid Host
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    (!name.is_empty()).then_some((name, port))
}

/// The page's `Origin` is the server's own: `http://` and the `Host` the request was sent to.
pub fn origin_is_own(origin: &str, host: &str) -> bool {
    origin.trim().trim_end_matches('/').eq_ignore_ascii_case(&format!("http://{}", host.trim()))
}

/// A JSON media type: `application/json` or `application/…+json`, with any parameters (`; charset=utf-8`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The token of `Authorization: Bearer TOKEN`, the scheme matched in any case (RFC 9110 §11.1).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Compares two keys in time that depends on neither their contents nor their lengths: their SHA-256 digests,
/// byte by byte without stopping early.
pub fn keys_match(given: &str, key_digest: &[u8; 32]) -> bool {
    let given = digest(given);
    given.iter().zip(key_digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

pub fn digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_name_this_server_pass_and_others_do_not() {
        let local: IpAddr = "192.168.1.20".parse().unwrap();
        let none: &[String] = &[];
        for host in ["localhost:8080", "LOCALHOST:8080", "127.0.0.1:8080", "[::1]:8080", "localhost.:8080"] {
            assert!(host_allowed(host, 8080, None, none), "{host}");
        }
        assert!(host_allowed("192.168.1.20:8080", 8080, Some(local), none));
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost:8081",
            "localhost",
            "127.0.0.1:80",
            "192.168.1.21:8080",
            "localhost.evil.example:8080",
            "::1:8080",
            "[::1]x",
            "localhost:port",
            "",
        ] {
            assert!(!host_allowed(host, 8080, Some(local), none), "{host}");
        }
        assert!(host_allowed("localhost", 80, None, none), "port 80 may be left out");
        let allowed = vec!["models.lan".to_string()];
        assert!(host_allowed("models.lan", 8080, None, &allowed));
        assert!(host_allowed("Models.LAN:443", 8080, None, &allowed));
        assert!(!host_allowed("evil.example:8080", 8080, None, &allowed));
        assert!(host_allowed("anything:1", 8080, None, &["*".to_string()]));
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert!(host_allowed("10.0.0.5:8080", 8080, Some(mapped), none));
    }

    #[test]
    fn only_the_servers_own_origin_is_its_own() {
        assert!(origin_is_own("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(origin_is_own("http://LOCALHOST:8080", "localhost:8080"));
        assert!(!origin_is_own("http://evil.example", "127.0.0.1:8080"));
        assert!(!origin_is_own("https://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!origin_is_own("null", "127.0.0.1:8080"));
    }

    #[test]
    fn json_media_types_and_bearer_schemes() {
        for t in ["application/json", "Application/JSON; charset=utf-8", "application/vnd.api+json"] {
            assert!(is_json(t), "{t}");
        }
        for t in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "", "json"] {
            assert!(!is_json(t), "{t}");
        }
        assert_eq!(bearer_token("Bearer k"), Some("k"));
        assert_eq!(bearer_token("bearer k"), Some("k"));
        assert_eq!(bearer_token("BEARER  k "), Some("k"));
        assert_eq!(bearer_token("Basic k"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerk"), None);
        let key = digest("sk-1");
        assert!(keys_match("sk-1", &key));
        assert!(!keys_match("sk-2", &key) && !keys_match("sk-1 ", &key) && !keys_match("", &key));
    }
}
