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

/// Bytes of memory this process can still get: the least of what the system has available
/// (`MemAvailable` in `/proc/meminfo`), the room left under the memory limit of its control
/// group and of every parent group (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`),
/// and the room left under its address-space and data limits (`ulimit -v`, `ulimit -d`).
/// `None` when none of these is readable (other platforms).
pub fn available_memory() -> Option<u64> {
    let system = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| kib_field(&t, "MemAvailable"));
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let mapped = status.as_deref().and_then(|t| kib_field(t, "VmSize"));
    let data = status.as_deref().and_then(|t| kib_field(t, "VmData"));
    [
        system,
        cgroup_room(),
        rlimit_room(Resource::AddressSpace, mapped),
        rlimit_room(Resource::Data, data),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// A limit value of a cgroup file: a number of bytes, or `None` for `max` (v2) or the
/// near-`i64::MAX` page-rounded value v1 reports for no limit.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|&b| b < (1u64 << 62))
}

/// The group paths of `/proc/self/cgroup`: the unified (v2) path, and the v1 memory
/// controller's.
pub fn parse_cgroup_paths(text: &str) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_string());
        }
    }
    (v2, v1)
}

/// Room left under the memory limits of the process's control group and its ancestors.
fn cgroup_room() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok();
    let (v2, v1) = parse_cgroup_paths(&text);
    let mut best: Option<u64> = None;
    let mut consider = |limit: Option<u64>, used: Option<u64>| {
        if let (Some(l), Some(u)) = (limit, used) {
            let room = l.saturating_sub(u);
            best = Some(best.map_or(room, |b| b.min(room)));
        }
    };
    if let Some(path) = v2 {
        let mut dir = std::path::PathBuf::from("/sys/fs/cgroup");
        dir.push(path.trim_start_matches('/'));
        // The limit may sit on any ancestor; the root group has no memory.max.
        for d in dir
            .ancestors()
            .take_while(|d| d.starts_with("/sys/fs/cgroup"))
        {
            let limit = read(&d.join("memory.max")).and_then(|t| parse_cgroup_limit(&t));
            let used = read(&d.join("memory.current")).and_then(|t| t.trim().parse().ok());
            consider(limit, used);
        }
    }
    if let Some(path) = v1 {
        // The group's own directory, and the mount's root (a container's own group when the
        // process runs in a cgroup namespace, where its path does not resolve).
        let root = std::path::PathBuf::from("/sys/fs/cgroup/memory");
        let own = root.join(path.trim_start_matches('/'));
        for dir in [own, root] {
            let limit =
                read(&dir.join("memory.limit_in_bytes")).and_then(|t| parse_cgroup_limit(&t));
            let used = read(&dir.join("memory.usage_in_bytes")).and_then(|t| t.trim().parse().ok());
            consider(limit, used);
        }
    }
    best
}

#[derive(Clone, Copy)]
enum Resource {
    AddressSpace,
    Data,
}

/// Room left under a resource limit of the process, given what it already uses.
fn rlimit_room(r: Resource, used: Option<u64>) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let resource = match r {
            Resource::AddressSpace => libc::RLIMIT_AS,
            Resource::Data => libc::RLIMIT_DATA,
        };
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through a valid pointer to a local.
        let rc = unsafe { libc::getrlimit(resource, &mut lim) };
        if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        // `rlim_t` is `u64` here but not on every Linux target.
        #[allow(clippy::unnecessary_cast)]
        let cur = lim.rlim_cur as u64;
        Some(cur.saturating_sub(used.unwrap_or(0)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (r, used);
        None
    }
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

/// Bytes the allocator keeps in free chunks below the top of its heaps (glibc's `mallinfo2`:
/// free bytes less the releasable top chunk): memory the process holds that no value uses,
/// typically buffers of a size no later allocation asks for. `None` on other platforms.
pub fn free_heap_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads glibc's allocator statistics.
        let mi = unsafe { libc::mallinfo2() };
        Some(mi.fordblks.saturating_sub(mi.keepcost) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// [`release_free_memory`] when the allocator keeps more than `slack` bytes free inside its
/// heaps ([`free_heap_bytes`]); returns whether it did. Within a stage, ciphertexts of one
/// level are freed while those of the next are made, and glibc keeps the freed buffers (or
/// the remainders of the ones it split) for requests of their own size; returning them once
/// they pass `slack` keeps the resident size near the live values at the cost of faulting
/// the pages in again when the heap grows into them.
pub fn release_free_memory_over(slack: u64) -> bool {
    match free_heap_bytes() {
        Some(free) if free > slack => {
            release_free_memory();
            true
        }
        _ => false,
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

/// Makes glibc's allocator serve every thread from one arena unless `MALLOC_ARENA_MAX` is set
/// in the environment (then glibc's own reading of it stands). By default each thread that
/// allocates gets its own arena, up to eight per core; a ciphertext freed by one worker then
/// sits in that worker's arena while another worker's arena grows for the next one, and the
/// resident size drifts far above the live values. Measured on CryptoNets' 8192-image batch
/// (`hecc run`, 2 cores, 1.37 GiB of live values): 2.86 GB resident by default, 2.07 GB with
/// two arenas, 1.74 GB with one, at the same speed (5.6-6.0 s); a fixed 512 KiB mmap threshold
/// gave 1.47 GB but ran 33 % slower, mimalloc 2.19 GB and 12 % slower. A no-op on other
/// platforms. Call it before the first allocation of other threads (at the start of `main`).
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes glibc's allocator settings; any value is valid.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
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

    #[test]
    fn parses_cgroup_files() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("8589934592\n"), Some(8 << 30));
        assert_eq!(
            parse_cgroup_limit("9223372036854771712\n"),
            None,
            "v1: no limit"
        );
        assert_eq!(parse_cgroup_limit("lots"), None);
        let v2 = "0::/user.slice/job-7.scope\n";
        assert_eq!(
            parse_cgroup_paths(v2),
            (Some("/user.slice/job-7.scope".into()), None)
        );
        let v1 = "12:cpu,cpuacct:/a\n9:memory:/docker/abc\n0::/\n";
        assert_eq!(
            parse_cgroup_paths(v1),
            (Some("/".into()), Some("/docker/abc".into()))
        );
    }

    #[test]
    fn available_memory_is_at_most_what_the_system_has() {
        let system = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| kib_field(&t, "MemAvailable"));
        if let (Some(a), Some(s)) = (available_memory(), system) {
            // Memory moves between the two reads; allow for it.
            assert!(a <= s + (256 << 20), "available {a} vs system {s}");
        }
    }
}
