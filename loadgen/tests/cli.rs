//! The generator as users run it: exit statuses and the one-line errors on stderr, never a
//! backtrace, whatever RUST_BACKTRACE says.

use std::process::{Command, Output};

/// Runs the built generator with `args`, RUST_BACKTRACE=full.
fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spoa-guard-loadgen"))
        .args(args)
        .env("RUST_BACKTRACE", "full")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .expect("the loadgen binary runs")
}

/// Stderr as text.
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The port of a listener just closed: nobody listens there.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn no_connection_exits_1_after_the_report() {
    let agent = format!("127.0.0.1:{}", closed_port());
    let out = loadgen(&[
        "--agent",
        &agent,
        "--connections",
        "1",
        "--duration",
        "200ms",
        "--warmup",
        "0s",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!("error: no connection to {agent} could be made (connection refused)\n")
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["acks"], 0);
    assert!(report["errors"]["connect: connection refused"].as_u64() > Some(0));
}

#[test]
fn a_bad_user_agent_file_exits_1_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ua.jsonl");
    std::fs::write(
        &file,
        "{\"useragent\": \"a\"}\n{\"ua\": \"b\"}\n{\"name\": \"Chrome\", \"version\": \"131\"}\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = loadgen(&["--agent", "127.0.0.1:1", "--user-agents", path]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {path}:3: no user-agent field: expected one of \"useragent\", \"ua\", \
             \"user_agent\"; found fields \"name\", \"version\"\n"
        )
    );
    assert!(out.stdout.is_empty());

    let missing = dir.path().join("missing.txt");
    let missing = missing.to_str().unwrap();
    let out = loadgen(&["--user-agents", missing]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with(&format!("error: {missing}: ")), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_duration_without_unit_is_a_usage_error() {
    let out = loadgen(&["--duration", "3"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("\"3\": a duration needs a unit, e.g. 3s or 500ms"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_values_exit_1_in_one_line() {
    let out = loadgen(&["--connections", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: --connections and --pipeline must be at least 1\n"
    );
}
