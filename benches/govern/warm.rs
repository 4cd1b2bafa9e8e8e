//! The warm path: a dummy process of the bench's moved between two private
//! groups every millisecond, so the kernel's cgroup move does not wait for
//! an RCU grace period and a daemon's own share of the latency shows.
//!
//! Invariant: the dummy is registered for undoing as soon as it is
//! spawned, and stopping joins the mover before the dummy is killed.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::{forget_pid, stop_pid, undo, Res, Setup};

/// Moves a dummy process of the bench's between two private groups every
/// millisecond while it lives.
pub(crate) struct Warm {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    dummy: Child,
}

impl Warm {
    pub(crate) fn start(s: &Setup) -> Res<Warm> {
        let dummy = Command::new("sleep")
            .arg("100000")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("dummy: {e}"))?;
        undo(|u| u.pids.push(dummy.id()));
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, pid, root) = (stop.clone(), dummy.id(), s.warm_root.clone());
        let thread = thread::spawn(move || {
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let g = if i % 2 == 0 { "a" } else { "b" };
                let _ = fs::write(root.join(g).join("cgroup.procs"), pid.to_string()); // a missed move only cools the path for 1 ms
                i += 1;
                thread::sleep(Duration::from_millis(1));
            }
        });
        Ok(Warm {
            stop,
            thread: Some(thread),
            dummy,
        })
    }

    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let pid = self.dummy.id();
        stop_pid(pid);
        forget_pid(pid);
    }
}
