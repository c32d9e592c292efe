//! Live rule updates, in process: a [`Reloader`] running on real files in a temporary
//! directory, its decisions read from the engine it swaps. One test per way a file
//! changes in practice (in place, rename-over, delete and recreate, a Kubernetes
//! ConfigMap symlink swap, a replaced directory, the configuration itself), and for the
//! guarantees around them: a broken edit changes nothing but the error counter, an
//! editor's burst is one reload, rate-limit state survives an unrelated edit, settings
//! that need a restart are reported, the old rules are freed once unused.
//!
//! Watching runs with `poll_secs = 0` unless a test is about the poll, so a pass proves
//! that inotify saw the change. Deadlines are generous (the machine may be loaded); the
//! pick-up time each test measured is printed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::configmap;

use configmap::ConfigMap;
use spoa_guard::agent::Agent;
use spoa_guard::config::Config;
use spoa_guard::decision::{Decision, Request};
use spoa_guard::engine::Engine;
use spoa_guard::metrics::{Metrics, ReloadResult};
use spoa_guard::reload::{Cause, Outcome, Reloader, Stamps};
use spoa_guard::serve::{self, Running};
use tokio_util::sync::CancellationToken;

/// How long a change may take to be in force before a test fails. The design's target
/// is about a second; this leaves room for a loaded CI machine.
const DEADLINE: Duration = Duration::from_secs(5);

/// An agent started (`serve::start`, as `main` does) on a temporary directory holding
/// `guard.toml` and its files; its reloader watches them.
struct Live {
    dir: tempfile::TempDir,
    shared: Arc<Agent>,
    running: Running,
    shutdown: CancellationToken,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `[reload]` section used unless a test says otherwise: inotify only.
const WATCH_ONLY: &str = "[reload]\ndebounce_ms = 100\npoll_secs = 0\n";

/// Reloads applied so far.
fn applied(m: &Metrics) -> u64 {
    m.reloads.of(ReloadResult::Success).get()
}

/// Reloads failed so far.
fn failed(m: &Metrics) -> u64 {
    m.reloads.of(ReloadResult::Failure).get()
}

impl Live {
    /// Writes `files` and a configuration made of `[server]`, `reload` and `rules`, then
    /// loads it and starts the reloader.
    async fn start(reload: &str, rules: &str, files: &[(&str, &str)]) -> Live {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            write(&dir.path().join(name), text);
        }
        write(
            &dir.path().join("guard.toml"),
            &config_text("127.0.0.1:0", reload, rules),
        );
        Self::start_in(dir).await
    }

