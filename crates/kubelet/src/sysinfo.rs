//! Facts about the host the Node reports: capacity, kernel, OS image, ids.

use std::path::Path;

pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Total memory in bytes (/proc/meminfo MemTotal).
pub fn memory_bytes() -> u64 {
    meminfo("MemTotal:").unwrap_or(0)
}

pub fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// (total, available) bytes of the filesystem holding `path`.
pub fn fs_bytes(path: &Path) -> (u64, u64) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return (0, 0) };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return (0, 0);
    }
    (st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default()
}

pub fn kernel_version() -> String {
    read_trim("/proc/sys/kernel/osrelease")
}

pub fn boot_id() -> String {
    read_trim("/proc/sys/kernel/random/boot_id")
}

pub fn machine_id() -> String {
    let m = read_trim("/etc/machine-id");
    if m.is_empty() { boot_id().replace('-', "") } else { m }
}

pub fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string()).unwrap_or_else(|| "Linux".into())
}

pub fn hostname() -> String {
    let h = read_trim("/proc/sys/kernel/hostname");
    if h.is_empty() { "localhost".into() } else { h.to_lowercase() }
}

/// The address of the default route's interface, else the first non-loopback IPv4 address.
pub fn default_node_ip() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only asks the kernel which source address it
    // would use for the default route (198.18.0.1 is a benchmark-range address, never contacted).
    if let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0")
        && s.connect("198.18.0.1:9").is_ok()
        && let Ok(a) = s.local_addr()
        && !a.ip().is_unspecified()
    {
        return Some(a.ip());
    }
    let text = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut last = None;
    for l in text.lines() {
        let t = l.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = ip.parse::<std::net::Ipv4Addr>().ok();
        } else if t.contains("/32 host LOCAL")
            && let Some(ip) = last
            && !ip.is_loopback()
        {
            return Some(ip.into());
        }
    }
    None
}
