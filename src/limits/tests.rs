//! Tests of the rate limits. Time is virtual: every `now` is a fixed `Instant` plus an
//! offset; nothing sleeps.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::clock::{Clock, FakeRelativeClock};
use governor::{Quota, RateLimiter};
use proptest::prelude::*;

use super::*;
use crate::decision::RuleName;
use crate::spop::{Arg, Message, TypedData};

/// The tests' name for a limit's settings.
type LimitConfig = LimitSpec;

fn config(name: &str, key: &str, rate: f64, burst: u32) -> LimitConfig {
    LimitConfig {
        key: KeySpec::parse(key).unwrap(),
        burst: Some(burst),
        ..LimitSpec::new(RuleName::new(name).unwrap(), rate)
    }
}

fn one(config: LimitConfig) -> Limits {
    Limits::build(&[config], None, None).unwrap()
}

fn only(limits: &Limits) -> &Limit {
    limits.iter().next().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn from(src: &str) -> Request<'static> {
    Request {
        src: Some(ip(src)),
        ..Request::default()
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn denied(seconds: u64) -> Take {
    Take::Denied {
        retry_after: secs(seconds),
    }
}

/// Whether `a` and `b` land in the same bucket of the limit.
fn same_key(limit: &Limit, a: &Request<'_>, b: &Request<'_>) -> bool {
    limit.key_of(a, None) == limit.key_of(b, None)
}

fn args(pairs: &[(&'static str, TypedData)]) -> Vec<Arg> {
    pairs
        .iter()
        .map(|(name, value)| Arg {
            name: Bytes::from_static(name.as_bytes()),
            value: value.clone(),
        })
        .collect()
}

// ---- key specifications ----

#[test]
fn parses_every_key_kind_and_prints_it_back() {
    for (spec, canonical) in [
        ("src", "src"),
        ("src/32", "src"),
        ("src/24", "src/24"),
        ("src/0", "src/0"),
        ("src/64", "src"),
        ("src/48", "src/48"),
        ("src/128", "src/128"),
        ("src/24/48", "src/24/48"),
        ("src/32/56", "src/56"),
        ("src/16/64", "src/16"),
        ("src/32/32", "src/32/32"),
        ("asn", "asn"),
        ("host", "host"),
        ("path", "path"),
        ("method", "method"),
        ("arg:tenant", "arg:tenant"),
        ("global", "global"),
        ("src+path", "src+path"),
        (" src + path ", "src+path"),
        ("asn+host+arg:a+arg:b", "asn+host+arg:a+arg:b"),
    ] {
        let key = KeySpec::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(key.to_string(), canonical, "{spec}");
        assert_eq!(KeySpec::parse(canonical).unwrap(), key, "{spec} round trip");
    }
}

#[test]
fn rejects_bad_key_specifications() {
    for (spec, error) in [
        ("", "empty key"),
        ("src+", "empty key part"),
        ("pth", "unknown key part \"pth\""),
        ("SRC", "unknown key part"),
        ("src/", "bad prefix length"),
        ("src/x", "bad prefix length"),
        ("src/-1", "bad prefix length"),
        ("src/129", "above 128"),
        ("src/300", "above 128"),
        ("src/33/64", "IPv4 prefix length 33 is above 32"),
        ("src/24/129", "IPv6 prefix length 129 is above 128"),
        ("src/24/48/8", "expected src/N or src/N/M"),
        ("arg:", "needs an argument name"),
        ("src+src/24", "appears twice"),
        ("path+path", "appears twice"),
        ("arg:a+arg:a", "appears twice"),
        ("global+src", "cannot be combined"),
    ] {
        let e = KeySpec::parse(spec).unwrap_err().to_string();
        assert!(e.contains(error), "{spec:?}: {e}");
    }
}

#[test]
fn key_errors_name_the_part() {
    // A bad key is refused while the configuration is read (see `spec.rs` and the
    // configuration tests for the `file:line: limit "login".key:` prefix).
    let e = KeySpec::parse("src+pth").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown key part \"pth\" (expected src, src/N, src/N/M, asn, host, path, method, \
         arg:NAME, global)"
    );
}

#[test]
fn build_rejects_values_the_config_should_have_caught() {
    for (config, error) in [
        (config("a", "src", 0.0, 1), "above 0"),
        (config("a", "src", -1.0, 1), "above 0"),
        (config("a", "src", f64::NAN, 1), "above 0"),
        (config("a", "src", f64::INFINITY, 1), "above 0"),
        (config("a", "src", 1e-300, 1), "too low"),
        (config("a", "src", 1e-9, 100), "too low"),
        (config("a", "src", 1.0, 0), "burst"),
        (
            LimitConfig {
                max_keys: Some(0),
                ..config("a", "src", 1.0, 1)
            },
            "max_keys",
        ),
    ] {
        let e = Limits::build(&[config], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("limit \"a\": ") && e.contains(error), "{e}");
    }
    // Names are unique per kind: checked with the other rule settings
    // (`engine::settings`, `names_are_unique_per_kind`).
    // Extremes that are valid.
    Limits::build(&[config("a", "src", 1e12, u32::MAX)], None, None).unwrap();
    Limits::build(&[config("a", "src", 1e-9, 1)], None, None).unwrap();
}

proptest! {
    #[test]
    fn parser_never_panics(spec in "\\PC{0,40}") {
        let _ = KeySpec::parse(&spec);
    }

    #[test]
    fn parser_never_panics_on_near_misses(
        spec in "((src(/[0-9]{0,4}){0,3})|asn|host|path|method|global|arg:[a-z]{0,3}|[+/: ]){0,6}"
    ) {
        if let Ok(key) = KeySpec::parse(&spec) {
            prop_assert_eq!(KeySpec::parse(&key.to_string()).unwrap(), key);
        }
    }
}

// ---- which requests share a bucket ----

#[test]
fn src_is_the_ipv4_address() {
    let limits = one(config("l", "src", 1.0, 1));
    let limit = only(&limits);
    assert!(same_key(limit, &from("192.0.2.7"), &from("192.0.2.7")));
    assert!(!same_key(limit, &from("192.0.2.7"), &from("192.0.2.8")));
    assert_eq!(
        limit.describe_key(&from("192.0.2.7"), None),
        "src=192.0.2.7"
    );
}

#[test]
fn src_is_the_ipv6_slash_64() {
    let limits = one(config("l", "src", 1.0, 1));
    let limit = only(&limits);
    let a = from("2001:db8:1:2::1");
    assert!(same_key(
        limit,
        &a,
        &from("2001:db8:1:2:ffff:ffff:ffff:ffff")
    ));
    assert!(!same_key(limit, &a, &from("2001:db8:1:3::1")));
    assert_eq!(limit.describe_key(&a, None), "src=2001:db8:1:2::/64");
    // Behaviour, not just hashes: the /64 shares one token.
    let now = Instant::now();
    assert_eq!(limit.take(&a, None, now), Take::Allowed);
    assert_eq!(limit.take(&from("2001:db8:1:2::99"), None, now), denied(1));
    assert_eq!(
        limit.take(&from("2001:db8:1:3::1"), None, now),
        Take::Allowed
    );
}

#[test]
fn ipv4_mapped_sources_are_ipv4() {
    let limits = one(config("l", "src", 1.0, 1));
    let limit = only(&limits);
    let mapped = Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped();
    let message = Message {
        name: Bytes::from_static(b"guard-check"),
        args: args(&[("src", TypedData::Ipv6(mapped))]),
    };
    let request = Request::from_message(&message);
    assert_eq!(
        request.src,
        Some(ip("203.0.113.7")),
        "canonicalised by Request"
    );
    assert!(same_key(limit, &request, &from("203.0.113.7")));
    // A /64 of IPv6 would have merged it with the whole ::ffff:0:0/96.
    assert!(!same_key(limit, &request, &from("203.0.113.8")));
}

#[test]
fn src_prefix_lengths() {
    let limits = Limits::build(
        &[
            config("v4", "src/24", 1.0, 1),
            config("v6", "src/48", 1.0, 1),
            config("both", "src/16/32", 1.0, 1),
        ],
        None,
        None,
    )
    .unwrap();
    let [v4, v6, both]: [&Limit; 3] = limits.iter().collect::<Vec<_>>().try_into().unwrap();

    assert!(same_key(v4, &from("192.0.2.7"), &from("192.0.2.200")));
    assert!(!same_key(v4, &from("192.0.2.7"), &from("192.0.3.7")));
    assert!(
        !same_key(v4, &from("2001:db8:0:1::1"), &from("2001:db8:0:2::1")),
        "IPv6 stays /64"
    );
    assert_eq!(
        v4.describe_key(&from("192.0.2.7"), None),
        "src=192.0.2.0/24"
    );

    assert!(same_key(
        v6,
        &from("2001:db8:7:1::1"),
        &from("2001:db8:7:ffff::1")
    ));
    assert!(!same_key(
        v6,
        &from("2001:db8:7::1"),
        &from("2001:db8:8::1")
    ));
    assert!(
        !same_key(v6, &from("192.0.2.7"), &from("192.0.2.8")),
        "IPv4 stays /32"
    );
    assert_eq!(
        v6.describe_key(&from("2001:db8:7:1::1"), None),
        "src=2001:db8:7::/48"
    );

    assert!(same_key(both, &from("10.1.2.3"), &from("10.1.200.200")));
    assert!(!same_key(both, &from("10.1.2.3"), &from("10.2.2.3")));
    assert!(same_key(
        both,
        &from("2001:db8:1::1"),
        &from("2001:db8:ffff::1")
    ));
    assert!(!same_key(both, &from("2001:db8::1"), &from("2001:db9::1")));
    // Families never share a bucket, even when the masked bits agree.
    let zero = Limits::build(&[config("z", "src/0/0", 1.0, 1)], None, None).unwrap();
    assert!(same_key(only(&zero), &from("1.2.3.4"), &from("5.6.7.8")));
    assert!(!same_key(only(&zero), &from("1.2.3.4"), &from("::1")));
    assert_eq!(
        only(&zero).describe_key(&from("1.2.3.4"), None),
        "src=0.0.0.0/0"
    );
}

#[test]
fn asn_key() {
    let limits = one(config("l", "asn", 1.0, 1));
    let limit = only(&limits);
    let (a, b) = (from("192.0.2.1"), from("198.51.100.1"));
    assert_eq!(limit.key_of(&a, Some(64496)), limit.key_of(&b, Some(64496)));
    assert_ne!(limit.key_of(&a, Some(64496)), limit.key_of(&a, Some(64497)));
    assert_ne!(limit.key_of(&a, Some(64496)), limit.key_of(&a, None));
    assert_eq!(
        limit.key_of(&a, None),
        limit.key_of(&b, None),
        "unknown ASNs share a bucket"
    );
    assert!(only(&limits).spec().key.uses_asn());
    assert!(!only(&one(config("l", "src", 1.0, 1))).spec().key.uses_asn());
    assert_eq!(limit.describe_key(&a, Some(64496)), "asn=AS64496");
    assert_eq!(limit.describe_key(&a, None), "asn=(none)");
}

#[test]
fn host_key_is_case_insensitive_without_port() {
    let limits = one(config("l", "host", 1.0, 1));
    let limit = only(&limits);
    let host = |h: &'static str| Request {
        host: Some(h.as_bytes()),
        ..Request::default()
    };
    assert!(same_key(
        limit,
        &host("Example.COM"),
        &host("example.com:8443")
    ));
    assert!(!same_key(limit, &host("example.com"), &host("example.org")));
    assert!(same_key(
        limit,
        &host("[2001:DB8::1]:443"),
        &host("[2001:db8::1]")
    ));
    let long = "A".repeat(200);
    let long_lower = long.to_ascii_lowercase();
    assert!(same_key(
        limit,
        &Request {
            host: Some(long.as_bytes()),
            ..Request::default()
        },
        &Request {
            host: Some(long_lower.as_bytes()),
            ..Request::default()
        },
    ));
    assert!(
        same_key(limit, &Request::default(), &host(":80")),
        "no host name is absent"
    );
    assert!(!same_key(limit, &Request::default(), &host("example.com")));
    assert_eq!(
        limit.describe_key(&host("Example.com:80"), None),
        "host=example.com"
    );
    assert_eq!(limit.describe_key(&Request::default(), None), "host=(none)");
}

#[test]
fn path_and_method_keys_are_bytes_as_sent() {
    let limits = Limits::build(
        &[config("p", "path", 1.0, 1), config("m", "method", 1.0, 1)],
        None,
        None,
    )
    .unwrap();
    let [path, method]: [&Limit; 2] = limits.iter().collect::<Vec<_>>().try_into().unwrap();
    let r = |p: &'static str, m: &'static str| Request {
        path: Some(p.as_bytes()),
        method: Some(m.as_bytes()),
        ..Request::default()
    };
    assert!(same_key(path, &r("/a", "GET"), &r("/a", "POST")));
    assert!(!same_key(path, &r("/a", "GET"), &r("/A", "GET")));
    assert!(!same_key(path, &r("/a", "GET"), &r("/a/", "GET")));
    assert!(same_key(method, &r("/a", "GET"), &r("/b", "GET")));
    assert!(!same_key(method, &r("/a", "GET"), &r("/a", "POST")));
    assert_eq!(
        path.describe_key(&r("/caf\u{e9}\n", "GET"), None),
        "path=/caf\\xc3\\xa9\\n"
    );
    assert_eq!(method.describe_key(&r("/", "PUT"), None), "method=PUT");
}

#[test]
fn arg_key() {
    let limits = one(config("l", "arg:tenant", 1.0, 1));
    let limit = only(&limits);
    let with = |value: TypedData| args(&[("src", TypedData::str("192.0.2.1")), ("tenant", value)]);
    let (acme, acme2, other) = (
        with(TypedData::str("acme")),
        with(TypedData::str("acme")),
        with(TypedData::str("other")),
    );
    let (seven, seven_str) = (with(TypedData::Int64(7)), with(TypedData::str("7")));
    let (null, empty, none) = (with(TypedData::Null), with(TypedData::str("")), args(&[]));
    let addr = with(TypedData::Ipv6(
        Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped(),
    ));
    fn r(a: &[Arg]) -> Request<'_> {
        Request {
            args: a.iter().map(crate::spop::ArgRef::of).collect(),
            ..from("192.0.2.1")
        }
    }
    assert!(same_key(limit, &r(&acme), &r(&acme2)));
    assert!(!same_key(limit, &r(&acme), &r(&other)));
    assert!(
        !same_key(limit, &r(&seven), &r(&seven_str)),
        "typed values keep their type"
    );
    assert!(
        same_key(limit, &r(&null), &r(&empty)),
        "NULL and empty are absent"
    );
    assert!(
        same_key(limit, &r(&null), &r(&none)),
        "absent is one bucket"
    );
    assert!(!same_key(limit, &r(&none), &r(&acme)));
    assert_eq!(limit.describe_key(&r(&acme), None), "arg:tenant=acme");
    assert_eq!(limit.describe_key(&r(&seven), None), "arg:tenant=7");
    assert_eq!(limit.describe_key(&r(&addr), None), "arg:tenant=192.0.2.9");
    assert_eq!(limit.describe_key(&r(&none), None), "arg:tenant=(none)");
}

#[test]
fn global_key_is_one_bucket() {
    let limits = one(config("l", "global", 1.0, 2));
    let limit = only(&limits);
    let now = Instant::now();
    assert_eq!(limit.take(&from("192.0.2.1"), None, now), Take::Allowed);
    assert_eq!(
        limit.take(&from("2001:db8::1"), Some(1), now),
        Take::Allowed
    );
    assert_eq!(limit.take(&Request::default(), None, now), denied(1));
    assert_eq!(limit.key_count(), 1);
    assert_eq!(limit.describe_key(&Request::default(), None), "global");
}

#[test]
fn combined_keys() {
    let limits = one(config("l", "src+path", 1.0, 1));
    let limit = only(&limits);
    let r = |src: &str, path: &'static str| Request {
        path: Some(path.as_bytes()),
        ..from(src)
    };
    assert!(same_key(
        limit,
        &r("192.0.2.1", "/login"),
        &r("192.0.2.1", "/login")
    ));
    assert!(!same_key(
        limit,
        &r("192.0.2.1", "/login"),
        &r("192.0.2.2", "/login")
    ));
    assert!(!same_key(
        limit,
        &r("192.0.2.1", "/login"),
        &r("192.0.2.1", "/logout")
    ));
    assert_eq!(
        limit.describe_key(&r("192.0.2.7", "/login"), None),
        "src=192.0.2.7 path=/login"
    );
    // Length prefixes keep part boundaries: ("ab", "c") is not ("a", "bc").
    let two = one(config("l", "path+method", 1.0, 1));
    let pm = |p: &'static str, m: &'static str| Request {
        path: Some(p.as_bytes()),
        method: Some(m.as_bytes()),
        ..Request::default()
    };
    assert!(!same_key(only(&two), &pm("ab", "c"), &pm("a", "bc")));
}

