//! Who may call what: one table of every route the server answers, with the
//! credential each needs. The handlers enforce it through their extractors
//! ([`super::auth`]); the router test `routes` drives every entry with every
//! kind of caller, and fails when a `.route(…)` of the source has no entry
//! here, so a new route cannot ship without a decision about its access.

use axum::http::Method;

/// The credential a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, readiness, `/metrics`, the login form, static assets.
    Public,
    /// An operator (viewer or admin) by bearer token or session cookie; JSON
    /// 401 without one, 403 for enrollment and agent tokens.
    Viewer,
    /// An admin by bearer token, or by session cookie with the
    /// `x-csrf-token` header; 403 for every other role.
    Admin,
    /// An enrollment token (an admin token also enrolls).
    Enroll,
    /// An agent's own token: it writes as its own host and reads only its own
    /// configuration.
    Agent,
    /// A dashboard page: any operator; without a session, a redirect to
    /// `/login`.
    Page,
    /// A dashboard page for admins only: 403 for a viewer.
    AdminPage,
    /// A dashboard form any logged-in operator may send (log out): the
    /// session's CSRF token in the `csrf` field, else 403.
    SessionForm,
    /// A dashboard form that changes something: an admin session and its CSRF
    /// token in the `csrf` field, else 403 (a redirect to `/login` without a
    /// session).
    AdminForm,
}

/// One route: method, path as the router spells it, access.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

const fn r(method: Method, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
    }
}

use Access::*;

