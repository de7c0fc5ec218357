//! Scheduling of the audit writer's threads: its own, its blocking I/O threads (the journal) and
//! its SQLite connection's worker.
//!
//! A flush is milliseconds of CPU (serializing, SQLite's b-tree work). At normal priority the
//! scheduler lets it finish its slice before a request worker that wakes meanwhile gets the CPU,
//! and with a 4 ms tick that wait showed as a p99 of milliseconds at half load. In SCHED_IDLE it
//! runs only on CPU no request wants, and a waking worker preempts it at once. A saturated
//! gateway has no idle CPU, though, and neither has a machine busy with other work: once a
//! backlog builds or records wait well past the flush interval, the threads return to normal
//! priority until the writer has caught up, so it keeps up instead of spilling or lagging.
//! A flush begun idle that runs past its deadline, or a batch whose records waited too long, is
//! only starved, not behind: it is raised to the gentlest normal priority (niceness 19), which
//! guarantees it a small share of a busy core without taking time slices from requests. At the
//! writer's own niceness it competes as an equal: `perf sched` caught a request worker waiting
//! 5 ms for the slices of a writer raised so by one overrun flush of 430 records
//! (docs/perf/RESULTS.md, 2026-12-01-g).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// The writer thread's name, and the prefix of its store connection's worker threads (Linux cuts
/// thread names to 15 bytes).
pub const WRITER_THREAD_PREFIX: &str = "aigate-audit";

/// `[audit] writer_priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterPriority {
    /// Idle class while the backlog is short, normal (at `writer_nice`) while it is long.
    Adaptive,
    /// Always normal class at `writer_nice`.
    Normal,
}

/// Niceness of a writer raised because it was starved rather than behind.
const STARVED_NICE: u8 = 19;

/// Where the adaptive writer runs, from least to most CPU it may take from requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Level {
    /// SCHED_IDLE: only CPU no request wants.
    Idle,
    /// Normal class at `STARVED_NICE`: a guaranteed trickle.
    Starved,
    /// Normal class at `writer_nice`: an equal share, to catch up with a backlog.
    Behind,
}

impl Level {
    fn from_u8(level: u8) -> Level {
        match level {
            0 => Level::Idle,
            1 => Level::Starved,
            _ => Level::Behind,
        }
    }
}

/// The writer's current level, switched with hysteresis on the backlog. Shared with the request
/// path: a writer starved in the idle class cannot notice the queue growing until its flush
/// ends, so `AuditHandle::record` raises it the moment the queue reaches the mark.
pub(super) struct Scheduling {
    /// Name prefix of the threads switched together.
    threads: &'static str,
    adaptive: AtomicBool,
    level: AtomicU8,
    /// Held while the threads are switched: a raise from the request path and a lowering by the
    /// writer must not interleave, or the level could say normal while the threads stay idle.
    switching: Mutex<()>,
    nice: u8,
    /// At or above this backlog the writer competes with requests at normal priority...
    raise_at: usize,
    /// ...until it is down to this.
    lower_at: usize,
    /// Origin of `flush_began`.
    epoch: Instant,
    /// When the running flush began, in nanoseconds after `epoch` (0: none is running).
    flush_began: AtomicU64,
    /// A flush still running this long after it began is raised to normal priority.
    flush_deadline: Duration,
}

impl Scheduling {
    pub(super) fn new(
        threads: &'static str,
        priority: WriterPriority,
        nice: u8,
        batch_size: usize,
        flush_deadline: Duration,
    ) -> Scheduling {
        let mut adaptive = priority == WriterPriority::Adaptive;
        if adaptive && !may_leave_idle_class(nice) {
            info!(
                "The audit writer cannot return from the idle scheduling class (needs \
                 CAP_SYS_NICE or RLIMIT_NICE >= {}; LimitNICE=+{nice} in a systemd unit): it runs \
                 at normal priority.",
                20 - i32::from(nice)
            );
            adaptive = false;
        }
        let batch_size = batch_size.max(1);
        Scheduling {
            threads,
            adaptive: AtomicBool::new(adaptive),
            level: AtomicU8::new(Level::Behind as u8),
            switching: Mutex::new(()),
            nice,
            raise_at: batch_size * 4,
            lower_at: batch_size,
            epoch: Instant::now(),
            flush_began: AtomicU64::new(0),
            flush_deadline,
        }
    }

