use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

const NOW: u32 = 1_800_000_000;

fn ban(target: &str, origin: &str, reason: &str, expires_at: u32) -> Ban {
    Ban {
        target: target.parse().unwrap(),
        origin: Arc::from(origin),
        reason: Arc::from(reason),
        since: NOW,
        expires_at,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn hit(store: &BanStore, addr: &str, asn: Option<u32>, now: u32) -> Option<String> {
    store
        .lookup(ip(addr), asn, now)
        .map(|h| h.target.to_string())
}

#[test]
fn the_most_specific_ban_covering_an_address_is_found() {
    let mut store = BanStore::new(100);
    store
        .add(ban("203.0.113.0/24", "manual", "INC-1", NOW + 60))
        .unwrap();
    store
        .add(ban("203.0.113.7", "login-abuse", "20 denies", NOW + 600))
        .unwrap();
    store
        .add(ban("2001:db8::/48", "manual", "INC-2", NOW + 60))
        .unwrap();
    store
        .add(ban("AS64496", "manual", "INC-3", NOW + 60))
        .unwrap();

    assert_eq!(
        hit(&store, "203.0.113.7", None, NOW).as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(
        hit(&store, "203.0.113.8", None, NOW).as_deref(),
        Some("203.0.113.0/24")
    );
    assert_eq!(hit(&store, "203.0.114.1", None, NOW), None);
    assert_eq!(
        hit(&store, "2001:db8:0:ffff::1", None, NOW).as_deref(),
        Some("2001:db8::/48")
    );
    assert_eq!(hit(&store, "2001:db9::1", None, NOW), None);
    // An IPv4-mapped IPv6 source is its IPv4 address.
    assert_eq!(
        hit(&store, "::ffff:203.0.113.9", None, NOW).as_deref(),
        Some("203.0.113.0/24")
    );
    // The AS, when no network covers the address.
    assert_eq!(
        hit(&store, "198.51.100.1", Some(64496), NOW).as_deref(),
        Some("AS64496")
    );
    assert_eq!(hit(&store, "198.51.100.1", Some(64497), NOW), None);

    let found = store.lookup(ip("203.0.113.7"), None, NOW).unwrap();
    assert_eq!(&found.origin[..], b"login-abuse");
    assert_eq!(found.expires_at, NOW + 600);
}

#[test]
fn a_ban_stops_denying_at_its_second() {
    let mut store = BanStore::new(10);
    store
        .add(ban("192.0.2.1", "manual", "t", NOW + 10))
        .unwrap();
    assert!(store.lookup(ip("192.0.2.1"), None, NOW + 9).is_some());
    assert!(store.lookup(ip("192.0.2.1"), None, NOW + 10).is_none());
    // A broader ban still applies once the narrower one has expired.
    store
        .add(ban("192.0.2.0/24", "manual", "t", NOW + 100))
        .unwrap();
    assert_eq!(
        hit(&store, "192.0.2.1", None, NOW + 10).as_deref(),
        Some("192.0.2.0/24")
    );
}

#[test]
fn expire_frees_what_is_due_in_expiry_order() {
    let mut store = BanStore::new(10);
    store
        .add(ban("192.0.2.3", "manual", "a", NOW + 30))
        .unwrap();
    store
        .add(ban("192.0.2.1", "manual", "a", NOW + 10))
        .unwrap();
    store.add(ban("AS1", "manual", "b", NOW + 20)).unwrap();
    assert!(store.expire(NOW + 9, usize::MAX).is_empty());
    let freed: Vec<String> = store
        .expire(NOW + 20, usize::MAX)
        .iter()
        .map(|b| b.target.to_string())
        .collect();
    assert_eq!(freed, ["192.0.2.1", "AS1"]);
    assert_eq!(store.len(), 1);
    assert_eq!(store.list()[0].target.to_string(), "192.0.2.3");
}

#[test]
fn expire_frees_at_most_what_it_is_asked() {
    let mut store = BanStore::new(10);
    for n in 1..=5 {
        store
            .add(ban(&format!("192.0.2.{n}"), "manual", "a", NOW + n))
            .unwrap();
    }
    assert_eq!(store.expire(NOW + 10, 2).len(), 2);
    assert_eq!(store.len(), 3);
    // What is left over stops denying anyway, and goes with the next call.
    assert!(store.lookup(ip("192.0.2.4"), None, NOW + 10).is_none());
    assert_eq!(store.expire(NOW + 10, usize::MAX).len(), 3);
}

#[test]
fn replacing_a_ban_moves_its_expiry() {
    let mut store = BanStore::new(1);
    store
        .add(ban("192.0.2.1", "manual", "first", NOW + 10))
        .unwrap();
    let added = store
        .add(ban("192.0.2.1", "manual", "second", NOW + 100))
        .unwrap();
    assert!(matches!(added, Added::Replaced(old) if &*old.reason == "first"));
    assert_eq!(store.len(), 1);
    // The first expiry's heap entry is a leftover: nothing is freed then.
    assert!(store.expire(NOW + 50, usize::MAX).is_empty());
    assert_eq!(
        &*store.get(&"192.0.2.1".parse().unwrap()).unwrap().reason,
        "second"
    );
    assert_eq!(store.expire(NOW + 100, usize::MAX).len(), 1);
    assert!(store.is_empty());
}

#[test]
fn max_entries_refuses_new_targets_only() {
    let mut store = BanStore::new(2);
    store
        .add(ban("192.0.2.1", "manual", "a", NOW + 10))
        .unwrap();
    store
        .add(ban("192.0.2.2", "manual", "a", NOW + 10))
        .unwrap();
    let err = store
        .add(ban("192.0.2.3", "manual", "a", NOW + 10))
        .unwrap_err();
    assert_eq!(err, AddError::Full { max_entries: 2 });
    assert!(err.to_string().contains("max_entries"));
    // Replacing one is fine.
    store
        .add(ban("192.0.2.2", "manual", "b", NOW + 20))
        .unwrap();
    assert_eq!(
        store.add(ban("192.0.2.9", "manual", "a", NOW)).unwrap_err(),
        AddError::AlreadyExpired
    );
}

#[test]
fn remove_lifts_exactly_one_target() {
    let mut store = BanStore::new(10);
    store
        .add(ban("192.0.2.0/24", "manual", "a", NOW + 10))
        .unwrap();
    store
        .add(ban("192.0.2.1", "manual", "a", NOW + 10))
        .unwrap();
    assert!(store.remove(&"192.0.2.0/25".parse().unwrap()).is_none());
    let lifted = store.remove(&"192.0.2.1".parse().unwrap()).unwrap();
    assert_eq!(lifted.target.to_string(), "192.0.2.1");
    assert_eq!(
        hit(&store, "192.0.2.1", None, NOW).as_deref(),
        Some("192.0.2.0/24")
    );
    store.remove(&"192.0.2.0/24".parse().unwrap()).unwrap();
    assert!(store.is_empty());
    assert_eq!(hit(&store, "192.0.2.1", None, NOW), None);
}

#[test]
fn labels_are_shared_and_counted_by_origin() {
    let mut store = BanStore::new(10);
    for n in 1..=3 {
        store
            .add(ban(
                &format!("192.0.2.{n}"),
                "login-abuse",
                "20 denies in 1m",
                NOW + 10,
            ))
            .unwrap();
    }
    store
        .add(ban("AS64496", "manual", "INC-9", NOW + 10))
        .unwrap();
    assert_eq!(
        store.count_by_origin(),
        vec![(Arc::from("login-abuse"), 3), (Arc::from("manual"), 1)]
    );
    store.remove(&"AS64496".parse().unwrap());
    store
        .add(ban("AS64497", "manual", "INC-10", NOW + 10))
        .unwrap();
    let listed = store.list();
    assert_eq!(listed.len(), 4);
    assert_eq!(&*listed[3].reason, "INC-10");
    assert_eq!(&*listed[0].reason, "20 denies in 1m");
}

#[test]
fn leftover_expiries_are_compacted() {
    let mut store = BanStore::new(10);
    for n in 0..1000u32 {
        store
            .add(ban("192.0.2.1", "manual", "again", NOW + 10 + n))
            .unwrap();
    }
    assert_eq!(store.len(), 1);
    assert_eq!(store.expire(NOW + 1008, usize::MAX).len(), 0);
    assert_eq!(store.expire(NOW + 1009, usize::MAX).len(), 1);
}

/// Networks of a small corner of the address space, so that they overlap often.
fn arb_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0u32..256, 24u8..=32).prop_map(|(low, len)| Target::network_of(
            IpAddr::from(std::net::Ipv4Addr::from(0xC000_0200 | low)),
            len
        )),
        (0u128..256, 120u8..=128).prop_map(|(low, len)| Target::network_of(
            IpAddr::from(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | low)),
            len
        )),
        (1u32..4).prop_map(Target::Asn),
    ]
}

