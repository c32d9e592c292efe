//! What the fleet keeps in Redis, and the commands that read and change it.
//!
//! # Key layout
//!
//! Every key of fleet `NAME` starts with the hash tag `{sg:NAME}`, so that a Redis Cluster
//! puts all of a fleet's keys in one slot (and the multi-key scripts below run there);
//! every key has a TTL, so the store's memory follows what is in force:
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `{sg:NAME}:l:LIMIT:KEY` | string | the fleet's `tat` of one client of one limit (µs of the store's clock) | 1 s after its bucket is full again |
//! | `{sg:NAME}:agents` | sorted set | agent id → last exchange (ms) | with the last agent, after a minute |
//! | `{sg:NAME}:bans` | hash | target → ban or lift record (JSON, last writer wins) | a day after the last record expires |
//! | `{sg:NAME}:bans:version` | string | bumped by every change to the bans | with the bans |
//! | channel `{sg:NAME}:events` | pub/sub | ban changes (with the version) and over-limit marks | — |
//!
//! `LIMIT` is the limit's identity ([`FleetSeed::limit_id`](crate::limits::FleetSeed)),
//! `KEY` the hashed client key, both 16 hex digits; a store shared with other software
//! sees nothing of the clients' addresses.
//!
//! # Scripts
//!
//! Three Lua scripts (sent with `EVAL`: Redis and Valkey cache them by digest, and a
//! restarted store needs no reloading): [`FOLD`] adds the tokens an agent took to the
//! fleet's bucket of each key and answers how far each bucket runs ahead, with the
//! store's clock (so the agents' clocks need not agree); [`BAN`] writes a ban or lift
//! record unless a later one is there, bumps the version and publishes the change in
//! the same step; [`CLEAN`] deletes records that have expired, if unchanged.

use std::fmt::Write as _;

use redis::Value;

/// The names of one fleet's keys and channel.
#[derive(Debug, Clone)]
pub struct Names {
    /// `{sg:NAME}`.
    tag: String,
}

impl Names {
    /// The names of fleet `name`.
    pub fn new(name: &str) -> Names {
        Names {
            tag: format!("{{sg:{name}}}"),
        }
    }

    /// The fleet's bucket of `key` for limit `limit`.
    pub fn bucket(&self, limit: u64, key: u64) -> String {
        let mut name = String::with_capacity(self.tag.len() + 37);
        name.push_str(&self.tag);
        let _ = write!(name, ":l:{limit:016x}:{key:016x}");
        name
    }

    /// The agents seen, by last exchange.
    pub fn agents(&self) -> String {
        format!("{}:agents", self.tag)
    }

    /// The ban and lift records.
    pub fn bans(&self) -> String {
        format!("{}:bans", self.tag)
    }

    /// The bans' version.
    pub fn version(&self) -> String {
        format!("{}:bans:version", self.tag)
    }

    /// The events channel.
    pub fn channel(&self) -> String {
        format!("{}:events", self.tag)
    }
}

/// Adds tokens to the fleet's buckets of several keys of one limit.
///
/// `KEYS`: the buckets. `ARGV[1]`: microseconds per token; `ARGV[2]`: the span the
/// tokens were taken over, µs; `ARGV[2 + i]`: the tokens taken for `KEYS[i]`. Each bucket
/// becomes `max(tat, now − span) + tokens · t` — the tokens count as taken at the start
/// of the span, which gives a client sending steadily at the rate the refill it is due.
/// Answers, per key, how far the bucket's `tat` runs ahead of now (µs; negative: room).
pub const FOLD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local per = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  tat = math.max(tat, now - span) + tonumber(ARGV[2 + i]) * per
  local ttl = math.floor((tat - now) / 1000) + 1000
  if ttl < 1000 then ttl = 1000 end
  redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl)
  out[i] = math.floor(tat - now)
end
return out
";

/// Writes one ban or lift record, last writer wins.
///
/// `KEYS[1]`: the records; `KEYS[2]`: the version. `ARGV[1]`: the target; `ARGV[2]`: the
/// record (JSON with `at`, Unix ms); `ARGV[3]`: its `at`; `ARGV[4]`: how long to keep
/// the records at least (ms); `ARGV[5]`: the events channel; `ARGV[6]`: the writer's id.
/// Answers the new version, or 0 when a later record was there (nothing changed).
pub const BAN: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and tonumber(old.at) and tonumber(old.at) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local v = redis.call('INCR', KEYS[2])
local keep = tonumber(ARGV[4])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < keep then redis.call('PEXPIRE', KEYS[i], keep) end
end
redis.call('PUBLISH', ARGV[5], '{"v":' .. v .. ',"from":' .. cjson.encode(ARGV[6]) ..
  ',"target":' .. cjson.encode(ARGV[1]) .. ',"record":' .. ARGV[2] .. '}')
return v
"#;

/// Deletes records that have not changed since they were read.
///
/// `KEYS[1]`: the records. `ARGV`: pairs of target and the record as read. Answers how
/// many were deleted.
pub const CLEAN: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
";

/// The integers of an array answer (a [`FOLD`]'s), `None` if it is something else.
pub fn integers(value: &Value) -> Option<Vec<i64>> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Int(n) => Some(*n),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// An integer answer; `Nil` is 0 (a missing counter).
pub fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::Nil => Some(0),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

/// Roughly how many bytes `value` took on the wire.
pub fn wire_size(value: &Value) -> u64 {
    match value {
        Value::BulkString(bytes) => bytes.len() as u64 + 8,
        Value::SimpleString(text) => text.len() as u64 + 3,
        Value::Array(items) | Value::Set(items) => 4 + items.iter().map(wire_size).sum::<u64>(),
        Value::Map(pairs) => {
            4 + pairs
                .iter()
                .map(|(k, v)| wire_size(k) + wire_size(v))
                .sum::<u64>()
        }
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_fleet_is_in_one_cluster_slot() {
        let names = Names::new("prod-eu");
        assert_eq!(
            names.bucket(0xab, 0x1234),
            "{sg:prod-eu}:l:00000000000000ab:0000000000001234"
        );
        for name in [
            names.agents(),
            names.bans(),
            names.version(),
            names.channel(),
        ] {
            assert!(name.starts_with("{sg:prod-eu}:"), "{name}");
        }
    }

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(
            integers(&Value::Array(vec![Value::Int(-5), Value::Int(7)])),
            Some(vec![-5, 7])
        );
        assert_eq!(integers(&Value::Array(vec![Value::Nil])), None);
        assert_eq!(integer(&Value::Nil), Some(0));
        assert_eq!(integer(&Value::BulkString(b"42".to_vec())), Some(42));
        assert_eq!(integer(&Value::Okay), None);
    }
}
