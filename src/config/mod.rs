//! The TOML configuration: read from one file plus `SPOA_GUARD__*` environment
//! overrides, every section handed to the layer that owns it, checked, and frozen into a
//! [`Config`].
//!
//! Each layer owns its settings and their checks — `[server]` the server, `[metrics]` the
//! operations listener, `[insight]` traffic insight, the rule sections the rules and the
//! limits (assembled as the engine's [`RuleSettings`]) — and this module only assembles
//! them: it reads the file, applies the environment overrides (`env.rs`), resolves
//! relative paths against the file's directory, owns the two sections of the layers
//! above it (`[log]`, `[reload]`), and reports problems where the operator can act on
//! them. What needs a restart and what a reload applies is a property of the types:
//! [`Startup`] against [`RuleSettings`].
//!
//! Every problem is reported in one run, each with `file:line` (or the environment
//! variable that set the value) and the key: syntax errors, unknown keys and sections,
//! values of the wrong type (strictly: `dry_run = "yes"` is not a boolean), enum values
//! with the allowed ones listed, and every value a layer refuses. Warnings (a
//! `path_prefix` without a leading `/`) are kept in [`Config::warnings`].
//!
//! Section and key names are a user-facing contract (design.md "Configuration").
//!
//! Departure from design.md: it names the `config` crate. That crate merges sources
//! into a map without positions, so errors could not name a line, arrays of tables
//! could not be overridden from the environment, and its loose typing accepted `"yes"` as
//! a boolean. The file is parsed with the `toml` crate's span-keeping parser instead, and
//! the overrides (about a hundred lines) are applied to that tree.

mod document;
mod env;
mod error;
mod sections;
mod startup;

pub use env::{COMMA_LISTS, ENV_PREFIX};
pub use error::{ConfigError, ConfigErrors, Origin};
pub use startup::{log_filter, LogFormat, LogSettings, ReloadSettings, Startup};

use std::path::{Path, PathBuf};

use document::Document;
use sections::Reader;

use crate::engine::RuleSettings;
use crate::server::Listen;
use crate::util::settings::Severity;
use crate::util::{Invalid, KeyPath};

/// The sections a configuration may have, in the order they are read.
pub const SECTIONS: [&str; 13] = [
    "server",
    "metrics",
    "admin",
    "bans",
    "fleet",
    "log",
    "reload",
    "insight",
    "lists",
    "asn",
    "user_agent",
    "limit",
    "auto_ban",
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Everything that needs a restart to change.
    pub startup: Startup,
    /// Everything a reload applies: the rule sections, paths made absolute.
    pub rules: RuleSettings,
    /// Problems that do not stop the configuration from being used.
    pub warnings: Vec<ConfigError>,
}

/// The largest configuration file read: far above any real one, and a device such as
/// `/dev/zero` named by mistake cannot fill the memory.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The text of the configuration file at `path`: a regular file (or a link to one) of at
/// most [`MAX_CONFIG_BYTES`], in UTF-8; else why not, with the operating system's reason.
fn read_config_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => " (pass --config FILE)",
            _ => "",
        };
        format!("cannot read: {e}{hint}")
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let kind = file.metadata().map_err(cannot)?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, a socket or a pipe)"
        };
        return Err(format!("cannot read: {what}"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "cannot read: larger than {} MiB",
            MAX_CONFIG_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "cannot read: not UTF-8 text (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

impl Config {
    /// Reads the file at `path`, applies the `SPOA_GUARD__*` environment overrides, and
    /// checks everything.
    ///
    /// # Errors
    ///
    /// An unreadable file (with the operating system's reason), and every problem in it
    /// and in the overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = read_config_file(path).map_err(|e| ConfigError::file(path, e))?;
        Config::parse(path, &text, std::env::vars())
    }

    /// Checks `text` as the file at `path` with the overrides among `env` (tests and
    /// tools pass their own; [`Config::load`] passes the process environment).
    ///
    /// # Errors
    ///
    /// Every problem in the text and the overrides.
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let overrides = env::overrides(env);
        // The file, then each override's value on a line of its own: one buffer, so
        // every value's span says where it came from.
        let mut buffer = String::with_capacity(text.len() + 64 * overrides.len());
        buffer.push_str(text);
        let mut ranges = Vec::with_capacity(overrides.len());
        for o in &overrides {
            buffer.push('\n');
            ranges.push(buffer.len()..buffer.len() + o.value.len());
            buffer.push_str(&o.value);
        }
        let mut doc = Document::parse(path, &buffer, text.len())?;
        let mut errors = Vec::new();
        for (o, range) in overrides.iter().zip(ranges) {
            if let Err(error) = doc.set(&o.var, &o.path, range.clone(), o.comma_list()) {
                errors.push(ConfigError {
                    origin: Origin::Env { var: o.var.clone() },
                    key: None,
                    message: error.to_string(),
                    severity: Severity::Error,
                });
            }
        }
        let config = assemble(&doc, &mut errors);
        // In file order, then the environment's: the order an operator fixes them in.
        errors.sort_by_key(|e| match &e.origin {
            Origin::File { line, .. } => (0, line.unwrap_or(0), String::new()),
            Origin::Env { var } => (1, 0, var.clone()),
        });
        let (errors, warnings): (Vec<_>, Vec<_>) =
            errors.into_iter().partition(ConfigError::is_error);
        if errors.is_empty() {
            Ok(Config { warnings, ..config })
        } else {
            Err(ConfigErrors(errors.into_iter().chain(warnings).collect()))
        }
    }

    /// The configuration file and every rule file it names: what a reload reads, and
    /// what is watched. Absolute when the configuration path is.
    pub fn files(&self) -> Vec<PathBuf> {
        std::iter::once(self.path.as_path())
            .chain(self.rules.files())
            .map(Path::to_path_buf)
            .collect()
    }

    /// The settings that differ between `self` (in force) and `new` but only take effect
    /// after a restart, as `key (old → new)`; empty when a reload can apply everything.
    pub fn restart_changes(&self, new: &Config) -> Vec<String> {
        let (Ok(old), Ok(new)) = (
            toml::Table::try_from(&self.startup),
            toml::Table::try_from(&new.startup),
        ) else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        diff("", &old, &new, &mut changes);
        changes
    }
}

