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
