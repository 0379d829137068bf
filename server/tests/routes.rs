//! Every route × every kind of caller, from the one access table
//! (`metrolog_server::http::access::ROUTES`): no credential gets 401 (a page
//! redirects to the login form), a viewer changes nothing, enrollment and
//! agent tokens reach nothing but their own routes, and forms without the
//! session's CSRF token are refused. A `.route(…)` in the source without an
//! entry in the table fails here too.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{spawn_app, TestApp};
use http_body_util::BodyExt;
use metrolog_server::http::access::{lookup, Access, ROUTES};
use std::collections::BTreeSet;
use tower::ServiceExt;

/// A caller of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    ViewerToken,
    AdminToken,
    EnrollToken,
    AgentToken,
    /// A viewer's session, sending its CSRF token (header and form field).
    ViewerSession,
    /// An admin's session, without the CSRF token.
    AdminSessionNoCsrf,
    /// An admin's session with its CSRF token.
    AdminSession,
}

const EVERYONE: [Who; 8] = [
    Who::Nobody,
    Who::ViewerToken,
    Who::AdminToken,
    Who::EnrollToken,
    Who::AgentToken,
    Who::ViewerSession,
    Who::AdminSessionNoCsrf,
    Who::AdminSession,
];

/// What a caller must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Unauthorized,
    Forbidden,
    /// A page: 303 to `/login`.
    ToLogin,
}

fn expect(access: Access, who: Who) -> Expect {
    use Expect::*;
    use Who::*;
    match access {
        Access::Public => Allowed,
        Access::Viewer => match who {
            Nobody => Unauthorized,
            EnrollToken | AgentToken => Forbidden,
            _ => Allowed,
        },
        Access::Admin => match who {
            Nobody => Unauthorized,
            AdminToken | AdminSession => Allowed,
            _ => Forbidden,
        },
        Access::Enroll => match who {
            EnrollToken | AdminToken => Allowed,
            ViewerToken | AgentToken => Forbidden,
            _ => Unauthorized,
        },
        Access::Agent => match who {
            AgentToken => Allowed,
            ViewerToken | AdminToken | EnrollToken => Forbidden,
            _ => Unauthorized,
        },
        Access::Page => match who {
            Nobody => ToLogin,
            EnrollToken | AgentToken => Forbidden,
            _ => Allowed,
        },
        Access::AdminPage => match who {
            Nobody => ToLogin,
            AdminToken | AdminSession | AdminSessionNoCsrf => Allowed,
            _ => Forbidden,
        },
        Access::SessionForm => match who {
            Nobody => ToLogin,
            ViewerSession | AdminSession => Allowed,
            _ => Forbidden,
        },
        Access::AdminForm => match who {
            Nobody => ToLogin,
            AdminSession => Allowed,
            _ => Forbidden,
        },
    }
}

struct Session {
    cookie: String,
    csrf: String,
}

struct Callers {
    app: TestApp,
    agent: String,
    viewer: Session,
    admin: Session,
}

