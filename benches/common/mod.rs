//! Helpers shared by the benches.

#![allow(dead_code)] // each bench uses a different subset

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use spoa_guard::bans::{Ban, BanStore, Target};
use std::path::Path;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// A fixed-seed generator (rand's Xoshiro256++, a portable algorithm), so every run draws
/// the same addresses and requests.
pub struct BenchRng(Xoshiro256PlusPlus);

impl BenchRng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0.random()
    }

    /// 128 random bits.
    pub fn next_u128(&mut self) -> u128 {
        self.0.random()
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n.max(1))
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u128, hi: u128) -> u128 {
        self.0.random_range(lo..=hi)
    }

    /// A uniformly random IPv4 address.
    pub fn ipv4(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.next() as u32)
    }
}

/// `(VmRSS, VmHWM)` of this process in KiB (Linux; `None` elsewhere).
pub fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The non-empty, non-comment lines of a text file, trimmed.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Writes `n` random IPv4 CIDRs, prefix lengths uniform in `prefixes`, one per line, to
/// `path`. With /16 to /32 the CIDRs cover about 80 % of the IPv4 space; with /24 to /32
/// about 1 %, closer to real block lists (mostly single addresses and /24s).
pub fn write_random_ipv4_list(
    path: &Path,
    n: usize,
    prefixes: std::ops::RangeInclusive<u8>,
    seed: u64,
) {
    let mut rng = BenchRng::new(seed);
    let (lo, hi) = (*prefixes.start(), *prefixes.end());
    let mut text = String::with_capacity(n * 18);
    for _ in 0..n {
        let addr = rng.ipv4();
        let prefix = u64::from(lo) + rng.below(u64::from(hi - lo) + 1);
        text.push_str(&format!("{addr}/{prefix}\n"));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The first address of every `step`-th range of a gzipped ip-location-db ASN table
/// (`start,end,asn,org` lines), for drawing realistic, routed source addresses.
pub fn asn_range_starts<T: std::str::FromStr>(table: &Path, step: usize) -> Vec<T> {
    let gz = std::fs::read(table).unwrap_or_else(|e| panic!("{}: {e}", table.display()));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", table.display()));
    text.lines()
        .step_by(step)
        .filter_map(|line| line.split(',').next()?.parse().ok())
        .collect()
}

/// CPU time of the whole machine and of this process, to tell how busy other processes
/// kept the CPUs while something was measured (Linux `/proc`; zeros elsewhere).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// Ticks spent busy by all CPUs (user, nice, system, irq, softirq).
    busy: u64,
    /// Ticks stolen by the hypervisor.
    steal: u64,
    /// Ticks of this process (user + system).
    own: u64,
    at: Option<std::time::Instant>,
}

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
        let own_stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let after = own_stat.rsplit(')').next().unwrap_or_default();
        let own: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        CpuTimes {
            busy: field(0) + field(1) + field(2) + field(5) + field(6),
            steal: field(7),
            own: own.iter().sum(),
            at: Some(std::time::Instant::now()),
        }
    }

    /// Since `earlier`: the share of all CPUs that other processes used, the share
    /// stolen by the hypervisor, and the share this process used, each in percent.
    pub fn since(&self, earlier: &CpuTimes) -> CpuShares {
        let ticks_per_sec = 100.0; // USER_HZ on Linux
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let secs = match (self.at, earlier.at) {
            (Some(a), Some(b)) => a.duration_since(b).as_secs_f64(),
            _ => 0.0,
        };
        let capacity = (secs * ticks_per_sec * cpus).max(1.0);
        let pct = |ticks: u64| 100.0 * ticks as f64 / capacity;
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        CpuShares {
            others: pct(busy.saturating_sub(own)),
            steal: pct(self.steal.saturating_sub(earlier.steal)),
            own: pct(own),
        }
    }
}

/// See [`CpuTimes::since`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuShares {
    pub others: f64,
    pub steal: f64,
    pub own: f64,
}

/// The realistic user-agent rules and limits of the full-decision benches (`engine`,
/// `reload`): monitoring allowed, scanners and the bad-bot list denied, the AI-crawler
/// list in dry run, optionally empty user agents denied, and three limits set high
/// enough never to deny. TOML, for a configuration's tail.
#[allow(dead_code)]
pub fn ua_and_limit_rules(
    bad_bots: &std::path::Path,
    ai_crawlers: &std::path::Path,
    empty_ua: bool,
) -> String {
    let empty = if empty_ua {
        "[[user_agent]]\nname = \"empty-ua\"\nempty = true\naction = \"deny\"\n"
    } else {
        ""
    };
    format!(
        r#"
[[user_agent]]
name = "monitoring"
pattern = "^(?:Prometheus|kube-probe)/"
action = "allow"
[[user_agent]]
name = "scanners"
pattern = "(?i)sqlmap|nikto|masscan|zgrab|nuclei"
action = "deny"
[[user_agent]]
name = "bad-bots"
file = {bad:?}
ignore_case = true
action = "deny"
[[user_agent]]
name = "ai-crawlers"
file = {ai:?}
literal = true
ignore_case = true
action = "deny"
dry_run = true
{empty}[[limit]]
name = "per-client"
key = "src"
rate = 1000000
burst = 1000000
[[limit]]
name = "login"
key = "src+path"
path_prefix = "/login"
methods = ["POST"]
rate = 1000000
burst = 1000000
[[limit]]
name = "global"
key = "global"
rate = 1000000000
burst = 1000000000
"#,
        bad = bad_bots.display().to_string(),
        ai = ai_crawlers.display().to_string(),
    )
}

/// The Unix second the generated bans start at.
pub const BAN_NOW: u32 = 1_800_000_000;

/// `n` bans: mostly single IPv4 addresses, some /24s, a few IPv6 /64s, under three
/// labels (two auto-ban rules and manual bans), expiring over the next day.
pub fn random_bans(n: usize, seed: u64) -> Vec<Ban> {
    let mut rng = BenchRng::new(seed);
    let labels: [(Arc<str>, Arc<str>); 3] = [
        (
            Arc::from("login-abuse"),
            Arc::from("20 rate-limit denies in 1m"),
        ),
        (
            Arc::from("scanners"),
            Arc::from("5 user-agent denies in 1m"),
        ),
        (Arc::from("manual"), Arc::from("INC-42")),
    ];
    (0..n)
        .map(|i| {
            let addr = IpAddr::V4(rng.ipv4());
            let target = match i % 100 {
                0 => Target::network_of(IpAddr::V6(Ipv6Addr::from(rng.next_u128())), 64),
                1..=9 => Target::network_of(addr, 24),
                _ => Target::address(addr),
            };
            let (origin, reason) = &labels[i % 3];
            Ban {
                target,
                origin: Arc::clone(origin),
                reason: Arc::clone(reason),
                since: BAN_NOW,
                expires_at: BAN_NOW + 60 + (rng.below(86_400) as u32),
            }
        })
        .collect()
}

/// A store holding `bans`.
pub fn ban_store(bans: &[Ban]) -> BanStore {
    let mut store = BanStore::new(usize::MAX);
    for ban in bans {
        store.add(ban.clone()).unwrap();
    }
    store
}
