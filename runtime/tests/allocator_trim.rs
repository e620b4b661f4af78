//! The mid-stage trim: free chunks left between live buffers (a heap with holes, as a stage
//! leaves it when ciphertexts of one level are freed between those of the next) are seen by
//! `free_heap_bytes` and handed back by `release_free_memory_over` only past its slack. One
//! test in its own process, so no other test's allocations move the resident size it reads.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may fail loudly

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn holes_in_the_heap_are_counted_and_released_past_the_slack() {
    use hecc_runtime::exec::{free_heap_bytes, read_memory_status, release_free_memory_over};

    // 2,048 buffers of 64 KiB (below glibc's mmap threshold, so they come from the heap),
    // every page touched; then every other one freed: 64 MiB of holes that cannot merge.
    const SIZE: usize = 64 << 10;
    let mut bufs: Vec<Option<Vec<u8>>> = (0..2048).map(|i| Some(vec![i as u8 | 1; SIZE])).collect();
    let before_free = free_heap_bytes().unwrap();
    for b in bufs.iter_mut().step_by(2) {
        *b = None;
    }
    let holes = free_heap_bytes().unwrap().saturating_sub(before_free);
    assert!(
        holes >= 60 << 20,
        "only {holes} bytes free after freeing 64 MiB"
    );

    // Under the slack nothing happens; past it, the holes' pages leave the resident set.
    assert!(!release_free_memory_over(u64::MAX));
    let rss = read_memory_status().unwrap().rss_bytes;
    assert!(release_free_memory_over(16 << 20));
    let after = read_memory_status().unwrap().rss_bytes;
    assert!(
        after + (48 << 20) <= rss,
        "resident {rss} -> {after} bytes: the holes were not released"
    );
    // The live buffers are untouched.
    for (i, b) in bufs.iter().enumerate() {
        if let Some(b) = b {
            assert!(b.iter().all(|&x| x == i as u8 | 1));
        }
    }
}
