//! Frames captured from real HAProxy 2.6 and 3.2 (`tests/fixtures/captures/`): the one
//! reader of their `.hex` files.

use std::path::{Path, PathBuf};

/// The captures directory.
pub fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures")
}

/// Reads a `.hex` capture (lowercase hex on one line, plus a final newline) by its path
/// relative to the captures directory, e.g. `haproxy-3.2/05-notify-r1-get-root.hex`.
pub fn read_hex(file: &str) -> Vec<u8> {
    let path = captures_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    hex::decode(text.trim_end()).unwrap_or_else(|e| panic!("{file}: not hex: {e}"))
}
