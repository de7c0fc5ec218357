//! What a decision is made about and what it concluded: the request's facts and the verdict.
//! They live here, below the pipeline that produces them, because the policy input, the audit
//! record and the proxy all read them and none of those may import the pipeline.

use std::net::SocketAddr;
use std::sync::Arc;

use uuid::Uuid;

use super::{Decision, Outcome};
use crate::catalog::{AiService, Fingerprint};
use crate::identity::Identity;
use crate::inspect::Inspection;

/// The user id recorded when a request could not be attributed to anyone.
pub const ANONYMOUS_USER: Uuid = Uuid::nil();

/// How the request reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Absolute-form HTTP request to the explicit proxy.
    ProxyPlain,
    /// Request decrypted from an intercepted CONNECT tunnel.
    ProxyIntercepted,
    /// Plain HTTP redirected to the transparent listener (origin-form, `Host` names the target).
    TransparentPlain,
    /// Request decrypted from a redirected TLS connection (SNI names the target).
    TransparentIntercepted,
}

impl Source {
    /// Decrypted from TLS the gateway chose to intercept (an AI host by configuration).
    pub fn intercepted(self) -> bool {
        matches!(
            self,
            Source::ProxyIntercepted | Source::TransparentIntercepted
        )
    }

    /// The decision's `source` column and the policy input's `context.mode`.
    pub fn mode(self) -> &'static str {
        match self {
            Source::ProxyPlain | Source::ProxyIntercepted => "proxy",
            Source::TransparentPlain | Source::TransparentIntercepted => "transparent",
        }
    }
}

/// The facts of one request, borrowed from the proxy session.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    /// The URL's query string, without the `?` (inspected for secrets, never recorded).
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The buffered body prefix (at most the configured cap).
    pub body: &'a [u8],
    pub body_truncated: bool,
    pub client: Option<SocketAddr>,
    pub source: Source,
    /// JA4 of the client's ClientHello (intercepted requests).
    pub ja4: Option<&'a str>,
    /// Who sent it.
    pub identity: &'a Identity,
}

impl RequestFacts<'_> {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a list-valued header as the one comma-separated list HTTP says they are:
    /// an origin that reads the second `Content-Encoding` must not see a body inspected by the
    /// first. A value that is not text is kept (lossily) so that it fails to decode, not vanishes.
    pub(crate) fn header_list(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        match (values.next(), first.to_str()) {
            (None, Ok(only)) => Some(std::borrow::Cow::Borrowed(only)),
            _ => {
                let all: Vec<String> = self.headers.get_all(name).iter().map(text).collect();
                Some(std::borrow::Cow::Owned(all.join(", ")))
            }
        }
    }

    /// `scheme://host/path`, without `format!`'s machinery (twice per request).
    pub(crate) fn url(&self) -> String {
        let mut url =
            String::with_capacity(self.scheme.len() + 3 + self.host.len() + self.path.len());
        for part in [self.scheme, "://", self.host, self.path] {
            url.push_str(part);
        }
        url
    }
}

#[derive(Debug)]
pub struct Verdict {
    pub decision_id: Uuid,
    pub decision: Decision,
    /// Shown to the user on a block page; never contains request content.
    pub reason: String,
    pub service: Option<Arc<AiService>>,
    pub fingerprint: Fingerprint,
    /// What the body holds; `None` when the request has no body. Holds prompt text in memory
    /// for the request's life only: never logged, only its redacted summary is recorded.
    pub inspection: Option<Box<Inspection>>,
    /// Shared with a stop's explanation until the audit writer has rendered it.
    pub outcome: Arc<Outcome>,
    /// The policy input (content as counts and types only), for the explanation of a stop.
    pub input: regorus::Value,
    pub body_truncated: bool,
}
