//! Why a response is what it is: a compact reason for every response the proxy makes
//! itself (no route, a limit, the WAF, a breaker, an upstream that could not be
//! reached...) and for those an upstream gave. Responses of the proxy's own carry it as
//! an extension; the request's end turns it into a per-reason counter, the access log's
//! `reason` field, and (when debugging is on) the `x-gatehouse-reason` header.

use http::Response;

/// The reason of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The upstream answered (whatever its status).
    Upstream,
    /// No route matches the request's host and path.
    NoRoute,
    /// The request is malformed (Host, path, framing, headers).
    BadRequest,
    /// The TLS server name chose another listener than Host.
    Misdirected,
    /// The listener the connection came in on left the config.
    ListenerGone,
    /// The route answers itself with a fixed response.
    Fixed,
    /// The route redirects.
    Redirect,
    /// The route's backend is invalid (a missing Service, a refused reference).
    InvalidBackend,
    /// The client's address is blocked (a SourceBlock, adaptive blocking).
    Blocked,
    /// The client's address is not allowed by the route's IP access list.
    IpDenied,
    /// A rate limit refused the request.
    RateLimited,
    /// The proxy sheds load (a surge limit).
    Shed,
    /// The web application firewall refused the request (the rule that decided).
    Waf(u32),
    /// The request body is over the limit.
    BodyTooLarge,
    /// The request body came too slowly.
    BodyTimeout,
    /// The cluster has no endpoint.
    NoEndpoints,
    /// A circuit breaker is open (requests, connections or pending requests at max).
    CircuitOpen,
    /// No connection to the upstream could be made.
    ConnectFailed,
    /// The upstream connection broke before the response.
    UpstreamReset,
    /// The upstream did not answer in time.
    UpstreamTimeout,
}

impl Reason {
    /// The reason's code, as logs, headers and metrics show it.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Upstream => "upstream",
            Reason::NoRoute => "no_route",
            Reason::BadRequest => "bad_request",
            Reason::Misdirected => "misdirected",
            Reason::ListenerGone => "listener_gone",
            Reason::Fixed => "fixed_response",
            Reason::Redirect => "redirect",
            Reason::InvalidBackend => "invalid_backend",
            Reason::Blocked => "blocked",
            Reason::IpDenied => "ip_denied",
            Reason::RateLimited => "rate_limited",
            Reason::Shed => "shed",
            Reason::Waf(_) => "waf",
            Reason::BodyTooLarge => "body_too_large",
            Reason::BodyTimeout => "body_timeout",
            Reason::NoEndpoints => "no_endpoints",
            Reason::CircuitOpen => "circuit_open",
            Reason::ConnectFailed => "upstream_connect_failed",
            Reason::UpstreamReset => "upstream_reset",
            Reason::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// Whether a security control decided (a block, an access list, a limit, load
    /// shedding, the WAF, a body limit).
    pub fn is_security(self) -> bool {
        matches!(
            self,
            Reason::Blocked
                | Reason::IpDenied
                | Reason::RateLimited
                | Reason::Shed
                | Reason::Waf(_)
                | Reason::BodyTooLarge
                | Reason::BodyTimeout
        )
    }

    /// Every reason, in a fixed order (for counters indexed by reason).
    pub const ALL: [Reason; 20] = [
        Reason::Upstream,
        Reason::NoRoute,
        Reason::BadRequest,
        Reason::Misdirected,
        Reason::ListenerGone,
        Reason::Fixed,
        Reason::Redirect,
        Reason::InvalidBackend,
        Reason::Blocked,
        Reason::IpDenied,
        Reason::RateLimited,
        Reason::Shed,
        Reason::Waf(0),
        Reason::BodyTooLarge,
        Reason::BodyTimeout,
        Reason::NoEndpoints,
        Reason::CircuitOpen,
        Reason::ConnectFailed,
        Reason::UpstreamReset,
        Reason::UpstreamTimeout,
    ];

    /// The reason's place in [`Reason::ALL`].
    pub fn index(self) -> usize {
        match self {
            Reason::Upstream => 0,
            Reason::NoRoute => 1,
            Reason::BadRequest => 2,
            Reason::Misdirected => 3,
            Reason::ListenerGone => 4,
            Reason::Fixed => 5,
            Reason::Redirect => 6,
            Reason::InvalidBackend => 7,
            Reason::Blocked => 8,
            Reason::IpDenied => 9,
            Reason::RateLimited => 10,
            Reason::Shed => 11,
            Reason::Waf(_) => 12,
            Reason::BodyTooLarge => 13,
            Reason::BodyTimeout => 14,
            Reason::NoEndpoints => 15,
            Reason::CircuitOpen => 16,
            Reason::ConnectFailed => 17,
            Reason::UpstreamReset => 18,
            Reason::UpstreamTimeout => 19,
        }
    }

    /// The reason a response carries (a response without one is the upstream's).
    pub fn of<B>(resp: &Response<B>) -> Reason {
        resp.extensions()
            .get::<Reason>()
            .copied()
            .unwrap_or(Reason::Upstream)
    }

    /// The text of the `x-gatehouse-reason` header: the code, and the WAF rule.
    pub fn header_value(self) -> String {
        match self {
            Reason::Waf(rule) => format!("waf; rule={rule}"),
            r => r.code().to_string(),
        }
    }
}

/// Marks `resp` with `reason`.
pub fn with_reason<B>(mut resp: Response<B>, reason: Reason) -> Response<B> {
    resp.extensions_mut().insert(reason);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_code_and_place() {
        let codes: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(Reason::Waf(942100).index(), Reason::Waf(0).index());
        assert_eq!(Reason::Waf(942100).header_value(), "waf; rule=942100");
        let resp = with_reason(Response::new(()), Reason::NoRoute);
        assert_eq!(Reason::of(&resp), Reason::NoRoute);
        assert_eq!(Reason::of(&Response::new(())), Reason::Upstream);
    }
}
