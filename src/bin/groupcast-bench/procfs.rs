//! Reading /proc: CPU time and RSS of the measured servers and of the
//! bench itself, and the file-descriptor limit.

use anyhow::{Context, bail};

/// CPU time and memory of one process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime, in µs.
    pub cpu_us: u64,
    /// utime alone (the process's own code; the rest is the kernel's), in µs.
    pub user_us: u64,
    /// VmRSS, in KiB.
    pub rss_kib: u64,
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// (utime + stime, utime) in µs, from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu_us(stat: &str, ticks_per_sec: u64) -> Option<(u64, u64)> {
    // The command name (field 2) may contain spaces: split after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields after ')' start at field 3 (state); utime is 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let us = |ticks: u64| ticks * 1_000_000 / ticks_per_sec;
    Some((us(utime + stime), us(utime)))
}

/// A `Key:   123 kB` line of `/proc/PID/status`, in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (is PID {pid} running?)"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let (cpu_us, user_us) = parse_stat_cpu_us(&stat, clock_ticks_per_sec())
        .with_context(|| format!("cannot parse /proc/{pid}/stat"))?;
    Ok(ProcSample {
        cpu_us,
        user_us,
        rss_kib: parse_status_kib(&status, "VmRSS").unwrap_or(0),
    })
}

pub fn sample_all(pids: &[u32]) -> anyhow::Result<Vec<ProcSample>> {
    pids.iter().map(|&pid| sample(pid)).collect()
}

/// This process's (VmRSS, VmHWM) in KiB.
pub fn self_rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (
        parse_status_kib(&status, "VmRSS").unwrap_or(0),
        parse_status_kib(&status, "VmHWM").unwrap_or(0),
    )
}

/// Makes sure `need` descriptors can be open at once: raises the soft
/// RLIMIT_NOFILE up to the hard one, or fails with a clear message.
pub fn ensure_fd_limit(need: u64, what: &str) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit(RLIMIT_NOFILE) failed");
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    let hard = lim.rlim_max as u64;
    if need > hard {
        bail!(
            "{what} needs about {need} file descriptors, but this process may open at most \
             {hard} (RLIMIT_NOFILE hard limit). Lower --clients, raise the hard limit \
             (ulimit -Hn, LimitNOFILE=, docker --ulimit nofile=...), or split the load over \
             several groupcast-bench processes."
        );
    }
    #[allow(clippy::unnecessary_cast)]
    let soft = lim.rlim_cur as u64;
    if soft < need {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: raising the soft limit up to the hard one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            bail!("setrlimit(RLIMIT_NOFILE) to {hard} failed");
        }
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 \
                    3 0 100 1000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_us(stat, 100), Some((3_000_000, 2_500_000)));
        let status = "Name:\tgroupcast\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }
}
