//! The request mix: what each NOTIFY carries. Sources come from a `--sources` file, a
//! `--source-pool` of random addresses made once from the seed, or a fresh random
//! address each time, with `--deny-share` of them from `--deny-sources`; user agents
//! (read by [`user_agents`]: plain lines, JSON lines or a JSON array) and methods and
//! paths (plain lists or a combined access log) come from files or from built-in
//! browser-like defaults. Every draw uses one seeded [`Rng`], so a seed
//! gives the same requests on every machine and every run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{bail, Context};
use bytes::Bytes;
use ipnet::IpNet;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use spoa_guard::spop::{Arg, Message, TypedData};

use crate::{user_agents, Opts};

/// The generator of every draw: a fixed, portable algorithm, so a seed gives the same
/// requests on every machine and every run.
pub(crate) type Rng = Xoshiro256PlusPlus;

/// One request line: method, path and, from an access log, its user agent.
#[derive(Debug, Clone, PartialEq)]
struct RequestLine {
    method: Bytes,
    path: Bytes,
    ua: Option<Bytes>,
}

/// Where requests are drawn from.
pub(crate) struct Mix {
    name: Bytes,
    default_args: bool,
    extra: Vec<Arg>,
    host: Bytes,
    /// From --sources; empty: `pool`, or fresh random addresses.
    sources: Vec<IpNet>,
    /// The --source-pool addresses, when `sources` is empty. Drawing from a fixed set
    /// makes the agent see returning clients (warm rate-limit keys), as in real traffic;
    /// empty means a fresh random address per request.
    pool: Vec<IpAddr>,
    deny: Vec<IpNet>,
    deny_share: f64,
    uas: Vec<Bytes>,
    requests: Vec<RequestLine>,
}

impl Mix {
    /// The mix of `opts`: reads the files it names, or takes the defaults.
    pub(crate) fn load(opts: &Opts) -> anyhow::Result<Self> {
        if !(0.0..=1.0).contains(&opts.deny_share) {
            bail!("--deny-share must be between 0 and 1");
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))
        };
        let sources = match &opts.sources {
            Some(path) => nonempty(parse_sources(&read(path)?), path)?,
            None => Vec::new(),
        };
        let pool = if sources.is_empty() {
            // A stream of its own ("pool"), apart from the connections' streams.
            let mut rng = Rng::seed_from_u64(opts.seed ^ 0x706f_6f6c);
            (0..opts.source_pool)
                .map(|_| random_addr(&mut rng))
                .collect()
        } else {
            Vec::new()
        };
        let deny = match &opts.deny_sources {
            Some(path) => nonempty(parse_sources(&read(path)?), path)?,
            None if opts.deny_share > 0.0 => bail!("--deny-share needs --deny-sources"),
            None => Vec::new(),
        };
        let uas = match &opts.user_agents {
            Some(path) => user_agents::parse(&read(path)?, &path.display().to_string())?,
            None => DEFAULT_UAS
                .iter()
                .map(|s| Bytes::from_static(s.as_bytes()))
                .collect(),
        };
        let requests = match &opts.paths {
            Some(path) => nonempty(parse_paths(&read(path)?), path)?,
            None => DEFAULT_PATHS
                .iter()
                .map(|(m, p)| RequestLine {
                    method: Bytes::from_static(m.as_bytes()),
                    path: Bytes::from_static(p.as_bytes()),
                    ua: None,
                })
                .collect(),
        };
        Ok(Self {
            name: Bytes::from(opts.message.clone()),
            default_args: !opts.no_default_args,
            extra: opts
                .args
                .iter()
                .map(|(k, v)| Arg {
                    name: Bytes::from(k.clone()),
                    value: TypedData::String(Bytes::from(v.clone())),
                })
                .collect(),
            host: Bytes::from(opts.host.clone()),
            sources,
            pool,
            deny,
            deny_share: opts.deny_share,
            // A file of user agents wins over the ones of an access log.
            uas: if opts.user_agents.is_none() && requests.iter().any(|r| r.ua.is_some()) {
                Vec::new()
            } else {
                uas
            },
            requests,
        })
    }

    /// The next message to send, and whether its source was drawn from the deny
    /// sources (the agent should deny it).
    pub(crate) fn message(&self, rng: &mut Rng) -> (Message, bool) {
        let mut args = Vec::with_capacity(5 + self.extra.len());
        let mut from_deny = false;
        if self.default_args {
            from_deny = !self.deny.is_empty() && rng.random::<f64>() < self.deny_share;
            let src = if from_deny {
                addr_in(pick(&self.deny, rng), rng)
            } else if !self.sources.is_empty() {
                addr_in(pick(&self.sources, rng), rng)
            } else if !self.pool.is_empty() {
                *pick(&self.pool, rng)
            } else {
                random_addr(rng)
            };
            let req = pick(&self.requests, rng);
            let ua = match (&req.ua, self.uas.is_empty()) {
                (Some(ua), true) => ua.clone(),
                _ => self
                    .uas
                    .get(below(rng, self.uas.len()))
                    .cloned()
                    .unwrap_or_default(),
            };
            let src = match src {
                IpAddr::V4(a) => TypedData::Ipv4(a),
                IpAddr::V6(a) => TypedData::Ipv6(a),
            };
            args.push(arg("src", src));
            args.push(arg("method", TypedData::String(req.method.clone())));
            args.push(arg("path", TypedData::String(req.path.clone())));
            args.push(arg("host", TypedData::String(self.host.clone())));
            args.push(arg("ua", TypedData::String(ua)));
        }
        args.extend(self.extra.iter().cloned());
        let message = Message {
            name: self.name.clone(),
            args,
        };
        (message, from_deny)
    }
}

