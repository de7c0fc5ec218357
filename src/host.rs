//! Host-name syntax, in one place: the config, the catalog, CONNECT targets and certificate
//! minting all accept host names from outside and must agree on what a valid one is.

use std::collections::HashMap;

/// Longest DNS name, without the trailing dot.
pub const MAX_DNS_NAME: usize = 253;

/// A DNS host name: dot-separated labels of 1-63 ASCII letters, digits, `-` (not first or last)
/// or `_` (found in real service names), 253 bytes at most, with one optional trailing dot.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= MAX_DNS_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The form hosts are compared and stored in: lowercase, without trailing dots.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An IPv6 literal without its URI brackets (`[::1]` → `::1`); other hosts unchanged.
pub fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether `host` is an IP address literal, bracketed or not.
pub fn is_ip_literal(host: &str) -> bool {
    unbracket(host).parse::<std::net::IpAddr>().is_ok()
}

/// DNS names mapped to values, where a name also stands for all its subdomains. Lookups are on
/// the connection path: one hash probe per label suffix, no allocation for names up to 253 bytes.
#[derive(Debug, Clone)]
pub struct DomainMap<T> {
    names: HashMap<Box<str>, T>,
}

impl<T> Default for DomainMap<T> {
    fn default() -> Self {
        Self {
            names: HashMap::new(),
        }
    }
}

impl<T> DomainMap<T> {
    /// Adds `name` (case and one trailing dot ignored); returns the value it replaced.
    pub fn insert(&mut self, name: &str, value: T) -> Option<T> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.names.insert(name.into_boxed_str(), value)
    }

    /// The value of exactly `name` (already normalized).
    pub fn get_exact(&self, name: &str) -> Option<&T> {
        self.names.get(name)
    }

    /// The value of the most specific name that is `host` or a parent domain of it.
    /// Case-insensitive; one trailing dot is ignored.
    pub fn find(&self, host: &str) -> Option<&T> {
        if self.names.is_empty() {
            return None;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        if !host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.find_lowercase(host);
        }
        if host.len() <= MAX_DNS_NAME {
            let mut buffer = [0u8; MAX_DNS_NAME];
            let lowered = buffer.get_mut(..host.len())?;
            lowered.copy_from_slice(host.as_bytes());
            lowered.make_ascii_lowercase();
            self.find_lowercase(std::str::from_utf8(lowered).ok()?)
        } else {
            self.find_lowercase(&host.to_ascii_lowercase())
        }
    }

    /// Probes `host`, then each suffix after a dot: the first hit is the most specific name.
    fn find_lowercase(&self, host: &str) -> Option<&T> {
        let mut suffix = host;
        loop {
            if let Some(value) = self.names.get(suffix) {
                return Some(value);
            }
            suffix = suffix.split_once('.')?.1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.names
            .iter()
            .map(|(name, value)| (name.as_ref(), value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_map_matches_subdomains_on_label_boundaries_most_specific_first() {
        let mut map = DomainMap::default();
        map.insert("Example.com.", 1);
        map.insert("api.example.com", 2);
        assert_eq!(map.find("example.com"), Some(&1));
        assert_eq!(map.find("www.EXAMPLE.com."), Some(&1));
        assert_eq!(map.find("eu.api.example.com"), Some(&2));
        assert_eq!(map.find("notexample.com"), None);
        assert_eq!(map.find("com"), None);
        assert_eq!(map.find(&"A".repeat(300)), None);
    }

    #[test]
    fn dns_names() {
        for good in [
            "api.openai.com",
            "API.OpenAI.com.",
            "a",
            "_dmarc.example.com",
            "x-1.y",
        ] {
            assert!(is_dns_name(good), "{good:?}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = ["a"; 130].join(".");
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "a b.com",
            "exa$mple.com",
            "*.x.com",
            &long_label,
            &long_name,
        ] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const LABEL: &str = "[A-Za-z0-9_]([A-Za-z0-9_-]{0,20}[A-Za-z0-9_])?";

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn the_host_grammar_never_panics_and_agrees_with_itself(name in "\\PC{0,80}|[a-zA-Z0-9.\\-_\\[\\]:]{0,80}") {
            let valid = is_dns_name(&name);
            if valid {
                let normal = normalize(&name);
                prop_assert!(is_dns_name(&normal));
                prop_assert_eq!(normalize(&normal), normal.clone());
                prop_assert!(!normal.contains(['"', '\\', ' ', '\'']), "PAC lists quote names unescaped");
            }
            let _ = is_ip_literal(&name);
            prop_assert!(name.contains(unbracket(&name)));
        }

        #[test]
        fn generated_names_are_valid_and_match_their_subdomains(
            labels in proptest::collection::vec(LABEL, 1..5),
            sub in LABEL,
            trailing_dot in any::<bool>(),
        ) {
            let name = labels.join(".");
            prop_assume!(name.len() < MAX_DNS_NAME - sub.len());
            let written = if trailing_dot { format!("{name}.") } else { name.clone() };
            prop_assert!(is_dns_name(&written));
            let mut map = DomainMap::default();
            map.insert(&written, ());
            let upper = name.to_ascii_uppercase();
            let subdomain = format!("{sub}.{upper}");
            prop_assert!(map.find(&upper).is_some());
            prop_assert!(map.find(&subdomain).is_some());
            let glued = format!("{sub}{name}");
            prop_assert!(map.find(&glued).is_none(), "{} matched {}", glued, name);
        }

        #[test]
        fn names_with_a_bad_byte_are_refused(
            before in LABEL,
            bad in "[^A-Za-z0-9_.\\-]",
            after in LABEL,
        ) {
            let candidate = format!("{before}{bad}{after}");
            prop_assert!(!is_dns_name(&candidate));
        }
    }
}
