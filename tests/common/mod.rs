//! Helpers shared by the integration tests: a real agent in-process or as a process
//! ([`agent`]), raw SPOP frames, captured HAProxy frames ([`captures`]), real HAProxy 2.6 and 3.x in
//! front of an agent ([`haproxy`]), Kubernetes ConfigMap-style directory swaps
//! ([`configmap`]), a Redis of the test's own ([`redis`], for fleet mode), and a lab of
//! network namespaces for multi-host tests ([`netns`]).
//!
//! Each test crate uses part of it, so unused helpers are expected.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod agent;
pub mod captures;
pub mod configmap;
#[macro_use]
pub mod haproxy;
pub mod markdown;
pub mod netns;
pub mod redis;
