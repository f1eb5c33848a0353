//! How many threads one run uses.
//!
//! candle's CPU kernels size their work from `RAYON_NUM_THREADS` (rayon's own variable), read
//! when a kernel runs, and default to every physical core. A node runs several requests at
//! once (one per worker slot), so one thread per run is the rule here: runs do not fight over
//! cores, a run's speed does not depend on what else runs, and every node computes the same
//! way. An operator who wants otherwise sets `RAYON_NUM_THREADS` before starting the binary.
//! `pipe bench llm` measures whether answers are bit-identical across thread counts.

/// The thread count a run uses when `RAYON_NUM_THREADS` is not set.
pub const DEFAULT_THREADS: usize = 1;

/// Sets `RAYON_NUM_THREADS` to [`DEFAULT_THREADS`] unless it is set already.
///
/// # Safety
/// It writes the process environment: call it at the start of `main`, before any other
/// thread (an async runtime's included) exists.
pub unsafe fn pin_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees no other thread is running.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", DEFAULT_THREADS.to_string()) };
    }
}

/// The thread count runs use in this process.
pub fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}
