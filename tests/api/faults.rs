//! Faults that must neither take the service down nor go unnoticed: a log
//! that cannot be written, a background refresher that panics, a store whose
//! disk is full, and core dumps that would hold every key.
//!
//! These tests use what CI has as root: `/dev/full`, tmpfs mounts, another
//! user id for a child process.

use std::{
    collections::HashSet,
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::Stdio,
    time::Duration,
};

use crate::helpers::{TEST_KEK, passthrough_env};

/// Calls `probe` every 100 ms until it answers, for at most `limit`.
async fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The TCP ports process `pid` listens on, read from /proc: its socket
/// inodes, matched against the kernel's table of listening sockets.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st ... inode; st 0A is LISTEN.
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&"0A") || !inodes.contains(*fields.get(9)?) {
                return None;
            }
            u16::from_str_radix(fields.get(1)?.split(':').nth(1)?, 16).ok()
        })
        .collect()
}

// Item 6: a core dump would hold every private key and the KEK.
#[tokio::test]
async fn core_dumps_are_off_for_the_server_and_the_operator_commands() {
    // The child runs as `nobody`: the kernel then hands the /proc files of a
    // process that may not be dumped to root, which a test can observe.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let store = format!("sqlite://{}", dir.path().join("jwks.db").display());
    for args in [&[][..], &["hash-secret"][..]] {
        // Core dumps allowed, as a shell with `ulimit -c unlimited` would start it.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -c unlimited && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_jwks-server"))
            .args(args)
            .env_clear()
            .envs(passthrough_env())
            .env("JWKS_KEK", TEST_KEK)
            .env("JWKS_STORE", &store)
            .env("JWKS_HTTP_ADDR", "127.0.0.1:0")
            .env("JWKS_GRPC_ADDR", "127.0.0.1:0")
            .uid(65534)
            .gid(65534)
            // hash-secret waits for the secret on stdin, which stays open.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts as nobody");
        let pid = child.id().unwrap();
        let (limits, owner) = wait_until(
            &format!("jwks-server {args:?} turns core dumps off"),
            Duration::from_secs(20),
            async || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("jwks-server {args:?} exited: {status}");
                }
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
                if !exe.ends_with("jwks-server") {
                    return None; // still the shell
                }
                if args.is_empty() && listening_ports(pid).is_empty() {
                    return None; // not started yet
                }
                let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
                let core = limits
                    .lines()
                    .find(|l| l.starts_with("Max core file size"))?
                    .split_whitespace()
                    .skip(4)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                let owner = std::fs::metadata(format!("/proc/{pid}/status")).ok()?.uid();
                (core == "0 0" && owner == 0).then_some((core, owner))
            },
        )
        .await;
        assert_eq!(limits, "0 0");
        assert_eq!(owner, 0, "not dumpable: /proc/{pid} belongs to root");
        child.kill().await.unwrap();
    }
}
