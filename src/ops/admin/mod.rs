//! The admin listener (`[admin]`): changes at runtime, apart from the read-only
//! `[metrics]` listener. JSON over HTTP/1.1 on the same bounded server ([`super::http`]);
//! reads are GET, every change is POST or DELETE.
//!
//! | route | what |
//! |---|---|
//! | `GET /bans` | the bans in force ([`BanView`] array) |
//! | `POST /bans` | ban a target ([`BanRequest`]) → 201 (200 when it replaced a ban) |
//! | `DELETE /bans/TARGET` | lift the ban on exactly TARGET → 200, 404 if none |
//! | `GET /rules` | the rules in force, hits, the last reload ([`RulesView`]) |
//! | `POST /reload` | reload now → 200 applied, 422 failed (nothing swapped) |
//! | `GET /dry-run` | the global dry-run switch ([`DryRunState`]) |
//! | `POST /dry-run` | turn it on for a while ([`DryRunRequest`]) |
//! | `DELETE /dry-run` | turn it off |
//!
//! Who may call: on a unix socket (the default), whoever the socket's mode and group let
//! connect, logged by user id; on TCP, only a client sending the bearer token of
//! `token_file`, compared in constant time (`subtle`). Bad input gets a 4xx with a
//! one-line reason and changes nothing. Every change is logged by the agent's controls
//! with who made it, and every request is counted by route and result.

mod settings;
pub mod wire;

pub use settings::{group_id, read_token, AdminSettings, DEFAULT_SOCKET_MODE};
pub use wire::{BanRequest, BanView, DryRunRequest, DryRunState, RuleView, RulesView};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Response, StatusCode};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

use super::http::{body, text, Call, Handler, Peer};
use crate::agent::{Actor, Agent, ReloadRequest};
use crate::bans::{Added, Ban, Target};
use crate::metrics::{AdminResult, AdminRoute, Metrics, OpsListener};
use crate::util::{parse_duration, unix_now_u32};

/// Largest request body: a ban request is a few hundred bytes.
pub const MAX_BODY: usize = 4096;
/// Longest reason kept with a ban, in bytes.
pub const MAX_REASON: usize = 256;
/// Longest ban or dry-run switch: a year. Longer is a typo, or belongs in a list file.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);
/// How long `POST /reload` waits for the reloader.
const RELOAD_WAIT: Duration = Duration::from_secs(120);

/// The admin API of one agent; see the module docs.
#[derive(Debug)]
pub struct Admin {
    agent: Arc<Agent>,
    /// Required on TCP: the bearer token.
    token: Option<String>,
    /// Reload requests to the reloader.
    reload: mpsc::Sender<ReloadRequest>,
}

/// An answer before it is counted: its status, body and the route it was for.
type Answer = (AdminRoute, Response<Full<Bytes>>);