#[test]
fn absent_values_share_one_bucket_per_other_parts() {
    let limits = one(config("l", "src+host", 1.0, 1));
    let limit = only(&limits);
    let now = Instant::now();
    // Leaving the Host header out does not escape the limit...
    assert_eq!(limit.take(&from("192.0.2.1"), None, now), Take::Allowed);
    assert_eq!(limit.take(&from("192.0.2.1"), None, now), denied(1));
    // ...and is still per source.
    assert_eq!(limit.take(&from("192.0.2.2"), None, now), Take::Allowed);
    // No source at all is one more bucket.
    assert_eq!(limit.take(&Request::default(), None, now), Take::Allowed);
    assert_eq!(limit.take(&Request::default(), None, now), denied(1));
    assert_eq!(
        limit.describe_key(&Request::default(), None),
        "src=(none) host=(none)"
    );
}

// ---- conditions ----

#[test]
fn conditions() {
    let limits = one(LimitConfig {
        path_prefix: Some("/login".into()),
        methods: vec!["POST".into(), "PUT".into()],
        host: Some("example.com".into()),
        ..config("login", "src+path", 1.0, 5)
    });
    let limit = only(&limits);
    let r = |method: Option<&'static str>,
             path: Option<&'static str>,
             host: Option<&'static str>| Request {
        method: method.map(str::as_bytes),
        path: path.map(str::as_bytes),
        host: host.map(str::as_bytes),
        ..from("192.0.2.1")
    };
    let ok = (Some("POST"), Some("/login"), Some("example.com"));
    assert!(limit.applies(&r(ok.0, ok.1, ok.2)));
    assert!(limit.applies(&r(
        Some("post"),
        Some("/login/form"),
        Some("EXAMPLE.com:443")
    )));
    assert!(
        limit.applies(&r(Some("put"), Some("/loginx"), Some("example.com"))),
        "a byte prefix"
    );
    assert!(!limit.applies(&r(Some("GET"), ok.1, ok.2)));
    assert!(
        !limit.applies(&r(None, ok.1, ok.2)),
        "no method never matches a method list"
    );
    assert!(!limit.applies(&r(ok.0, Some("/logi"), ok.2)));
    assert!(
        !limit.applies(&r(ok.0, Some("/Login"), ok.2)),
        "paths are case-sensitive"
    );
    assert!(
        !limit.applies(&r(ok.0, None, ok.2)),
        "no path never matches a prefix"
    );
    assert!(!limit.applies(&r(ok.0, ok.1, Some("example.org"))));
    assert!(!limit.applies(&r(ok.0, ok.1, Some("www.example.com"))));
    assert!(
        !limit.applies(&r(ok.0, ok.1, None)),
        "no host never matches a host"
    );
    assert_eq!(
        limit.describe(),
        "key src+path, 1/s burst 5, POST,PUT /login* host example.com"
    );

    let any = one(config("any", "src", 0.5, 3));
    assert!(
        only(&any).applies(&Request::default()),
        "no conditions: everything"
    );
    assert_eq!(only(&any).describe(), "key src, 0.5/s burst 3");

    let with_port = one(LimitConfig {
        host: Some("example.com:8080".into()),
        ..config("p", "src", 1.0, 1)
    });
    let h = |host: &'static str| Request {
        host: Some(host.as_bytes()),
        ..Request::default()
    };
    assert!(
        only(&with_port).applies(&h("example.com")),
        "a configured port is ignored too"
    );
}

