//! The admin page's forms, driven as a browser sends them: users, tokens and
//! agents.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{spawn_app, Resp, TestApp};

struct Session {
    cookie: String,
    csrf: String,
}

fn set_cookie(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap().to_string())
}

async fn try_login(app: &TestApp, user: &str, pass: &str) -> Resp {
    let form = app.get("/login", None).await;
    let csrf = set_cookie(&form, "ml_login_csrf").unwrap();
    app.send(
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, format!("ml_login_csrf={csrf}"))
            .body(Body::from(format!(
                "username={user}&password={pass}&csrf={csrf}"
            )))
            .unwrap(),
    )
    .await
}

async fn login(app: &TestApp, user: &str, pass: &str) -> Session {
    let r = try_login(app, user, pass).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let cookie = set_cookie(&r, "ml_session").unwrap();
    let html = page(app, &cookie, "/").await.text();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    Session { cookie, csrf }
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> Resp {
    app.send(
        Request::get(path)
            .header(header::COOKIE, format!("ml_session={cookie}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

async fn form(app: &TestApp, s: &Session, path: &str, fields: &str) -> Resp {
    app.send(
        Request::post(path)
            .header(header::COOKIE, format!("ml_session={}", s.cookie))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={}&{fields}", s.csrf)))
            .unwrap(),
    )
    .await
}

fn user_id(html: &str, name: &str) -> i64 {
    // <tr id="user-N">\n<td>NAME</td>
    html.split("<tr id=\"user-")
        .skip(1)
        .find(|row| row.contains(&format!("<td>{name}</td>")))
        .and_then(|row| row.split('"').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no row for user {name}"))
}

#[tokio::test]
async fn users_are_added_promoted_disabled_and_reset_from_the_admin_page() {
    let app = spawn_app().await;
    let admin = login(&app, "admin", "s3cret-pass").await;

    let weak = form(
        &app,
        &admin,
        "/admin/users",
        "name=ann&password=short&role=viewer",
    )
    .await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(
        weak.text().contains("at least 8 characters"),
        "{}",
        weak.text()
    );

    let r = form(
        &app,
        &admin,
        "/admin/users",
        "name=ann&password=ann-password-1&role=viewer",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let dup = form(
        &app,
        &admin,
        "/admin/users",
        "name=ann&password=ann-password-1&role=viewer",
    )
    .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert!(dup.text().contains("already exists"));

    let html = page(&app, &admin.cookie, "/admin").await.text();
    let ann = user_id(&html, "ann");
    let me = user_id(&html, "admin");

    // A viewer sees no admin link and gets 403 on the page and its forms.
    let ann_s = login(&app, "ann", "ann-password-1").await;
    assert!(!page(&app, &ann_s.cookie, "/")
        .await
        .text()
        .contains("href=\"/admin\""));
    assert_eq!(
        page(&app, &ann_s.cookie, "/admin").await.status,
        StatusCode::FORBIDDEN
    );
    let r = form(
        &app,
        &ann_s,
        &format!("/admin/users/{ann}/role"),
        "role=admin",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Promoted, ann sees the admin page.
    let r = form(
        &app,
        &admin,
        &format!("/admin/users/{ann}/role"),
        "role=admin",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page(&app, &ann_s.cookie, "/admin").await.status,
        StatusCode::OK
    );

    // Disabled, her session ends and she cannot log in again.
    let r = form(&app, &admin, &format!("/admin/users/{ann}/disable"), "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = page(&app, &ann_s.cookie, "/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = try_login(&app, "ann", "ann-password-1").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text().contains("This account is disabled"),
        "{}",
        r.text()
    );

    // The last enabled admin cannot lock everyone out.
    let r = form(
        &app,
        &admin,
        &format!("/admin/users/{me}/role"),
        "role=viewer",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("last enabled admin"), "{}", r.text());
    let r = form(&app, &admin, &format!("/admin/users/{me}/disable"), "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // Enabled again with a new password: the old one no longer works.
    form(&app, &admin, &format!("/admin/users/{ann}/enable"), "").await;
    let r = form(
        &app,
        &admin,
        &format!("/admin/users/{ann}/password"),
        "password=another-password-2",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        try_login(&app, "ann", "ann-password-1").await.status,
        StatusCode::UNAUTHORIZED
    );
    login(&app, "ann", "another-password-2").await;
}

#[tokio::test]
async fn tokens_are_shown_once_listed_with_last_use_and_revoked() {
    let app = spawn_app().await;
    let admin = login(&app, "admin", "s3cret-pass").await;
    let r = form(
        &app,
        &admin,
        "/admin/tokens",
        "name=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&role=viewer",
    )
    .await;
    // A hostile name is refused (spaces), so the page says why.
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.text().contains("<img src=x"));

    let r = form(&app, &admin, "/admin/tokens", "name=grafana&role=viewer").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::CACHE_CONTROL), "no-store");
    let html = r.text();
    let secret = html
        .split("<pre class=\"secret\" id=\"new-token\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_string();
    assert!(secret.starts_with("mlg_"), "{secret}");
    // Shown once: the page does not show it again.
    let list = page(&app, &admin.cookie, "/admin").await.text();
    assert!(!list.contains(&secret));
    assert!(list.contains("<td>grafana</td><td>viewer</td>"));
    let row = list.split("<td>grafana</td>").nth(1).unwrap();
    assert!(row.contains("<td>never</td>"), "{row}");

    // It works, and its use is noted.
    assert_eq!(
        app.get("/api/v1/hosts", Some(&secret)).await.status,
        StatusCode::OK
    );
    let list = page(&app, &admin.cookie, "/admin").await.text();
    let row = list.split("<td>grafana</td>").nth(1).unwrap();
    assert!(row.contains(" s ago</td>"), "{row}");
    let id: i64 = list
        .split("<tr id=\"token-")
        .find(|r| r.contains("<td>grafana</td>"))
        .and_then(|r| r.split('"').next())
        .and_then(|id| id.parse().ok())
        .unwrap();

    // An enrollment token comes with the command that enrolls an instance.
    let r = app
        .send(
            Request::post("/admin/tokens")
                .header(header::COOKIE, format!("ml_session={}", admin.cookie))
                .header(header::HOST, "metrolog.example:8080")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "csrf={}&name=fleet&role=enroll",
                    admin.csrf
                )))
                .unwrap(),
        )
        .await;
    let html = r.text();
    assert!(
        html.contains("metrolog-agent --server http://metrolog.example:8080 --enroll-token mlg_"),
        "{html}"
    );

    let r = form(&app, &admin, &format!("/admin/tokens/{id}/revoke"), "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/api/v1/hosts", Some(&secret)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let list = page(&app, &admin.cookie, "/admin").await.text();
    let row = list.split("<td>grafana</td>").nth(1).unwrap();
    assert!(row.contains("revoked"), "{row}");
}

#[tokio::test]
async fn agents_are_revoked_and_removed_from_the_admin_page() {
    let app = spawn_app().await;
    let admin = login(&app, "admin", "s3cret-pass").await;
    let (host, token) = app.enroll("<img/src=x/onerror=alert(1)>", "web").await;
    let html = page(&app, &admin.cookie, "/admin").await.text();
    assert!(
        html.contains("&#60;img/src=x/onerror=alert(1)&#62;"),
        "{html}"
    );
    assert!(!html.contains("<img/src"));

    let heartbeat = || async {
        app.send(
            Request::post("/api/v1/agent/heartbeat")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .status
    };
    assert!(heartbeat().await.is_success());
    let r = form(&app, &admin, &format!("/admin/agents/{host}/revoke"), "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(heartbeat().await, StatusCode::UNAUTHORIZED);

    let r = form(&app, &admin, &format!("/admin/agents/{host}/remove"), "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.get(&format!("/api/v1/hosts/{host}"), Some(&app.admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = form(&app, &admin, &format!("/admin/agents/{host}/remove"), "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_empty_overview_shows_admins_the_command_that_enrolls_an_instance() {
    let app = spawn_app().await;
    let admin = login(&app, "admin", "s3cret-pass").await;
    let command = |html: &str| {
        html.split("<pre class=\"command\" id=\"enroll-command\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .map(String::from)
    };
    let first = command(&page(&app, &admin.cookie, "/").await.text()).unwrap();
    let second = command(&page(&app, &admin.cookie, "/").await.text()).unwrap();
    assert!(
        second.starts_with("metrolog-agent --server http://127.0.0.1:8080 --enroll-token mlg_"),
        "{second}"
    );
    let token = |cmd: &str| {
        cmd.split("--enroll-token ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    // Only the latest page's token enrolls.
    let enroll = |t: String| {
        let app = &app;
        async move {
            app.post_json(
                "/api/v1/agent/enroll",
                &t,
                &serde_json::json!({"hostname": "web-1", "group": "web", "labels": {}, "agent_version": "t"}),
            )
            .await
            .status
        }
    };
    assert_eq!(enroll(token(&first)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(enroll(token(&second)).await, StatusCode::OK);
    // With a host, the overview lists it instead.
    assert!(command(&page(&app, &admin.cookie, "/").await.text()).is_none());

    // A viewer never gets a token.
    let empty = spawn_app().await;
    let hash = metrolog_server::auth::hash_password("viewer-password");
    empty
        .state
        .store
        .create_user("v", &hash, "viewer")
        .await
        .unwrap();
    let v = login(&empty, "v", "viewer-password").await;
    let html = page(&empty, &v.cookie, "/").await.text();
    assert!(command(&html).is_none());
    assert!(html.contains("No agent yet"));
}

#[tokio::test]
async fn the_groups_and_hosts_pages_list_the_fleet() {
    let app = spawn_app().await;
    let admin = login(&app, "admin", "s3cret-pass").await;
    app.enroll("web-1", "web").await;
    app.enroll("web-2", "web").await;
    app.enroll("db-1", "db").await;
    let groups = page(&app, &admin.cookie, "/groups").await;
    assert_eq!(groups.status, StatusCode::OK);
    let html = groups.text();
    let web = html
        .split("<a href=\"/groups/web\">web</a>")
        .nth(1)
        .unwrap();
    assert!(
        web.starts_with("</td>\n        <td class=\"num\">2</td>"),
        "{web}"
    );
    assert!(html.contains("<a href=\"/groups/db\">db</a>"));
    let hosts = page(&app, &admin.cookie, "/hosts").await.text();
    let order: Vec<_> = ["db-1", "web-1", "web-2"]
        .iter()
        .map(|h| hosts.find(&format!(">{h}</a>")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "sorted by name");
    let down = page(&app, &admin.cookie, "/hosts?state=down").await.text();
    assert!(down.contains("No host is down."), "{down}");
    let bad = page(&app, &admin.cookie, "/hosts?state=sideways").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("not one of up, down, left"));
}
