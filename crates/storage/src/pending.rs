//! The pool's persisted pending transactions: an append-only log of its own (`pending.log`
//! beside `chain.redb`), as geth keeps its transaction journal.
//!
//! # Why not a redb table
//! An acknowledgement waits for its fsync, and on average for about one and a half of them
//! (the commit in flight when it arrives, then its own). Measured on the CI machines, a redb
//! commit with `Durability::Immediate` costs about 0.30 ms, an fdatasync of a write into an
//! already allocated file about 0.13 ms; `pipe bench ingest` sends from ten clients at once,
//! so that difference is most of its send rate. A table inside `chain.redb` was worse still:
//! redb has one writer, so acknowledgements queued behind block commits.
//!
//! # Format
//! A sequence of records, each `len: u32 LE` (of the payload), `kind: u8` (1 put, 2 delete),
//! `hash: [u8; 32]`, the payload (a transaction's EIP-2718 bytes, empty for a delete), and a
//! CRC-32 of everything before it. The file is kept allocated ahead of the writes
//! ([`CHUNK`] bytes of zeros at a time, synced) so a write's fdatasync flushes data only, not
//! the file's size. Reading stops at the first record that is cut short or fails its
//! checksum: that is where a crash interrupted a write nobody was told had succeeded.
//!
//! # Compaction
//! On open, the live transactions are written to a fresh file that replaces the old one
//! atomically (written and synced, renamed, the directory synced), so every start begins with
//! a clean log and no stale bytes past its end. While running, the log is compacted the same
//! way when it has grown past [`COMPACT_AT`] and less than a quarter of it is live.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use alloy_primitives::{B256, Bytes};
use parking_lot::Mutex;

use crate::StoreError;

/// Bytes of zeros the file grows by at a time.
pub const CHUNK: u64 = 16 << 20;
/// Log size from which a mostly dead log is compacted while running.
pub const COMPACT_AT: u64 = 64 << 20;
/// Largest payload accepted (a transaction is at most 128 KiB; this is only a sanity bound
/// against reading garbage as a length).
const MAX_PAYLOAD: usize = 1 << 20;
const HEADER: usize = 4 + 1 + 32;
const PUT: u8 = 1;
const DELETE: u8 = 2;

/// Pending transactions by hash, as EIP-2718 bytes, in an append-only log.
#[derive(Debug)]
pub struct PendingLog {
    path: PathBuf,
    inner: Mutex<Log>,
}

#[derive(Debug)]
struct Log {
    file: File,
    /// Where the next record goes.
    end: u64,
    /// Bytes of the file allocated (written with zeros and synced).
    allocated: u64,
    live: HashMap<B256, Bytes>,
    /// Bytes of the live transactions' records.
    live_bytes: u64,
    /// No compaction before the log reaches this size (pushed on after one failed, so a
    /// full disk is not asked for a copy at every write).
    compact_after: u64,
}

