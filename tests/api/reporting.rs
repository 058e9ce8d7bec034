//! How the binary reports what stops it: a fatal error once, on stderr, and
//! never a panic when stderr cannot be written.

use std::{path::Path, process::Stdio, time::Duration};

use crate::helpers::{TEST_KEK, passthrough_env};

fn binary(cwd: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"));
    command
        .env_clear()
        .envs(passthrough_env())
        .env("JWKS_KEK", TEST_KEK)
        .env("JWKS_HTTP_ADDR", "127.0.0.1:0")
        .env("JWKS_GRPC_ADDR", "127.0.0.1:0")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn output(command: &mut tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command ends")
        .expect("the command runs")
}

#[tokio::test]
async fn a_failed_start_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database file should be: the store cannot open.
    let store = dir.path().join("jwks.db");
    std::fs::create_dir(&store).unwrap();
    let out = output(
        binary(dir.path())
            .env("JWKS_STORE", format!("sqlite://{}", store.display()))
            .stderr(Stdio::piped()),
    )
    .await;

    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("cannot open the key store"))
        .collect();
    assert_eq!(reports.len(), 1, "one report: {stderr}");
    assert!(reports[0].starts_with("jwks-server: "), "{stderr}");
}

#[tokio::test]
async fn settings_that_break_a_rule_exit_2_even_when_stderr_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full exists (Linux)");
    let out = output(
        binary(dir.path())
            .args(["--publish-ahead", "1s"])
            .env(
                "JWKS_STORE",
                format!("sqlite://{}/jwks.db", dir.path().display()),
            )
            .stderr(Stdio::from(full)),
    )
    .await;

    // A usage error, not a panic (101) over the line that could not be written.
    assert_eq!(out.status.code(), Some(2));
}
