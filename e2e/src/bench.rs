//! Small pieces the measurement programs share (`storm-bench`, `redis-bench`, `send-floor`): the
//! chat-node flags that lift per-address limits (every benchmark client comes from 127.0.0.1), a
//! process's (or the calling thread's) CPU time from `/proc`, a client's reconnect backoff, and a line
//! describing the machine.
//!
//! ```text
//!   /proc/PID/stat ──utime+stime──▶ cpu_seconds(pid)      (10 ms ticks; measure seconds, not ms)
//!   refused connect / 503 / 429 / 1013 ──▶ Backoff::next() (250 ms doubling to 10 s, ±50 %)
//! ```

use std::time::Duration;

/// chat-node flags for a loopback benchmark: rate limits and per-address limits lifted, since all
/// clients share one address and the figures are about the message path, not the limits.
pub const LIFTED_NODE_LIMITS: [&str; 12] = [
    "--rate-per-sec",
    "1000000",
    "--rate-burst",
    "1000000",
    "--capacity",
    "1000000",
    "--max-connections-per-ip",
    "0",
    "--handshakes-per-ip",
    "0",
    "--max-pending-sockets",
    "100000",
];

/// CPU time (user + system) a process has used so far, in seconds, from `/proc/PID/stat`.
/// `None` when the process is gone or the file does not parse.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_split(pid).map(CpuSplit::total)
}

/// A process's CPU time so far, in seconds: in its own code and in the kernel on its behalf.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuSplit {
    /// User time (`utime`): the process's own code.
    pub user: f64,
    /// System time (`stime`): system calls and the kernel work done in them (on loopback a send
    /// also does the receiving side's TCP work and wakes the reader).
    pub system: f64,
}

impl CpuSplit {
    /// User + system.
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for CpuSplit {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            user: self.user - o.user,
            system: self.system - o.system,
        }
    }
}

impl std::ops::Add for CpuSplit {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            user: self.user + o.user,
            system: self.system + o.system,
        }
    }
}

/// [`cpu_seconds`], split into user and system time.
pub fn cpu_split(pid: u32) -> Option<CpuSplit> {
    cpu_split_of(&format!("/proc/{pid}/stat"))
}

/// The calling thread's CPU time so far (`/proc/thread-self/stat`), split as [`cpu_split`].
pub fn thread_cpu_split() -> Option<CpuSplit> {
    cpu_split_of("/proc/thread-self/stat")
}

/// The CPU time in a `stat` file of `/proc` (a process's or a thread's).
fn cpu_split_of(path: &str) -> Option<CpuSplit> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based, man 5 proc).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tick = clock_ticks_per_second();
    Some(CpuSplit {
        user: utime as f64 / tick,
        system: stime as f64 / tick,
    })
}

/// `CLK_TCK`: 100 on every Linux this runs on; read through `getconf` once, when available.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// One line saying what the figures were measured on: cores, memory, kernel, load average.
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "machine: {cores} cores, {mem_gib:.0} GiB, load average {} (servers, Redis and the client \
         process share these cores)",
        load.join(" ")
    )
}

/// Exponential backoff with jitter as PROTOCOL.md section 1 suggests for reconnects: 250 ms doubling
/// to 10 s, each wait drawn within ±50 % of the nominal one.
#[derive(Debug, Clone)]
pub struct Backoff {
    nominal: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            nominal: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    /// The next wait (and double the nominal one, up to 10 s).
    pub fn next_wait(&mut self) -> Duration {
        let nominal = self.nominal;
        self.nominal = (self.nominal * 2).min(Duration::from_secs(10));
        nominal.mul_f64(0.5 + fastrand::f64())
    }

    /// Start again from 250 ms (after a connection that worked).
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_half_either_side_and_stops_at_ten_seconds() {
        let mut b = Backoff::default();
        let first = b.next_wait();
        assert!(first >= Duration::from_millis(125) && first <= Duration::from_millis(375));
        let second = b.next_wait();
        assert!(second >= Duration::from_millis(250) && second <= Duration::from_millis(750));
        for _ in 0..10 {
            b.next_wait();
        }
        let capped = b.next_wait();
        assert!(capped >= Duration::from_secs(5) && capped <= Duration::from_secs(15));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(375));
    }

    #[test]
    fn cpu_seconds_reads_this_process_and_refuses_a_missing_one() {
        // Burn a little CPU so the figure is positive on any clock.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let own = cpu_seconds(std::process::id()).expect("own /proc/PID/stat parses");
        assert!(own > 0.0, "own CPU time {own}");
        assert_eq!(cpu_seconds(u32::MAX), None);
        let split = cpu_split(std::process::id()).expect("own /proc/PID/stat parses");
        assert!(split.user >= 0.0 && split.system >= 0.0, "{split:?}");
    }
}