fn covers(target: &Target, addr: IpAddr, asn: Option<u32>) -> bool {
    match *target {
        Target::Asn(a) => asn == Some(a),
        _ => Target::network_of(addr, target.prefix_len().unwrap_or(0)) == *target,
    }
}

proptest! {
    /// The store agrees with scanning the list: some ban in force covers the source
    /// exactly when the lookup finds one, and it finds the most specific network.
    #[test]
    fn lookup_agrees_with_a_scan(
        bans in proptest::collection::vec((arb_target(), 1u32..20), 0..40),
        removed in proptest::collection::vec(arb_target(), 0..10),
        low in 0u32..256, v6 in any::<bool>(), asn in proptest::option::of(1u32..4),
        now in 0u32..20,
    ) {
        let mut store = BanStore::new(1000);
        for (target, ttl) in &bans {
            store.add(Ban { target: *target, origin: Arc::from("o"), reason: Arc::from("r"),
                            since: NOW, expires_at: NOW + ttl }).unwrap();
        }
        for target in &removed {
            store.remove(target);
        }
        let addr = if v6 {
            IpAddr::from(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(low)))
        } else {
            IpAddr::from(std::net::Ipv4Addr::from(0xC000_0200 | low))
        };
        let now = NOW + now;
        let in_force: Vec<Ban> = store.list().into_iter()
            .filter(|b| b.expires_at > now && covers(&b.target, addr, asn)).collect();
        let found = store.lookup(addr, asn, now);
        prop_assert_eq!(found.is_some(), !in_force.is_empty());
        if let Some(found) = found {
            let best = in_force.iter().filter(|b| !matches!(b.target, Target::Asn(_)))
                .filter_map(|b| b.target.prefix_len()).max();
            match best {
                Some(len) => prop_assert_eq!(found.target.prefix_len(), Some(len)),
                None => prop_assert!(matches!(found.target, Target::Asn(_))),
            }
        }
        store.expire(now, usize::MAX);
        prop_assert!(store.list().iter().all(|b| b.expires_at > now));
    }
}