impl Admin {
    /// The admin API of `agent`; `token` is required from TCP clients.
    pub fn new(
        agent: Arc<Agent>,
        token: Option<String>,
        reload: mpsc::Sender<ReloadRequest>,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            agent,
            token,
            reload,
        })
    }

    /// Who `call` comes from; `None` for a TCP client without the right token.
    fn actor(&self, call: &Call) -> Option<Actor> {
        match call.peer {
            Peer::Unix { uid } => Some(Actor::Uid(uid.unwrap_or(u32::MAX))),
            Peer::Tcp(_) => {
                let sent = call
                    .headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                    .unwrap_or_default();
                let expected = self.token.as_deref().unwrap_or_default().as_bytes();
                // No token configured refuses everyone (the agent does not start so).
                (!expected.is_empty() && bool::from(sent.ct_eq(expected))).then_some(Actor::Token)
            }
        }
    }

    async fn route(&self, call: &Call, by: &Actor) -> Answer {
        let now = unix_now_u32();
        let (method, path) = (&call.method, call.path.as_str());
        match (method, path) {
            (&Method::GET, "/bans") => (AdminRoute::ListBans, self.list_bans(now)),
            (&Method::POST, "/bans") => (AdminRoute::Ban, self.ban(&call.body, now, by)),
            (&Method::DELETE, _) if path.starts_with("/bans/") => {
                let answer = match percent_decode(path.trim_start_matches("/bans/")) {
                    Some(target) => self.unban(&target, now, by),
                    None => refused(StatusCode::BAD_REQUEST, "the target is not valid UTF-8"),
                };
                (AdminRoute::Unban, answer)
            }
            (&Method::GET, "/rules") => (AdminRoute::Rules, self.rules(now)),
            (&Method::POST, "/reload") => (AdminRoute::Reload, self.reload().await),
            (&Method::GET, "/dry-run") => (AdminRoute::DryRunState, self.dry_run_state(now)),
            (&Method::POST, "/dry-run") => (
                AdminRoute::DryRunSwitch,
                self.dry_run_on(&call.body, now, by),
            ),
            (&Method::DELETE, "/dry-run") => {
                self.agent.controls.set_dry_run(None, now, by);
                (AdminRoute::DryRunSwitch, self.dry_run_state(now))
            }
            (_, "/bans" | "/rules" | "/reload" | "/dry-run") => (
                AdminRoute::Other,
                text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on {path}\n"),
                ),
            ),
            _ => (
                AdminRoute::Other,
                text(
                    StatusCode::NOT_FOUND,
                    "not found: try /bans, /rules, /reload, /dry-run\n",
                ),
            ),
        }
    }

    fn list_bans(&self, now: u32) -> Response<Full<Bytes>> {
        let bans: Vec<BanView> = self
            .agent
            .controls
            .list(now)
            .iter()
            .map(|b| BanView::of(b, now))
            .collect();
        json(StatusCode::OK, &bans)
    }

    fn ban(&self, body: &[u8], now: u32, by: &Actor) -> Response<Full<Bytes>> {
        let request: BanRequest = match parse_body(body) {
            Ok(request) => request,
            Err(why) => return refused(StatusCode::BAD_REQUEST, &why),
        };
        let ban = match self.checked_ban(&request, now) {
            Ok(ban) => ban,
            Err(why) => return refused(StatusCode::BAD_REQUEST, &why),
        };
        let controls = &self.agent.controls;
        match controls.ban(ban.clone(), by, &self.agent.metrics) {
            Ok(Added::New) => json(StatusCode::CREATED, &BanView::of(&ban, now)),
            Ok(Added::Replaced(_)) => json(StatusCode::OK, &BanView::of(&ban, now)),
            Err(err) => refused(StatusCode::INSUFFICIENT_STORAGE, &err.to_string()),
        }
    }

    /// The ban `request` asks for, or why it is refused.
    fn checked_ban(&self, request: &BanRequest, now: u32) -> Result<Ban, String> {
        let target: Target = request.target.parse().map_err(|e| format!("{e}"))?;
        if !request.force {
            if let Some(why) = self.agent.controls.settings().too_wide(&target) {
                return Err(why);
            }
            if matches!(target, Target::Asn(_)) && !self.agent.in_force().engine.has_asn_database()
            {
                return Err(format!(
                    "no ASN database is loaded ([asn] databases): a ban on {target} would match \
                     nothing; add one, or --force to keep the ban for when one is"
                ));
            }
        }
        let seconds = checked_duration(&request.duration)?;
        let reason = request.reason.trim();
        if reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(format!(
                "the reason must be one line of at most {MAX_REASON} bytes"
            ));
        }
        Ok(Ban {
            target,
            origin: Arc::from("manual"),
            reason: Arc::from(reason),
            since: now,
            expires_at: now.saturating_add(seconds),
        })
    }

    fn unban(&self, target: &str, now: u32, by: &Actor) -> Response<Full<Bytes>> {
        let target: Target = match target.parse() {
            Ok(target) => target,
            Err(e) => return refused(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let controls = &self.agent.controls;
        match controls.unban(&target, now, by, &self.agent.metrics) {
            Some(ban) => json(StatusCode::OK, &BanView::of(&ban, now)),
            None => refused(
                StatusCode::NOT_FOUND,
                &format!("{target} is not banned (see `spoa-guard bans`)"),
            ),
        }
    }

    fn rules(&self, now: u32) -> Response<Full<Bytes>> {
        json(StatusCode::OK, &RulesView::of(&self.agent, now))
    }

    async fn reload(&self) -> Response<Full<Bytes>> {
        let (reply, answer) = oneshot::channel();
        if self.reload.send(reply).await.is_err() {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent is shutting down",
            );
        }
        match tokio::time::timeout(RELOAD_WAIT, answer).await {
            Ok(Ok(report)) if report.applied => json(StatusCode::OK, &report),
            Ok(Ok(report)) => json(StatusCode::UNPROCESSABLE_ENTITY, &report),
            Ok(Err(_)) => refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent is shutting down",
            ),
            Err(_) => refused(
                StatusCode::GATEWAY_TIMEOUT,
                "the reload is taking longer than 2 minutes; see the agent's log",
            ),
        }
    }

    fn dry_run_state(&self, now: u32) -> Response<Full<Bytes>> {
        let until = self.agent.controls.dry_run_until(now);
        json(StatusCode::OK, &DryRunState::of(until, now))
    }

    fn dry_run_on(&self, body: &[u8], now: u32, by: &Actor) -> Response<Full<Bytes>> {
        let request: DryRunRequest = match parse_body(body) {
            Ok(request) => request,
            Err(why) => return refused(StatusCode::BAD_REQUEST, &why),
        };
        let seconds = match checked_duration(&request.duration) {
            Ok(seconds) => seconds,
            Err(why) => return refused(StatusCode::BAD_REQUEST, &why),
        };
        let until = now.saturating_add(seconds);
        self.agent.controls.set_dry_run(Some(until), now, by);
        self.dry_run_state(now)
    }
}

