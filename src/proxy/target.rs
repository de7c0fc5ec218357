//! Where a request goes upstream, fixed before the request is read: for an intercepted tunnel,
//! the CONNECT target the front recorded on the connection (never the inner `Host`, which would
//! allow domain fronting); for a redirected plain request, its `Host` on the connection's
//! original port; for a plain request to the explicit proxy, the absolute-form target.

use std::net::SocketAddr;

use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, Result};
use tracing::warn;

use crate::front::{ConnectionMeta, Listener};
use crate::pipeline::Source;

/// Where a request goes upstream, fixed in `request_filter`.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// Resolved only once the request is allowed.
    pub addr: Option<SocketAddr>,
}

/// A request the gateway cannot route, answered with this status and message.
#[derive(Debug, PartialEq, Eq)]
pub struct Unroutable {
    pub status: u16,
    pub message: String,
}

impl Unroutable {
    fn bad_request(message: String) -> Unroutable {
        Unroutable {
            status: 400,
            message,
        }
    }
}

/// The target of the request with head `header`, on a connection described by `meta` (`None`
/// for a connection the front did not describe, a plain explicit-proxy one), and how the request
/// reached the gateway.
pub fn route(
    header: &RequestHeader,
    meta: Option<&ConnectionMeta>,
) -> std::result::Result<(Target, Source), Unroutable> {
    let transparent = meta.is_some_and(|m| m.listener == Listener::Transparent);
    let (host, port, tls, source) = match meta.and_then(|m| m.intercepted.as_ref()) {
        Some(connect) => {
            if let Some(inner) = inner_host(header) {
                if !inner.eq_ignore_ascii_case(&connect.host) {
                    // Sending a request for one host inside a tunnel opened to another is
                    // domain fronting; the upstream is pinned to the CONNECT target (or the
                    // SNI of a redirected connection) anyway.
                    warn!(connect = %connect.host, inner, "Inner Host differs from the intercepted host.");
                    return Err(Unroutable {
                        status: 421,
                        message: "Misdirected request: the Host header must match the host the TLS connection was opened for.\n".to_owned(),
                    });
                }
            }
            let source = if transparent {
                Source::TransparentIntercepted
            } else {
                Source::ProxyIntercepted
            };
            (connect.host.clone(), connect.port, true, source)
        }
        None if transparent => {
            let port = meta
                .and_then(|m| m.original_dst)
                .map_or(80, |dst| dst.port());
            let host = redirected_target(header).map_err(Unroutable::bad_request)?;
            (host, port, false, Source::TransparentPlain)
        }
        None => {
            let (host, port) = absolute_form_target(header).map_err(Unroutable::bad_request)?;
            (host, port, false, Source::ProxyPlain)
        }
    };
    let target = Target {
        host,
        port,
        tls,
        addr: None,
    };
    Ok((target, source))
}

/// The host the request itself names (`Host`, or the h2 `:authority`), without a port.
fn inner_host(header: &RequestHeader) -> Option<&str> {
    let authority = header
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header.headers.get("host").and_then(|h| h.to_str().ok()))?;
    Some(strip_port(authority))
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else {
                authority
            }
        })
}

/// The target of an absolute-form request (`GET http://host:port/path`), the only form a forward
/// proxy can route.
fn absolute_form_target(header: &RequestHeader) -> std::result::Result<(String, u16), String> {
    let uri: http::Uri = std::str::from_utf8(header.raw_path())
        .ok()
        .and_then(|raw| raw.parse().ok())
        .ok_or_else(|| "Bad request: the request target is not a valid URI.\n".to_owned())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "Bad request: {other}:// targets must be tunnelled with CONNECT.\n"
            ))
        }
        None => {
            return Err("Bad request: this is a forward proxy; send absolute-form requests (http://host/path) or CONNECT.\n".to_owned())
        }
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "Bad request: the request target has no host.\n".to_owned())?;
    let host = crate::host::unbracket(host).to_ascii_lowercase();
    Ok((host, uri.port_u16().unwrap_or(80)))
}

/// The host a redirected plain-HTTP request is for: its `Host` header (or absolute-form
/// authority). It names the service for fingerprinting and policy; where the request goes is the
/// connection's original destination.
fn redirected_target(header: &RequestHeader) -> std::result::Result<String, String> {
    let host = inner_host(header)
        .map(|h| crate::host::unbracket(h).to_ascii_lowercase())
        .filter(|h| crate::host::is_dns_name(h) || crate::host::is_ip_literal(h))
        .ok_or_else(|| "Bad request: a Host header naming the server is required.\n".to_owned())?;
    Ok(crate::host::normalize(&host))
}