// ---- buckets over time ----

#[test]
fn burst_then_deny_with_retry_after() {
    let limits = one(config("login", "src", 1.0, 5));
    let limit = only(&limits);
    let (r, now) = (from("192.0.2.1"), Instant::now());
    for i in 0..5 {
        assert_eq!(limit.take(&r, None, now), Take::Allowed, "token {i}");
    }
    assert_eq!(limit.take(&r, None, now), denied(1));
    assert_eq!(
        limit.take(&r, None, now + millis(999)),
        denied(1),
        "1 ms left rounds up to 1 s"
    );
    assert_eq!(limit.take(&r, None, now + secs(1)), Take::Allowed);
    assert_eq!(limit.take(&r, None, now + secs(1)), denied(1));

    let slow = one(config("slow", "src", 0.25, 2));
    let limit = only(&slow);
    assert_eq!(limit.take(&r, None, now), Take::Allowed);
    assert_eq!(limit.take(&r, None, now), Take::Allowed);
    assert_eq!(limit.take(&r, None, now), denied(4));
    assert_eq!(
        limit.take(&r, None, now + millis(1)),
        denied(4),
        "3.999 s rounds up"
    );
    assert_eq!(limit.take(&r, None, now + millis(3001)), denied(1));

    let fast = one(config("fast", "src", 3.0, 1));
    let limit = only(&fast);
    assert_eq!(limit.take(&r, None, now), Take::Allowed);
    assert_eq!(
        limit.take(&r, None, now),
        denied(1),
        "333 ms is at least 1 s"
    );
}

