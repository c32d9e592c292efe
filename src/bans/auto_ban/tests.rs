use super::*;

fn settings(toml: &str) -> AutoBanSettings {
    toml::from_str(toml).unwrap()
}

const LOGIN: &str = r#"
name = "login-abuse"
reasons = ["rate-limit"]
rules = ["login"]
hits = 3
window = "1m"
duration = "10m"
"#;

fn deny(reason: Reason, rule: &'static str) -> Verdict {
    Verdict::new(Decision::Deny, reason, Bytes::from_static(rule.as_bytes()))
}

#[test]
fn hits_within_the_window_trigger_a_ban_of_the_key() {
    let rule = settings(LOGIN).compile().unwrap();
    let src: IpAddr = "192.0.2.7".parse().unwrap();
    let t0 = Instant::now();
    let login = deny(Reason::RateLimit, "login");
    assert_eq!(rule.count(&login, src, None, t0), None);
    assert_eq!(rule.count(&login, src, None, t0), None);
    let trigger = rule.count(&login, src, None, t0).unwrap();
    assert_eq!(trigger.target, "192.0.2.7".parse().unwrap());
    assert_eq!((&*trigger.rule, trigger.dry_run), ("login-abuse", false));
    // The count starts again after a trigger.
    assert_eq!(rule.count(&login, src, None, t0), None);
    // Other reasons, other rules and allows do not count.
    for other in [
        deny(Reason::RateLimit, "per-client"),
        deny(Reason::UserAgent, "login"),
        Verdict::allow_none(),
    ] {
        for _ in 0..10 {
            assert_eq!(rule.count(&other, src, None, t0), None);
        }
    }
    assert_eq!(&**rule.ban_reason(), "3 rate-limit denies within 1m");
    assert_eq!(rule.triggers(), 1);
}

#[test]
fn denies_spread_wider_than_the_window_do_not_trigger() {
    let rule = settings(LOGIN).compile().unwrap();
    let src: IpAddr = "192.0.2.7".parse().unwrap();
    let login = deny(Reason::RateLimit, "login");
    let t0 = Instant::now();
    // One deny every 45 s: never 3 within a minute.
    for i in 0..20 {
        let at = t0 + Duration::from_secs(45 * i);
        assert_eq!(rule.count(&login, src, None, at), None, "deny {i}");
    }
    // Three within 20 s do.
    let t1 = t0 + Duration::from_secs(3600);
    let got: Vec<bool> = (0..3)
        .map(|i| {
            rule.count(&login, src, None, t1 + Duration::from_secs(10 * i))
                .is_some()
        })
        .collect();
    assert_eq!(got, [false, false, true]);
}

#[test]
fn keys_are_networks_or_asns() {
    assert_eq!(BanKey::parse("src"), Ok(BanKey::Src { v4: 32, v6: 64 }));
    assert_eq!(BanKey::parse("src/24"), Ok(BanKey::Src { v4: 24, v6: 64 }));
    assert_eq!(
        BanKey::parse("src/24/48"),
        Ok(BanKey::Src { v4: 24, v6: 48 })
    );
    assert_eq!(BanKey::parse("asn"), Ok(BanKey::Asn));
    for bad in ["src/33", "src/24/129", "dst", "src/24/48/1", "src/"] {
        assert!(BanKey::parse(bad).is_err(), "{bad}");
    }
    let v6: IpAddr = "2001:db8:1:2:3::9".parse().unwrap();
    assert_eq!(
        BanKey::parse("src").unwrap().target(v6, None),
        Some("2001:db8:1:2::/64".parse().unwrap())
    );
    let v4: IpAddr = "198.51.100.77".parse().unwrap();
    assert_eq!(
        BanKey::parse("src/24").unwrap().target(v4, Some(64496)),
        Some("198.51.100.0/24".parse().unwrap())
    );
    assert_eq!(
        BanKey::Asn.target(v4, Some(64496)),
        Some(Target::Asn(64496))
    );
    assert_eq!(BanKey::Asn.target(v4, None), None);
}

#[test]
fn settings_are_checked_with_one_line_per_problem() {
    assert!(settings(LOGIN).validate().is_empty());
    let bad = settings(
        r#"
name = ""
reasons = ["ban", "rate-limit"]
hits = 0
window = "0s"
key = "dst"
duration = "10"
factor = 0.5
max_keys = 0
"#,
    );
    let keys: Vec<String> = bad.validate().iter().map(|p| p.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "name",
            "reasons[0]",
            "hits",
            "window",
            "duration",
            "key",
            "factor",
            "max_keys"
        ]
    );
    assert!(bad.compile().is_none());
    // Defaults: key src, factor 2, max 24h (or the first ban if longer), forget 24h.
    let rule = settings(LOGIN).compile().unwrap();
    assert_eq!(
        *rule.escalation(),
        Escalation {
            first: 600,
            factor: 2.0,
            max: 86_400,
            forget_after: 86_400
        }
    );
}

#[test]
fn counting_is_bounded_by_max_keys() {
    let rule = settings(&format!("{LOGIN}\nmax_keys = 10\nkey = \"src\"")).compile();
    let rule = rule.unwrap();
    let login = deny(Reason::RateLimit, "login");
    let now = Instant::now();
    for i in 0..50u8 {
        rule.count(&login, IpAddr::from([10, 0, 0, i]), None, now);
    }
    assert_eq!(rule.keys(), (10, 40));
    // Eviction: two windows later nothing can trigger any more.
    rule.evict(now + Duration::from_secs(121));
    assert_eq!(rule.keys().0, 0);
}
