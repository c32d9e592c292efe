//! `[admin]`: where the admin listener listens and who may use it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::util::{Invalid, KeyPath, Listen};

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// `unix:/run/spoa-guard/admin.sock` (the default kind: only local users the socket's
    /// mode admits) or `127.0.0.1:9465` (then `token_file` is required). Absent: no
    /// admin listener, and the CLI's `ban`, `bans`, `rules`, `dry-run` cannot reach the
    /// agent.
    pub listen: Option<Listen>,
    /// The unix socket's mode, octal: `"0600"` (the default: the agent's user only) or
    /// `"0660"` to share it with `socket_group`.
    pub socket_mode: Option<String>,
    /// The unix socket's group: a name from /etc/group or a number.
    pub socket_group: Option<String>,
    /// A file holding the bearer token TCP clients must send (`Authorization: Bearer
    /// …`); required on TCP, read at start.
    pub token_file: Option<PathBuf>,
}

/// The socket mode when `socket_mode` is not set.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

impl AdminSettings {
    /// Every problem, keys relative to `[admin]`.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        if let Some(mode) = &self.socket_mode {
            if let Err(e) = parse_mode(mode) {
                problems.push(Invalid::error(KeyPath::of("socket_mode"), e));
            }
        }
        match (&self.listen, &self.token_file) {
            (Some(Listen::Tcp(addr)), None) => problems.push(Invalid::error(
                KeyPath::of("listen"),
                format!(
                    "{addr} is TCP: set token_file too (anyone who can connect could ban and \
                     unban), or listen on unix:/path"
                ),
            )),
            (Some(Listen::Unix(_)), Some(_)) => problems.push(Invalid::warning(
                KeyPath::of("token_file"),
                "ignored on a unix socket, whose mode and group decide who may connect",
            )),
            _ => {}
        }
        if self.socket_group.as_deref().is_some_and(str::is_empty) {
            problems.push(Invalid::error(
                KeyPath::of("socket_group"),
                "empty; leave it out to keep the agent's group",
            ));
        }
        problems
    }

    /// Makes relative paths relative to `base` (the configuration's directory).
    pub fn rebase(&mut self, base: &Path) {
        if let Some(Listen::Unix(path)) = &mut self.listen {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if let Some(path) = &mut self.token_file {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// The unix socket's mode.
    pub fn mode(&self) -> u32 {
        self.socket_mode
            .as_deref()
            .and_then(|m| parse_mode(m).ok())
            .unwrap_or(DEFAULT_SOCKET_MODE)
    }
}

/// `"0660"` → 0o660.
fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|&m| m <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode such as \"0600\" or \"0660\""))
}

/// Reads the bearer token from `path`: the file's text without surrounding whitespace.
///
/// # Errors
///
/// An unreadable file, or one with no token in it.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the admin token: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{}: the admin token file is empty", path.display()));
    }
    if token.len() < 16 {
        return Err(format!(
            "{}: the admin token is {} characters; use at least 16 (e.g. `openssl rand -hex 32`)",
            path.display(),
            token.len()
        ));
    }
    Ok(token.to_string())
}

/// The group id of `group`: a number, or a name looked up in /etc/group.
///
/// # Errors
///
/// A name /etc/group does not have.
pub fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("socket_group {group:?}: cannot read /etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("socket_group {group:?}: no such group in /etc/group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> AdminSettings {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn tcp_needs_a_token_file_and_modes_are_octal() {
        let tcp = settings("listen = \"127.0.0.1:9465\"");
        assert!(tcp.validate()[0].message.contains("set token_file"));
        let ok = settings("listen = \"127.0.0.1:9465\"\ntoken_file = \"t\"");
        assert!(ok.validate().is_empty());
        let unix = settings("listen = \"unix:admin.sock\"\nsocket_mode = \"0660\"");
        assert!(unix.validate().is_empty());
        assert_eq!(unix.mode(), 0o660);
        assert_eq!(settings("").mode(), 0o600);
        let bad = settings("socket_mode = \"rw\"");
        assert!(bad.validate()[0].message.contains("octal"));
        assert!(settings("socket_mode = \"1777\"").validate()[0]
            .message
            .contains("octal"));
    }

    #[test]
    fn tokens_must_be_long_enough_and_groups_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  0123456789abcdef0123\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "0123456789abcdef0123");
        std::fs::write(&path, "short\n").unwrap();
        assert!(read_token(&path).unwrap_err().contains("at least 16"));
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token(&path).unwrap_err().contains("empty"));
        assert_eq!(group_id("0"), Ok(0));
        assert_eq!(group_id("root"), Ok(0));
        assert!(group_id("no-such-group-here").is_err());
    }
}
