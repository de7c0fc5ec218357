//! The proxy auto-config file browsers fetch from `/proxy.pac`: AI-service domains go through the
//! gateway (several gateways, in order, for failover), everything else goes `DIRECT`.
//!
//! Fails closed: when every listed gateway is down, AI hosts get no route at all (browsers show a
//! proxy error) rather than `DIRECT`, which would reach them unpoliced. `[admin]
//! pac_direct_fallback = true` appends `DIRECT` for sites that prefer availability.
//!
//! Generated from the live catalog snapshot, so it never disagrees with what the gateway
//! intercepts. Hosts are matched as in the catalog: the domain itself and every subdomain.

use std::fmt::Write;

use crate::catalog::Catalog;
use crate::config::{InterceptConfig, InterceptMode};

/// The PAC script for `proxies` (`host:port` each); `direct_fallback` ends their list with
/// `DIRECT`.
pub fn render(
    catalog: &Catalog,
    intercept: &InterceptConfig,
    proxies: &[String],
    direct_fallback: bool,
) -> String {
    let route = proxies
        .iter()
        .map(|proxy| format!("PROXY {proxy}"))
        .chain(direct_fallback.then(|| "DIRECT".to_owned()))
        .collect::<Vec<_>>()
        .join("; ");
    let mut domains: Vec<&str> = catalog.domains().map(|(domain, _)| domain).collect();
    domains.extend(intercept.extra_hosts.iter().map(String::as_str));
    domains.sort_unstable();
    domains.dedup();

    let mut script = String::from(
        "// aigate proxy auto-config: AI services through the gateway, everything else DIRECT.\n\
         function FindProxyForURL(url, host) {\n  host = host.toLowerCase();\n",
    );
    let _ = writeln!(script, "  var gateway = \"{route}\";");
    script.push_str("  var bypass = [");
    push_list(&mut script, intercept.bypass.iter().map(String::as_str));
    script.push_str("];\n  for (var i = 0; i < bypass.length; i++) {\n    if (matches(host, bypass[i])) return \"DIRECT\";\n  }\n");
    match intercept.mode {
        InterceptMode::All => script.push_str("  return gateway;\n"),
        InterceptMode::Catalog => {
            script.push_str("  var ai = [");
            push_list(&mut script, domains.iter().copied());
            script.push_str(
                "];\n  for (var j = 0; j < ai.length; j++) {\n    if (matches(host, ai[j])) return gateway;\n  }\n  return \"DIRECT\";\n",
            );
        }
    }
    script.push_str(
        "}\n\nfunction matches(host, domain) {\n  return host == domain || dnsDomainIs(host, \".\" + domain);\n}\n",
    );
    script
}

fn push_list<'a>(script: &mut String, names: impl Iterator<Item = &'a str>) {
    for (index, name) in names.enumerate() {
        if index > 0 {
            script.push_str(", ");
        }
        // Names are validated DNS names: no quote or backslash can occur.
        let _ = write!(script, "\"{}\"", crate::host::normalize(name));
    }
}
