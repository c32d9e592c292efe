//! Which limits may apply to a request, found without asking every limit.
//!
//! A limit with a `path_prefix` can only apply to paths that start with it, and one with
//! a `host` only to that host; with hundreds of limits on distinct paths (one per API
//! endpoint is common), asking each in turn costs more than the buckets themselves. The
//! index sorts the limits by their most selective condition:
//!
//! - **path prefix**: one anchored automaton over the distinct prefixes (aho-corasick,
//!   leftmost-longest) finds the longest prefix of the path; that prefix carries, worked
//!   out when the index is built, every limit whose prefix is a prefix of it (`/api/v1`
//!   carries the limits of `/api` too). Cost: one step per path byte up to the longest
//!   prefix. (aho-corasick has no anchored overlapping search, which would report each
//!   matching prefix in turn.)
//! - **host** (limits without a prefix): the lower-cased hosts, sorted, found by binary
//!   search with a case-insensitive comparison (no copy of the request's host).
//! - **everything else** (methods only, or no condition): always candidates. Methods take
//!   a handful of values, so they are not worth an index of their own.
//!
//! [`LimitIndex::candidates`] returns the candidates in configuration order; they still
//! go through [`Limit::applies`](super::Limit::applies), which checks every condition
//! (the methods, the host of a limit found by its prefix). The index only leaves out
//! limits that cannot apply; `tests.rs` checks that against `applies` on random limits
//! and requests.

use std::cmp::Ordering;

use aho_corasick::automaton::Automaton;
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, Input, MatchKind, StartKind};
use smallvec::SmallVec;

use crate::decision::Request;

use super::key::host_without_port;
use super::LimitSpec;

/// Positions (in configuration order) of the limits that may apply to one request.
/// Eight fit without allocating: more than that applying to one request is rare.
pub type Candidates = SmallVec<[u32; 8]>;

/// A lower-cased host and the limits for it.
type HostLimits = (Box<[u8]>, SmallVec<[u32; 2]>);

/// The limits of a [`Limits`](super::Limits) sorted by their most selective condition.
#[derive(Debug, Default)]
pub struct LimitIndex {
    /// Distinct path prefixes; pattern `i` belongs to `by_prefix[i]`. `None` when no
    /// limit has a prefix.
    prefixes: Option<DFA>,
    /// For each distinct prefix, the limits whose prefix is a prefix of it (itself
    /// included), in configuration order.
    by_prefix: Vec<Box<[u32]>>,
    /// Lower-cased hosts (without port) of the limits that have a host but no prefix,
    /// sorted, each with its limits.
    by_host: Vec<HostLimits>,
    /// Limits with neither a prefix nor a host.
    always: Vec<u32>,
}

impl LimitIndex {
    /// Indexes `specs`, the limits in configuration order. Should the prefix automaton
    /// not build (aho-corasick's size limits, far beyond any configuration), the prefixed
    /// limits become candidates for every request: slower, never wrong.
    pub fn build(specs: &[LimitSpec]) -> Self {
        let mut prefixes: Vec<&[u8]> = Vec::new();
        let mut by_host: Vec<HostLimits> = Vec::new();
        let mut always = Vec::new();
        for (position, spec) in (0u32..).zip(specs) {
            if let Some(prefix) = &spec.path_prefix {
                if !prefixes.contains(&prefix.as_bytes()) {
                    prefixes.push(prefix.as_bytes());
                }
            } else if let Some(host) = &spec.host {
                let host = host_without_port(host.as_bytes()).to_ascii_lowercase();
                match by_host.iter_mut().find(|(h, _)| **h == *host) {
                    Some((_, limits)) => limits.push(position),
                    None => by_host.push((host.into(), SmallVec::from_elem(position, 1))),
                }
            } else {
                always.push(position);
            }
        }
        by_host.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Distinct prefixes × limits, once per build.
        let by_prefix: Vec<Box<[u32]>> = prefixes
            .iter()
            .map(|longest| {
                (0u32..)
                    .zip(specs)
                    .filter(|(_, spec)| {
                        spec.path_prefix
                            .as_ref()
                            .is_some_and(|p| longest.starts_with(p.as_bytes()))
                    })
                    .map(|(position, _)| position)
                    .collect()
            })
            .collect();
        // A DFA (not `AhoCorasick`, which picks one behind dynamic dispatch): a few
        // hundred short prefixes make a small table, and one state lookup per byte.
        let automaton = DFA::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(StartKind::Anchored)
            .build(&prefixes);
        let (prefixes, by_prefix) =
            match automaton {
                _ if prefixes.is_empty() => (None, Vec::new()),
                Ok(automaton) => (Some(automaton), by_prefix),
                Err(_) => {
                    always.extend((0u32..).zip(specs).filter_map(|(position, spec)| {
                        spec.path_prefix.as_ref().map(|_| position)
                    }));
                    always.sort_unstable();
                    (None, Vec::new())
                }
            };
        LimitIndex {
            prefixes,
            by_prefix,
            by_host,
            always,
        }
    }