#[test]
fn refills_over_virtual_time() {
    let limits = one(config("l", "src", 2.0, 4));
    let limit = only(&limits);
    let (r, now) = (from("192.0.2.1"), Instant::now());
    let allowed = |at: Instant, n: usize| {
        (0..n)
            .filter(|_| limit.take(&r, None, at) == Take::Allowed)
            .count()
    };
    assert_eq!(allowed(now, 10), 4, "burst");
    assert_eq!(allowed(now + millis(500), 10), 1, "one token per 500 ms");
    assert_eq!(allowed(now + millis(1500), 10), 2);
    assert_eq!(allowed(now + secs(100), 10), 4, "never more than the burst");
    // Steady state at exactly the rate: every take allowed.
    let start = now + secs(200);
    for i in 0..100 {
        assert_eq!(
            limit.take(&r, None, start + millis(500 * i)),
            Take::Allowed,
            "{i}"
        );
    }
}

#[test]
fn fractional_rate() {
    // 0.1/s: one token every 10 s.
    let limits = one(config("l", "src", 0.1, 1));
    let limit = only(&limits);
    let (r, now) = (from("192.0.2.1"), Instant::now());
    assert_eq!(limit.take(&r, None, now), Take::Allowed);
    assert_eq!(limit.take(&r, None, now), denied(10));
    assert_eq!(limit.take(&r, None, now + millis(9_900)), denied(1));
    assert_eq!(limit.take(&r, None, now + secs(10)), Take::Allowed);
    assert_eq!(limit.take(&r, None, now + secs(10)), denied(10));
    assert_eq!(only(&limits).describe(), "key src, 0.1/s burst 1");
}

