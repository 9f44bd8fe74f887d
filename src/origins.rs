//! Which browser origins may call the hub: one matcher behind both the HTTP CORS layer and
//! the WebSocket upgrade's `Origin` check (`SYNCHUB_ALLOWED_ORIGINS`, CONTRACT section 1).
//!
//! An entry is an exact origin (`https://editor.example.com`), an origin with one wildcard
//! host label (`https://*.preview.example.com`: exactly one label, never zero or two), an
//! origin with a wildcard port (`http://localhost:*`: any port, or none), or `*` (any
//! origin). `*` is safe only because tokens are bearer tokens, never cookies.

use std::fmt;

/// The parsed `SYNCHUB_ALLOWED_ORIGINS`.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    any: bool,
    patterns: Vec<OriginPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    /// Host labels, lowercase; at most one is `*`.
    labels: Vec<String>,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    /// No port in the origin (the scheme's default).
    Absent,
    Exact(u16),
    Any,
}

/// An entry of `SYNCHUB_ALLOWED_ORIGINS` that is not an origin pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOrigin {
    pub entry: String,
    pub reason: &'static str,
}

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "allowed origin {:?}: {}", self.entry, self.reason)
    }
}

impl std::error::Error for InvalidOrigin {}

impl AllowedOrigins {
    /// Parses the configured entries; blank entries are ignored, malformed ones refused.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidOrigin> {
        let mut allowed = AllowedOrigins::default();
        for entry in entries.iter().map(|e| e.as_ref().trim()).filter(|e| !e.is_empty()) {
            if entry == "*" {
                allowed.any = true;
            } else {
                let pattern =
                    OriginPattern::parse(entry).map_err(|reason| InvalidOrigin { entry: entry.to_string(), reason })?;
                allowed.patterns.push(pattern);
            }
        }
        Ok(allowed)
    }

    /// Whether `*` is configured (every origin is allowed).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Whether a request's `Origin` header value is allowed.
    pub fn allows(&self, origin: &[u8]) -> bool {
        if self.any {
            return true;
        }
        let Some(origin) = std::str::from_utf8(origin).ok().and_then(Origin::parse) else {
            return false;
        };
        self.patterns.iter().any(|pattern| pattern.matches(&origin))
    }
}

/// A concrete origin as a browser sends it: `scheme://host[:port]`.
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Origin<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let (host, port) = split_port(rest)?;
        let port = match port {
            None => None,
            Some(port) => Some(port.parse().ok()?),
        };
        valid_host(host).then_some(Origin { scheme, host, port })
    }
}

impl OriginPattern {
    fn parse(entry: &str) -> Result<Self, &'static str> {
        let (scheme, rest) = entry.split_once("://").ok_or("expected scheme://host[:port]")?;
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            return Err("invalid scheme");
        }
        let (host, port) = split_port(rest).ok_or("expected scheme://host[:port], without a path")?;
        let port = match port {
            None => PortPattern::Absent,
            Some("*") => PortPattern::Any,
            Some(port) => PortPattern::Exact(port.parse().map_err(|_| "invalid port")?),
        };
        let labels: Vec<String> = host.split('.').map(|label| label.to_ascii_lowercase()).collect();
        if labels.iter().filter(|label| *label == "*").count() > 1 {
            return Err("at most one wildcard label");
        }
        if labels.iter().any(|label| label.contains('*') && label != "*") {
            return Err("a wildcard stands for a whole host label");
        }
        if !valid_host(&host.replace('*', "x")) {
            return Err("invalid host");
        }
        Ok(OriginPattern { scheme: scheme.to_ascii_lowercase(), labels, port })
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        let port_matches = match self.port {
            PortPattern::Any => true,
            PortPattern::Absent => origin.port.is_none(),
            PortPattern::Exact(port) => origin.port == Some(port),
        };
        port_matches
            && origin.scheme.eq_ignore_ascii_case(&self.scheme)
            && origin.host.split('.').count() == self.labels.len()
            && origin
                .host
                .split('.')
                .zip(&self.labels)
                .all(|(label, pattern)| pattern == "*" || label.eq_ignore_ascii_case(pattern))
    }
}

/// Splits `host[:port]` (IPv6 hosts in brackets); None when a path, query or user part follows.
fn split_port(rest: &str) -> Option<(&str, Option<&str>)> {
    if rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']')?;
        let host = &rest[..inside.len() + 2];
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match rest.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((rest, None)),
    }
}

fn valid_host(host: &str) -> bool {
    if host.starts_with('[') {
        return host.ends_with(']') && host[1..host.len() - 1].chars().all(|c| c.is_ascii_hexdigit() || c == ':');
    }
    !host.is_empty()
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(entries).unwrap()
    }

    /// Each of `allows` is allowed by `entries`, and none of `refuses`.
    fn check(entries: &[&str], allows: &[&str], refuses: &[&str]) {
        let origins = allowed(entries);
        for origin in allows {
            assert!(origins.allows(origin.as_bytes()), "{entries:?} should allow {origin}");
        }
        for origin in refuses {
            assert!(!origins.allows(origin.as_bytes()), "{entries:?} should refuse {origin}");
        }
    }

    #[test]
    fn exact_origins_match_exactly() {
        check(
            &["https://editor.example.com", " http://localhost:5173 "],
            &["https://editor.example.com", "HTTPS://Editor.Example.com", "http://localhost:5173"],
            &[
                "http://editor.example.com",
                "https://editor.example.com:8443",
                "https://editor.example.com.evil.test",
                "http://localhost:5174",
                "http://localhost",
                "null",
                "",
            ],
        );
    }

    #[test]
    fn a_wildcard_label_matches_exactly_one_label() {
        check(
            &["https://*.preview.example.com"],
            &["https://abc-123.preview.example.com"],
            &[
                "https://preview.example.com",
                "https://a.b.preview.example.com",
                "https://.preview.example.com",
                "http://abc.preview.example.com",
                "https://abc.preview.example.com:444",
                "https://abcpreview.example.com",
                "https://abc.preview.example.com.evil.test",
            ],
        );
    }

    #[test]
    fn a_wildcard_port_matches_any_port_or_none() {
        check(
            &["http://localhost:*", "http://127.0.0.1:*"],
            &["http://localhost:5173", "http://localhost", "http://127.0.0.1:8080"],
            &[
                "https://localhost:5173",
                "http://localhost.evil.test:5173",
                "http://localhost:99999",
                "http://localhost:5173/path",
            ],
        );
        check(&["https://*.dev.test:*"], &["https://x.dev.test:3000"], &["https://dev.test:3000"]);
    }

    #[test]
    fn star_allows_every_origin_and_nothing_allows_none() {
        let any = allowed(&["*"]);
        assert!(any.allows_any());
        assert!(any.allows(b"https://anything.test"));
        assert!(any.allows(b"null"));
        let none = allowed(&[""]);
        assert!(!none.allows_any());
        assert!(!none.allows(b"http://localhost:8080"));
    }

    #[test]
    fn ipv6_origins() {
        check(&["http://[::1]:*"], &["http://[::1]:3000"], &["http://[::2]:3000"]);
    }

    #[test]
    fn malformed_entries_are_refused() {
        for entry in [
            "editor.example.com",
            "https://editor.example.com/",
            "https://*.*.example.com",
            "https://ab*.example.com",
            "https://example.com:http",
            "https://user@example.com",
            "://example.com",
            "https://",
        ] {
            assert!(AllowedOrigins::parse(&[entry]).is_err(), "{entry} should be refused");
        }
    }
}
