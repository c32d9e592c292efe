//! Tests of reading, checking and locating the configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::rules::{ListFile, UaSource};

const PATH: &str = "/etc/spoa-guard/spoa-guard.toml";

fn validate(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new(PATH), text, [])
}

fn with_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::parse(Path::new(PATH), text, env)
}

/// Every error of `text`, one line each.
fn errors(text: &str) -> Vec<String> {
    validate(text)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn defaults() {
    let c = validate("").unwrap();
    assert_eq!(
        c.startup.server.listen,
        Listen::Tcp("127.0.0.1:12345".parse().unwrap())
    );
    assert_eq!(c.startup.server.max_frame_size, 16380);
    assert_eq!(c.startup.server.message, "guard-check");
    assert_eq!(c.startup.server.threads(), 1);
    assert!(c.rules.lists.block.is_empty());
    assert!(c.warnings.is_empty());
}

#[test]
fn paths_are_relative_to_the_config_file() {
    let c = validate(
        "[lists]\nallow = [\"lists/allow.txt\"]\nblock = [\"/abs/block.txt\", { path = \"b.txt\", dry_run = true }]\n\
         [asn]\ndatabases = [\"data/asn.csv.gz\"]\nblock_file = \"asn.txt\"\n\
         [[user_agent]]\nname = \"bots\"\nfile = \"bots.list\"\naction = \"deny\"\n",
    )
    .unwrap();
    let file = |path: &str, dry_run| ListFile {
        path: PathBuf::from(path),
        dry_run,
    };
    assert_eq!(
        c.rules.lists.allow,
        vec![file("/etc/spoa-guard/lists/allow.txt", false)]
    );
    assert_eq!(
        c.rules.lists.block,
        vec![
            file("/abs/block.txt", false),
            file("/etc/spoa-guard/b.txt", true)
        ]
    );
    assert_eq!(
        c.rules.asn.databases,
        vec![PathBuf::from("/etc/spoa-guard/data/asn.csv.gz")]
    );
    assert_eq!(
        c.rules.asn.block_file,
        Some(PathBuf::from("/etc/spoa-guard/asn.txt"))
    );
    assert_eq!(
        c.rules.user_agent[0].source(),
        Some(UaSource::File(PathBuf::from("/etc/spoa-guard/bots.list")))
    );
    assert_eq!(c.rules.files().len(), 6);
}

#[test]
fn the_design_example_validates() {
    let c = validate(
        r#"
[asn]
databases = ["data/asn-ipv4.csv.gz", "data/asn-ipv6.csv.gz"]
block = [64496, "AS64511"]

[[user_agent]]
name = "scanners"
pattern = "(?i)sqlmap|nikto|masscan|zgrab"
action = "deny"

[[user_agent]]
name = "empty-ua"
empty = true
action = "deny"

[[limit]]
name = "per-client"
key = "src"
rate = 50
burst = 100

[[limit]]
name = "login"
key = "src+path"
path_prefix = "/login"
methods = ["post"]
rate = 0.5
dry_run = true
"#,
    )
    .unwrap();
    let r = c.rules;
    assert_eq!(r.asn.blocked(), vec![64496, 64511]);
    assert_eq!(r.user_agent[1].source(), Some(UaSource::Empty));
    assert_eq!(r.limit[0].burst(), 100);
    assert_eq!((r.limit[1].burst(), r.limit[1].dry_run), (1, true));
    assert_eq!(r.limit[1].methods, vec!["post".to_string()]);
}

#[test]
fn rule_sections_are_checked() {
    for (text, needle) in [
        ("[asn]\nblock = [1]\n", "asn.databases"),
        ("[asn]\ndatabases = [\"a\"]\nblock = [\"ASX\"]\n", "ASX"),
        ("[asn]\ndatabases = [\"a\"]\nblock = [0]\n", "AS 0"),
        (
            "[[user_agent]]\nname = \"a\"\naction = \"deny\"\n",
            "exactly one of",
        ),
        (
            "[[user_agent]]\nname = \"a\"\npattern = \"x\"\nempty = true\naction = \"deny\"\n",
            "exactly one of",
        ),
        (
            "[[user_agent]]\nname = \"a b\"\npattern = \"x\"\naction = \"deny\"\n",
            "name",
        ),
        (
            "[[user_agent]]\nname = \"a\"\npattern = \"x\"\naction = \"block\"\n",
            "block",
        ),
        ("[[limit]]\nname = \"l\"\nrate = 0\n", "rate"),
        ("[[limit]]\nname = \"l\"\nrate = 1\nburst = 0\n", "burst"),
        (
            "[[limit]]\nname = \"l\"\nrate = 1\n[[limit]]\nname = \"l\"\nrate = 2\n",
            "has the name",
        ),
        (
            "[[limit]]\nname = \"l\"\nrate = 1\nkeys = \"src\"\n",
            "keys",
        ),
    ] {
        let err = validate(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn unix_listener() {
    let c = validate("[server]\nlisten = \"unix:/run/spoa-guard.sock\"\n").unwrap();
    assert_eq!(
        c.startup.server.listen,
        Listen::Unix(PathBuf::from("/run/spoa-guard.sock"))
    );
}

#[test]
fn unknown_keys_are_named() {
    let err = validate("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("lisen"), "{err}");
    let err = validate("[surver]\n").unwrap_err().to_string();
    assert!(err.contains("surver"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    for (text, key) in [
        ("[server]\nlisten = \"localhost\"\n", "server.listen"),
        ("[server]\nmax_frame_size = 100\n", "server.max_frame_size"),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        ("[log]\nlevel = \"loud!!\"\n", "log.level"),
        ("[reload]\ndebounce_ms = 600000\n", "reload.debounce_ms"),
        ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
        (
            "[metrics]\nlisten = \"127.0.0.1:12345\"\n",
            "metrics.listen",
        ),
    ] {
        let err = validate(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    let err = validate("[log]\nformat = \"xml\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("xml"), "{err}");
    let err = validate("[server]\nmax_frame_size = \"big\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_frame_size"), "{err}");
}

#[test]
fn every_error_comes_at_once_with_its_line_and_key() {
    let text = "\
[server]
lisen = \"127.0.0.1:1\"
max_frame_size = \"big\"

[[user_agent]]
name = \"bots\"
pattern = \"x\"
action = \"block\"

[[limit]]
name = \"login\"
rate = 0
dry_run = \"yes\"
";
    assert_eq!(
        errors(text),
        [
            format!("{PATH}:2: server.lisen: unknown field `lisen`, expected one of `listen`, `max_frame_size`, `max_connections`, `backlog`, `idle_timeout_secs`, `hello_timeout_secs`, `write_timeout_secs`, `shutdown_timeout_secs`, `message`, `threads`"),
            format!("{PATH}:3: server.max_frame_size: expected u32, got string \"big\""),
            format!("{PATH}:8: user_agent \"bots\".action: must be \"allow\" or \"deny\", got \"block\""),
            // The rest of the entry is still checked: its rate is reported on its line.
            format!("{PATH}:12: limit \"login\".rate: must be a number of tokens per second above 0"),
            format!("{PATH}:13: limit \"login\".dry_run: expected a boolean, got string \"yes\""),
        ]
    );
}

#[test]
fn syntax_errors_have_lines() {
    let found = errors("[server]\nlisten = \"127.0.0.1:1\n");
    assert!(found[0].starts_with(&format!("{PATH}:2: ")), "{found:?}");
}

#[test]
fn a_path_prefix_without_a_slash_is_a_warning_with_its_line() {
    let c = validate("[[limit]]\nname = \"login\"\nrate = 1\npath_prefix = \"login\"\n").unwrap();
    assert_eq!(c.warnings.len(), 1);
    let warning = c.warnings[0].to_string();
    assert!(
        warning.starts_with(&format!("{PATH}:4: warning: limit \"login\".path_prefix: ")),
        "{warning}"
    );
}

#[test]
fn environment_overrides_reach_every_key_and_are_blamed_for_their_errors() {
    let text = "[[limit]]\nname = \"login\"\nrate = 1\n";
    let c = with_env(
        text,
        &[
            ("SPOA_GUARD__SERVER__LISTEN", "127.0.0.1:9000"),
            ("SPOA_GUARD__LIMIT__0__RATE", "5"),
            ("SPOA_GUARD__LISTS__BLOCK", "a.txt,b.txt"),
            ("SPOA_GUARD__ASN__BLOCK", "[64496, \"AS64511\"]"),
            ("SPOA_GUARD__ASN__DATABASES", "asn.csv"),
            ("SPOA_GUARD__LOG__DENY_LINES_PER_SECOND", "0"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.startup.server.listen,
        Listen::Tcp("127.0.0.1:9000".parse().unwrap())
    );
    assert_eq!(c.rules.limit[0].rate, 5.0);
    assert_eq!(
        c.rules.lists.block,
        vec![
            ListFile::new("/etc/spoa-guard/a.txt"),
            ListFile::new("/etc/spoa-guard/b.txt")
        ]
    );
    assert_eq!(c.rules.asn.blocked(), vec![64496, 64511]);
    assert_eq!(c.startup.log.deny_lines_per_second, 0);

    for (var, value, needle) in [
        ("SPOA_GUARD__SERVER__LISTN", "x", "environment SPOA_GUARD__SERVER__LISTN: server.listn: unknown field `listn`"),
        ("SPOA_GUARD__SERVR__LISTEN", "x", "environment SPOA_GUARD__SERVR__LISTEN: unknown section `servr`"),
        ("SPOA_GUARD__LIMIT__0__RATE", "fast", "environment SPOA_GUARD__LIMIT__0__RATE: limit \"login\".rate: expected f64, got string \"fast\""),
        ("SPOA_GUARD__LIMIT__3__RATE", "1", "environment SPOA_GUARD__LIMIT__3__RATE: the file has 1 [[limit]] entries"),
        ("SPOA_GUARD__REGION", "eu", "environment SPOA_GUARD__REGION: unknown section `region`"),
        ("SPOA_GUARD__LIMIT__RATE", "1", "limit is an array: name an element by its number"),
    ] {
        let err = with_env(text, &[(var, value)]).unwrap_err().to_string();
        assert!(err.contains(needle), "{var}: {err}");
        assert!(!err.contains(PATH), "{var} blamed on the file: {err}");
    }
}

#[test]
fn an_unreadable_file_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let err = Config::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("cannot read"), "{err}");
    assert!(
        !err.contains("no such file"),
        "a directory is not missing: {err}"
    );
    assert!(err.contains("a directory"), "{err}");
    let err = Config::load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--config"), "{err}");
    // A device would never end (/dev/zero) or is empty by accident (/dev/null).
    for device in ["/dev/zero", "/dev/null"] {
        let err = Config::load(Path::new(device)).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{device}: {err}");
    }
    #[cfg(unix)]
    {
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        std::os::unix::fs::symlink(&a, &b).unwrap();
        std::os::unix::fs::symlink(&b, &a).unwrap();
        let err = Config::load(&a).unwrap_err().to_string();
        assert!(err.contains("symbolic links"), "{err}");
    }
    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, [b'a', 0xff, 0xfe]).unwrap();
    let err = Config::load(&binary).unwrap_err().to_string();
    assert!(err.contains("not UTF-8"), "{err}");
}

#[test]
fn reload_settings() {
    let c = validate("").unwrap();
    assert_eq!(c.startup.reload, ReloadSettings::default());
    assert!(c.startup.reload.watch);
    assert_eq!(c.startup.reload.debounce(), Duration::from_millis(200));
    assert_eq!(c.startup.reload.poll(), Some(Duration::from_secs(5)));
    let c = validate("[reload]\nwatch = false\ndebounce_ms = 0\npoll_secs = 0\n").unwrap();
    assert!(!c.startup.reload.watch);
    assert_eq!(c.startup.reload.debounce(), Duration::ZERO);
    assert_eq!(c.startup.reload.poll(), None);
    let err = validate("[reload]\nwatsh = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("watsh"), "{err}");
}

#[test]
fn files_are_the_config_then_every_rule_file() {
    let c = validate("[lists]\nblock = [\"b.txt\"]\n[asn]\ndatabases = [\"asn.csv\"]\n").unwrap();
    assert_eq!(
        c.files(),
        vec![
            PathBuf::from(PATH),
            PathBuf::from("/etc/spoa-guard/b.txt"),
            PathBuf::from("/etc/spoa-guard/asn.csv"),
        ]
    );
}

#[test]
fn restart_changes_name_each_start_time_setting() {
    let old = validate("").unwrap();
    assert!(old.restart_changes(&old).is_empty());
    let rules_only = validate("[lists]\nblock = [\"b.txt\"]\n").unwrap();
    assert!(
        old.restart_changes(&rules_only).is_empty(),
        "rules reload live"
    );
    let new = validate(
        "[server]\nlisten = \"unix:/run/guard.sock\"\nidle_timeout_secs = 60\n\
         [log]\nformat = \"json\"\n[reload]\npoll_secs = 0\n[insight]\nslots = 60\n",
    )
    .unwrap();
    assert_eq!(
        old.restart_changes(&new),
        vec![
            "insight.slots (30 → 60)",
            "log.format (text → json)",
            "reload.poll_secs (5 → 0)",
            "server.idle_timeout_secs (300 → 60)",
            "server.listen (127.0.0.1:12345 → unix:/run/guard.sock)",
        ]
    );
    let metrics = validate("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
    assert_eq!(
        old.restart_changes(&metrics),
        vec!["metrics.listen (none → 127.0.0.1:9464)"]
    );
}

#[test]
fn rule_file_caps_are_read_overridden_and_checked() {
    use crate::rules::source::DEFAULT_MAX_FILE_BYTES;
    let c = validate("[lists]\nmax_entries = 5\n[asn]\nmax_file_bytes = 1048576\n").unwrap();
    assert_eq!(
        (c.rules.lists.max_entries, c.rules.lists.max_file_bytes),
        (5, DEFAULT_MAX_FILE_BYTES)
    );
    assert_eq!(c.rules.asn.caps().max_file_bytes, 1 << 20);
    let c = with_env("", &[("SPOA_GUARD__ASN__MAX_LINE_BYTES", "2048")]).unwrap();
    assert_eq!(c.rules.asn.max_line_bytes, 2048);
    assert_eq!(
        errors("[lists]\nmax_line_bytes = 64\n[asn]\nmax_entries = 0\nmax_file_size = 1\n"),
        [
            format!("{PATH}:2: lists.max_line_bytes: must be at least 1024"),
            format!("{PATH}:4: asn.max_entries: must be at least 1"),
            format!(
                "{PATH}:5: asn.max_file_size: unknown field `max_file_size`, expected one of \
                 `databases`, `block`, `block_file`, `dry_run`, `max_file_bytes`, \
                 `max_line_bytes`, `max_entries`"
            ),
        ]
    );
}

#[test]
fn a_log_level_tracing_would_panic_on_is_refused() {
    // Found by the `config` fuzz target: tracing-subscriber 0.3's directive parser
    // slices inside a multi-byte character (tokio-rs/tracing#3297).
    for level in [" Aé[", "warn,é=debug", "spoa_guard=débug"] {
        let text = format!("[log]\nlevel = \"{level}\"\n");
        let err = validate(&text).unwrap_err().to_string();
        assert!(err.contains("only ASCII"), "{level}: {err}");
    }
    assert!(crate::config::log_filter(" A\u{e9}[").is_err());
    assert!(crate::config::log_filter("spoa_guard=debug,info").is_ok());
}