    /// Applies the starting class, on the writer's thread before it opens its store connection
    /// (whose worker thread inherits the class).
    pub(super) fn begin(&self) {
        let level = if self.adaptive.load(Ordering::Relaxed) {
            Level::Idle
        } else {
            Level::Behind
        };
        self.apply(level);
    }

    fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Acquire))
    }

    /// Called by the writer before each flush with the records waiting (queued and batched) and
    /// whether the batch's oldest record waited well past the flush interval (it was starved).
    pub(super) fn observe(&self, backlog: usize, late: bool) {
        if !self.adaptive.load(Ordering::Relaxed) {
            return;
        }
        if backlog >= self.raise_at {
            self.raise(Level::Behind, backlog);
        } else if late {
            self.raise(Level::Starved, backlog);
        } else if backlog <= self.lower_at && self.level() != Level::Idle {
            self.apply(Level::Idle);
        }
    }

    /// Called by the writer around each flush (and journal replay), so an idle flush that
    /// overruns its deadline can be raised from the request path.
    pub(super) fn flush_begins(&self) {
        let began = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.flush_began.store(began.max(1), Ordering::Relaxed);
    }

    pub(super) fn flush_ended(&self) {
        self.flush_began.store(0, Ordering::Relaxed);
    }

    /// Called on the request path with the records queued: one load while the writer is
    /// catching up. A lower writer is raised when its queue reached the mark, and an idle one
    /// a little when its flush overran: starved, it cannot notice either itself until the flush
    /// ends.
    pub(super) fn queue_grew(&self, queued: usize) {
        let level = self.level();
        if level == Level::Behind {
            return;
        }
        if queued >= self.raise_at {
            self.raise(Level::Behind, queued);
        } else if level == Level::Idle && self.flush_overdue() {
            self.raise(Level::Starved, queued);
        }
    }

    fn flush_overdue(&self) -> bool {
        let began = self.flush_began.load(Ordering::Relaxed);
        began != 0
            && self
                .epoch
                .elapsed()
                .as_nanos()
                .saturating_sub(u128::from(began))
                > self.flush_deadline.as_nanos()
    }

    /// Raises the writer to `to` unless it is there or higher already.
    fn raise(&self, to: Level, backlog: usize) {
        if self.level() < to {
            self.switch(to, Some(backlog));
        }
    }

    fn apply(&self, level: Level) {
        self.switch(level, None);
    }

    /// Moves the threads to `level`; a raise (`backlog` given) that finds them there or higher
    /// already, switched by a racing request, does nothing.
    fn switch(&self, level: Level, backlog: Option<usize>) {
        let _switching = self
            .switching
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(backlog) = backlog {
            if self.level() >= level {
                return;
            }
            debug!(backlog, ?level, "Audit writer starved or behind: raised.");
        }
        let set = match level {
            Level::Idle => set_threads(self.threads, true, self.nice),
            Level::Starved => set_threads(self.threads, false, STARVED_NICE),
            Level::Behind => set_threads(self.threads, false, self.nice),
        };
        match set {
            Ok(()) => self.level.store(level as u8, Ordering::Release),
            Err(error) => {
                warn!(%error, ?level, "Cannot set the audit writer's scheduling class; it stays normal.");
                self.adaptive.store(false, Ordering::Relaxed);
                self.level.store(Level::Behind as u8, Ordering::Release);
            }
        }
    }
}

/// Returning from SCHED_IDLE to SCHED_OTHER at `nice` is a privileged raise unless RLIMIT_NICE
/// allows it; without that the writer would be stuck idle on a busy machine.
fn may_leave_idle_class(nice: u8) -> bool {
    let needed = 20 - u64::from(nice);
    let limit_allows = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NICE)
        .is_ok_and(|(soft, _)| soft >= needed);
    limit_allows || has_cap_sys_nice()
}

fn has_cap_sys_nice() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