/// Every route of [`super::app`]. `GET` also stands for `HEAD`.
pub const ROUTES: &[Route] = &[
    // Process and scrape endpoints.
    r(Method::GET, "/healthz", Public),
    r(Method::GET, "/readyz", Public),
    r(Method::GET, "/metrics", Public),
    r(Method::GET, "/static/{name}", Public),
    r(Method::GET, "/favicon.ico", Public),
    // Dashboard.
    r(Method::GET, "/login", Public),
    r(Method::POST, "/login", Public),
    r(Method::POST, "/logout", SessionForm),
    r(Method::GET, "/", Page),
    r(Method::GET, "/hosts", Page),
    r(Method::GET, "/hosts/{id}", Page),
    r(Method::GET, "/groups", Page),
    r(Method::GET, "/groups/{name}", Page),
    r(Method::GET, "/logs", Page),
    r(Method::GET, "/alarms", Page),
    r(Method::POST, "/alarms/{id}/ack", AdminForm),
    r(Method::POST, "/silences", AdminForm),
    r(Method::POST, "/silences/{id}/expire", AdminForm),
    r(Method::GET, "/scaling", Page),
    r(Method::GET, "/groups/{name}/scaling", Page),
    r(
        Method::POST,
        "/groups/{name}/scaling/deliveries/{id}/retry",
        AdminForm,
    ),
    r(Method::GET, "/admin", AdminPage),
    r(Method::POST, "/admin/users", AdminForm),
    r(Method::POST, "/admin/users/{id}/role", AdminForm),
    r(Method::POST, "/admin/users/{id}/disable", AdminForm),
    r(Method::POST, "/admin/users/{id}/enable", AdminForm),
    r(Method::POST, "/admin/users/{id}/password", AdminForm),
    r(Method::POST, "/admin/tokens", AdminForm),
    r(Method::POST, "/admin/tokens/{id}/revoke", AdminForm),
    r(Method::POST, "/admin/agents/{id}/revoke", AdminForm),
    r(Method::POST, "/admin/agents/{id}/remove", AdminForm),
    // Agent protocol.
    r(Method::POST, "/api/v1/agent/enroll", Enroll),
    r(Method::POST, "/api/v1/agent/batch", Agent),
    r(Method::POST, "/api/v1/agent/heartbeat", Agent),
    r(Method::POST, "/api/v1/agent/leave", Agent),
    r(Method::GET, "/api/v1/agent/config", Agent),
    // Operator API.
    r(Method::GET, "/api/v1/hosts", Viewer),
    r(Method::GET, "/api/v1/hosts/{id}", Viewer),
    r(Method::DELETE, "/api/v1/hosts/{id}", Admin),
    r(Method::GET, "/api/v1/overview", Viewer),
    r(Method::GET, "/api/v1/series", Viewer),
    r(Method::GET, "/api/v1/query", Viewer),
    r(Method::GET, "/api/v1/graph.png", Viewer),
    r(Method::GET, "/api/v1/graph.svg", Viewer),
    r(Method::GET, "/api/v1/logs", Viewer),
    r(Method::GET, "/api/v1/logs/stream", Viewer),
    r(Method::POST, "/api/v1/import", Admin),
    r(Method::GET, "/api/v1/checks", Viewer),
    r(Method::GET, "/api/v1/alarms", Viewer),
    r(Method::GET, "/api/v1/alarms/transitions", Viewer),
    r(Method::GET, "/api/v1/alarms/{id}", Viewer),
    r(Method::POST, "/api/v1/alarms/{id}/ack", Admin),
    r(Method::GET, "/api/v1/silences", Viewer),
    r(Method::POST, "/api/v1/silences", Admin),
    r(Method::DELETE, "/api/v1/silences/{id}", Admin),
    r(Method::GET, "/api/v1/rules", Viewer),
    r(Method::POST, "/api/v1/rules", Admin),
    r(Method::PUT, "/api/v1/rules/{name}", Admin),
    r(Method::DELETE, "/api/v1/rules/{name}", Admin),
    r(Method::GET, "/api/v1/scaling/policies", Viewer),
    r(Method::POST, "/api/v1/scaling/policies", Admin),
    r(Method::GET, "/api/v1/scaling/policies/{name}", Viewer),
    r(Method::PUT, "/api/v1/scaling/policies/{name}", Admin),
    r(Method::DELETE, "/api/v1/scaling/policies/{name}", Admin),
    // A dry run writes nothing (the scaling page offers it to viewers).
    r(
        Method::POST,
        "/api/v1/scaling/policies/{name}/dry-run",
        Viewer,
    ),
    r(Method::POST, "/api/v1/scaling/dry-run", Viewer),
    r(Method::GET, "/api/v1/scaling/events", Viewer),
    r(Method::GET, "/api/v1/deliveries", Viewer),
    r(Method::POST, "/api/v1/deliveries/{id}/retry", Admin),
    // Prometheus-compatible read API (form POSTs are reads there).
    r(Method::GET, "/prometheus/api/v1/query", Viewer),
    r(Method::POST, "/prometheus/api/v1/query", Viewer),
    r(Method::GET, "/prometheus/api/v1/query_range", Viewer),
    r(Method::POST, "/prometheus/api/v1/query_range", Viewer),
    r(Method::GET, "/prometheus/api/v1/labels", Viewer),
    r(Method::POST, "/prometheus/api/v1/labels", Viewer),
    r(
        Method::GET,
        "/prometheus/api/v1/label/{name}/values",
        Viewer,
    ),
    r(Method::GET, "/prometheus/api/v1/series", Viewer),
    r(Method::POST, "/prometheus/api/v1/series", Viewer),
    r(Method::GET, "/prometheus/api/v1/metadata", Viewer),
    r(Method::GET, "/prometheus/api/v1/status/buildinfo", Viewer),
    // Any other path under /prometheus: a 404 in Prometheus' envelope.
    r(Method::GET, "/prometheus/{*rest}", Public),
    r(Method::POST, "/prometheus/{*rest}", Public),
];

/// The access of `method` on a route path as the router spells it.
pub fn lookup(method: &Method, path: &str) -> Option<Access> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|r| r.path == path && r.method == method)
        .map(|r| r.access)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_route_is_listed_twice() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} is listed twice",
                    a.method,
                    a.path
                );
            }
        }
        assert_eq!(lookup(&Method::HEAD, "/healthz"), Some(Public));
        assert_eq!(lookup(&Method::PATCH, "/healthz"), None);
    }
}
