//! The responses a user sees when the gateway stops a request: an HTML page for browsers, an
//! OpenAI-style JSON error for API clients (SDKs surface `error.message` to the developer).

use bytes::Bytes;
use pingora::http::ResponseHeader;

use crate::coaching::{Offer, JUSTIFY_PATH};
use crate::pipeline::{Decision, Verdict};

/// The gateway's own pages load nothing, run nothing, post only to themselves and cannot be
/// framed (a framed coaching form could be clickjacked into a justification).
pub const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// True when the client prefers HTML (a browser navigation) over JSON.
pub fn wants_html(accept: Option<&http::HeaderValue>) -> bool {
    accept
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The stop page or error for `verdict`; `return_to` is where a coaching form sends the user
/// back to (a local path), `offer` the signed justification a REVIEW offers.
pub fn render(
    verdict: &Verdict,
    html: bool,
    return_to: &str,
    offer: Option<&Offer>,
) -> pingora::Result<(ResponseHeader, Bytes)> {
    let body = if html {
        html_page(verdict, return_to, offer)
    } else {
        json_error(verdict, offer)
    };
    let mut header = ResponseHeader::build(403, Some(5))?;
    header.insert_header(
        "content-type",
        if html {
            "text/html; charset=utf-8"
        } else {
            "application/json"
        },
    )?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    header.insert_header("x-aigate-decision-id", verdict.decision_id.to_string())?;
    if html {
        header.insert_header("content-security-policy", PAGE_CSP)?;
    }
    Ok((header, Bytes::from(body)))
}

/// An SDK shows `error.message` only, so a REVIEW's message carries the link to justify the
/// request in a browser; `justify_url` has it for tools that read the field.
fn json_error(verdict: &Verdict, offer: Option<&Offer>) -> String {
    let kind = match verdict.decision {
        Decision::Review => "review_required",
        _ => "policy_violation",
    };
    let message = match offer {
        Some(offer) => format!(
            "{} To continue, open {} in a browser that uses this gateway and give a business justification, then retry.",
            verdict.reason, offer.url
        ),
        None => verdict.reason.clone(),
    };
    serde_json::json!({
        "error": {
            "type": kind,
            "code": verdict.decision.as_str(),
            "message": message,
            "policy": verdict.outcome.primary.as_ref().map(|(_, name)| name.as_str()),
            "service": verdict.service.as_ref().map(|s| s.name.as_str()),
            "decision_id": verdict.decision_id.to_string(),
            "justify_url": offer.map(|o| o.url.as_str()),
        }
    })
    .to_string()
}

/// The coaching form: posts the justification with the page's signed token.
fn justify_form(token: &str, return_to: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{JUSTIFY_PATH}\">\
         <p><label for=\"j\">Why do you need this service for your work?</label></p>\
         <textarea id=\"j\" name=\"justification\" required minlength=\"10\" maxlength=\"2000\" rows=\"4\" cols=\"60\"></textarea>\
         <input type=\"hidden\" name=\"return_to\" value=\"{return_to}\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <p><button type=\"submit\">Continue with a business justification</button></p></form>\
         <p>Your justification is recorded and reviewed by your security team. Do not paste confidential data.</p>",
        return_to = escape(return_to),
        token = escape(token),
    )
}

/// The page an API client's justification link opens.
pub fn justify_page(service: &str, token: &str, return_to: &str) -> String {
    simple_page(
        &format!("Use of {} needs review", escape(service)),
        &format!(
            "<p>A request from your application to {} needs a business justification.</p>\n{}",
            escape(service),
            justify_form(token, return_to)
        ),
    )
}

/// What the browser shows once an API client's justification is recorded.
pub fn justified_page() -> String {
    simple_page(
        "Justification recorded",
        "<p>Thank you. Retry the request from your application.</p>",
    )
}

fn simple_page(headline: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{headline}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         h1{{font-size:1.5rem}}</style></head>\n<body><h1>{headline}</h1>\n{body}</body></html>\n"
    )
}

fn html_page(verdict: &Verdict, return_to: &str, offer: Option<&Offer>) -> String {
    let service = verdict
        .service
        .as_ref()
        .map_or("this service".to_owned(), |s| escape(&s.name));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         h1{{font-size:1.5rem}}.id{{color:#666;font-size:.85rem}}</style></head>\n\
         <body><h1>{headline}</h1>\n<p>{reason}</p>\n\
         {next_step}\n\
         <p class=\"id\">Reference: {id}</p></body></html>\n",
        next_step = match (verdict.decision, offer) {
            (Decision::Review, Some(offer)) => justify_form(&offer.token, return_to),
            _ => "<p>If you need this service for your work, contact your security team and quote the reference below.</p>".to_owned(),
        },
        title = match verdict.decision {
            Decision::Review => "Review required by your organization's AI policy",
            _ => "Blocked by your organization's AI policy",
        },
        headline = match verdict.decision {
            Decision::Review => format!("Use of {service} needs review"),
            _ => format!("Access to {service} is blocked"),
        },
        reason = escape(&verdict.reason),
        id = verdict.decision_id,
    )
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict() -> Verdict {
        Verdict {
            decision_id: uuid::Uuid::now_v7(),
            decision: Decision::Deny,
            reason: "<Evil> is prohibited".to_owned(),
            service: None,
            fingerprint: Default::default(),
            inspection: None,
            outcome: std::sync::Arc::new(crate::policy::Outcome {
                decision: Decision::Deny,
                reason: "<Evil> is prohibited".to_owned(),
                primary: None,
                evaluated: Vec::new(),
                redact: false,
                inject_headers: Vec::new(),
                exceptions_used: Vec::new(),
                policy_error: false,
                violation_type: None,
                default_for: Some("prohibited"),
            }),
            input: regorus::Value::Null,
            body_truncated: false,
        }
    }

    #[test]
    fn json_error_is_openai_shaped() {
        let verdict = verdict();
        let (header, body) = render(&verdict, false, "/", None).unwrap();
        assert_eq!(header.status.as_u16(), 403);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["type"], "policy_violation");
        assert_eq!(
            value["error"]["decision_id"],
            verdict.decision_id.to_string()
        );
        assert_eq!(value["error"]["message"], "<Evil> is prohibited");
    }

    #[test]
    fn html_page_escapes_text() {
        let (_, body) = render(&verdict(), true, "/", None).unwrap();
        let page = std::str::from_utf8(&body).unwrap();
        assert!(page.contains("&lt;Evil&gt;"));
        assert!(!page.contains("<Evil>"));
    }

    #[test]
    fn accept_header_selects_html() {
        let value = http::HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8");
        assert!(wants_html(Some(&value)));
        assert!(!wants_html(Some(&http::HeaderValue::from_static(
            "application/json"
        ))));
        assert!(!wants_html(None));
    }
}