/// A message argument.
fn arg(name: &'static str, value: TypedData) -> Arg {
    Arg {
        name: Bytes::from_static(name.as_bytes()),
        value,
    }
}

/// A random element; the lists are never empty (checked at load).
fn pick<'a, T>(items: &'a [T], rng: &mut Rng) -> &'a T {
    let i = below(rng, items.len());
    &items[i % items.len().max(1)]
}

/// Uniform in `0..n`; 0 when `n` is 0.
fn below(rng: &mut Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rng.random_range(0..n)
    }
}

/// `items`, or an error naming `path` when there are none.
fn nonempty<T>(items: Vec<T>, path: &Path) -> anyhow::Result<Vec<T>> {
    if items.is_empty() {
        bail!("{}: no usable lines", path.display());
    }
    Ok(items)
}

/// A uniformly random address inside `net`.
fn addr_in(net: &IpNet, rng: &mut Rng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host_bits = 32 - u32::from(n.prefix_len());
            let mask = u32::MAX
                .checked_shr(32 - host_bits)
                .filter(|_| host_bits > 0);
            let offset = mask.map_or(0, |m| rng.random::<u32>() & m);
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | offset))
        }
        IpNet::V6(n) => {
            let host_bits = 128 - u32::from(n.prefix_len());
            let mask = u128::MAX
                .checked_shr(128 - host_bits)
                .filter(|_| host_bits > 0);
            let offset = mask.map_or(0, |m| rng.random::<u128>() & m);
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | offset))
        }
    }
}

/// A random global unicast-looking source: IPv4 80 % of the time, else 2000::/3.
fn random_addr(rng: &mut Rng) -> IpAddr {
    if below(rng, 5) < 4 {
        // Skip 0/8, 10/8, 127/8 and multicast and above, roughly what HAProxy sees.
        loop {
            let a = Ipv4Addr::from(rng.random::<u32>());
            let first = a.octets()[0];
            if !matches!(first, 0 | 10 | 127 | 224..=255) {
                return IpAddr::V4(a);
            }
        }
    } else {
        let bits = (rng.random::<u128>() >> 3) | (1u128 << 125);
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// Addresses and CIDRs, one per line; `#` and `;` start comments (Spamhaus, FireHOL),
/// only the first word counts, and other lines are skipped.
fn parse_sources(text: &str) -> Vec<IpNet> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next()?.trim();
            let word = line.split_whitespace().next()?;
            word.parse::<IpNet>()
                .ok()
                .or_else(|| word.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// Paths (`/p` or `METHOD /p`), or Apache/nginx combined log lines.
fn parse_paths(text: &str) -> Vec<RequestLine> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            if line.contains('"') {
                return parse_log_line(line);
            }
            let mut words = line.split_whitespace();
            let (method, path) = match (words.next(), words.next()) {
                (Some(m), Some(p)) => (m, p),
                (Some(p), None) => ("GET", p),
                _ => return None,
            };
            Some(RequestLine {
                method: Bytes::from(method.to_owned()),
                path: Bytes::from(path.to_owned()),
                ua: None,
            })
        })
        .collect()
}

/// `host ident user [time] "METHOD PATH PROTO" status size "referer" "user-agent"`.
fn parse_log_line(line: &str) -> Option<RequestLine> {
    let quoted = quoted_fields(line);
    let request = quoted.first()?;
    let mut words = request.split_whitespace();
    let method = words.next()?;
    let path = words.next()?;
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some(RequestLine {
        method: Bytes::from(method.to_owned()),
        path: Bytes::from(path.to_owned()),
        ua: quoted
            .get(2)
            .filter(|ua| !ua.is_empty() && *ua != "-")
            .map(|ua| Bytes::from(ua.clone())),
    })
}

/// The double-quoted fields of a log line; `\"` and `\\` escapes are undone.
fn quoted_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut field = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                '"' => break,
                c => field.push(c),
            }
        }
        fields.push(field);
    }
    fields
}

