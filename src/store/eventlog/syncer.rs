//! The background fdatasync of a group-committing log: one thread, named
//! `reeve-sync`, that syncs the file it is handed and leaves the outcome
//! in a channel.
//!
//! Invariant: the caller never waits for the disk. It hands over a
//! duplicate of the log's fd (so rotation or close cannot pull the file
//! from under the sync), at most one sync is in flight, and the outcome
//! comes back through a channel the caller only looks at without waiting,
//! at its next commit (it bounds how long that can be; see
//! [`super::EventLog::sync_in_flight`]). The thread holds no lock the
//! caller takes; if it is gone, a request says so and the caller syncs
//! itself.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

pub(super) struct Syncer {
    requests: Option<Sender<OwnedFd>>,
    done: Receiver<io::Result<()>>,
    thread: Option<JoinHandle<()>>,
    /// A wait gave up on the sync in flight (a hung disk): the thread is
    /// left to it, not joined.
    abandoned: bool,
}

/// How long a stopping caller waits for the sync in flight.
pub(super) const EXIT_WAIT: Duration = Duration::from_secs(10);

impl Syncer {
    pub(super) fn start() -> io::Result<Syncer> {
        let (requests, jobs) = mpsc::channel::<OwnedFd>();
        let (report, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("reeve-sync".into())
            .spawn(move || {
                while let Ok(fd) = jobs.recv() {
                    let result = File::from(fd).sync_data();
                    if report.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Syncer {
            requests: Some(requests),
            done,
            thread: Some(thread),
            abandoned: false,
        })
    }

    /// Hands `fd` to the thread to fdatasync. `Err(fd)` when the thread is
    /// gone: the caller syncs it itself.
    pub(super) fn request(&self, fd: OwnedFd) -> Result<(), OwnedFd> {
        match &self.requests {
            Some(tx) => tx.send(fd).map_err(|e| e.0),
            None => Err(fd),
        }
    }

    /// The outcome of the sync in flight if it has ended; never waits.
    /// `Some(Err)` with `BrokenPipe` when the thread ended without one.
    pub(super) fn poll(&self) -> Option<io::Result<()>> {
        match self.done.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(gone())),
        }
    }

    /// Waits for the outcome of the sync in flight (at shutdown, when the
    /// loop is over), at most `limit`: past it the sync is abandoned
    /// (`TimedOut`), so a hung disk cannot hold a stopping daemon forever.
    pub(super) fn wait(&mut self, limit: Duration) -> io::Result<()> {
        match self.done.recv_timeout(limit) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                self.abandoned = true;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the fdatasync in flight had not returned after {} s",
                        limit.as_secs()
                    ),
                ))
            }
            Err(RecvTimeoutError::Disconnected) => Err(gone()),
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the background sync thread ended",
    )
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its sync returns.
        self.requests = None;
        if let Some(t) = self.thread.take().filter(|_| !self.abandoned) {
            let _ = t.join();
        }
    }
}
