//! The fleet's channel: listening (ban changes and marks from the other agents) and
//! writing (this agent's ban changes and marks).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::records::{decide, MarksOut, Message, Record, Step};
use super::sync::write;
use super::{classify, Shared};
use crate::agent::{Actor, BanEvent};
use crate::bans::Target;
use crate::limits::Mark;
use crate::metrics::FleetError;
use crate::util::{unix_now_millis, unix_now_u32};

/// Most marks in one message.
const MARKS_PER_MESSAGE: usize = 1000;

/// Most ban changes kept for a retry while the store cannot be written.
const PENDING: usize = 65_536;

/// Subscribes to the channel and applies what arrives, reconnecting with back-off; a
/// (re)subscription makes a full read of the bans due (events may have been missed).
pub(super) async fn listen(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let subscribed = tokio::select! {
            () = shutdown.cancelled() => return,
            subscribed = tokio::time::timeout(Duration::from_secs(3), subscribe(&shared)) => subscribed,
        };
        match subscribed {
            Ok(Ok(mut pubsub)) => {
                backoff = Duration::from_millis(500);
                Shared::lock(&shared.bans).due = true;
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        () = shutdown.cancelled() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    let payload: Vec<u8> = message.get_payload().unwrap_or_default();
                    receive(&shared, &payload);
                }
                tracing::debug!(target: "spoa_guard::fleet", "fleet channel closed; subscribing again");
            }
            Ok(Err(error)) => {
                tracing::debug!(target: "spoa_guard::fleet", "cannot subscribe to the fleet channel: {error}")
            }
            Err(_) => {
                tracing::debug!(target: "spoa_guard::fleet", "subscribing to the fleet channel timed out")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(4));
    }
}

async fn subscribe(shared: &Shared) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = shared.client.get_async_pubsub().await?;
    pubsub.subscribe(shared.names.channel()).await?;
    Ok(pubsub)
}

/// Applies one message of the channel.
fn receive(shared: &Shared, payload: &[u8]) {
    let metrics = &shared.agent.metrics;
    let message: Message = match serde_json::from_slice(payload) {
        Ok(message) => message,
        Err(error) => {
            metrics.fleet.errors.of(FleetError::Protocol).inc();
            tracing::debug!(target: "spoa_guard::fleet", "unreadable message on the fleet channel: {error}");
            return;
        }
    };
    match message {
        Message::Ban {
            v,
            from,
            target,
            record,
        } => {
            Shared::lock(&shared.bans).event(v);
            if from == shared.id {
                return;
            }
            let Ok(target) = target.parse::<Target>() else {
                metrics.fleet.errors.of(FleetError::Protocol).inc();
                return;
            };
            let now = unix_now_u32();
            let controls = &shared.agent.controls;
            let by = Actor::Fleet(from);
            match decide(target, &record, controls.get(&target).as_ref(), now) {
                Some(Step::Apply(ban)) => {
                    metrics.fleet.bans_received.inc();
                    let _ = controls.ban(ban, &by, metrics);
                }
                Some(Step::Lift(target)) => {
                    metrics.fleet.bans_received.inc();
                    controls.unban(&target, now, &by, metrics);
                }
                // Ours is the later one: the next full read sends it.
                Some(Step::Push(_)) => Shared::lock(&shared.bans).due = true,
                None => {}
            }
        }
        Message::Marks { from, marks } => {
            if from == shared.id {
                return;
            }
            let rules = shared.agent.engine();
            let now = Instant::now();
            for (limit, key, wait_us) in marks {
                let fleet_limit = rules
                    .engine
                    .limits()
                    .iter()
                    .filter_map(|l| l.fleet())
                    .find(|f| f.id() == limit);
                if let Some(fleet_limit) = fleet_limit {
                    fleet_limit.mark(key, wait_us.saturating_mul(1000), now);
                    metrics.fleet.marks_received.inc();
                }
            }
        }
    }
}

/// Writes this agent's ban changes (retried until written) and publishes its marks
/// (dropped when the store cannot take them: they only matter for a moment).
pub(super) async fn write_loop(
    shared: Arc<Shared>,
    mut outbox: mpsc::Receiver<BanEvent>,
    mut marks: mpsc::Receiver<Mark>,
    shutdown: CancellationToken,
) {
    let mut pending: std::collections::VecDeque<(String, Record)> =
        std::collections::VecDeque::new();
    let mut retry =
        tokio::time::interval(shared.settings.interval().max(Duration::from_millis(200)));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            event = outbox.recv() => {
                let Some(event) = event else { return };
                if pending.len() >= PENDING {
                    pending.pop_front();
                }
                pending.push_back(record_of(&event));
            }
            mark = marks.recv() => {
                let Some(mark) = mark else { return };
                let mut batch = vec![(mark.limit, mark.key, mark.wait / 1000)];
                while batch.len() < MARKS_PER_MESSAGE {
                    let Ok(mark) = marks.try_recv() else { break };
                    batch.push((mark.limit, mark.key, mark.wait / 1000));
                }
                publish_marks(&shared, &batch).await;
                continue;
            }
            _ = retry.tick() => {}
        }
        flush(&shared, &mut pending).await;
    }
}

/// The record of a change made here.
fn record_of(event: &BanEvent) -> (String, Record) {
    match event {
        BanEvent::Set(ban) => (
            ban.target.to_string(),
            Record::of_ban(ban, unix_now_millis()),
        ),
        BanEvent::Lifted { ban, at_ms } => (ban.target.to_string(), Record::lift(ban, *at_ms)),
    }
}

/// Writes the pending changes in order, stopping at the first failure.
async fn flush(shared: &Shared, pending: &mut std::collections::VecDeque<(String, Record)>) {
    if pending.is_empty() || !shared.may_try() {
        return;
    }
    let mut conn = match shared.connection().await {
        Ok(conn) => conn,
        Err(error) => return shared.failed(classify(&error), "ban write", &error).await,
    };
    while let Some((target, record)) = pending.front() {
        let written =
            tokio::time::timeout(shared.deadline(), write(shared, &mut conn, target, record)).await;
        match written {
            Ok(Ok(_)) => {
                pending.pop_front();
            }
            Ok(Err(error)) => return shared.failed(classify(&error), "ban write", &error).await,
            Err(_) => {
                return shared
                    .failed(FleetError::Timeout, "ban write", &"no answer in time")
                    .await
            }
        }
    }
}

/// Publishes marks, if the store is reachable.
async fn publish_marks(shared: &Shared, marks: &[(u64, u64, u64)]) {
    if !shared.may_try() {
        return;
    }
    let Ok(json) = serde_json::to_string(&MarksOut {
        from: &shared.id,
        marks,
    }) else {
        return;
    };
    let Ok(mut conn) = shared.connection().await else {
        return;
    };
    shared
        .agent
        .metrics
        .fleet
        .bytes_sent
        .add(json.len() as u64 + 64);
    let published = tokio::time::timeout(
        shared.deadline(),
        redis::cmd("PUBLISH")
            .arg(shared.names.channel())
            .arg(json)
            .query_async::<i64>(&mut conn),
    )
    .await;
    if let Ok(Ok(_)) = published {
        shared
            .agent
            .metrics
            .fleet
            .marks_sent
            .add(marks.len() as u64);
    }
}