#[test]
fn times_before_the_build_count_from_the_build() {
    let now = Instant::now();
    let limits = one(config("l", "src", 1.0, 1));
    let limit = only(&limits);
    let r = from("192.0.2.1");
    assert_eq!(limit.take(&r, None, now), Take::Allowed);
    assert_eq!(limit.take(&r, None, now + millis(999)), denied(1));
    assert_eq!(
        limit.take(&r, None, now + secs(1)),
        Take::Allowed,
        "exact although `now` predates the build"
    );
}

#[test]
fn out_of_order_times_never_grant_more() {
    let limits = one(config("l", "src", 1.0, 2));
    let limit = only(&limits);
    let (r, now) = (from("192.0.2.1"), Instant::now());
    assert_eq!(limit.take(&r, None, now + secs(10)), Take::Allowed);
    assert_eq!(limit.take(&r, None, now + secs(10)), Take::Allowed);
    // A thread that read its clock earlier sees less refill, not more.
    assert_eq!(limit.take(&r, None, now + secs(9)), denied(2));
    assert_eq!(limit.take(&r, None, now), denied(11));
}

#[test]
fn dry_run_flag_is_carried() {
    let limits = Limits::build(
        &[
            config("a", "src", 1.0, 1),
            LimitConfig {
                dry_run: true,
                ..config("b", "src", 1.0, 1)
            },
        ],
        None,
        None,
    )
    .unwrap();
    let flags: Vec<(&[u8], bool)> = limits
        .iter()
        .map(|l| (&l.name()[..], l.dry_run()))
        .collect();
    assert_eq!(flags, [(&b"a"[..], false), (&b"b"[..], true)]);
    // A dry-run limit still counts: the engine reports its would-be deny.
    let (limit, r, now) = (
        limits.iter().nth(1).unwrap(),
        from("192.0.2.1"),
        Instant::now(),
    );
    assert_eq!(limit.take(&r, None, now), Take::Allowed);
    assert_eq!(limit.take(&r, None, now), denied(1));
}

// ---- reloads ----

