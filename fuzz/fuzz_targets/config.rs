//! Arbitrary text as the configuration file through [`Config::parse`], with no
//! environment overrides: TOML syntax, every section's settings and their validation.
//! `Config::parse` reads no file (the rule files it names are read later, by the rule
//! loaders), so every input is checked in memory.
//!
//! Checks: never panics; a configuration that is accepted lists its files and reports
//! no restart-only change against itself.
//!
//! Seeds: `examples/spoa-guard.toml` whole, with its commented-out `[fleet]` switched on,
//! and cut into one file per section (so mutations start from every section), and the
//! TOML blocks of `README.md` and `deploy/README.md`.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spoa_guard::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = Config::parse(Path::new("/etc/spoa-guard/spoa-guard.toml"), &text, []) else {
        return;
    };
    let _ = config.files();
    let changes = config.restart_changes(&config);
    assert!(
        changes.is_empty(),
        "restart-only changes against itself: {changes:?}"
    );
});
