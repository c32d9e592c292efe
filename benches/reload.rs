//! How long a reload takes at full size: reading the configuration and building a new
//! engine that carries the previous engine's rate-limit state — the work of SIGHUP and
//! of a file change, on the blocking pool — for three rule sets:
//!
//! - `full`: a generated 1M-entry IPv4 CIDR block list (/24 to /32, about 1 % of the
//!   address space), the full ip-location-db IPv4 + IPv6 ASN tables (`benches/data/`)
//!   with 900 blocked ASNs, the example bad-bot and AI-crawler lists, two inline
//!   user-agent rules, and three limits;
//! - `list`: the 1M list alone;
//! - `asn`: the ASN tables alone.
//!
//! Plus `free`: dropping a full engine (a retired engine is freed off the request path).
//! What reloads do to decision latency is measured from outside, with the real agent and
//! the load generator: `benches/scripts/reload.sh`.
//!
//! ```text
//! cargo bench --bench reload          # about a minute
//! ```
//!
//! Without `--bench` (`cargo test --benches`) every bench runs once on a 20k list.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

mod common;

use common::write_random_ipv4_list;
use spoa_guard::config::Config;
use spoa_guard::engine::Engine;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The rule files, written once into a temporary directory.
struct RuleFiles {
    dir: tempfile::TempDir,
    block: PathBuf,
    asn_block: PathBuf,
}

impl RuleFiles {
    fn write(list_size: usize) -> RuleFiles {
        let dir = tempfile::tempdir().unwrap();
        let block = dir.path().join("block.txt");
        write_random_ipv4_list(&block, list_size, 24..=32, 2);
        let asn_block = dir.path().join("asn-block.txt");
        // Spread over the AS number space; most are real, routed ASNs (as benches/engine.rs).
        let asns: String = (1..=900u32)
            .map(|asn| format!("AS{}\n", asn * 73 + 1000))
            .collect();
        std::fs::write(&asn_block, asns).unwrap();
        RuleFiles {
            dir,
            block,
            asn_block,
        }
    }

    /// Writes `<name>.toml` with the parts asked for and returns its path.
    fn config(&self, name: &str, list: bool, asn: bool, rest: bool) -> PathBuf {
        let manifest = Path::new(MANIFEST);
        let mut toml = String::new();
        if list {
            toml += &format!(
                "[lists]\nblock = [{:?}]\n",
                self.block.display().to_string()
            );
        }
        if asn {
            let table = |f: &str| manifest.join("benches/data").join(f).display().to_string();
            toml += &format!(
                "[asn]\ndatabases = [{:?}, {:?}]\nblock_file = {:?}\n",
                table("ip-location-db-asn-ipv4.csv.gz"),
                table("ip-location-db-asn-ipv6.csv.gz"),
                self.asn_block.display().to_string()
            );
        }
        if rest {
            let lists = manifest.join("examples/lists");
            toml += &common::ua_and_limit_rules(
                &lists.join("bad-user-agents.list"),
                &lists.join("ai-crawlers.txt"),
                false,
            );
        }
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        path
    }
}

/// What a reload does, but the swap: read the configuration, build the engine with the
/// previous one's limit state.
fn reload(path: &Path, previous: &Engine) -> Engine {
    let config = Config::load(path).unwrap();
    Engine::load(&config.rules, &config.path, Some(previous), None).unwrap()
}

fn reloads(c: &mut Criterion) {
    let bench = std::env::args().any(|a| a == "--bench");
    let files = RuleFiles::write(if bench { 1_000_000 } else { 20_000 });
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    for (name, list, asn, rest) in [
        ("full", true, true, true),
        ("list", true, false, false),
        ("asn", false, true, false),
    ] {
        let path = files.config(name, list, asn, rest);
        let previous = reload(&path, &Engine::new(Default::default(), Default::default()));
        eprintln!("reload/{name}: {}", previous.summary());
        // The new engine is returned, so its drop is not timed: a retired engine is freed
        // apart (below).
        group.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| reload(&path, &previous),
                BatchSize::PerIteration,
            )
        });
    }
    let full = files.config("full", true, true, true);
    group.bench_function("free", |b| {
        b.iter_batched(
            || reload(&full, &Engine::new(Default::default(), Default::default())),
            drop,
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, reloads);
criterion_main!(benches);
