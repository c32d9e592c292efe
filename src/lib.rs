//! spoa-guard: a HAProxy Stream Processing Offload Agent that filters HTTP traffic inline.
//!
//! HAProxy's SPOE filter sends the agent a few facts about every request (source address,
//! method, path, host, user agent) in a NOTIFY frame; the agent evaluates them against its
//! rules and answers with an ACK that sets `txn.guard.*` variables, which the HAProxy
//! configuration turns into a 403, a 429 or nothing.
//!
//! # Data flow of one request
//!
//! ```text
//!  bytes ─► server::conn ─► spop::notify (args, in place) ─► decision::Request
//!                                                                 │
//!                         agent::Decider::decide ◄────────────────┘
//!                           ├─ engine::Engine::evaluate: steps allowlist → blocklist →
//!                           │    asn → user-agent → rate-limit (rules, limits)
//!                           └─ recorders: metrics, per-rule hits, insight, deny log
//!                                                                 │
//!  bytes ◄─ server::conn ◄─ spop::AckWriter (set-var per variable) ◄─ decision::Verdict
//! ```
//!
//! # Layers
//!
//! Each module uses only the modules listed before it (`tests/layers.rs` fails on an
//! import that points up, which would make a cycle):
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | 0 | [`util`] | prehashed map hasher, capped concurrent map, log throttle, settings problems, Unix time, listening sockets |
//! | 1 | [`spop`] | the protocol: varints, typed data, frames, codec, HELLO, ACK writer; pure, no I/O |
//! | 2 | [`decision`] | the shared vocabulary: `Request`, `Verdict`, `Decision`, `Reason`, rule names |
//! | 3 | [`rules`], [`limits`], [`bans`] | rule files compiled into lookup structures; rate-limit buckets; each layer's settings (`[lists]`, `[asn]`, `[[user_agent]]`; `[[limit]]`); runtime bans and their store |
//! | 4 | [`engine`] | the decision pipeline, its steps and notes, the rule table, the reloadable [`engine::RuleSettings`] |
//! | 5 | [`insight`] | heavy hitters over sliding windows (`/top`), `[insight]` |
//! | 6 | [`metrics`] | counter and gauge newtypes, histogram, per-rule hits, the Prometheus exposition by area |
//! | 7 | [`agent`] | the agent's state, `decide` = engine + recorders, bans and the dry-run switch, auto-ban, periodic tasks |
//! | 8 | [`server`], [`ops`], [`handover`], [`fleet`] | the SPOP listener and sessions, `[server]`; the operations HTTP listeners, `[metrics]`, `[admin]`; handing listening sockets to a new process; fleet mode: limits and bans shared through Redis, `[fleet]` |
//! | 9 | [`config`] | assembles every layer's settings from the file and the environment, `file:line` errors, `[log]`, `[reload]` |
//! | 10 | [`reload`] | watch files, rebuild off the request path, swap |
//! | 11 | [`cli`], [`serve`] | the tool commands (`check`, `eval`, `top`, and the admin client: `ban`, `bans`, `rules`, `dry-run`, …); the composition root that starts an agent |
//!
//! `config` sits above the server and the operations listener (not below, as in a
//! classic layout) because it only assembles what each layer owns; `reload` sits above
//! `config` because it re-reads the file.
//!
//! # Adding a rule kind
//!
//! A new kind of rule (say country rules) touches these places and no others:
//!
//! 1. **Its settings**, in the layer that compiles it: a `Deserialize` type with a
//!    `validate() -> Vec<Invalid>` (keys relative to its section) and, if it names files,
//!    `rebase` and `files`; add it to [`engine::RuleSettings`] (a field, its
//!    `SECTIONS` entry, and a line in `validate`/`rebase`/`files`) and read it in
//!    `config::assemble` (one line: `reader.table("geo")`).
//! 2. **Its matcher**, under [`rules`] (or its own module): built once per rule set, any
//!    structure it likes — one matcher for all its rules is the point — loaded in
//!    [`rules::RuleSet::load`].
//! 3. **Its step**: a [`engine::Step`] variant with its [`engine::StepInfo`] (title, noun,
//!    unit, gauges, the actions its verdicts can have), a `Reason` variant, one function
//!    in `engine/steps.rs` that returns decide or continue and emits [`engine::Note`]s (a
//!    `Note` variant and its rendering), the step's line in the pipeline's `match`, and
//!    its rules' rows in `RuleTable::build`.
//!
//! From those, everything else follows: verdict ids and per-rule hit counters (from the
//! rule table), decision counters (from `Reason` and the step's actions), `check` output,
//! the `Summary`, the rule-set size gauges (and their fields in the "rules loaded" log
//! line: a new gauge needs its line in `engine::info_with_rule_sizes!`, a test says so)
//! and `eval` (from the step and its notes).

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]
// Everything here handles bytes from the network or lines from rule files: no panicking
// accessors, no silently truncating casts (tests are exempt, see clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

pub mod agent;
pub mod bans;
pub mod cli;
pub mod config;
pub mod decision;
pub mod engine;
pub mod fleet;
pub mod handover;
pub mod insight;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod reload;
pub mod rules;
pub mod serve;
pub mod server;
pub mod spop;
pub mod util;
