//! The answers the gateway writes itself, instead of forwarding: plain-text refusals, the
//! coaching handler's replies, destination refusals and the `Expect` handshake.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use tracing::warn;

use super::target::Target;
use super::{block, coach, Answer};
use crate::metrics;
use crate::upstream::UpstreamError;

pub async fn coach_reply(session: &mut Session, reply: coach::Reply) -> Result<Answer> {
    match reply {
        coach::Reply::Redirect(location) => redirect(session, &location).await,
        coach::Reply::Page(status, page) => {
            let headers = [
                ("content-type", "text/html; charset=utf-8"),
                ("cache-control", "no-store"),
                ("content-security-policy", block::PAGE_CSP),
            ];
            respond_with(session, status, &headers, page).await
        }
        coach::Reply::Refused(status, message) => respond_text(session, status, message).await,
        coach::Reply::TooMany(retry_after) => {
            let retry_after = retry_after.to_string();
            respond_with(
                session,
                429,
                &[("retry-after", retry_after.as_str())],
                "Too many justifications from this client; try again later.\n",
            )
            .await
        }
    }
}

async fn redirect(session: &mut Session, location: &str) -> Result<Answer> {
    let mut header = ResponseHeader::build(303, Some(3))?;
    header.insert_header("location", location)?;
    header.insert_header("content-length", "0")?;
    header.insert_header("cache-control", "no-store")?;
    session
        .write_response_header(Box::new(header), true)
        .await?;
    Ok(Answer::Done)
}

/// The gateway needs the body to decide, so it answers `Expect: 100-continue` itself (a client
/// would otherwise wait about a second before sending the body); `upstream_request_filter` does
/// not pass the expectation on, since the upstream gets a body that is already there. Any other expectation is one
/// the gateway cannot meet (417).
pub async fn answer_expectation(session: &mut Session) -> Result<Option<Answer>> {
    let Some(expect) = session.req_header().headers.get(http::header::EXPECT) else {
        return Ok(None);
    };
    if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
        return respond_text(
            session,
            417,
            "Expectation failed: only 100-continue is supported.\n",
        )
        .await
        .map(Some);
    }
    session.downstream_session.write_continue_response().await?;
    Ok(None)
}

/// Answers a request whose destination cannot be connected to: 403 when the destination policy
/// refuses it, 502 when it does not resolve, with the reason in `X-Aigate-Error` and the reason
/// phrase too (clients such as pip show only the status line).
pub async fn refuse_destination(
    session: &mut Session,
    target: &Target,
    error: &UpstreamError,
) -> Result<Answer> {
    let (status, message) = match error.refusal_reason() {
        Some(reason) => {
            metrics::UPSTREAM_REFUSED.with_label_values(&[reason]).inc();
            warn!(host = %target.host, port = target.port, reason, %error, "Refused a request by the destination policy.");
            (403, format!("Forbidden: {error}."))
        }
        None => {
            warn!(host = %target.host, port = target.port, %error, "Upstream host does not resolve.");
            (502, format!("Bad gateway: {error}."))
        }
    };
    let phrase = crate::front::explicit::header_safe(&message);
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.set_reason_phrase(Some(&phrase))?;
    header.insert_header("content-type", "text/plain; charset=utf-8")?;
    header.insert_header("x-aigate-error", phrase.as_str())?;
    let body = format!("{message}\n");
    header.insert_header("content-length", body.len().to_string())?;
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(Answer::Done)
}

pub async fn respond_text(
    session: &mut Session,
    status: u16,
    message: impl Into<String>,
) -> Result<Answer> {
    respond_with(session, status, &[], message).await
}

pub async fn respond_with(
    session: &mut Session,
    status: u16,
    extra_headers: &[(&'static str, &str)],
    message: impl Into<String>,
) -> Result<Answer> {
    let message = message.into();
    let mut header = ResponseHeader::build(status, Some(3 + extra_headers.len()))?;
    header.insert_header("content-type", "text/plain; charset=utf-8")?;
    for (name, value) in extra_headers {
        header.insert_header(*name, *value)?;
    }
    header.insert_header("content-length", message.len().to_string())?;
    // The body may still be unread; do not try to reuse this connection.
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(message)), true)
        .await?;
    Ok(Answer::Done)
}