    /// The limits that may apply to `request`, in configuration order, each once.
    pub fn candidates(&self, request: &Request<'_>) -> Candidates {
        let mut found = Candidates::from_slice(&self.always);
        if self.prefixes.is_none() && self.by_host.is_empty() {
            return found;
        }
        if let (Some(prefixes), Some(path)) = (&self.prefixes, request.path) {
            let input = Input::new(path).anchored(Anchored::Yes);
            match prefixes.try_find(&input) {
                Ok(Some(longest)) => {
                    if let Some(limits) = self.by_prefix.get(longest.pattern().as_usize()) {
                        found.extend_from_slice(limits);
                    }
                }
                Ok(None) => {}
                // Not reachable (the automaton is built for anchored searches); were it,
                // every prefixed limit would be a candidate.
                Err(_) => {
                    found.extend(self.by_prefix.iter().flat_map(|l| l.iter().copied()));
                    found.sort_unstable();
                    found.dedup();
                }
            }
        }
        if let Some(host) = request.host.filter(|_| !self.by_host.is_empty()) {
            let host = host_without_port(host);
            let at = self
                .by_host
                .binary_search_by(|(h, _)| cmp_lowercase(h, host));
            if let Some((_, limits)) = at.ok().and_then(|at| self.by_host.get(at)) {
                found.extend_from_slice(limits);
            }
        }
        found.sort_unstable();
        found
    }
}

/// Compares `lower` (already lower case) with `other` lower-cased, byte by byte.
fn cmp_lowercase(lower: &[u8], other: &[u8]) -> Ordering {
    lower
        .iter()
        .copied()
        .cmp(other.iter().map(u8::to_ascii_lowercase))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::Limits;
    use super::*;
    use crate::decision::RuleName;

    fn spec(n: usize, prefix: Option<&str>, methods: &[&str], host: Option<&str>) -> LimitSpec {
        LimitSpec {
            path_prefix: prefix.map(str::to_owned),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            host: host.map(str::to_owned),
            ..LimitSpec::new(RuleName::new(&format!("l{n}")).unwrap(), 1.0)
        }
    }

    fn request<'a>(
        path: Option<&'a str>,
        method: Option<&'a str>,
        host: Option<&'a str>,
    ) -> Request<'a> {
        Request {
            path: path.map(str::as_bytes),
            method: method.map(str::as_bytes),
            host: host.map(str::as_bytes),
            ..Request::default()
        }
    }

    #[test]
    fn nested_prefixes_hosts_and_unconditional_limits_in_configuration_order() {
        let specs = [
            spec(0, Some("/api/v1"), &[], None),
            spec(1, None, &[], Some("Shop.Example:8080")),
            spec(2, None, &["POST"], None),
            spec(3, Some("/api"), &[], None),
            spec(4, Some("/api"), &["GET"], Some("other.example")),
            spec(5, None, &[], None),
        ];
        let index = LimitIndex::build(&specs);
        let found = |path, host| index.candidates(&request(path, None, host)).to_vec();
        assert_eq!(found(Some("/api/v1/items"), None), [0, 2, 3, 4, 5]);
        assert_eq!(
            found(Some("/api/v2"), Some("SHOP.example")),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(found(Some("/ap"), Some("shop.example:443")), [1, 2, 5]);
        assert_eq!(found(None, Some("[::1]:80")), [2, 5]);
        assert!(LimitIndex::build(&[])
            .candidates(&request(Some("/"), None, None))
            .is_empty());
    }

    fn arb_spec() -> impl Strategy<Value = (Option<String>, Vec<&'static str>, Option<String>)> {
        (
            proptest::option::of("/[ab]{0,3}"),
            proptest::sample::subsequence(vec!["GET", "POST"], 0..=2),
            proptest::option::of("[aB]{1,2}(:80)?"),
        )
    }

    proptest! {
        /// Every limit that applies is a candidate; candidates are sorted and distinct.
        #[test]
        fn candidates_contain_every_limit_that_applies(
            specs in proptest::collection::vec(arb_spec(), 0..12),
            path in proptest::option::of("/[ab]{0,4}"),
            method in proptest::option::of(prop_oneof!["GET", "post", "PUT"]),
            host in proptest::option::of("[Ab]{1,2}(:443)?"),
        ) {
            let specs: Vec<LimitSpec> = specs
                .iter()
                .enumerate()
                .map(|(n, (p, m, h))| spec(n, p.as_deref(), m, h.as_deref()))
                .collect();
            let limits = Limits::build(&specs, None, None).unwrap();
            let request = request(path.as_deref(), method.as_deref(), host.as_deref());
            let candidates = limits.candidates(&request);
            prop_assert!(candidates.windows(2).all(|w| w[0] < w[1]));
            for (position, limit) in (0u32..).zip(limits.iter()) {
                if limit.applies(&request) {
                    prop_assert!(candidates.contains(&position), "limit {position} applies");
                }
            }
        }
    }
}