/// Reads every section of `doc`, checks it, and makes paths absolute; problems go to
/// `errors`.
fn assemble(doc: &Document<'_>, errors: &mut Vec<ConfigError>) -> Config {
    for (key, _) in &doc.root {
        if !SECTIONS.contains(&key.get_ref().as_ref()) {
            errors.push(doc.error(
                Some(key.span()),
                None,
                format!(
                    "unknown section `{}` (expected one of: {})",
                    key.get_ref(),
                    SECTIONS.join(", ")
                ),
            ));
        }
    }
    let mut reader = Reader::new(doc);
    let mut startup = Startup {
        server: reader.table("server"),
        metrics: reader.table("metrics"),
        log: reader.table("log"),
        reload: reader.table("reload"),
        insight: reader.table("insight"),
        bans: reader.table("bans"),
        admin: reader.table("admin"),
        fleet: reader.table("fleet"),
    };
    let mut rules = RuleSettings {
        lists: reader.table("lists"),
        asn: reader.table("asn"),
        user_agent: reader.array("user_agent"),
        limit: reader.array("limit"),
        auto_ban: reader.array("auto_ban"),
    };
    errors.append(&mut reader.errors);
    let problems = validate(&startup, &rules);
    errors.extend(problems.iter().map(|p| {
        doc.problem(
            doc.locate(&p.key),
            Some(&p.key),
            p.message.clone(),
            p.severity,
        )
    }));
    let base = doc
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    startup.server.rebase(&base);
    startup.bans.rebase(&base);
    startup.admin.rebase(&base);
    if let Some(fleet) = &mut startup.fleet {
        fleet.rebase(&base);
    }
    rules.rebase(&base);
    Config {
        path: doc.path().to_path_buf(),
        startup,
        rules,
        warnings: Vec::new(),
    }
}

/// Every section's own checks, keys from the top of the file, and the checks across
/// sections.
fn validate(startup: &Startup, rules: &RuleSettings) -> Vec<Invalid> {
    let within = |section: &str, problems: Vec<Invalid>| -> Vec<Invalid> {
        let at = KeyPath::of(section);
        problems.into_iter().map(|p| p.within(&at)).collect()
    };
    let mut problems = Vec::new();
    problems.extend(within("server", startup.server.validate()));
    problems.extend(within("log", startup.log.validate()));
    problems.extend(within("reload", startup.reload.validate()));
    problems.extend(within("insight", startup.insight.validate()));
    problems.extend(within("bans", startup.bans.validate()));
    problems.extend(within("admin", startup.admin.validate()));
    if let Some(fleet) = &startup.fleet {
        problems.extend(within("fleet", fleet.validate()));
    }
    problems.extend(within("lists", rules.lists.validate()));
    problems.extend(rules.validate());
    if startup.fleet.is_none() {
        for (i, limit) in rules.limit.iter().enumerate() {
            if limit.scope == crate::limits::Scope::Fleet {
                problems.push(Invalid::error(
                    KeyPath::of("limit").index(i).key("scope"),
                    "\"fleet\" needs a [fleet] section (the store the agents share); without one use \"local\"",
                ));
            }
        }
    }
    if let (Some(metrics), Listen::Tcp(spop)) = (startup.metrics.listen, &startup.server.listen) {
        if metrics == *spop && metrics.port() != 0 {
            problems.push(Invalid::error(
                KeyPath::of("metrics").key("listen"),
                format!("{metrics} is also server.listen; use another port"),
            ));
        }
    }
    if let Some(admin) = &startup.admin.listen {
        let metrics = startup.metrics.listen.map(Listen::Tcp);
        let clash = match admin {
            Listen::Tcp(addr) if addr.port() == 0 => None,
            _ if *admin == startup.server.listen => Some("server.listen"),
            _ if Some(admin) == metrics.as_ref() => Some("metrics.listen"),
            _ => None,
        };
        if let Some(other) = clash {
            problems.push(Invalid::error(
                KeyPath::of("admin").key("listen"),
                format!("{admin} is also {other}; use another address"),
            ));
        }
    }
    problems
}

/// Adds to `changes` every key of `old` and `new` whose values differ.
fn diff(prefix: &str, old: &toml::Table, new: &toml::Table, changes: &mut Vec<String>) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (old.get(key), new.get(key)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                diff(&name, a, b, changes);
            }
            (a, b) if a != b => {
                let show = |v: Option<&toml::Value>| match v {
                    None => "none".to_string(),
                    Some(toml::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                changes.push(format!("{name} ({} → {})", show(a), show(b)));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