#[cfg(target_os = "linux")]
fn set_threads(prefix: &str, idle: bool, nice: u8) -> io::Result<()> {
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        if let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            set_thread_class(tid, idle, nice)?;
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_threads(_prefix: &str, _idle: bool, _nice: u8) -> io::Result<()> {
    Ok(())
}

/// The only unsafe code in the crate: no safe wrapper sets another thread's class (nix has no
/// sched_setscheduler or setpriority, thread-priority only changes the calling thread), and the
/// SQLite worker thread runs no code of ours.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_thread_class(tid: libc::pid_t, idle: bool, nice: u8) -> io::Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a system call on a thread id, reading a sched_param that lives for the call.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Linux keeps niceness per thread: PRIO_PROCESS with a thread id sets that thread's.
    // SAFETY: a system call with integer arguments only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, i32::from(nice)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_millis(20);

    /// Policy (field 41) and niceness (field 19) of the calling thread.
    fn own_class() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name may hold spaces; the fields after it are plain.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        (fields[38].parse().unwrap(), fields[16].parse().unwrap())
    }

    #[test]
    fn backlog_moves_the_writer_between_idle_and_normal_class() {
        let handle = std::thread::Builder::new()
            .name("prio-test-adapt".to_owned())
            .spawn(|| {
                let scheduling = Scheduling::new(
                    "prio-test-adapt",
                    WriterPriority::Adaptive,
                    5,
                    100,
                    DEADLINE,
                );
                scheduling.begin();
                let mut seen = vec![own_class()];
                scheduling.observe(399, false); // below raise_at: stays idle
                seen.push(own_class());
                scheduling.observe(400, false);
                seen.push(own_class());
                scheduling.observe(101, false); // above lower_at: stays normal
                seen.push(own_class());
                scheduling.observe(100, false);
                seen.push(own_class());
                // Starved, not behind: a short backlog that waited too long gets a trickle.
                scheduling.observe(1, true);
                seen.push(own_class());
                scheduling.observe(1, true); // still late: stays there
                seen.push(own_class());
                scheduling.observe(1, false);
                seen.push(own_class());
                // The request path raises an idle writer whose queue reached the mark.
                scheduling.queue_grew(399);
                seen.push(own_class());
                scheduling.queue_grew(400);
                seen.push(own_class());
                // ...and one whose flush overran its deadline, not one still within it.
                scheduling.observe(1, false);
                scheduling.flush_begins();
                scheduling.queue_grew(1);
                seen.push(own_class());
                std::thread::sleep(DEADLINE * 2);
                scheduling.queue_grew(1);
                seen.push(own_class());
                // A starved writer whose queue then reaches the mark catches up as an equal, and
                // lateness does not lower it again.
                scheduling.queue_grew(400);
                seen.push(own_class());
                scheduling.observe(101, true);
                seen.push(own_class());
                // A flush that ended is not overdue, however long ago it began.
                scheduling.observe(1, false);
                scheduling.flush_ended();
                scheduling.queue_grew(1);
                seen.push(own_class());
                (may_leave_idle_class(5), seen)
            })
            .unwrap();
        let (adaptive, seen) = handle.join().unwrap();
        let idle = (libc::SCHED_IDLE as u32, 5);
        let normal = (libc::SCHED_OTHER as u32, 5);
        let starved = (libc::SCHED_OTHER as u32, i32::from(STARVED_NICE));
        if adaptive {
            assert_eq!(
                seen,
                vec![
                    idle, idle, normal, normal, idle, starved, starved, idle, idle, normal, idle,
                    starved, normal, normal, idle
                ]
            );
        } else {
            // Unprivileged without RLIMIT_NICE: never idle, so never stuck there.
            assert_eq!(seen, vec![normal; 15]);
        }
    }

    #[test]
    fn normal_priority_only_sets_the_niceness() {
        let handle = std::thread::Builder::new()
            .name("prio-test-norm".to_owned())
            .spawn(|| {
                let scheduling =
                    Scheduling::new("prio-test-norm", WriterPriority::Normal, 3, 100, DEADLINE);
                scheduling.begin();
                scheduling.observe(0, false);
                scheduling.queue_grew(1_000_000);
                own_class()
            })
            .unwrap();
        assert_eq!(handle.join().unwrap(), (libc::SCHED_OTHER as u32, 3));
    }
}
