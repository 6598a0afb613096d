//! Gives memory that a flood of connections freed back to the kernel. glibc's
//! allocator keeps freed chunks in its per-thread arenas for reuse and only
//! shrinks a heap from its top, so after 16,000 partial request heads closed
//! the envelope still held hundreds of MiB it no longer used (docs/security.md,
//! "Memory"). `malloc_trim(0)` returns the free pages anywhere in every arena;
//! it runs off the runtime, on an interval, and only when the allocator holds
//! enough free memory to be worth the arena locks it takes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the free memory is looked at.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Free bytes held by the allocator below which nothing is trimmed: a quiet
/// envelope's own churn stays well under it.
pub const WORTH_TRIMMING: usize = 32 << 20;

/// Trims when the allocator holds at least `threshold` free bytes, and says
/// how many it held; `None` when it holds less, or where the allocator is not
/// glibc's. (The count stays the same after the trim: glibc still counts the
/// pages it gave back as free chunks, only no longer resident ones.)
pub fn trim_if_worth_it(threshold: usize) -> Option<usize> {
    let free = free_bytes()?;
    if free < threshold {
        return None;
    }
    release();
    Some(free)
}

/// Looks at the heap every [`INTERVAL`] until `stop`.
pub async fn return_freed_memory(stop: CancellationToken) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let looked = tokio::task::spawn_blocking(|| trim_if_worth_it(WORTH_TRIMMING)).await;
        if let Ok(Some(free)) = looked {
            tracing::debug!(free, "freed memory returned to the kernel");
        }
    }
}

// The workspace denies unsafe code; these two calls are its only exception in
// the envelope: glibc has no safe binding for them, and neither takes or
// returns a pointer.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn free_bytes() -> Option<usize> {
    // SAFETY: mallinfo2 only reads the allocator's own bookkeeping, under its locks.
    let info = unsafe { libc::mallinfo2() };
    Some(info.fordblks)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release() {
    // SAFETY: malloc_trim takes the arena locks itself; no pointer is handed over.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_bytes() -> Option<usize> {
    None
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[test]
    fn memory_freed_between_live_chunks_goes_back_to_the_kernel() {
        // 16 KiB chunks, like a connection's head buffer: below the mmap
        // threshold, so they come from the arena. Keeping every 16th alive
        // pins the arena's top, so only a trim can give the rest back.
        const CHUNK: usize = 16 << 10;
        const CHUNKS: usize = 16 * 1024;
        let mut chunks: Vec<Option<Vec<u8>>> = (0..CHUNKS)
            .map(|i| Some(vec![i as u8 | 1; CHUNK]))
            .collect();
        for (i, chunk) in chunks.iter_mut().enumerate() {
            if i % 16 != 0 {
                *chunk = None;
            }
        }
        let freed = CHUNK * CHUNKS / 16 * 15;
        let before = resident_bytes();
        let free = trim_if_worth_it(freed / 2).expect("240 MiB freed is worth trimming");
        let after = resident_bytes();
        assert!(free >= freed / 2, "{free}");
        assert!(
            before.saturating_sub(after) >= freed / 2,
            "resident {before} → {after} bytes after freeing {freed} ({free} free)"
        );
        // Still alive and intact.
        assert!(chunks.iter().flatten().all(|c| c[0] & 1 == 1));
    }

    #[test]
    fn a_heap_with_little_free_memory_is_left_alone() {
        assert_eq!(trim_if_worth_it(usize::MAX), None);
    }
}