#[test]
fn state_carries_over_for_unchanged_limits_only() {
    let (r, now) = (from("192.0.2.1"), Instant::now());
    let configs = [
        config("same", "src", 1.0, 1),
        config("rate", "src", 1.0, 1),
        config("dry", "src", 1.0, 1),
        config("gone", "src", 1.0, 1),
        config("key", "src", 1.0, 1),
    ];
    let old = Limits::build(&configs, None, None).unwrap();
    for limit in old.iter() {
        assert_eq!(limit.take(&r, None, now), Take::Allowed);
        assert_eq!(limit.take(&r, None, now), denied(1));
    }
    assert_eq!(old.key_count(), 5);

    let new_configs = [
        config("new", "src", 1.0, 1),
        config("key", "src/24", 1.0, 1),
        LimitConfig {
            dry_run: true,
            ..config("dry", "src", 1.0, 1)
        },
        config("rate", "src", 2.0, 1),
        config("same", "src", 1.0, 1),
    ];
    let new = Limits::build(&new_configs, Some(&old), None).unwrap();
    let outcome: Vec<(String, Take)> = new
        .iter()
        .map(|l| {
            (
                String::from_utf8_lossy(l.name()).into_owned(),
                l.take(&r, None, now),
            )
        })
        .collect();
    let expect = |name: &str, take| (name.to_string(), take);
    assert_eq!(
        outcome,
        [
            expect("new", Take::Allowed),
            expect("key", Take::Allowed),
            expect("dry", denied(1)),
            expect("rate", Take::Allowed),
            expect("same", denied(1)),
        ],
        "order follows the new config; unchanged (and dry_run-only changes) keep their buckets"
    );
    assert!(new.iter().nth(2).unwrap().dry_run());
    // The carried buckets are shared: the old set, still serving in-flight requests, sees
    // the same state.
    let old_same = old.iter().find(|l| &l.name()[..] == b"same").unwrap();
    assert_eq!(old_same.take(&r, None, now + secs(1)), Take::Allowed);
    let new_same = new.iter().find(|l| &l.name()[..] == b"same").unwrap();
    assert_eq!(new_same.take(&r, None, now + secs(1)), denied(1));
    assert!(Arc::ptr_eq(
        old_same.local_buckets(),
        new_same.local_buckets()
    ));
    // A removed limit's buckets go with the old set; carried ones stay.
    let gone = Arc::downgrade(
        old.iter()
            .find(|l| &l.name()[..] == b"gone")
            .unwrap()
            .local_buckets(),
    );
    let same = Arc::downgrade(old_same.local_buckets());
    drop(old);
    assert!(gone.upgrade().is_none(), "removed limit's state freed");
    assert!(same.upgrade().is_some());
    assert_eq!(new.len(), 5);

    // A renamed limit is a new limit.
    let renamed = Limits::build(&[config("same2", "src", 1.0, 1)], Some(&new), None).unwrap();
    assert_eq!(only(&renamed).take(&r, None, now), Take::Allowed);
    // No limits at all.
    let none = Limits::build(&[], Some(&new), None).unwrap();
    assert!(none.is_empty() && none.key_count() == 0);
}

// ---- memory ----

/// Resident set size in bytes, from /proc/self/statm (pages of 4 KiB).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Set in the child process that [`a_flood_of_distinct_sources_stays_under_the_cap`]
/// starts to measure its resident memory without the other tests' allocations.
const FLOOD_CHILD: &str = "SPOA_GUARD_LIMITS_FLOOD_CHILD";

#[test]
fn a_flood_of_distinct_sources_stays_under_the_cap() {
    if std::env::var_os(FLOOD_CHILD).is_some() || !Path::new("/proc/self/statm").exists() {
        flood(std::env::var_os(FLOOD_CHILD).is_some());
        return;
    }
    // RSS is per process and the other tests run in this one: measure in a child that
    // runs only this test.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "limits::tests::a_flood_of_distinct_sources_stays_under_the_cap",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(FLOOD_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the flood failed in the child process"
    );
    assert!(stdout.contains("1 passed"), "the child ran the flood");
}

/// Drives 2M distinct sources through a limit capped at 100k keys.
fn flood(check_rss: bool) {
    const CAP: usize = 100_000;
    const FLOOD: u32 = 2_000_000;
    let limits = one(LimitConfig {
        max_keys: Some(CAP),
        ..config("per-client", "src", 10.0, 20)
    });
    let limit = only(&limits);
    let now = Instant::now();
    let before = rss();
    let mut refused = 0_usize;
    for i in 0..FLOOD {
        let r = Request {
            src: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))),
            ..Request::default()
        };
        match limit.take(&r, None, now) {
            Take::Allowed => {}
            // Beyond the cap, a new key's first request can only be denied by the sketch
            // when all its cells are taken by keys over the limit: none are here.
            Take::Denied { .. } => refused += 1,
        }
        if i % 50_000 == 0 {
            assert!(
                limit.key_count() <= CAP,
                "{} keys after {i}",
                limit.key_count()
            );
        }
    }
    let grown = rss().saturating_sub(before);
    assert_eq!(limit.key_count(), CAP);
    assert_eq!(refused, 0, "a first request is never denied");
    assert_eq!(limit.approximate(), u64::from(FLOOD) - CAP as u64);
    // The tables: 100k keys · 17 B at a load factor between 7/16 and 7/8: 2 to 4 MiB.
    let table = limit.local_buckets().table_bytes();
    assert!(table <= 4 << 20, "tables hold {table} bytes");
    if check_rss {
        // Without the cap the same flood grows RSS by about 70 MiB.
        println!(
            "flood of {FLOOD} sources, cap {CAP}: RSS +{} KiB, tables {} KiB",
            grown >> 10,
            table >> 10
        );
        assert!(grown < 16 << 20, "RSS grew by {} MiB", grown >> 20);
    }

    // Tracked keys are still limited at the cap.
    let first = Request {
        src: Some(ip("10.0.0.0")),
        ..Request::default()
    };
    for _ in 0..19 {
        assert_eq!(limit.take(&first, None, now), Take::Allowed);
    }
    assert_eq!(limit.take(&first, None, now), denied(1));

    // The flood's buckets (one token each at 10/s) are full again after 100 ms, the
    // drained one after 2 s: eviction empties the map and gives the memory back.
    limits.retain_recent(now + millis(99));
    assert_eq!(limit.key_count(), CAP, "not yet full: nothing evicted");
    limits.retain_recent(now + millis(100));
    assert_eq!(limit.key_count(), 1, "only the drained key is left");
    limits.retain_recent(now + secs(2));
    assert_eq!(limit.key_count(), 0);
    assert!(
        limit.local_buckets().table_bytes() < 64 << 10,
        "{}",
        limit.local_buckets().table_bytes()
    );
    // And new sources are tracked again.
    assert_eq!(
        limit.take(&from("192.0.2.1"), None, now + secs(5)),
        Take::Allowed
    );
    assert_eq!(limit.key_count(), 1);
}