    /// Starts on a directory already holding `guard.toml` and its files.
    async fn start_in(dir: tempfile::TempDir) -> Live {
        let running = serve::start_file(&dir.path().join("guard.toml"))
            .await
            .unwrap();
        Live {
            dir,
            shared: running.agent().clone(),
            shutdown: running.shutdown_token(),
            running,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `rule` if `src` is denied now (the rule that denied it), `"allow"` otherwise.
    fn decide(&self, src: &str) -> String {
        self.decide_at(src, "/", Instant::now())
    }

    fn decide_at(&self, src: &str, path: &str, now: Instant) -> String {
        let src: IpAddr = src.parse().unwrap();
        let request = Request {
            src: Some(src),
            method: Some(b"GET"),
            path: Some(path.as_bytes()),
            host: Some(b"www.example.com"),
            ua: Some(b"Mozilla/5.0"),
            args: Default::default(),
        };
        let verdict = self.shared.in_force().engine.evaluate(&request, now);
        match verdict.decision {
            Decision::Allow => "allow".into(),
            Decision::Deny => String::from_utf8_lossy(&verdict.rule).into(),
        }
    }

    /// Waits until `src` decides `want`; returns how long that took.
    async fn until(&self, src: &str, want: &str) -> Duration {
        let started = Instant::now();
        loop {
            let got = self.decide(src);
            if got == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{src}: still {got:?} after {DEADLINE:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn count(&self, counter: impl Fn(&Metrics) -> u64) -> u64 {
        counter(&self.shared.metrics)
    }

    fn applied(&self) -> u64 {
        self.count(applied)
    }

    fn failed(&self) -> u64 {
        self.count(failed)
    }

    /// Waits until the applied-reload counter reaches `n`.
    async fn until_applied(&self, n: u64) {
        self.until_count("applied", n, applied).await;
    }

    /// Waits until the failed-reload counter reaches `n`.
    async fn until_failed(&self, n: u64) {
        self.until_count("failed", n, failed).await;
    }

    async fn until_count(&self, what: &str, n: u64, counter: impl Fn(&Metrics) -> u64) {
        let started = Instant::now();
        while self.count(&counter) < n {
            assert!(
                started.elapsed() < DEADLINE,
                "{} reloads {what}, want {n}",
                self.count(&counter)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn config_text(listen: &str, reload: &str, rules: &str) -> String {
    format!("[server]\nlisten = \"{listen}\"\n{reload}\n{rules}")
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Writes next to `path` and renames over it, as `mv` and most tools do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const ONE_LIST: &str = "[lists]\nblock = [\"block.txt\"]\n";

async fn one_list() -> Live {
    Live::start(WATCH_ONLY, ONE_LIST, &[("block.txt", "10.0.0.1\n")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_edit_is_picked_up() {
    let live = one_list().await;
    assert_eq!(live.decide("10.0.0.2"), "allow");
    write(&live.path("block.txt"), "10.0.0.1\n10.0.0.2\n");
    let took = live.until("10.0.0.2", "block").await;
    eprintln!("in place: {took:?}");
    assert_eq!(live.decide("10.0.0.1"), "block");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_over_is_picked_up() {
    let live = one_list().await;
    replace(&live.path("block.txt"), "10.0.0.2\n");
    let took = live.until("10.0.0.2", "block").await;
    eprintln!("rename over: {took:?}");
    assert_eq!(live.decide("10.0.0.1"), "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_and_recreate_is_picked_up() {
    let live = one_list().await;
    let file = live.path("block.txt");
    std::fs::remove_file(&file).unwrap();
    // While the file is missing, a reload fails and the old rules stay in force.
    live.until_failed(1).await;
    assert_eq!(live.decide("10.0.0.1"), "block");
    write(&file, "10.0.0.3\n");
    let took = live.until("10.0.0.3", "block").await;
    eprintln!("recreated: {took:?}");
    assert_eq!(live.decide("10.0.0.1"), "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up_once() {
    let dir = tempfile::tempdir().unwrap();
    // The configuration is in the ConfigMap too, as in a real deployment.
    let guard = config_text("127.0.0.1:0", WATCH_ONLY, ONE_LIST);
    let mut map = ConfigMap::create(
        dir.path(),
        &[("guard.toml", &guard), ("block.txt", "10.0.0.1\n")],
    );
    let live = Live::start_in(dir).await;
    assert_eq!(live.decide("10.0.0.1"), "block");

    map.update(&[("guard.toml", &guard), ("block.txt", "10.0.0.2\n")]);
    let took = live.until("10.0.0.2", "block").await;
    eprintln!("ConfigMap swap: {took:?}");
    assert_eq!(live.decide("10.0.0.1"), "allow");
    // Removing the old directory changed nothing a reload reads: no second reload.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live.applied(), 1, "one swap, one reload");

    // The watches followed the swap to the new directory: a second update works too.
    map.update(&[("guard.toml", &guard), ("block.txt", "10.0.0.3\n")]);
    live.until("10.0.0.3", "block").await;
    assert_eq!(live.decide("10.0.0.2"), "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_directory_is_picked_up() {
    let live = Live::start(
        WATCH_ONLY,
        "[lists]\nblock = [\"lists/block.txt\"]\n",
        &[("lists/block.txt", "10.0.0.1\n")],
    )
    .await;
    write(&live.path("lists.new/block.txt"), "10.0.0.4\n");
    std::fs::rename(live.path("lists"), live.path("lists.old")).unwrap();
    std::fs::rename(live.path("lists.new"), live.path("lists")).unwrap();
    let took = live.until("10.0.0.4", "block").await;
    eprintln!("directory replaced: {took:?}");
    // And the new directory is watched.
    write(&live.path("lists/block.txt"), "10.0.0.5\n");
    live.until("10.0.0.5", "block").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_edit_naming_a_new_list_is_picked_up_and_the_list_watched() {
    let live = Live::start(
        WATCH_ONLY,
        ONE_LIST,
        &[
            ("block.txt", "10.0.0.1\n"),
            ("more/extra.txt", "10.0.0.9\n"),
        ],
    )
    .await;
    assert_eq!(live.decide("10.0.0.9"), "allow");
    replace(
        &live.path("guard.toml"),
        &config_text(
            "127.0.0.1:0",
            WATCH_ONLY,
            "[lists]\nblock = [\"block.txt\", \"more/extra.txt\"]\n",
        ),
    );
    let took = live.until("10.0.0.9", "extra").await;
    eprintln!("config edit: {took:?}");
    // more/ was not watched before the edit; it is now.
    write(&live.path("more/extra.txt"), "10.0.0.10\n");
    live.until("10.0.0.10", "extra").await;
    assert_eq!(live.decide("10.0.0.9"), "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editors_burst_of_writes_is_one_reload() {
    let live = one_list().await;
    // Twenty writes 10 ms apart: well inside the 100 ms debounce.
    for i in 0..20u8 {
        write(&live.path("block.txt"), &format!("10.0.1.{i}\n"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    live.until("10.0.1.19", "block").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(live.applied(), 1);
    assert_eq!(live.failed(), 0);
}

/// A tool appending attackers to a block list every 50 ms never leaves the debounce
/// quiet: the reload must still come, within the one-second bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_appended_to_all_the_time_is_still_reloaded() {
    let live = one_list().await;
    let file = live.path("block.txt");
    let started = Instant::now();
    let mut appended = 0u8;
    let mut picked_up = None;
    while started.elapsed() < Duration::from_secs(4) {
        appended += 1;
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str(&format!("10.0.2.{appended}\n"));
        write(&file, &text);
        if picked_up.is_none() && live.decide("10.0.2.1") == "block" {
            picked_up = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let picked_up = picked_up.expect("no reload while the file kept changing");
    eprintln!("continuous appends: first picked up after {picked_up:?}");
    assert!(live.applied() >= 2, "{} reloads in 4 s", live.applied());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_keeps_the_rules_in_force_and_counts_a_failure() {
    let live = one_list().await;
    let file = live.path("block.txt");
    write(&file, "10.0.0.2\nnot-an-address\n");
    live.until_failed(1).await;
    assert_eq!(live.decide("10.0.0.1"), "block", "old rules still decide");
    assert_eq!(
        live.decide("10.0.0.2"),
        "allow",
        "nothing of the broken file"
    );
    assert_eq!(live.count(|m| m.reload_failing.get() as u64), 1);
    assert_eq!(live.applied(), 0);

    // The operator fixes the line: the fix applies and the failure gauge clears.
    write(&file, "10.0.0.2\n");
    live.until("10.0.0.2", "block").await;
    assert_eq!(live.count(|m| m.reload_failing.get() as u64), 0);
    assert_eq!(live.failed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_keeps_the_rules_and_the_watches() {
    let live = one_list().await;
    write(&live.path("guard.toml"), "[lists\nblock = 3\n");
    live.until_failed(1).await;
    assert_eq!(live.decide("10.0.0.1"), "block");
    // The list is still watched while the configuration is broken...
    write(&live.path("block.txt"), "10.0.0.2\n");
    live.until_failed(2).await;
    // ...and fixing the configuration applies both.
    write(
        &live.path("guard.toml"),
        &config_text("127.0.0.1:0", WATCH_ONLY, ONE_LIST),
    );
    live.until("10.0.0.2", "block").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("block.txt"), "10.0.0.1\n");
    write(
        &dir.path().join("guard.toml"),
        &config_text("127.0.0.1:0", WATCH_ONLY, ONE_LIST),
    );
    let path = dir.path().join("guard.toml");
    let config = Config::load(&path).unwrap();
    let engine = Engine::load(&config.rules, &config.path, None, None).unwrap();
    let shared = Arc::new(Agent::with_engine(engine));
    let mut reloader = Reloader::new(config, Stamps::default(), shared.clone());

    write(&dir.path().join("block.txt"), "10.0.0.1\n\n10.0.0.300\n");
    let Outcome::Failed { errors } = reloader.reload(Cause::Signal).await else {
        panic!("a bad address must fail the reload");
    };
    let block = dir.path().join("block.txt");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("{}:3: ", block.display())),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_even_when_no_file_changed() {
    let live = one_list().await;
    live.running.reload();
    live.until_applied(1).await;
    assert_eq!(live.decide("10.0.0.1"), "block");
}

const LIMITED: &str = "[lists]\nblock = [\"block.txt\"]\n\
    [[limit]]\nname = \"steady\"\nkey = \"src\"\nrate = 0.001\nburst = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_state_survives_an_unrelated_edit_and_restarts_when_the_limit_changes() {
    let live = Live::start(WATCH_ONLY, LIMITED, &[("block.txt", "10.0.0.1\n")]).await;
    // One instant for every request: only the buckets' state can change a decision.
    let now = Instant::now();
    assert_eq!(live.decide_at("10.0.0.7", "/", now), "allow");
    assert_eq!(live.decide_at("10.0.0.7", "/", now), "allow");
    assert_eq!(live.decide_at("10.0.0.7", "/", now), "steady");

    write(&live.path("block.txt"), "10.0.0.2\n");
    live.until("10.0.0.2", "block").await;
    assert_eq!(
        live.decide_at("10.0.0.7", "/", now),
        "steady",
        "the bucket emptied before the reload is still empty"
    );

    // A changed burst is a different limit: fresh buckets.
    write(
        &live.path("guard.toml"),
        &config_text(
            "127.0.0.1:0",
            WATCH_ONLY,
            &LIMITED.replace("burst = 2", "burst = 3"),
        ),
    );
    live.until_applied(2).await;
    assert_eq!(live.decide_at("10.0.0.7", "/", now), "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_reported_and_the_rules_applied() {
    let live = one_list().await;
    let path = live.path("guard.toml");
    let config = Config::load(&path).unwrap();
    let mut reloader = Reloader::new(config, Stamps::default(), live.shared.clone());
    write(
        &path,
        &config_text(
            "127.0.0.1:9",
            "[reload]\ndebounce_ms = 100\npoll_secs = 0\n[log]\nlevel = \"debug\"\n",
            ONE_LIST,
        ),
    );
    write(&live.path("block.txt"), "10.0.0.2\n");
    let outcome = reloader.reload(Cause::Signal).await;
    assert_eq!(
        outcome,
        Outcome::Applied {
            restart_needed: vec![
                "log.level (info → debug)".into(),
                "server.listen (127.0.0.1:0 → 127.0.0.1:9)".into(),
            ]
        }
    );
    assert_eq!(live.decide("10.0.0.2"), "block");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_finds_changes_without_watching() {
    let live = Live::start(
        "[reload]\nwatch = false\npoll_secs = 1\n",
        ONE_LIST,
        &[("block.txt", "10.0.0.1\n")],
    )
    .await;
    replace(&live.path("block.txt"), "10.0.0.2\n");
    let took = live.until("10.0.0.2", "block").await;
    eprintln!("poll: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_in_a_directory_created_later_is_found_by_the_poll() {
    let live = Live::start(
        "[reload]\ndebounce_ms = 100\npoll_secs = 1\n",
        ONE_LIST,
        &[("block.txt", "10.0.0.1\n")],
    )
    .await;
    replace(
        &live.path("guard.toml"),
        &config_text(
            "127.0.0.1:0",
            "[reload]\ndebounce_ms = 100\npoll_secs = 1\n",
            "[lists]\nblock = [\"block.txt\", \"later/late.txt\"]\n",
        ),
    );
    live.until_failed(1).await;
    write(&live.path("later/late.txt"), "10.0.0.8\n");
    live.until("10.0.0.8", "late").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_rules_are_freed_once_unused() {
    let live = one_list().await;
    let old = Arc::downgrade(&live.shared.engine());
    write(&live.path("block.txt"), "10.0.0.2\n");
    live.until("10.0.0.2", "block").await;
    let started = Instant::now();
    while old.upgrade().is_some() {
        assert!(started.elapsed() < DEADLINE, "old engine never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
