//! Graceful stops: the first Ctrl-C (SIGINT) or SIGTERM sets a flag that the running command
//! polls — it finishes what is in flight, saves and reports, and exits 130 or 143; a second
//! one ends the process at once with the same code. A closed pipe on stdout (SIGPIPE) ends
//! the process quietly, as for any Unix filter.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// What a stop signal left behind: whether one came, and which.
#[derive(Clone, Debug)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Stop {
    /// The flag the library polls (`PipelineConfig::stop` and the like).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// The exit code for the signal that came (128 + its number), if one did.
    pub fn exit_code(&self) -> Option<i32> {
        self.flag.load(Ordering::Acquire).then(|| 128 + self.signal.load(Ordering::Acquire) as i32)
    }
}

/// A command that ended on a stop signal, after saving and reporting: the process exits with
/// `code` (130 for SIGINT, 143 for SIGTERM) and no error message.
#[derive(Debug, thiserror::Error)]
#[error("stopped by a signal")]
pub struct Interrupted {
    /// The exit code.
    pub code: i32,
}

/// Installs the handlers once per process and returns the shared state.
pub fn install() -> anyhow::Result<Stop> {
    static STOP: OnceLock<Stop> = OnceLock::new();
    if let Some(s) = STOP.get() {
        return Ok(s.clone());
    }
    let stop = Stop { flag: Arc::new(AtomicBool::new(false)), signal: Arc::new(AtomicUsize::new(0)) };
    for sig in [SIGINT, SIGTERM] {
        // The shutdown first: it fires only when the flag is already set (a second signal).
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, stop.flag.clone())?;
        signal_hook::flag::register_usize(sig, stop.signal.clone(), sig as usize)?;
        signal_hook::flag::register(sig, stop.flag.clone())?;
    }
    Ok(STOP.get_or_init(|| stop).clone())
}

/// Restores the default action of SIGPIPE (Rust's runtime ignores it, so a write to a closed
/// pipe would be an error, and `println!` panics on it): `streamsgd predict … | head` ends
/// quietly.
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL at start-up, before any thread is
    // spawned, races with nothing; SIGPIPE has no handler of ours to replace.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
