//! A live input's bytes (a socket, stdin, a pipe): reads that wait in slices of 100 ms, so that
//! a stop request or an idle timeout ends the stream — as if it had closed — instead of a read
//! that blocks until the sender writes again, or forever.
//!
//! One `unsafe` call, `poll(2)` on the input's descriptor.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one wait lasts before the stop flag and the idle clock are looked at again.
const SLICE: Duration = Duration::from_millis(100);

/// When a live input ends besides its closing.
#[derive(Clone, Debug, Default)]
pub struct Patience {
    /// End the stream once nothing has come for this long (`None`: wait for ever).
    pub idle: Option<Duration>,
    /// End the stream once this is set (a signal handler's flag).
    pub stop: Option<Arc<AtomicBool>>,
}

/// A reader over a descriptor that ends its stream (reads 0 bytes) when [`Patience`] says so.
#[derive(Debug)]
pub struct LiveReader<R> {
    inner: R,
    patience: Patience,
    last_data: Instant,
    /// Set once the stream was ended by the idle timeout (not by its sender).
    pub timed_out: bool,
}

impl<R: Read + AsRawFd> LiveReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, patience: Patience) -> Self {
        LiveReader { inner, patience, last_data: Instant::now(), timed_out: false }
    }

    /// True once data can be read without blocking (or the descriptor has closed or failed:
    /// the read then says which).
    fn ready(&self, wait: Duration) -> io::Result<bool> {
        let mut fd = libc::pollfd { fd: self.inner.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: `fd` is one valid pollfd that lives across the call, and nfds is 1.
        let n = unsafe { libc::poll(&mut fd, 1, wait.as_millis() as libc::c_int) };
        match n {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
            0 => Ok(false),
            _ => Ok(true),
        }
    }
}

impl<R: Read + AsRawFd> Read for LiveReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.patience.stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
                return Ok(0);
            }
            if self.patience.idle.is_some_and(|idle| self.last_data.elapsed() >= idle) {
                self.timed_out = true;
                return Ok(0);
            }
            if self.ready(SLICE)? {
                let n = self.inner.read(buf)?;
                self.last_data = Instant::now();
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn idle_and_stop_end_the_stream_and_data_passes() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.write_all(b"hello").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut r = LiveReader::new(a, Patience { idle: Some(Duration::from_millis(300)), stop: Some(stop.clone()) });
        let mut buf = [0u8; 16];
        assert_eq!(r.read(&mut buf).unwrap(), 5);
        // Nothing more, the sender still connected: the idle timeout ends the stream.
        let t = Instant::now();
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        assert!(r.timed_out && t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(2));
        // A stop ends it at once.
        let mut r = LiveReader::new(r.inner, Patience { idle: None, stop: Some(stop.clone()) });
        stop.store(true, Ordering::Release);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        assert!(!r.timed_out);
        drop(b);
    }
}
