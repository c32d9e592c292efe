//! The agent's Prometheus registry: one collector that reads the agent's metrics, the
//! rules in force and traffic insight at scrape time, through
//! [`metrics::exposition`](crate::metrics::exposition), under the `spoa_guard_` prefix;
//! and at the root, without a prefix, the standard `process_*` metrics
//! ([`ProcessCollector`]).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use super::Agent;
use crate::metrics::exposition::{self, ProcessCollector, Sources};

/// The registry of `agent`: every `spoa_guard_*` series, and the process's `process_*`.
pub fn registry(agent: Arc<Agent>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    registry
        .sub_registry_with_prefix("spoa_guard")
        .register_collector(Box::new(AgentCollector { agent }));
    registry
}

#[derive(Debug)]
struct AgentCollector {
    agent: Arc<Agent>,
}

impl Collector for AgentCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rules = self.agent.in_force();
        let bans_by_origin = self.agent.controls.read().count_by_origin();
        let now = crate::util::unix_now_u32();
        let auto_bans = self.agent.auto_bans.rules();
        exposition::encode_all(
            encoder,
            &Sources {
                metrics: &self.agent.metrics,
                engine: &rules.engine,
                insight: self.agent.insight(),
                bans_by_origin: &bans_by_origin,
                dry_run_switch: self.agent.controls.dry_run_until(now).is_some(),
                auto_bans: &auto_bans,
                auto_ban_dropped: self.agent.auto_bans.dropped(),
            },
        )
    }
}
