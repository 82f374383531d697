//! What the `e2e` and `guests` benchmarks read from `/proc` about a server
//! under test, and how they stop the server processes they start. Linux
//! only: each benchmark declares it (`mod common;`) under
//! `cfg(target_os = "linux")`.

// Each benchmark uses its own part of this module.
#![allow(dead_code)]

use std::process::Child;
use std::time::{Duration, Instant};

/// Whose threads make a server.
#[derive(Clone, Copy)]
pub enum Threads {
    /// Every thread of a process (a server binary).
    Process(u32),
    /// The threads of this process with this name (a server runtime in
    /// the benchmark's own process, and its blocking pool).
    Named(&'static str),
}

/// Figures summed over a server's threads, from
/// `/proc/PID/task/TID/{status,schedstat}`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TaskFigures {
    /// Voluntary context switches (the thread slept: a wakeup each).
    pub voluntary: u64,
    /// Involuntary context switches (preempted).
    pub involuntary: u64,
    /// Time on a CPU, user and kernel, in nanoseconds (`schedstat`'s first
    /// field: the scheduler's own accounting, not tick-sampled).
    pub cpu_ns: u64,
    /// Threads counted.
    pub threads: u64,
}

impl TaskFigures {
    /// Both kinds of context switches.
    pub fn switches(&self) -> u64 {
        self.voluntary + self.involuntary
    }

    /// What happened between `earlier` and `self`, per `count` (a count
    /// of requests): (context switches, CPU µs).
    pub fn per(&self, earlier: &TaskFigures, count: usize) -> (f64, f64) {
        let n = count.max(1) as f64;
        (
            self.switches().saturating_sub(earlier.switches()) as f64 / n,
            self.cpu_ns.saturating_sub(earlier.cpu_ns) as f64 / 1000.0 / n,
        )
    }
}

impl Threads {
    /// The figures now. Threads that ended are no longer counted, so
    /// compare two readings over a time in which the server's threads
    /// stay (both benchmarks check the thread count around their loads).
    pub fn figures(&self) -> TaskFigures {
        let (dir, name) = match self {
            Threads::Process(pid) => (format!("/proc/{pid}/task"), None),
            Threads::Named(name) => ("/proc/self/task".to_string(), Some(*name)),
        };
        let mut total = TaskFigures::default();
        let Ok(tasks) = std::fs::read_dir(dir) else {
            return total;
        };
        for task in tasks.flatten() {
            let path = task.path();
            if let Some(name) = name {
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                if comm.trim_end() != name {
                    continue;
                }
            }
            let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
            total.voluntary += field(&status, "voluntary_ctxt_switches").unwrap_or(0);
            total.involuntary += field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
            total.cpu_ns += std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            total.threads += 1;
        }
        total
    }
}

/// A numeric field of a `/proc` status file (`VmRSS:  1234 kB` gives 1234).
pub fn field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
        .and_then(|l| l[name.len() + 1..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A field of `/proc/PID/status`.
pub fn status_field(pid: u32, name: &str) -> Option<u64> {
    field(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        name,
    )
}

/// A server process started by a benchmark: asked to stop (SIGTERM) when
/// dropped, killed if it has not exited 10 s later.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
}

impl ServerProcess {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