#[test]
fn retain_recent_evicts_idle_keys_only_and_changes_no_decision() {
    let limits = one(config("l", "src", 1.0, 3));
    let limit = only(&limits);
    let now = Instant::now();
    let (idle, busy) = (from("192.0.2.1"), from("192.0.2.2"));
    assert_eq!(limit.take(&idle, None, now), Take::Allowed);
    for _ in 0..3 {
        assert_eq!(limit.take(&busy, None, now + secs(1)), Take::Allowed);
    }
    assert_eq!(limits.key_count(), 2);
    // At +1 s `idle` has refilled (1 token used, 1 s at 1/s), `busy` has not.
    limits.retain_recent(now + secs(1));
    assert_eq!(limits.key_count(), 1);
    assert_eq!(
        limit.take(&busy, None, now + secs(1)),
        denied(1),
        "busy kept its state"
    );
    for _ in 0..3 {
        assert_eq!(
            limit.take(&idle, None, now + secs(1)),
            Take::Allowed,
            "evicted = full bucket"
        );
    }
    assert_eq!(limit.take(&idle, None, now + secs(1)), denied(1));
}

#[test]
fn key_counts_add_up_over_limits() {
    let limits = Limits::build(
        &[config("a", "src", 1.0, 1), config("b", "path", 1.0, 1)],
        None,
        None,
    )
    .unwrap();
    let now = Instant::now();
    for i in 0..10_u8 {
        let r = from(&format!("192.0.2.{i}"));
        for limit in limits.iter() {
            limit.take(&r, None, now);
        }
    }
    let counts: Vec<usize> = limits.iter().map(Limit::key_count).collect();
    assert_eq!(counts, [10, 1]);
    assert_eq!(limits.key_count(), 11);
}