async fn login(app: &TestApp, user: &str, pass: &str) -> Session {
    let form = app.get("/login", None).await;
    let login_csrf = cookie_of(&form.headers, "ml_login_csrf").unwrap();
    let r = app
        .send(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, format!("ml_login_csrf={login_csrf}"))
                .body(Body::from(format!(
                    "username={user}&password={pass}&csrf={login_csrf}"
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let cookie = cookie_of(&r.headers, "ml_session").unwrap();
    // The session's CSRF token is in every page's log-out form.
    let page = app
        .send(
            Request::get("/")
                .header(header::COOKIE, format!("ml_session={cookie}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .text();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a csrf field on the overview")
        .to_string();
    Session { cookie, csrf }
}

fn cookie_of(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap().to_string())
}

async fn callers() -> Callers {
    let app = spawn_app().await;
    let (_, agent) = app.enroll("routes-agent", "web").await;
    let hash = metrolog_server::auth::hash_password("viewer-pass");
    app.state
        .store
        .create_user("viewer", &hash, "viewer")
        .await
        .unwrap();
    let viewer = login(&app, "viewer", "viewer-pass").await;
    let admin = login(&app, "admin", "s3cret-pass").await;
    Callers {
        app,
        agent,
        viewer,
        admin,
    }
}

/// The route's path with its parameters filled in with values that name
/// nothing (so an allowed write changes nothing that matters).
fn concrete(path: &str) -> String {
    path.replace("{id}", "999999")
        .replace("{name}", "nope")
        .replace("{*rest}", "api/v1/nope")
}

struct Answer {
    status: StatusCode,
    location: String,
    set_cookie: Vec<String>,
    body: String,
}

/// Calls the route `template` (parameters filled in by [`concrete`]) as `who`.
async fn call(c: &Callers, method: &Method, template: &str, who: Who) -> Answer {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(concrete(template));
    let token = match who {
        Who::ViewerToken => Some(c.app.viewer.as_str()),
        Who::AdminToken => Some(c.app.admin.as_str()),
        Who::EnrollToken => Some(c.app.enroll.as_str()),
        Who::AgentToken => Some(c.agent.as_str()),
        _ => None,
    };
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let session = match who {
        Who::ViewerSession => Some((&c.viewer, true)),
        Who::AdminSession => Some((&c.admin, true)),
        Who::AdminSessionNoCsrf => Some((&c.admin, false)),
        _ => None,
    };
    let mut form = String::new();
    if let Some((s, with_csrf)) = session {
        b = b.header(header::COOKIE, format!("ml_session={}", s.cookie));
        if with_csrf {
            b = b.header("x-csrf-token", &s.csrf);
            form = format!("csrf={}", s.csrf);
        }
    }
    let body = if lookup(method, template)
        .is_some_and(|a| matches!(a, Access::SessionForm | Access::AdminForm))
    {
        b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        Body::from(form)
    } else {
        Body::empty()
    };
    let resp = c
        .app
        .router
        .clone()
        .oneshot(b.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let set_cookie = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    // A live tail never ends: only error bodies are read.
    let body = if status.is_success() {
        String::new()
    } else {
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
    };
    Answer {
        status,
        location,
        set_cookie,
        body,
    }
}

fn check(route: &str, who: Who, want: Expect, a: &Answer) -> Option<String> {
    let logged_out = a.status == StatusCode::SEE_OTHER
        && a.set_cookie.iter().any(|c| c.starts_with("ml_session=;"));
    let ok = match want {
        Expect::Allowed if route == "POST /logout" => logged_out,
        Expect::Unauthorized => a.status == StatusCode::UNAUTHORIZED,
        Expect::Forbidden => a.status == StatusCode::FORBIDDEN,
        Expect::ToLogin => a.status == StatusCode::SEE_OTHER && a.location == "/login",
        Expect::Allowed => {
            a.status != StatusCode::UNAUTHORIZED
                && a.status != StatusCode::FORBIDDEN
                && a.status != StatusCode::NOT_FOUND
                && a.status != StatusCode::METHOD_NOT_ALLOWED
                && !(a.status == StatusCode::SEE_OTHER && a.location == "/login")
                || a.status == StatusCode::NOT_FOUND && route_may_404(route)
        }
    };
    (!ok).then(|| {
        format!(
            "{route} as {who:?}: wanted {want:?}, got {} {}{}",
            a.status,
            a.location,
            a.body.chars().take(200).collect::<String>()
        )
    })
}

/// Routes whose parameters name nothing here, so an allowed caller gets the
/// handler's own 404 (told apart from the router's by its message).
fn route_may_404(route: &str) -> bool {
    route.contains('{') || route.contains("/prometheus/")
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_the_access_table_says() {
    let c = callers().await;
    let mut failures = Vec::new();
    // Refusals first, then the callers let through (some of which write), and
    // logging out (which ends the sessions) at the very end.
    let mut plan: Vec<(&'static str, Method, Who, Expect)> = Vec::new();
    for route in ROUTES {
        for who in EVERYONE {
            plan.push((
                route.path,
                route.method.clone(),
                who,
                expect(route.access, who),
            ));
        }
    }
    plan.sort_by_key(|(path, _, _, want)| {
        (
            *want == Expect::Allowed,
            *path == "/logout" || *path == "/api/v1/agent/leave",
        )
    });
    for (template, method, who, want) in plan {
        let a = call(&c, &method, template, who).await;
        let name = format!("{method} {template}");
        if let Some(f) = check(&name, who, want, &a) {
            failures.push(f);
        }
        // A router 404 would mean the table lists a route that does not
        // exist; a handler's own 404 says what it did not find.
        if a.status == StatusCode::NOT_FOUND && a.body.contains("no such path") {
            failures.push(format!("{name}: the router has no such route"));
        }
        if template == "/logout" && want == Expect::Allowed {
            assert!(
                a.set_cookie.iter().any(|c| c.starts_with("ml_session=;")),
                "logging out clears the session cookie: {:?}",
                a.set_cookie
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} route × caller pairs answer against the table:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every `.route("…", get(…).post(…))` of the server's source, as (method,
/// path) pairs.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    for f in files {
        let src: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            // The call's argument list, up to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, ch)| {
                    match ch {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(j, _)| j)
                .unwrap_or(rest.len());
            let args = &rest[..end];
            let (path_arg, methods) = args.split_once(',').unwrap_or((args, ""));
            let path_arg = path_arg.trim();
            let path = if let Some(p) = path_arg.strip_prefix('"') {
                p.trim_end_matches('"').to_string()
            } else {
                match path_arg.trim_start_matches("paths::") {
                    "ENROLL" => metrolog_protocol::paths::ENROLL,
                    "BATCH" => metrolog_protocol::paths::BATCH,
                    "HEARTBEAT" => metrolog_protocol::paths::HEARTBEAT,
                    "LEAVE" => metrolog_protocol::paths::LEAVE,
                    "CONFIG" => metrolog_protocol::paths::CONFIG,
                    other => panic!(
                        "{}: a route whose path this test cannot read: {other}",
                        f.display()
                    ),
                }
                .to_string()
            };
            for (word, method) in [
                ("get(", "GET"),
                ("post(", "POST"),
                ("put(", "PUT"),
                ("delete(", "DELETE"),
                ("patch(", "PATCH"),
            ] {
                let hit = methods
                    .match_indices(word)
                    .any(|(k, _)| k == 0 || !methods.as_bytes()[k - 1].is_ascii_alphanumeric());
                if hit {
                    found.insert((method.to_string(), path.clone()));
                }
            }
        }
    }
    found
}

#[test]
fn every_route_in_the_source_has_an_entry_in_the_access_table() {
    let source = routes_in_source();
    assert!(
        source.len() > 40,
        "the scan found too few routes: {source:?}"
    );
    let missing: Vec<_> = source
        .iter()
        .filter(|(m, p)| lookup(&m.parse().unwrap(), p).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an entry in server/src/http/access.rs (decide who may call them): {missing:?}"
    );
    let stale: Vec<_> = ROUTES
        .iter()
        .filter(|r| !source.contains(&(r.method.to_string(), r.path.to_string())))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(stale.is_empty(), "table entries no route serves: {stale:?}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let c = callers().await;
    for (path, who) in [
        ("/login", Who::Nobody),
        ("/", Who::AdminSession),
        ("/api/v1/hosts", Who::ViewerToken),
        ("/api/v1/hosts", Who::Nobody),
        ("/no-such-page", Who::Nobody),
    ] {
        let resp = c
            .app
            .router
            .clone()
            .oneshot({
                let mut b = Request::get(path);
                if who == Who::AdminSession {
                    b = b.header(header::COOKIE, format!("ml_session={}", c.admin.cookie));
                }
                if who == Who::ViewerToken {
                    b = b.header(header::AUTHORIZATION, format!("Bearer {}", c.app.viewer));
                }
                b.body(Body::empty()).unwrap()
            })
            .await
            .unwrap();
        let h = resp.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert!(h.contains_key(header::REFERRER_POLICY), "{path}");
    }
    // No page carries inline script: every <script> has a src under /static/.
    let page = call(&c, &Method::GET, "/", Who::AdminSession).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = c
        .app
        .send(
            Request::get("/")
                .header(header::COOKIE, format!("ml_session={}", c.admin.cookie))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .text();
    for tag in html.split("<script").skip(1) {
        assert!(
            tag.trim_start()
                .starts_with("type=\"module\" src=\"/static/"),
            "{tag}"
        );
    }
    let icon = c.app.get("/favicon.ico", None).await;
    assert_eq!(icon.status, StatusCode::OK);
    assert!(icon.header(header::CONTENT_TYPE).starts_with("image/"));
}

#[tokio::test]
async fn sessions_end_at_logout_and_expiry_and_cookies_are_strict() {
    let c = callers().await;
    // Under HTTPS (here: a proxy that says so) the cookies are Secure.
    let form = c
        .app
        .send(
            Request::get("/login")
                .header("x-forwarded-proto", "https")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let set = form.header(header::SET_COOKIE).to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure"),
        "{set}"
    );
    let plain = c.app.get("/login", None).await;
    assert!(!plain.header(header::SET_COOKIE).contains("Secure"));

    // Logging out without the CSRF token does not end the session; with it, it does.
    let logout = |csrf: &str| {
        Request::post("/logout")
            .header(header::COOKIE, format!("ml_session={}", c.viewer.cookie))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={csrf}")))
            .unwrap()
    };
    assert_eq!(
        c.app.send(logout("forged")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&c, &Method::GET, "/", Who::ViewerSession).await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.app.send(logout(&c.viewer.csrf)).await.status,
        StatusCode::SEE_OTHER
    );
    let after = call(&c, &Method::GET, "/", Who::ViewerSession).await;
    assert_eq!(
        (after.status, after.location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    let api = call(&c, &Method::GET, "/api/v1/hosts", Who::ViewerSession).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);

    // An expired session is no session.
    let store = &c.app.state.store;
    let admin = store.user_by_name("admin").await.unwrap().unwrap();
    let sid = "an-expired-session";
    store
        .create_session(
            &metrolog_server::auth::token_hash(sid),
            admin.id,
            "x",
            common::now() - 1,
        )
        .await
        .unwrap();
    let after = c
        .app
        .send(
            Request::get("/")
                .header(header::COOKIE, format!("ml_session={sid}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (after.status, after.header(header::LOCATION)),
        (StatusCode::SEE_OTHER, "/login")
    );
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_with_a_clear_message() {
    let app = spawn_app().await;
    let form = app.get("/login", None).await;
    let csrf = cookie_of(&form.headers, "ml_login_csrf").unwrap();
    let attempt = |pass: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, format!("ml_login_csrf={csrf}"))
            .body(Body::from(format!(
                "username=admin&password={pass}&csrf={csrf}"
            )))
            .unwrap()
    };
    let limit = app.state.config.http.login_attempts_per_minute;
    for _ in 0..limit {
        let r = app.send(attempt("wrong")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.text().contains("Wrong user name or password."));
    }
    // Now even the right password waits.
    let r = app.send(attempt("s3cret-pass")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.text()
            .contains("Too many failed attempts; wait a minute and try again."),
        "{}",
        r.text()
    );
    // A login form without its CSRF cookie is refused whatever the password.
    let r = app
        .send(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("username=admin&password=s3cret-pass&csrf=x"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
