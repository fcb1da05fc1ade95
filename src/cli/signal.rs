//! SIGTERM and SIGINT: counted, so the main loop can drain and stop.
//!
//! The handlers are installed without `SA_RESTART`, so a `read` blocked on a quiet
//! input returns `EINTR` and the loop sees the signal at once. A second signal means
//! "stop now".
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

static RECEIVED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic increment: async-signal-safe.
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

/// Installs the handlers.
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `sigaction` is given a zeroed, then fully initialised struct whose handler
        // is an `extern "C"` function that only touches an atomic; no flags are set, so
        // interrupted system calls return EINTR instead of restarting.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = 0;
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How many termination signals have arrived.
pub fn received() -> usize {
    RECEIVED.load(Ordering::SeqCst)
}

/// For the tokio front ends (`serve`, `--forward`): a future that resolves on the first
/// SIGTERM or SIGINT. Registered at once (inside the runtime), so a signal that comes
/// before the future is first polled is not missed.
pub fn termination() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
