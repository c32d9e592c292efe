//! The operations listeners: HTTP for people and tools around the agent, apart from the
//! SPOP traffic. `[metrics] listen` is read-only: Prometheus metrics, health and
//! readiness probes, and the traffic-insight report behind `spoa-guard top`
//! ([`Endpoints`]), for scrapers and probes on a trusted network. `[admin] listen` makes
//! changes ([`admin`]: bans, reload, the dry-run switch), on a unix socket or TCP with a
//! token. Both are HTTP/1.1 on hyper ([`http`]), bounded like the SPOP side: one
//! request per connection, a connection cap where a new connection evicts the one with
//! the least progress ([`slots`]), deadlines for the request head, the body and the
//! response, capped bodies.

pub mod admin;
pub mod endpoints;
pub mod http;
pub mod slots;
pub mod top_query;

pub use admin::{Admin, AdminSettings};
pub use endpoints::Endpoints;
pub use top_query::{parse_window, BadQuery, TopQuery};

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// `"127.0.0.1:9464"`: serve `/metrics`, `/healthz`, `/readyz` and `/top` there.
    /// Absent: no HTTP listener.
    #[serde(deserialize_with = "socket_address")]
    pub listen: Option<SocketAddr>,
}

/// An `address:port`, with an error that shows what is expected.
fn socket_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address:port (\"127.0.0.1:9464\", \"[::1]:9464\")"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_an_address_and_port() {
        let s: MetricsSettings = toml::from_str("listen = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(s.listen, Some("127.0.0.1:9464".parse().unwrap()));
        let e = toml::from_str::<MetricsSettings>("listen = \"localhost\"").unwrap_err();
        assert!(
            e.message().contains("\"localhost\" is not an address:port"),
            "{e}"
        );
        assert_eq!(MetricsSettings::default().listen, None);
    }
}
