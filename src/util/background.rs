//! Background threads that must not compete with the threads answering HAProxy.
//!
//! On Linux scheduling policy and nice value are per thread, so a thread can lower its
//! own CPU priority and leave the rest of the process alone. Two strengths:
//!
//! - [`lower_thread_priority`] (nice): for long work that must progress even on a
//!   saturated core (the reload builder): it yields most of a shared core to the serving
//!   threads but keeps a fixed fraction of it.
//! - [`idle_thread_priority`] (`SCHED_IDLE`): for short, periodic bursts whose timing
//!   matters less than a request's (the fleet exchanges): a serving thread that wakes up
//!   preempts it at once, which a nice value alone does not guarantee (the scheduler may
//!   let the running thread finish its slice, milliseconds). It still runs on a busy
//!   core, at a very low weight, so it is slowed there, never stopped.

use thread_priority::unix::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
    ThreadSchedulePolicy,
};
use thread_priority::ThreadPriority;

/// Lowers the calling thread's CPU priority by `steps` nice levels (at most to 19). A
/// failure only costs latency, so it is logged (at debug, naming `what`) and ignored.
pub fn lower_thread_priority(steps: i32, what: &str) {
    use rustix::process::{getpriority_process, setpriority_process};
    let lowered = getpriority_process(None)
        .and_then(|nice| setpriority_process(None, nice.saturating_add(steps).min(19)));
    if let Err(e) = lowered {
        tracing::debug!(error = %e, "cannot lower the {what} thread's priority; it runs at normal priority");
    }
}

/// Puts the calling thread in the `SCHED_IDLE` policy; where that is refused (a seccomp
/// profile, another OS) it falls back to the lowest nice value. Failures only cost
/// latency: logged at debug, naming `what`.
pub fn idle_thread_priority(what: &str) {
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    if let Err(e) = idle {
        tracing::debug!(error = ?e, "cannot put the {what} thread in SCHED_IDLE; lowering its nice value instead");
        lower_thread_priority(19, what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thread_priority::unix::thread_schedule_policy;

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let inside = std::thread::spawn(|| {
            lower_thread_priority(5, "test");
            rustix::process::getpriority_process(None).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inside, (before + 5).min(19));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
    }

    #[test]
    fn idles_only_the_calling_thread() {
        let before = thread_schedule_policy().unwrap();
        let inside = std::thread::spawn(|| {
            idle_thread_priority("test");
            thread_schedule_policy().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(
            inside,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
        );
        assert_eq!(thread_schedule_policy().unwrap(), before);
    }
}
