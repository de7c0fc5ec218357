//! A read-only dashboard at `/`: decisions per hour, top services, open violations. Server-side
//! HTML with inline CSS and SVG, no scripts. The page is served under a Content-Security-Policy
//! that allows nothing but its own stylesheet (by hash): an injected tag or attribute that escaped
//! the escaping could neither run, load, style nor submit anything.

use std::fmt::Write;
use std::sync::Arc;

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::Extension;
use base64::Engine;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::auth::{Access, Grant};
use super::error::ApiResult;
use crate::state::Shared;
use crate::store::admin::{ListQuery, Listing};

/// The page's only stylesheet; the policy below names it by hash, so no other style applies.
const STYLE: &str = r##"
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #1d2433; background: #f6f7fb; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.05rem; margin-top: 0; }
.cards { display: flex; gap: 1rem; margin-bottom: 1rem; }
.card { background: #fff; border-radius: 8px; padding: 1rem 1.4rem; box-shadow: 0 1px 3px #0002; }
.card b { display: block; font-size: 1.8rem; }
.panel { background: #fff; border-radius: 8px; padding: 1rem; margin-bottom: 1rem; box-shadow: 0 1px 3px #0002; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .3rem .5rem; border-bottom: 1px solid #e4e7ef; text-align: left; }
.n { text-align: right; } .allow { fill: #3a9d5d; } .deny { fill: #d1495b; }
.tick { font-size: 10px; text-anchor: middle; fill: #667; }
.sev.critical, .sev.high { color: #b3261e; font-weight: 600; }
.key-allow { color: #3a9d5d; } .key-deny { color: #d1495b; }
"##;

/// No scripts, frames, forms, fonts, images or connections; inline SVG needs none of them.
static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
});

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text<'a>(row: &'a serde_json::Value, key: &str) -> &'a str {
    row[key].as_str().unwrap_or("")
}

#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String)),
    security(("bearer" = [])))]
pub async fn dashboard(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
) -> ApiResult<impl IntoResponse> {
    grant.require("decisions", Access::Read)?;
    grant.require("violations", Access::Read)?;
    let since = OffsetDateTime::now_utc() - time::Duration::hours(24);
    let hours = shared.store.decisions_per_hour(since).await?;
    let services = shared.store.top_services(since, 10).await?;
    let open = shared
        .store
        .list(
            Listing::Violations,
            &ListQuery {
                equals: vec![("status", "open".to_owned())],
                // One more than shown, to tell "20" from "more than 20".
                limit: 21,
                ..ListQuery::default()
            },
        )
        .await?;

    // Per hour: ALLOW and the rest, as stacked bars.
    let mut per_hour: Vec<(String, u64, u64)> = Vec::new();
    for row in &hours {
        let hour = text(row, "hour").get(..13).unwrap_or("").to_owned();
        let count = row["count"]
            .as_u64()
            .or_else(|| row["count"].as_str().and_then(|c| c.parse().ok()))
            .or_else(|| row["count"].as_f64().map(|c| c as u64))
            .unwrap_or(0);
        if per_hour.last().is_none_or(|(h, _, _)| *h != hour) {
            per_hour.push((hour, 0, 0));
        }
        if let Some(last) = per_hour.last_mut() {
            if text(row, "decision") == "ALLOW" {
                last.1 += count;
            } else {
                last.2 += count;
            }
        }
    }
    let peak = per_hour
        .iter()
        .map(|(_, a, d)| a + d)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut bars = String::new();
    let width = 28;
    for (i, (hour, allowed, refused)) in per_hour.iter().enumerate() {
        let x = 40 + i * (width + 6);
        let scale = |n: u64| (n * 160 / peak) as usize;
        let (a, r) = (scale(*allowed), scale(*refused));
        let _ = write!(
            bars,
            "<g><title>{hour}h: {allowed} allowed, {refused} denied or reviewed</title>\
             <rect x=\"{x}\" y=\"{}\" width=\"{width}\" height=\"{a}\" class=\"allow\"/>\
             <rect x=\"{x}\" y=\"{}\" width=\"{width}\" height=\"{r}\" class=\"deny\"/>\
             <text x=\"{}\" y=\"195\" class=\"tick\">{}</text></g>",
            180 - a,
            180 - a - r,
            x + width / 2,
            escape(hour.get(11..).unwrap_or(hour)),
        );
    }
    let mut service_rows = String::new();
    for service in &services {
        let _ = write!(
            service_rows,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(text(service, "name")),
            service["decisions"],
            service["denied"].as_u64().unwrap_or(0),
        );
    }
    let mut violation_rows = String::new();
    let open_count = if open.len() > 20 {
        "20+".to_owned()
    } else {
        open.len().to_string()
    };
    for violation in open.iter().take(20) {
        let _ = write!(
            violation_rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"sev {sev}\">{sev}</td></tr>",
            escape(text(violation, "timestamp").get(..19).unwrap_or("")),
            escape(violation["user_email"].as_str().unwrap_or("anonymous")),
            escape(text(violation, "resource_name")),
            escape(text(violation, "policy_name")),
            sev = escape(text(violation, "severity")),
        );
    }
    let total: u64 = per_hour.iter().map(|(_, a, d)| a + d).sum();
    let denied: u64 = per_hour.iter().map(|(_, _, d)| d).sum();
    let page = format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aigate dashboard</title>
<style>{STYLE}</style></head><body>
<h1>aigate — last 24 hours</h1>
<div class="cards">
<div class="card"><b id="total">{total}</b>decisions</div>
<div class="card"><b id="denied">{denied}</b>denied or reviewed</div>
<div class="card"><b id="open">{open_count}</b>open violations</div>
</div>
<div class="panel"><h2>Decisions per hour</h2>
<svg width="{svg_width}" height="200" role="img" aria-label="decisions per hour">
<line x1="36" y1="180" x2="{svg_width}" y2="180" stroke="#99a"/>{bars}</svg>
<p><span class="key-allow">■</span> allowed <span class="key-deny">■</span> denied or reviewed</p></div>
<div class="panel"><h2>Top services</h2><table><tr><th>service</th><th class="n">decisions</th><th class="n">denied/reviewed</th></tr>{service_rows}</table></div>
<div class="panel"><h2>Open violations</h2><table><tr><th>time (UTC)</th><th>user</th><th>service</th><th>policy</th><th>severity</th></tr>{violation_rows}</table></div>
</body></html>"##,
        svg_width = 60 + per_hour.len().max(1) * (width + 6),
    );
    Ok((
        [
            (
                header::CONTENT_SECURITY_POLICY,
                CONTENT_SECURITY_POLICY.as_str(),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(page),
    ))
}