impl Handler for Admin {
    const MAX_BODY: usize = MAX_BODY;
    const LISTENER: OpsListener = OpsListener::Admin;

    fn metrics(&self) -> &Metrics {
        &self.agent.metrics
    }

    async fn respond(self: Arc<Self>, call: Call) -> Response<Full<Bytes>> {
        let (route, response) = match self.actor(&call) {
            Some(by) => self.route(&call, &by).await,
            None => (
                AdminRoute::Other,
                refused(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong token (Authorization: Bearer …)",
                ),
            ),
        };
        let status = response.status();
        let result = match status.as_u16() {
            200..=299 => AdminResult::Ok,
            401 => AdminResult::Unauthorized,
            400..=499 | 507 => AdminResult::Refused,
            _ => AdminResult::Error,
        };
        self.agent.metrics.admin_requests.of(route, result).inc();
        response
    }
}

/// A duration for a ban or the switch, in whole seconds: a unit is required, more than 0
/// and at most [`MAX_DURATION`].
fn checked_duration(text: &str) -> Result<u32, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err(format!("{text:?}: the duration must be at least 1s"));
    }
    if duration > MAX_DURATION {
        return Err(format!("{text:?}: the duration must be at most 366d"));
    }
    Ok(u32::try_from(duration.as_secs()).unwrap_or(u32::MAX))
}

/// A JSON request body, or what is wrong with it.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the request body is not valid: {e}"))
}

/// `text` with `%XX` escapes decoded; `None` if the result is not UTF-8. A `%` without
/// two hex digits is kept as it is (the target parser then says what is wrong).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A refusal: `why` as one line of text.
fn refused(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    text(status, format!("{}\n", why.lines().next().unwrap_or(why)))
}

/// `value` as a JSON response.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(json) => body(status, "application/json", json),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
    }
}

#[cfg(test)]
mod tests;
