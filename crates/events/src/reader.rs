//! The thread each alert source reads its kernel events on, and how it is stopped.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What a reader thread ends with.
pub trait Report: Send + 'static {
    /// The report of a reader that panicked.
    fn panicked() -> Self;
}

/// A running reader: a named thread that reads until asked to stop.
pub struct ReaderThread<R: Report> {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<R>,
}

impl<R: Report> ReaderThread<R> {
    /// Starts `read` on a thread named `name`; it gets the flag [`ReaderThread::finish`]
    /// raises, and should then read what is already queued and return.
    pub fn spawn(
        name: &str,
        read: impl FnOnce(&AtomicBool) -> R + Send + 'static,
    ) -> io::Result<ReaderThread<R>> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || read(&flag))?;
        Ok(ReaderThread { stop, thread })
    }

    /// Asks the reader to stop once it has read what is queued, and returns its report.
    pub fn finish(self) -> R {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_else(|_| R::panicked())
    }
}
