//! The admin API's request handling, called directly (the integration tests go through
//! the socket and the CLI).

use std::net::SocketAddr;

use http_body_util::BodyExt;

use super::*;
use crate::engine::Engine;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn admin() -> (Arc<Admin>, mpsc::Receiver<ReloadRequest>) {
    let agent = Arc::new(Agent::with_engine(Engine::new(
        Default::default(),
        Default::default(),
    )));
    let (tx, rx) = mpsc::channel(1);
    (Admin::new(agent, Some(TOKEN.into()), tx), rx)
}

fn call(method: Method, path: &str, body: &str, peer: Peer) -> Call {
    Call {
        method,
        path: path.to_string(),
        query: None,
        headers: hyper::HeaderMap::new(),
        body: Bytes::from(body.to_string()),
        peer,
    }
}

const LOCAL: Peer = Peer::Unix { uid: Some(1000) };

async fn send(admin: &Arc<Admin>, call: Call) -> (StatusCode, String) {
    let response = admin.clone().respond(call).await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn ban_body(target: &str, duration: &str) -> String {
    format!(r#"{{"target":"{target}","duration":"{duration}","reason":"INC-42"}}"#)
}

#[tokio::test]
async fn a_ban_is_set_listed_and_lifted() {
    let (admin, _rx) = admin();
    let (status, body) = send(
        &admin,
        call(
            Method::POST,
            "/bans",
            &ban_body("203.0.113.0/24", "1h"),
            LOCAL,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let view: BanView = serde_json::from_str(&body).unwrap();
    assert_eq!((view.origin.as_str(), view.expires_in), ("manual", 3600));
    // The same target again replaces it.
    let (status, _) = send(
        &admin,
        call(
            Method::POST,
            "/bans",
            &ban_body("203.0.113.0/24", "2h"),
            LOCAL,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&admin, call(Method::GET, "/bans", "", LOCAL)).await;
    assert_eq!(status, StatusCode::OK);
    let bans: Vec<BanView> = serde_json::from_str(&body).unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].expires_in, 7200);
    let (status, _) = send(
        &admin,
        call(Method::DELETE, "/bans/203.0.113.0%2F24", "", LOCAL),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(
        &admin,
        call(Method::DELETE, "/bans/203.0.113.0/24", "", LOCAL),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        "203.0.113.0/24 is not banned (see `spoa-guard bans`)\n"
    );
    let m = &admin.agent.metrics;
    assert_eq!(
        m.admin_requests.of(AdminRoute::Ban, AdminResult::Ok).get(),
        2
    );
    assert_eq!(
        m.admin_requests
            .of(AdminRoute::Unban, AdminResult::Refused)
            .get(),
        1
    );
}

#[tokio::test]
async fn bad_requests_get_one_line_and_change_nothing() {
    let (admin, _rx) = admin();
    let cases = [
        (ban_body("foo", "1h"), "not an IP address"),
        (ban_body("10.0.0.0/8", "1h"), "--force"),
        (ban_body("192.0.2.1", "0s"), "at least 1s"),
        (ban_body("192.0.2.1", "10"), "needs a unit"),
        (ban_body("192.0.2.1", "400d"), "at most 366d"),
        (ban_body("192.0.2.1/24", "1h"), "host bits"),
        (ban_body("AS64496", "1h"), "no ASN database is loaded"),
        (
            r#"{"target":"192.0.2.1","duration":"1h","reason":"a\nb"}"#.into(),
            "one line",
        ),
        (
            r#"{"target":"192.0.2.1"}"#.into(),
            "missing field `duration`",
        ),
        ("not json".into(), "not valid"),
    ];
    for (body, needle) in cases {
        let (status, answer) = send(&admin, call(Method::POST, "/bans", &body, LOCAL)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(answer.contains(needle), "{body}: {answer}");
        assert_eq!(answer.lines().count(), 1, "{answer}");
    }
    assert!(admin.agent.controls.read().is_empty());
    // --force allows the wide network, and an AS without a database to look it up in.
    for target in ["10.0.0.0/8", "AS64496"] {
        let forced = format!(r#"{{"target":"{target}","duration":"1h","force":true}}"#);
        let (status, _) = send(&admin, call(Method::POST, "/bans", &forced, LOCAL)).await;
        assert_eq!(status, StatusCode::CREATED, "{target}");
    }
}

#[tokio::test]
async fn tcp_clients_need_the_token_and_a_wrong_one_changes_nothing() {
    let (admin, _rx) = admin();
    let peer = Peer::Tcp(SocketAddr::from(([127, 0, 0, 1], 40000)));
    let body = ban_body("192.0.2.1", "1h");
    for header in [None, Some("Bearer wrong"), Some(TOKEN)] {
        let mut c = call(Method::POST, "/bans", &body, peer);
        if let Some(value) = header {
            c.headers.insert(AUTHORIZATION, value.parse().unwrap());
        }
        let (status, _) = send(&admin, c).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?}");
    }
    assert!(admin.agent.controls.read().is_empty());
    let mut c = call(Method::POST, "/bans", &body, peer);
    c.headers
        .insert(AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    let (status, _) = send(&admin, c).await;
    assert_eq!(status, StatusCode::CREATED);
    let m = &admin.agent.metrics;
    assert_eq!(
        m.admin_requests
            .of(AdminRoute::Other, AdminResult::Unauthorized)
            .get(),
        3
    );
}

#[tokio::test]
async fn reads_never_change_state_and_changes_need_post_or_delete() {
    let (admin, _rx) = admin();
    for path in ["/bans", "/rules", "/dry-run"] {
        let (status, _) = send(&admin, call(Method::GET, path, "", LOCAL)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // A GET with a ban body is still a read.
    let (status, _) = send(
        &admin,
        call(Method::GET, "/bans", &ban_body("192.0.2.1", "1h"), LOCAL),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(admin.agent.controls.read().is_empty());
    let (status, _) = send(&admin, call(Method::GET, "/reload", "", LOCAL)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = send(&admin, call(Method::PUT, "/bans", "", LOCAL)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = send(&admin, call(Method::GET, "/metrics", "", LOCAL)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_dry_run_switch_turns_on_for_a_while_and_off() {
    let (admin, _rx) = admin();
    let (status, body) = send(
        &admin,
        call(Method::POST, "/dry-run", r#"{"for":"30m"}"#, LOCAL),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let state: DryRunState = serde_json::from_str(&body).unwrap();
    assert!(state.on);
    assert_eq!(state.expires_in, Some(1800));
    let now = unix_now_u32();
    assert!(admin.agent.controls.dry_run_until(now).is_some());
    // Expiry: the switch is off once its second has come.
    assert!(admin.agent.controls.dry_run_until(now + 1800).is_none());
    let (status, _) = send(
        &admin,
        call(Method::POST, "/dry-run", r#"{"for":"0s"}"#, LOCAL),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = send(&admin, call(Method::DELETE, "/dry-run", "", LOCAL)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!serde_json::from_str::<DryRunState>(&body).unwrap().on);
}

#[tokio::test]
async fn reload_answers_with_the_reloaders_report() {
    let (admin, mut rx) = admin();
    let reloader = tokio::spawn(async move {
        let reply = rx.recv().await.unwrap();
        reply
            .send(crate::agent::ReloadReport {
                at: 1,
                cause: "admin".into(),
                applied: false,
                errors: vec!["lists/x.txt:3: not an address".into()],
                restart_needed: Vec::new(),
            })
            .unwrap();
    });
    let (status, body) = send(&admin, call(Method::POST, "/reload", "", LOCAL)).await;
    reloader.await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("lists/x.txt:3"), "{body}");
}

#[test]
fn percent_escapes_are_decoded() {
    assert_eq!(
        percent_decode("2001%3Adb8%3A%3A%2F48").as_deref(),
        Some("2001:db8::/48")
    );
    assert_eq!(percent_decode("50%").as_deref(), Some("50%"));
    assert_eq!(percent_decode("%ff"), None);
}
