//! Checks the Redis harness (`tests/common/redis.rs`) that the fleet-mode tests build on:
//! a `redis-server` of the test's own on a free loopback port answers, keeps what it is
//! given, and comes back empty after a crash and a restart on the same port.
//!
//! A missing `redis-server` skips with a `SKIPPED:` line, or fails under `CI=true`.

mod common;

use common::redis::Redis;

#[test]
fn a_private_redis_answers_and_restarts_empty() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    assert_eq!(
        redis.command(&["SET", "fleet:test", "1"]).as_deref(),
        Some("+OK")
    );
    assert_eq!(
        redis.command(&["EXISTS", "fleet:test"]).as_deref(),
        Some(":1")
    );
    redis.stop();
    assert_eq!(redis.command(&["PING"]), None, "still answering after stop");
    redis.restart();
    assert_eq!(
        redis.command(&["EXISTS", "fleet:test"]).as_deref(),
        Some(":0")
    );
}
