//! The read-only endpoints of `[metrics] listen`: `GET /metrics` (Prometheus), `GET
//! /healthz` (the process answers), `GET /readyz` (rules loaded and the SPOP listener
//! accepting; 503 otherwise, e.g. while shutting down), `GET /top` (the heaviest
//! sources, networks, ASNs, paths, hosts and user agents, as JSON), `GET /rules` (the
//! rules in force with their hits, as the admin API shows them, for `spoa-guard top
//! --by rule`). Nothing here changes any state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use prometheus_client::registry::Registry;

use super::http::{body, text, Call, Handler};
use super::top_query::TopQuery;
use crate::agent::{self, Agent};
use crate::metrics::{exposition, Metrics, OpsListener};

/// What the endpoints read.
#[derive(Debug)]
pub struct Endpoints {
    agent: Arc<Agent>,
    registry: Registry,
    /// Set while the SPOP listener accepts connections.
    ready: AtomicBool,
}

impl Endpoints {
    /// The endpoints of `agent`; not ready until [`Endpoints::set_ready`].
    pub fn new(agent: Arc<Agent>) -> Arc<Endpoints> {
        Arc::new(Endpoints {
            registry: agent::registry(agent.clone()),
            agent,
            ready: AtomicBool::new(false),
        })
    }

    /// Marks the agent ready (listener up, rules loaded) or not (shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The agent the endpoints report on.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// `GET /top?window=1m&n=10`: the heaviest hitters as JSON
    /// ([`crate::insight::TopReport`]).
    fn top(&self, query: &str) -> Response<Full<Bytes>> {
        let Some(insight) = self.agent.insight() else {
            return text(StatusCode::NOT_FOUND, "traffic insight is off\n");
        };
        let query = match TopQuery::parse(query, insight.max_window()) {
            Ok(query) => query,
            Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
        };
        let report = insight.top(query.window, query.n, Instant::now());
        match serde_json::to_vec(&report) {
            Ok(json) => body(StatusCode::OK, "application/json", json),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
        }
    }
}

impl Handler for Endpoints {
    const LISTENER: OpsListener = OpsListener::Metrics;

    fn metrics(&self) -> &Metrics {
        &self.agent.metrics
    }

    async fn respond(self: Arc<Self>, call: Call) -> Response<Full<Bytes>> {
        self.answer(&call.method, &call.path, call.query.as_deref())
    }
}

impl Endpoints {
    /// The response to `method path?query`.
    fn answer(&self, method: &Method, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match path {
            "/top" => self.top(query.unwrap_or("")),
            "/rules" => {
                let view = super::admin::RulesView::of(&self.agent, crate::util::unix_now_u32());
                match serde_json::to_vec(&view) {
                    Ok(json) => body(StatusCode::OK, "application/json", json),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
                }
            }
            "/metrics" => match exposition::encode(&self.registry) {
                Ok(metrics) => body(StatusCode::OK, exposition::CONTENT_TYPE, metrics),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
            },
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz, /top, /rules\n",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::OpsDrop;

    #[test]
    fn the_body_timeout_series_exist_for_the_listeners_that_read_bodies() {
        fn reads_body<H: Handler>() -> (OpsListener, bool) {
            (H::LISTENER, H::MAX_BODY != 0)
        }
        for (listener, reads) in [reads_body::<Endpoints>(), reads_body::<crate::ops::Admin>()] {
            assert_eq!(
                listener.can_drop(OpsDrop::BodyTimeout),
                reads,
                "{listener:?}"
            );
        }
    }
}
