//! The background fdatasync of a group-committing log: one thread, named
//! `reeve-sync`, that syncs the file it is handed and tells the caller's
//! poll(2) through an eventfd when it is done.
//!
//! Invariant: the caller never waits for the disk. It hands over a
//! duplicate of the log's fd (so rotation or close cannot pull the file
//! from under the sync), at most one sync is in flight, and the outcome
//! comes back through a channel the caller only polls. The thread holds no
//! lock the caller takes; if it is gone, a request says so and the caller
//! syncs itself.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::sys;

pub(super) struct Syncer {
    requests: Option<Sender<OwnedFd>>,
    done: Receiver<io::Result<()>>,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub(super) fn start() -> io::Result<Syncer> {
        let wake = Arc::new(sys::eventfd()?);
        let (requests, jobs) = mpsc::channel::<OwnedFd>();
        let (report, done) = mpsc::channel();
        let signal = Arc::clone(&wake);
        let thread = std::thread::Builder::new()
            .name("reeve-sync".into())
            .spawn(move || {
                while let Ok(fd) = jobs.recv() {
                    let result = File::from(fd).sync_data();
                    if report.send(result).is_err() {
                        return;
                    }
                    // At most one sync is in flight, so the counter stays
                    // far below the limit whose EAGAIN is its only failure;
                    // the caller also looks at `done` at every commit, so a
                    // lost wakeup would only delay the report to the next.
                    let _ = sys::eventfd_signal(&signal);
                }
            })?;
        Ok(Syncer {
            requests: Some(requests),
            done,
            wake,
            thread: Some(thread),
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
    /// The eventfd only wakes poll(2); the channel holds the outcome, so
    /// an outcome taken here before its wakeup arrived costs one spurious
    /// wakeup, never a lost one (the thread sends, then signals).
    pub(super) fn poll(&self) -> Option<io::Result<()>> {
        match self.done.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(gone())),
        }
    }

    /// Waits for the outcome of the sync in flight (at shutdown, when the
    /// loop is over).
    pub(super) fn wait(&self) -> io::Result<()> {
        self.done.recv().unwrap_or_else(|_| Err(gone()))
    }

    /// Clears the eventfd once poll(2) said it is readable, so it wakes
    /// poll(2) again only for the next sync.
    pub(super) fn drain_wake(&self) -> io::Result<u64> {
        sys::eventfd_drain(&self.wake)
    }

    /// The fd that becomes readable when a sync ends.
    pub(super) fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
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
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
