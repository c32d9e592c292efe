//! The sync loop: every `sync_interval`, one pipelined round trip that sends the tokens
//! taken per fleet-limit key and folds the fleet's answer back, says this agent is
//! alive and counts the others, and reads the bans' version; a full read of the bans
//! when one is due. Then the degraded state, and the mode of every fleet limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::records::{reconcile, Record, Step};
use super::store::{integer, integers, wire_size, BAN, CLEAN, FOLD};
use super::{alive_for, classify, Change, Shared};
use crate::agent::Actor;
use crate::limits::FleetBuckets;
use crate::metrics::FleetError;
use crate::util::{unix_now_millis, unix_now_u32};

/// Most keys per `FOLD` call (its arguments are two per key).
const KEYS_PER_CALL: usize = 500;

/// The longest span one exchange charges tokens over (after an outage).
const MAX_SPAN: Duration = Duration::from_secs(10);

/// The loop; `ready` turns true after the first exchange and full read of the bans.
pub(super) async fn run(
    shared: Arc<Shared>,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let interval = shared.settings.interval();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if shared.may_try() {
            let started = Instant::now();
            let span = started
                .saturating_duration_since(last_ok)
                .clamp(interval, MAX_SPAN);
            match tokio::time::timeout(shared.deadline(), exchange(&shared, span)).await {
                Ok(Ok(agents)) => {
                    last_ok = started;
                    shared
                        .agent
                        .metrics
                        .fleet
                        .sync_duration
                        .observe(started.elapsed());
                    Shared::lock(&shared.breaker).success();
                    recovered(
                        &shared,
                        Shared::lock(&shared.health).ok(Instant::now(), agents),
                    );
                    if Shared::lock(&shared.bans).due {
                        full_read(&shared).await;
                    }
                    if !Shared::lock(&shared.bans).due {
                        ready.send_replace(true);
                    }
                }
                Ok(Err(error)) => shared.failed(classify(&error), "exchange", &error).await,
                Err(_) => {
                    shared
                        .failed(FleetError::Timeout, "exchange", &"no answer in time")
                        .await
                }
            }
        }
        let change = Shared::lock(&shared.health).check(Instant::now());
        if change == Change::Degraded {
            degraded(&shared);
        }
        apply_mode(&shared);
    }
}

/// One exchange; the agents seen alive.
async fn exchange(shared: &Shared, span: Duration) -> redis::RedisResult<u32> {
    let mut conn = shared.connection().await?;
    let rules = shared.agent.engine();
    let limits: Vec<&FleetBuckets> = rules
        .engine
        .limits()
        .iter()
        .filter_map(|l| l.fleet())
        .collect();
    let batches = collect(
        &limits,
        shared.settings.max_keys_per_sync,
        &shared.agent.metrics.fleet,
    );
    let now_ms = unix_now_millis();
    let alive_ms =
        u64::try_from(alive_for(shared.settings.interval()).as_millis()).unwrap_or(u64::MAX);
    let mut pipe = redis::pipe();
    let mut sent = 0_u64;
    for (limit, keys) in &batches {
        let t_us = limit.period() as f64 / 1000.0;
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let cmd = pipe.cmd("EVAL").arg(FOLD).arg(chunk.len());
            for (key, _) in chunk {
                let name = shared.names.bucket(limit.id(), *key);
                sent += name.len() as u64 + 8;
                cmd.arg(name);
            }
            cmd.arg(t_us)
                .arg(u64::try_from(span.as_micros()).unwrap_or(u64::MAX));
            for (_, count) in chunk {
                cmd.arg(*count);
            }
            sent += FOLD.len() as u64 + 24 + 12 * chunk.len() as u64;
        }
    }
    let agents = shared.names.agents();
    pipe.cmd("ZADD")
        .arg(&agents)
        .arg(now_ms)
        .arg(&shared.id)
        .ignore();
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(&agents)
        .arg("-inf")
        .arg(now_ms.saturating_sub(alive_ms))
        .ignore();
    pipe.cmd("PEXPIRE")
        .arg(&agents)
        .arg(alive_ms.saturating_mul(30))
        .ignore();
    pipe.cmd("ZCARD").arg(&agents);
    pipe.cmd("GET").arg(shared.names.version());
    sent += 200;
    let result: redis::RedisResult<Vec<Value>> = pipe.query_async(&mut conn).await;
    let values = match result {
        Ok(values) => values,
        Err(error) => {
            for (limit, keys) in &batches {
                for (key, count) in keys {
                    limit.unreport(*key, *count);
                }
            }
            return Err(error);
        }
    };
    let metrics = &shared.agent.metrics.fleet;
    metrics.bytes_sent.add(sent);
    metrics
        .bytes_received
        .add(values.iter().map(wire_size).sum());
    let now = Instant::now();
    let mut answers = values.iter();
    for (limit, keys) in &batches {
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let aheads = answers.next().and_then(integers).ok_or_else(protocol)?;
            for ((key, _), ahead_us) in chunk.iter().zip(aheads) {
                limit.fold(*key, ahead_us.saturating_mul(1000), now);
            }
        }
    }
    let seen = answers.next().and_then(integer).ok_or_else(protocol)?;
    let version = answers.next().and_then(integer).ok_or_else(protocol)?;
    let agents = u32::try_from(seen).unwrap_or(1).max(1);
    metrics.agents.set(i64::from(agents));
    Shared::lock(&shared.bans).read(u64::try_from(version).unwrap_or(0), now);
    Ok(agents)
}

