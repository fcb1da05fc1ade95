//! SIGTERM and SIGINT: counted, so the main loop can drain and stop. SIGHUP: counted
//! too, as a request to reload the rules (`systemctl reload`, rsyslog's HUP, a closed
//! terminal): it never ends the process.
//!
//! The handlers are installed without `SA_RESTART`, so a `read` blocked on a quiet
//! input returns `EINTR` and the loop sees the signal at once. A second signal means
//! "stop now".
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

static RECEIVED: AtomicUsize = AtomicUsize::new(0);
static HANGUPS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic increment: async-signal-safe.
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_hangup(_: libc::c_int) {
    HANGUPS.fetch_add(1, Ordering::SeqCst);
}

/// Installs the handlers of SIGTERM and SIGINT (and of SIGHUP: [`install_hangup`]).
pub fn install() -> std::io::Result<()> {
    install_hangup()?;
    handle(&[libc::SIGTERM, libc::SIGINT], on_signal)
}

/// Installs the handler of SIGHUP (every mode, the sidecar's too: its default action
/// would end the process).
pub fn install_hangup() -> std::io::Result<()> {
    handle(&[libc::SIGHUP], on_hangup)
}

/// How many SIGHUPs have arrived.
pub fn hangups() -> usize {
    HANGUPS.load(Ordering::SeqCst)
}

fn handle(signals: &[libc::c_int], handler: extern "C" fn(libc::c_int)) -> std::io::Result<()> {
    for &sig in signals {
        // SAFETY: `sigaction` is given a zeroed, then fully initialised struct whose handler
        // is an `extern "C"` function that only touches an atomic; no flags are set, so
        // interrupted system calls return EINTR instead of restarting.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as libc::sighandler_t;
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
