//! Builds the Location of a redirect (Gateway API RequestRedirect semantics: scheme,
//! hostname, port derivation, path modifiers; the query is kept).

use gatehouse_translate::routes::modify_path;
use gatehouse_translate::Redirect;

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

pub struct RedirectInput<'a> {
    pub https: bool,
    pub host: &'a str,
    pub listener_port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub prefix_len: usize,
}

pub fn location(r: &Redirect, req: &RedirectInput<'_>) -> String {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if req.https { "https" } else { "http" });
    let host = r.hostname.as_deref().unwrap_or(req.host);
    let port = r.port.unwrap_or(if r.scheme.is_some() {
        default_port(scheme)
    } else {
        req.listener_port
    });
    let path = match &r.path {
        Some(m) => modify_path(req.path, m, req.prefix_len),
        None => req.path.to_string(),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let mut loc = if port == default_port(scheme) {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}:{port}{path}")
    };
    if let Some(q) = req.query {
        loc.push('?');
        loc.push_str(q);
    }
    loc
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_translate::PathModifier;

    fn input(https: bool, listener_port: u16) -> RedirectInput<'static> {
        RedirectInput {
            https,
            host: "example.com",
            listener_port,
            path: "/foo/bar",
            query: Some("a=1"),
            prefix_len: 4,
        }
    }

    fn redirect() -> Redirect {
        Redirect {
            scheme: None,
            hostname: None,
            path: None,
            port: None,
            status: 302,
        }
    }

    #[test]
    fn port_rules_follow_the_spec() {
        // No scheme: keep the listener port.
        assert_eq!(
            location(&redirect(), &input(false, 8080)),
            "http://example.com:8080/foo/bar?a=1"
        );
        assert_eq!(
            location(&redirect(), &input(false, 80)),
            "http://example.com/foo/bar?a=1"
        );
        // Scheme set: the scheme's well-known port.
        let r = Redirect {
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            location(&r, &input(false, 8080)),
            "https://example.com/foo/bar?a=1"
        );
        let r = Redirect {
            scheme: Some("https".into()),
            port: Some(8443),
            ..redirect()
        };
        assert_eq!(
            location(&r, &input(false, 80)),
            "https://example.com:8443/foo/bar?a=1"
        );
    }

    #[test]
    fn hostname_and_path_modifiers() {
        let r = Redirect {
            hostname: Some("other.com".into()),
            path: Some(PathModifier::Prefix("/x".into())),
            ..redirect()
        };
        assert_eq!(
            location(&r, &input(true, 443)),
            "https://other.com/x/bar?a=1"
        );
        let r = Redirect {
            path: Some(PathModifier::Full("/full".into())),
            ..redirect()
        };
        assert_eq!(
            location(&r, &input(true, 443)),
            "https://example.com/full?a=1"
        );
    }
}