#[test]
fn the_cap_is_exact_under_concurrent_inserts() {
    const CAP: usize = 1_000;
    let limits = Arc::new(one(LimitConfig {
        max_keys: Some(CAP),
        ..config("l", "src", 1.0, 1)
    }));
    let now = Instant::now();
    let tracked = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4_u32)
        .map(|t| {
            let (limits, tracked) = (Arc::clone(&limits), Arc::clone(&tracked));
            thread::spawn(move || {
                for i in 0..2_000_u32 {
                    let r = Request {
                        src: Some(IpAddr::V4(Ipv4Addr::from((t << 24) | i))),
                        ..Request::default()
                    };
                    if only(&limits).take(&r, None, now) == Take::Allowed {
                        tracked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every first request is allowed (the keys beyond the cap by the sketch, but for the
    // rare one whose 4 cells all collide with keys already at their burst of 1: about
    // (1 − e^(−7000/65536))^4 ≈ 10⁻⁴ each), and the table holds exactly the cap.
    let allowed = tracked.load(Ordering::Relaxed);
    assert!((7_990..=8_000).contains(&allowed), "{allowed}");
    assert_eq!(limits.key_count(), CAP);
    assert_eq!(only(&limits).approximate(), 8_000 - CAP as u64);
}

// ---- concurrency ----

#[test]
fn threads_sharing_a_key_never_over_grant() {
    const RATE: f64 = 1_000.0;
    const BURST: u32 = 50;
    const THREADS: u64 = 4;
    const TAKES: u64 = 20_000;
    let limits = Arc::new(one(config("l", "global", RATE, BURST)));
    let start = Instant::now();
    let allowed = Arc::new(AtomicUsize::new(0));
    // Each thread walks its own clock (different steps, so the threads' times interleave
    // out of order) over at most 2 s.
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (limits, allowed) = (Arc::clone(&limits), Arc::clone(&allowed));
            thread::spawn(move || {
                let step = Duration::from_nanos(2_000_000_000 / TAKES - t * 1_000);
                let r = from("192.0.2.1");
                let mut now = start + Duration::from_micros(t * 7);
                for _ in 0..TAKES {
                    if only(&limits).take(&r, None, now) == Take::Allowed {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                    now += step;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let allowed = allowed.load(Ordering::Relaxed);
    // Times span [start, start + 2 s]: at most burst + rate · 2 s.
    let bound = BURST as usize + 2_000;
    assert!(allowed <= bound, "{allowed} allowed, bound {bound}");
    assert!(
        allowed >= bound / 2,
        "{allowed} allowed: the threads did share the budget"
    );
}

// ---- equivalence with governor ----

/// The emission interval the buckets use, to configure governor the same way.
fn governor_quota(limit: &Limit) -> Quota {
    let burst = NonZeroU32::new(limit.spec.burst()).unwrap();
    Quota::with_period(limit.local_buckets().period())
        .unwrap()
        .allow_burst(burst)
}

proptest! {
    /// Same algorithm, same decisions, same retry-after: governor's direct limiter on a
    /// fake clock, and one key of ours at the same times.
    #[test]
    fn decisions_match_governor(
        rate in prop_oneof![0.05_f64..5.0, 5.0_f64..5_000.0],
        burst in 1_u32..20,
        steps in proptest::collection::vec((0_u64..3_000, 1_usize..4), 1..60),
    ) {
        let limits = one(config("l", "src", rate, burst));
        let limit = only(&limits);
        let clock = FakeRelativeClock::default();
        let governor = RateLimiter::direct_with_clock(governor_quota(limit), clock.clone());
        let period = limit.local_buckets().period();
        let (r, start) = (from("192.0.2.1"), Instant::now());
        let mut elapsed = Duration::ZERO;
        for (permille, takes) in steps {
            // Advance by 0 to 3 emission intervals.
            let by = period * u32::try_from(permille).unwrap() / 1_000;
            elapsed += by;
            clock.advance(by);
            for _ in 0..takes {
                let ours = limit.take(&r, None, start + elapsed);
                let theirs = match governor.check() {
                    Ok(()) => Take::Allowed,
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(clock.now());
                        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                        Take::Denied { retry_after: secs(seconds.max(1)) }
                    }
                };
                prop_assert_eq!(ours, theirs, "at {:?}", elapsed);
            }
        }
    }
}

// ---- measurements (run by hand) ----

/// Memory per tracked key, ours against the alternatives, over RSS:
/// `cargo test --release --lib limits::tests::memory_per_key -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: run alone, in release mode"]
fn memory_per_key() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    const N: u32 = 1_000_000;
    let addr = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
    let report = |what: &str, before: usize| {
        let after = rss();
        println!(
            "{what}: {:.1} bytes/key",
            (after.saturating_sub(before)) as f64 / f64::from(N)
        );
    };
    let now = Instant::now();

    let before = rss();
    let limits = one(LimitConfig {
        max_keys: Some(2_000_000),
        ..config("l", "src", 1.0, 10)
    });
    for i in 0..N {
        only(&limits).take(
            &Request {
                src: Some(addr(i)),
                ..Request::default()
            },
            None,
            now,
        );
    }
    report(
        "ours (u64 hash -> u64 tat, 64 Mutex<HashMap> shards)",
        before,
    );
    println!(
        "  table estimate: {:.1} bytes/key",
        limits.iter().next().unwrap().local_buckets().table_bytes() as f64 / f64::from(N)
    );
    drop(limits);

    let before = rss();
    let clock = FakeRelativeClock::default();
    let governor =
        RateLimiter::dashmap_with_clock(Quota::per_second(NonZeroU32::new(1).unwrap()), clock);
    for i in 0..N {
        let _ = governor.check_key(&u64::from(i));
    }
    report("governor DashMapStateStore<u64>", before);
    drop(governor);

    let before = rss();
    let naive: Mutex<HashMap<IpAddr, (f64, Instant)>> = Mutex::new(HashMap::new());
    for i in 0..N {
        naive.lock().unwrap().insert(addr(i), (10.0, now));
    }
    report("naive Mutex<HashMap<IpAddr, (f64, Instant)>>", before);
    drop(naive);

    // Last: its many small allocations are not handed back to the OS.
    let before = rss();
    let naive: Mutex<HashMap<Vec<u8>, (f64, Instant)>> = Mutex::new(HashMap::new());
    for i in 0..N {
        let key = match addr(i) {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        naive.lock().unwrap().insert(key, (10.0, now));
    }
    report(
        "naive Mutex<HashMap<Vec<u8>, (f64, Instant)>> (key bytes)",
        before,
    );
}

#[test]
fn ipv6_addresses_in_one_slash_64_cannot_flood_the_map() {
    let limits = one(LimitConfig {
        max_keys: Some(10),
        ..config("l", "src", 1.0, 1_000)
    });
    let limit = only(&limits);
    let now = Instant::now();
    let base = u128::from("2001:db8:1:2::".parse::<Ipv6Addr>().unwrap());
    for i in 0..10_000_u128 {
        let r = Request {
            src: Some(IpAddr::V6(Ipv6Addr::from(base | (i * 7919)))),
            ..Request::default()
        };
        limit.take(&r, None, now);
    }
    assert_eq!(limit.key_count(), 1);
}

#[test]
fn keys_beyond_the_cap_are_still_limited() {
    // A limit full of quiet keys, then a botnet of new keys, each over its limit: before
    // the overflow sketch every one of them passed untracked.
    let limits = one(LimitConfig {
        max_keys: Some(1_000),
        ..config("per-client", "src", 1.0, 5)
    });
    let limit = only(&limits);
    let now = Instant::now();
    let request = |i: u32| Request {
        src: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))),
        ..Request::default()
    };
    for i in 0..1_000 {
        assert_eq!(limit.take(&request(i), None, now), Take::Allowed);
    }
    let mut admitted = 0;
    for bot in 0..5_000 {
        for _ in 0..20 {
            if limit.take(&request(100_000 + bot), None, now) == Take::Allowed {
                admitted += 1;
            }
        }
    }
    // At most each bot's burst of 5; a few fewer where the sketch's cells collide.
    assert!(admitted <= 5 * 5_000, "{admitted}");
    assert!(admitted >= 5 * 5_000 * 99 / 100, "{admitted}");
    assert_eq!(limit.approximate(), 5_000 * 20);
    // The bots are denied with a retry time, and peek agrees.
    assert!(matches!(
        limit.peek(&request(100_000), None, now),
        Take::Denied { .. }
    ));
    assert_eq!(limit.peek(&request(900_000), None, now), Take::Allowed);
}