impl PendingLog {
    /// Opens (or creates) the log at `path` and compacts it. When there is no room for the
    /// compacted copy (a full disk), the log is used as it is, from the end of its last whole
    /// record, so a node with a full disk still starts.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let (live, end) = match File::open(path) {
            Ok(mut f) => {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).map_err(io)?;
                replay(&buf)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (HashMap::new(), 0),
            Err(e) => return Err(io(e)),
        };
        let log = match rewrite(path, &live) {
            Ok(log) => log,
            Err(e) if end > 0 => {
                tracing::warn!(target: "pipe::storage", error = %e, "cannot compact the pending log; using it as it is");
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(io)?;
                let allocated = file.metadata().map_err(io)?.len();
                // Past the last whole record: zeros, or a torn write nobody was told had
                // succeeded. Cleared, so a later shorter write cannot leave it readable.
                let _ = file.write_all_at(&vec![0u8; (allocated - end).min(1 << 20) as usize], end);
                let live_bytes = live.values().map(|raw| record_len(raw.len())).sum();
                Log {
                    file,
                    end,
                    allocated,
                    live,
                    live_bytes,
                    compact_after: end + CHUNK,
                }
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            path: path.to_path_buf(),
            inner: Mutex::new(log),
        })
    }

    /// Applies `ops` in order: `Some` puts the bytes under the hash, `None` deletes. With
    /// `durable`, on disk before returning (what an acknowledgement needs); otherwise with the
    /// next durable write (deletions can wait: a restart re-validates whatever it finds).
    /// A failed write (a full disk) leaves the log as it was.
    pub fn write(&self, ops: &[(B256, Option<Bytes>)], durable: bool) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for (hash, raw) in ops {
            match raw {
                Some(raw) => encode(&mut buf, PUT, hash, raw),
                None => encode(&mut buf, DELETE, hash, &[]),
            }
        }
        let mut log = self.inner.lock();
        let needed = log.end + buf.len() as u64;
        if needed > log.allocated {
            let grow_to = needed.div_ceil(CHUNK) * CHUNK;
            allocate(&log.file, log.allocated, grow_to)?;
            log.allocated = grow_to;
        }
        let written = log.file.write_all_at(&buf, log.end).and_then(|()| {
            if durable {
                log.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Nobody will be told these records were written: clear them (best effort), so
            // a later, shorter batch written over them cannot leave whole ones behind.
            let _ = log.file.write_all_at(&vec![0u8; buf.len()], log.end);
            return Err(io(e));
        }
        log.end += buf.len() as u64;
        for (hash, raw) in ops {
            let old = match raw {
                Some(raw) => {
                    log.live_bytes += record_len(raw.len());
                    log.live.insert(*hash, raw.clone())
                }
                None => log.live.remove(hash),
            };
            if let Some(old) = old {
                log.live_bytes -= record_len(old.len());
            }
        }
        if log.end > COMPACT_AT.max(log.compact_after) && log.live_bytes * 4 < log.end {
            // The writes above stand whatever happens here: a compaction that fails (no
            // room for the copy) leaves the log as it was, valid, to try again later.
            let compacted = log
                .file
                .sync_data()
                .map_err(io)
                .and_then(|()| rewrite(&self.path, &log.live));
            match compacted {
                Ok(new) => *log = new,
                Err(e) => {
                    log.compact_after = log.end + CHUNK;
                    tracing::warn!(target: "pipe::storage", error = %e, "pending log compaction failed")
                }
            }
        }
        Ok(())
    }

    /// Every persisted transaction's bytes.
    pub fn load(&self) -> Vec<Bytes> {
        self.inner.lock().live.values().cloned().collect()
    }

    /// Bytes of log in use (for tests and metrics).
    pub fn used_bytes(&self) -> u64 {
        self.inner.lock().end
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn record_len(payload: usize) -> u64 {
    (HEADER + payload + 4) as u64
}

fn encode(buf: &mut Vec<u8>, kind: u8, hash: &B256, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(hash.as_slice());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// The live set a log's bytes describe, up to the first record that is not whole, and where
/// that is.
fn replay(buf: &[u8]) -> (HashMap<B256, Bytes>, u64) {
    let mut live = HashMap::new();
    let mut at = 0usize;
    while buf.len() >= at + HEADER + 4 {
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = buf[at + 4];
        if len > MAX_PAYLOAD || buf.len() < at + HEADER + len + 4 {
            break;
        }
        let body_end = at + HEADER + len;
        let crc = u32::from_le_bytes(buf[body_end..body_end + 4].try_into().expect("4 bytes"));
        // Zeros past the end fail here too: kind 0 is no record.
        if crc32fast::hash(&buf[at..body_end]) != crc || !(kind == PUT || kind == DELETE) {
            break;
        }
        let hash = B256::from_slice(&buf[at + 5..at + HEADER]);
        if kind == PUT {
            live.insert(hash, Bytes::copy_from_slice(&buf[at + HEADER..body_end]));
        } else {
            live.remove(&hash);
        }
        at = body_end + 4;
    }
    (live, at as u64)
}

/// Grows `file` from `from` to `to` bytes of zeros, synced, so later writes there change no
/// file metadata.
fn allocate(file: &File, from: u64, to: u64) -> Result<(), StoreError> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(zeros.len());
        file.write_all_at(&zeros[..n], at).map_err(io)?;
        at += n as u64;
    }
    file.sync_all().map_err(io)
}

/// Writes `live` to a fresh file that atomically replaces `path`, and opens it. Until the
/// rename, a failure leaves `path` untouched; after it, the new file is the log whatever
/// else fails, so it is opened even if syncing the directory did not work.
fn rewrite(path: &Path, live: &HashMap<B256, Bytes>) -> Result<Log, StoreError> {
    let tmp = path.with_extension("log.new");
    let mut buf = Vec::new();
    let mut live_bytes = 0;
    for (hash, raw) in live {
        encode(&mut buf, PUT, hash, raw);
        live_bytes += record_len(raw.len());
    }
    let allocated = (buf.len() as u64 + CHUNK).div_ceil(CHUNK) * CHUNK;
    let written = (|| {
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&buf).map_err(io)?;
        allocate(&f, buf.len() as u64, allocated)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    if let Some(dir) = path.parent() {
        // The rename is durable once the directory is; until then a crash leaves the old
        // log, which holds the same live transactions.
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(target: "pipe::storage", error = %e, "syncing the pending log's directory");
        }
    }
    Ok(Log {
        file,
        end: buf.len() as u64,
        allocated,
        live: live.clone(),
        live_bytes,
        compact_after: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(n: u8, len: usize) -> Bytes {
        Bytes::from(vec![n; len])
    }

    #[test]
    fn writes_apply_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.log");
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        {
            let log = PendingLog::open(&path).unwrap();
            log.write(
                &[
                    (a, Some(tx(1, 100))),
                    (b, Some(tx(2, 100))),
                    (a, None),
                    (a, Some(tx(3, 50))),
                ],
                true,
            )
            .unwrap();
            log.write(&[(b, None)], true).unwrap();
        }
        let log = PendingLog::open(&path).unwrap();
        assert_eq!(log.load(), vec![tx(3, 50)]);
        // Reopening compacted the log to its one live record.
        assert_eq!(log.used_bytes(), record_len(50));
    }

    #[test]
    fn a_torn_tail_is_where_the_log_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.log");
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        let end = {
            let log = PendingLog::open(&path).unwrap();
            log.write(&[(a, Some(tx(1, 100)))], true).unwrap();
            log.write(&[(b, Some(tx(2, 100)))], true).unwrap();
            log.used_bytes()
        };
        // A crash tore the second record: its last bytes never reached the disk.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0u8; 8], end - 8).unwrap();
        drop(f);
        let log = PendingLog::open(&path).unwrap();
        assert_eq!(log.load(), vec![tx(1, 100)]);
        // And writing goes on from there.
        log.write(&[(b, Some(tx(4, 10)))], true).unwrap();
        drop(log);
        let mut got = PendingLog::open(&path).unwrap().load();
        got.sort();
        assert_eq!(got, vec![tx(1, 100), tx(4, 10)]);
    }

    #[test]
    fn garbage_is_not_read_as_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.log");
        std::fs::write(&path, [0xffu8; 4096]).unwrap();
        assert!(PendingLog::open(&path).unwrap().load().is_empty());
    }

    #[test]
    fn a_mostly_dead_log_is_compacted_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.log");
        let log = PendingLog::open(&path).unwrap();
        let keep = B256::repeat_byte(0xaa);
        log.write(&[(keep, Some(tx(9, 200)))], true).unwrap();
        // Put and delete 100 KiB records until well past the compaction size.
        let big = tx(7, 100 << 10);
        for i in 0..(COMPACT_AT / (100 << 10) + 10) {
            let h = B256::from(alloy_primitives::U256::from(i));
            log.write(&[(h, Some(big.clone()))], false).unwrap();
            log.write(&[(h, None)], false).unwrap();
        }
        assert!(log.used_bytes() < COMPACT_AT, "{}", log.used_bytes());
        assert_eq!(log.load(), vec![tx(9, 200)]);
        drop(log);
        assert_eq!(PendingLog::open(&path).unwrap().load(), vec![tx(9, 200)]);
    }
}
