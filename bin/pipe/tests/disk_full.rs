//! A full disk, on a real small filesystem: a node process whose data directory is a 40 MiB
//! tmpfs. While the disk is full, every transaction the node acknowledges is durable (it went
//! into the pending log's preallocated space) or refused with an error, and blocks stop; once
//! space is freed, blocks resume without a restart and every acknowledged transaction is
//! included. (Before, the database refused all work after the first failed commit until the
//! node was restarted.)
//!
//! Mounting needs privileges: the test runs itself again inside a new user and mount namespace
//! (`unshare -Urm`), where it may mount a tmpfs that nothing outside sees, or mounts directly
//! when it is root and `unshare` is not allowed.

mod common;

use std::{path::Path, process::Command, time::Duration};

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use serde_json::{Value, json};

const INNER: &str = "PIPE_DISK_FULL_INNER";

/// A 1 wei transfer to this test's sink address.
fn transfer(key: &PrivateKeySigner, nonce: u64) -> (String, String) {
    common::transfer(key, nonce, Address::repeat_byte(0x55))
}

fn mount_tmpfs(at: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success())
}

/// Fills the filesystem of `dir` with one file until it refuses more.
fn fill(dir: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 1 << 16];
    let mut written = 0u64;
    while f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    // The last partial chunk may have gone in; either way the disk is full now.
    let _ = f.sync_all();
    written
}

/// Waits up to `seconds` for every one of `hashes` to have a receipt.
async fn included(url: &str, hashes: &[String], seconds: usize) {
    let got = common::wait_receipts(url, hashes, seconds * 10, Duration::from_millis(100)).await;
    let missing = got.iter().filter(|r| r.is_none()).count();
    assert_eq!(missing, 0, "{missing} of {} not included", hashes.len());
}

async fn block_number(url: &str) -> u64 {
    common::quantity(&common::rpc(url, "eth_blockNumber", json!([])).await["result"])
}

#[test]
fn a_full_disk_refuses_or_keeps_every_transaction_and_blocks_resume_when_space_returns() {
    if std::env::var(INNER).is_ok() {
        return inner();
    }
    let exe = std::env::current_exe().unwrap();
    let args = [
        "--exact",
        "a_full_disk_refuses_or_keeps_every_transaction_and_blocks_resume_when_space_returns",
        "--nocapture",
        "--test-threads=1",
    ];
    // In a user and mount namespace of its own, where it may mount without privileges.
    let namespaced = Command::new("unshare")
        .arg("-Urm")
        .arg(&exe)
        .args(args)
        .env(INNER, "1")
        .status();
    match namespaced {
        Ok(s) if s.success() => {}
        Ok(s) if s.code() == Some(1) && !unshare_allowed() => direct(&exe, &args),
        Ok(s) => panic!("the disk-full scenario failed in its namespace: {s}"),
        Err(_) => direct(&exe, &args),
    }
}

/// Whether this machine lets us make a user namespace at all.
fn unshare_allowed() -> bool {
    Command::new("unshare")
        .args(["-Urm", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Without namespaces: as root, in this mount namespace (the mount is removed after).
fn direct(exe: &Path, args: &[&str]) {
    let status = Command::new(exe)
        .args(args)
        .env(INNER, "1")
        .status()
        .unwrap();
    assert!(status.success(), "the disk-full scenario failed: {status}");
}

fn inner() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(
        mount_tmpfs(&mnt, "40m"),
        "cannot mount a tmpfs (needs root, or unprivileged user namespaces)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario(&mnt));
}

async fn scenario(mnt: &Path) {
    let key: PrivateKeySigner = common::DEV_KEY_0.parse().unwrap();
    let port = common::free_port();
    let node =
        common::NodeProcess::start(&mnt.join("data"), port, &["--block-time-ms", "200"]).await;
    let url = node.url.clone();
    let send = |raw: String| {
        let url = url.clone();
        async move { common::rpc(&url, "eth_sendRawTransaction", json!([raw])).await }
    };

    // Before: a transfer is acknowledged and included.
    let (first, raw) = transfer(&key, 0);
    assert!(send(raw).await["result"].is_string());
    included(&url, std::slice::from_ref(&first), 20).await;

    // The disk fills up.
    let filled = fill(mnt);
    assert!(filled > 0);
    let mut acknowledged = vec![first];
    let mut refused = 0;
    for nonce in 1..40u64 {
        let (hash, raw) = transfer(&key, nonce);
        let answer: Value = send(raw).await;
        if answer["result"].is_string() {
            acknowledged.push(hash);
        } else {
            refused += 1;
            // A refused nonce is not pending: the sender starts again from it.
            break;
        }
    }
    // Blocks cannot be written: the head stops.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stuck = block_number(&url).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        block_number(&url).await,
        stuck,
        "no block while the disk is full"
    );
    eprintln!(
        "disk full: {} acknowledged after filling {filled} bytes, {refused} refused, head stuck at {stuck}",
        acknowledged.len() - 1
    );

    // Space returns: the node goes on by itself, and includes everything it acknowledged.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    included(&url, &acknowledged, 30).await;
    assert!(block_number(&url).await > stuck);
    // And it takes new transactions as before.
    let nonce = common::pending_nonce(&url, key.address()).await;
    let (hash, raw) = transfer(&key, nonce);
    assert!(send(raw).await["result"].is_string());
    included(&url, std::slice::from_ref(&hash), 20).await;
    drop(node);
}
