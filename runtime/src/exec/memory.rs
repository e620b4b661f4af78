//! Resident memory of the process, read from `/proc/self/status` (Linux).
//!
//! Contract: [`read_memory_status`] returns `None` where that file does not exist or lacks the
//! `VmRSS`/`VmHWM` lines; it never fails otherwise.

/// Resident memory figures in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStatus {
    /// Current resident set size (`VmRSS`).
    pub rss_bytes: u64,
    /// Peak resident set size of the process (`VmHWM`).
    pub peak_rss_bytes: u64,
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let rest = line[key.len()..].trim_start_matches(':').trim();
    let num = rest.split_whitespace().next()?;
    num.parse::<u64>().ok().map(|k| k * 1024)
}

/// Parses the text of a `/proc/<pid>/status` file.
pub fn parse_memory_status(text: &str) -> Option<MemoryStatus> {
    Some(MemoryStatus {
        rss_bytes: kib_field(text, "VmRSS")?,
        peak_rss_bytes: kib_field(text, "VmHWM")?,
    })
}

/// The process's current and peak resident memory, when the platform exposes them.
pub fn read_memory_status() -> Option<MemoryStatus> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_memory_status(&text)
}

/// Bytes of memory the system can still give this process (`MemAvailable` in
/// `/proc/meminfo`), when the platform says.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&text, "MemAvailable")
}

/// Returns the allocator's free memory to the operating system (glibc's `malloc_trim`: free
/// pages inside the heap too, not only at its top), so the resident size follows the live
/// values instead of the largest set ever allocated. A no-op on other platforms.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects and releases free chunks of glibc's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tunes glibc's allocator for long computations on large, short-lived
/// buffers (bootstrapping, deep circuits): freed memory stays in the heap for
/// reuse instead of being returned to the operating system and faulted in
/// again on the next allocation (buffers up to 32 MiB come from the heap, the
/// heap is trimmed only past 1 GiB of free memory at its top). The resident
/// size then follows the peak of live buffers; [`release_free_memory`] still
/// returns free memory on demand. A no-op on other platforms.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator thresholds; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// User plus system CPU seconds of the process so far (`/proc/self/stat`, assuming the usual
/// 100 clock ticks per second), when the platform exposes them.
pub fn read_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kib_lines() {
        let t = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(
            parse_memory_status(t),
            Some(MemoryStatus {
                rss_bytes: 1024 * 1024,
                peak_rss_bytes: 2048 * 1024
            })
        );
        assert_eq!(parse_memory_status("VmRSS: 1 kB\n"), None);
        let meminfo = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(kib_field(meminfo, "MemAvailable"), Some(20_000_000 * 1024));
    }
}