/// Upstream requests are sent origin-form with a `Host` header, whatever form the client used
/// (absolute-form to the proxy, or h2 `:authority`).
pub fn normalize_to_origin_form(request: &mut RequestHeader, target: &Target) -> Result<()> {
    // An absolute-form h1 target is kept verbatim in the raw target (the parsed uri then holds
    // only the path); h2 requests carry scheme and authority in the uri itself.
    let absolute = request.uri.scheme().is_some()
        || request.uri.authority().is_some()
        || !request.raw_path().starts_with(b"/");
    if absolute {
        let path = request
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<http::Uri>()
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "request path", e))?;
        request.set_uri(path);
    }
    if request.headers.get("host").is_none() {
        let default_port = if target.tls { 443 } else { 80 };
        let host = if target.port == default_port {
            target.host.clone()
        } else {
            format!("{}:{}", target.host, target.port)
        };
        request.insert_header("host", host)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_handles_names_and_ipv6() {
        assert_eq!(strip_port("api.openai.com:443"), "api.openai.com");
        assert_eq!(strip_port("api.openai.com"), "api.openai.com");
        assert_eq!(strip_port("[::1]:8443"), "::1");
    }

    #[test]
    fn absolute_form_is_required_for_plain_requests() {
        let header = RequestHeader::build("GET", b"http://Example.com:8080/x?y=1", None).unwrap();
        assert_eq!(
            absolute_form_target(&header).unwrap(),
            ("example.com".to_owned(), 8080)
        );
        let header = RequestHeader::build("GET", b"/relative", None).unwrap();
        assert!(absolute_form_target(&header)
            .unwrap_err()
            .contains("absolute-form"));
        let header = RequestHeader::build("GET", b"https://example.com/", None).unwrap();
        assert!(absolute_form_target(&header)
            .unwrap_err()
            .contains("CONNECT"));
    }

    #[test]
    fn redirected_requests_are_named_by_their_host_header() {
        let mut header = RequestHeader::build("GET", b"/v1/models", None).unwrap();
        assert!(redirected_target(&header).is_err());
        header.insert_header("host", "API.OpenAI.com:80").unwrap();
        assert_eq!(redirected_target(&header).unwrap(), "api.openai.com");
        header.insert_header("host", "bad host").unwrap();
        assert!(redirected_target(&header).is_err());
    }

    #[test]
    fn origin_form_gets_a_host_header() {
        let target = Target {
            host: "api.openai.com".into(),
            port: 443,
            tls: true,
            addr: None,
        };
        let mut header =
            RequestHeader::build("POST", b"https://api.openai.com/v1/chat?x=1", None).unwrap();
        normalize_to_origin_form(&mut header, &target).unwrap();
        assert_eq!(header.uri.to_string(), "/v1/chat?x=1");
        assert_eq!(header.headers.get("host").unwrap(), "api.openai.com");
    }

    fn intercepted(listener: Listener, host: &str) -> ConnectionMeta {
        ConnectionMeta {
            listener,
            original_dst: (listener == Listener::Transparent)
                .then(|| "10.0.0.9:8443".parse().unwrap()),
            ..ConnectionMeta::explicit(
                "127.0.0.1:50000".parse().unwrap(),
                Some(crate::front::ConnectTarget {
                    host: host.into(),
                    port: 8443,
                }),
                None,
            )
        }
    }

    #[test]
    fn an_intercepted_request_goes_to_the_tunnels_host_whatever_it_names() {
        for (listener, source) in [
            (Listener::Explicit, Source::ProxyIntercepted),
            (Listener::Transparent, Source::TransparentIntercepted),
        ] {
            let meta = intercepted(listener, "api.openai.com");
            let mut header = RequestHeader::build("POST", b"/v1/chat", None).unwrap();
            let (target, routed) = route(&header, Some(&meta)).unwrap();
            assert_eq!(
                (target.host.as_str(), target.port, target.tls),
                ("api.openai.com", 8443, true)
            );
            assert_eq!(routed, source);
            header.insert_header("host", "API.OpenAI.com:8443").unwrap();
            assert!(
                route(&header, Some(&meta)).is_ok(),
                "the same host, any case"
            );
            header.insert_header("host", "evil.example").unwrap();
            assert_eq!(
                route(&header, Some(&meta)).unwrap_err().status,
                421,
                "domain fronting"
            );
        }
    }

    #[test]
    fn a_plain_request_goes_where_its_listener_says() {
        let explicit = RequestHeader::build("GET", b"http://example.com:8080/x", None).unwrap();
        let (target, source) = route(&explicit, None).unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.tls),
            ("example.com", 8080, false)
        );
        assert_eq!(source, Source::ProxyPlain);
        let unroutable = route(&RequestHeader::build("GET", b"/x", None).unwrap(), None);
        assert_eq!(unroutable.unwrap_err().status, 400);

        let mut meta = intercepted(Listener::Transparent, "unused");
        meta.intercepted = None;
        let mut redirected = RequestHeader::build("GET", b"/x", None).unwrap();
        assert_eq!(route(&redirected, Some(&meta)).unwrap_err().status, 400);
        redirected.insert_header("host", "Example.com").unwrap();
        let (target, source) = route(&redirected, Some(&meta)).unwrap();
        // Named by its Host, sent to the port the client connected to.
        assert_eq!(
            (target.host.as_str(), target.port, target.tls),
            ("example.com", 8443, false)
        );
        assert_eq!(source, Source::TransparentPlain);
    }
}