/// The keys to send, per limit: every key with unreported tokens, heaviest first, at
/// most `cap` in all (the rest are counted as deferred and wait); marked reported.
fn collect<'a>(
    limits: &[&'a FleetBuckets],
    cap: usize,
    metrics: &crate::metrics::FleetMetrics,
) -> Vec<(&'a FleetBuckets, Vec<(u64, u32)>)> {
    let mut all: Vec<(usize, u64, u32)> = Vec::new();
    for (i, limit) in limits.iter().enumerate() {
        all.extend(
            limit
                .unreported()
                .into_iter()
                .map(|(key, count)| (i, key, count)),
        );
    }
    if all.len() > cap {
        all.select_nth_unstable_by(cap, |a, b| b.2.cmp(&a.2));
        metrics.keys_deferred.add((all.len() - cap) as u64);
        all.truncate(cap);
    }
    metrics.keys_sent.add(all.len() as u64);
    let mut batches: Vec<(&FleetBuckets, Vec<(u64, u32)>)> =
        limits.iter().map(|l| (*l, Vec::new())).collect();
    for (i, key, count) in all {
        if let Some((limit, keys)) = batches.get_mut(i) {
            limit.reported(key, count);
            keys.push((key, count));
        }
    }
    batches.retain(|(_, keys)| !keys.is_empty());
    batches
}

fn protocol() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected answer from the fleet store",
    ))
}

/// Reads every ban record and reconciles them with the bans held here.
async fn full_read(shared: &Shared) {
    let result = tokio::time::timeout(shared.deadline() * 4, read_and_reconcile(shared)).await;
    match result {
        Ok(Ok(())) => shared.agent.metrics.fleet.ban_resyncs.inc(),
        Ok(Err(error)) => {
            shared
                .failed(classify(&error), "read of the bans", &error)
                .await
        }
        Err(_) => {
            shared
                .failed(
                    FleetError::Timeout,
                    "read of the bans",
                    &"no answer in time",
                )
                .await
        }
    }
}