/// Browser and a few tool user agents for the default mix.
const DEFAULT_UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
    "python-requests/2.32.3",
];

/// Methods and paths for the default mix.
const DEFAULT_PATHS: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/index.html"),
    ("GET", "/static/app.3f9a1c.js"),
    ("GET", "/static/style.css"),
    ("GET", "/images/logo.png"),
    ("GET", "/api/v1/items?page=2&sort=desc"),
    ("GET", "/products/12345"),
    ("GET", "/search?q=running+shoes"),
    ("GET", "/favicon.ico"),
    ("POST", "/api/v1/cart"),
    ("POST", "/login"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::opts;

    #[test]
    fn sources_and_addresses_inside_them() {
        let nets = parse_sources(
            "# comment\n1.2.3.0/24 ; SBL123\n203.0.113.7\n2001:db8::/32\n\nnot an address\n10.0.0.1/32\n",
        );
        assert_eq!(nets.len(), 4);
        let mut rng = Rng::seed_from_u64(7);
        for _ in 0..1000 {
            for net in &nets {
                assert!(net.contains(&addr_in(net, &mut rng)), "{net}");
            }
        }
        assert_eq!(
            addr_in(&nets[1], &mut rng),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        addr_in(&all, &mut rng);
        let all6: IpNet = "::/0".parse().unwrap();
        addr_in(&all6, &mut rng);
    }

    #[test]
    fn paths_and_combined_logs() {
        let lines = parse_paths(
            "/a\nPOST /login\n\
             203.0.113.9 - - [10/Oct/2000:13:55:36 -0700] \"GET /x?y=1 HTTP/1.1\" 200 12 \"-\" \"Mozilla/5.0 \\\"quoted\\\"\"\n\
             1.2.3.4 - - [t] \"\\x16\\x03\" 400 0 \"-\" \"-\"\n",
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(
            (&lines[0].method[..], &lines[0].path[..]),
            (&b"GET"[..], &b"/a"[..])
        );
        assert_eq!(&lines[1].method[..], b"POST");
        assert_eq!(&lines[2].path[..], b"/x?y=1");
        assert_eq!(lines[2].ua.as_deref(), Some(&b"Mozilla/5.0 \"quoted\""[..]));
    }

    /// The `src` argument of `n` messages of a mix built from `extra` options.
    fn sources_drawn(extra: &[&str], n: usize) -> Vec<IpAddr> {
        let mix = Mix::load(&opts(extra)).unwrap();
        let mut rng = Rng::seed_from_u64(11);
        (0..n)
            .map(|_| match mix.message(&mut rng).0.args[0].value {
                TypedData::Ipv4(a) => IpAddr::V4(a),
                TypedData::Ipv6(a) => IpAddr::V6(a),
                ref other => panic!("src is {other:?}"),
            })
            .collect()
    }

    #[test]
    fn source_pool_draws_returning_clients() {
        use std::collections::HashSet;
        let distinct = |v: &[IpAddr]| v.iter().collect::<HashSet<_>>().len();

        // A pool of 50: every one of them comes back, nothing else appears.
        let drawn = sources_drawn(&["--source-pool", "50"], 5000);
        assert_eq!(distinct(&drawn), 50);
        // The pool depends on the seed only, not on the connection's stream.
        let mix = Mix::load(&opts(&["--source-pool", "50"])).unwrap();
        assert_eq!(
            mix.pool,
            Mix::load(&opts(&["--source-pool", "50"])).unwrap().pool
        );
        assert!(drawn.iter().all(|a| mix.pool.contains(a)));
        let other_seed = Mix::load(&opts(&["--source-pool", "50", "--seed", "2"])).unwrap();
        assert_ne!(mix.pool, other_seed.pool);

        // The default pool keeps today's mix: about 80 % IPv4, 20 % IPv6.
        let default = Mix::load(&opts(&[])).unwrap();
        assert_eq!(default.pool.len(), 100_000);
        let v6 = default.pool.iter().filter(|a| a.is_ipv6()).count();
        assert!((18_000..22_000).contains(&v6), "{v6} IPv6 of 100k");

        // 0: a fresh address per request (collisions are astronomically unlikely).
        assert_eq!(
            distinct(&sources_drawn(&["--source-pool", "0"], 5000)),
            5000
        );

        // --sources wins: no pool is built, addresses come from the file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sources.txt");
        std::fs::write(&file, "192.0.2.7\n").unwrap();
        let with_file = ["--sources", file.to_str().unwrap(), "--source-pool", "50"];
        assert!(Mix::load(&opts(&with_file)).unwrap().pool.is_empty());
        let drawn = sources_drawn(&with_file, 100);
        assert!(drawn
            .iter()
            .all(|a| *a == "192.0.2.7".parse::<IpAddr>().unwrap()));
    }
}