async fn read_and_reconcile(shared: &Shared) -> redis::RedisResult<()> {
    let mut conn = shared.connection().await?;
    let (records, version): (Vec<(String, String)>, Option<u64>) = redis::pipe()
        .atomic()
        .cmd("HGETALL")
        .arg(shared.names.bans())
        .cmd("GET")
        .arg(shared.names.version())
        .query_async(&mut conn)
        .await?;
    let now = unix_now_u32();
    let controls = &shared.agent.controls;
    let (steps, expired, unreadable) = reconcile(&controls.list(0), &records, now);
    if unreadable > 0 {
        tracing::warn!(target: "spoa_guard::fleet", unreadable, "ban records in the fleet store that this agent cannot read were skipped");
    }
    let by = Actor::Fleet("store".into());
    let metrics = &shared.agent.metrics;
    let mut pushes = 0;
    for step in steps {
        match step {
            Step::Apply(ban) => {
                metrics.fleet.bans_received.inc();
                let _ = controls.ban(ban, &by, metrics);
            }
            Step::Lift(target) => {
                metrics.fleet.bans_received.inc();
                controls.unban(&target, now, &by, metrics);
            }
            Step::Push(ban) => {
                let record = Record::of_ban(&ban, u64::from(ban.since) * 1000);
                write(shared, &mut conn, &ban.target.to_string(), &record).await?;
                pushes += 1;
            }
        }
    }
    if !expired.is_empty() {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLEAN).arg(1).arg(shared.names.bans());
        for (field, raw) in &expired {
            cmd.arg(field).arg(raw);
        }
        let _: i64 = cmd.query_async(&mut conn).await?;
    }
    Shared::lock(&shared.bans).full(version.unwrap_or(0), Instant::now());
    tracing::info!(
        target: "spoa_guard::fleet",
        records = records.len(),
        sent_back = pushes,
        cleaned = expired.len(),
        ban_version = version.unwrap_or(0),
        "bans read from the fleet store"
    );
    Ok(())
}

/// Writes one record (the `BAN` script: last writer wins, version, publish); the new
/// version, or 0 when a later record was there.
pub(super) async fn write(
    shared: &Shared,
    conn: &mut ConnectionManager,
    target: &str,
    record: &Record,
) -> redis::RedisResult<u64> {
    let keep_ms = u64::from(record.until.saturating_sub(unix_now_u32())) * 1000 + 86_400_000;
    let json = record.to_json();
    shared
        .agent
        .metrics
        .fleet
        .bytes_sent
        .add((BAN.len() + json.len() + 128) as u64);
    let version: u64 = redis::cmd("EVAL")
        .arg(BAN)
        .arg(2)
        .arg(shared.names.bans())
        .arg(shared.names.version())
        .arg(target)
        .arg(json)
        .arg(record.at)
        .arg(keep_ms)
        .arg(shared.names.channel())
        .arg(&shared.id)
        .query_async(conn)
        .await?;
    shared.agent.metrics.fleet.bans_sent.inc();
    Ok(version)
}

/// Enforces every fleet limit in step with the fleet, or this agent's share.
fn apply_mode(shared: &Shared) {
    let (degraded, agents) = {
        let health = Shared::lock(&shared.health);
        (health.degraded(), health.agents())
    };
    let rules = shared.agent.engine();
    for limit in rules.engine.limits().iter().filter_map(|l| l.fleet()) {
        limit.set_agents(agents, degraded);
    }
}

/// Says the agent lost step with its fleet.
fn degraded(shared: &Shared) {
    let metrics = &shared.agent.metrics.fleet;
    metrics.degraded.set(1);
    metrics.degraded_since.set_u64(crate::util::unix_now());
    metrics.degradations.inc();
    let agents = Shared::lock(&shared.health).agents();
    tracing::warn!(
        target: "spoa_guard::fleet",
        redis = %super::redacted(&shared.settings.redis),
        share_of = agents,
        "fleet degraded: the fleet store is unreachable; fleet limits enforce this agent's share (1/{agents}), bans held here stay in force"
    );
}

/// Says the agent is in step again.
fn recovered(shared: &Shared, change: Change) {
    if let Change::Recovered(after) = change {
        let metrics = &shared.agent.metrics.fleet;
        let was = metrics.degraded.get();
        metrics.degraded.set(0);
        metrics.degraded_since.set(0);
        if was != 0 {
            tracing::info!(
                target: "spoa_guard::fleet",
                degraded_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                "fleet in step again: fleet limits enforce the whole limit"
            );
        }
    }
}
