//! Whether the process reading our stdout is still there, for `--follow`: a child that idles
//! at the end of its file writes nothing, so a closed pipe would never be seen by a write
//! (Fluent Bit's `exec` input, killed or stopped, left iis-tagger running as an orphan).
//!
//! Two signs, either enough: stdout's pipe has no reader left (`poll` reports `POLLERR` on
//! the write end of a pipe whose read end is closed, `POLLHUP` on a hung-up terminal or
//! socket), or — when stdout is a pipe or a socket, so that a process is reading it — the
//! parent process has gone (we were re-parented: the parent id changed). Output to a file
//! does not care about the parent: `nohup iis-tagger --follow … > file &` outlives its
//! shell as it should.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// What to watch.
#[derive(Debug)]
pub struct Watch {
    /// The parent as it was at the start, when stdout is read by a process.
    parent: Option<u32>,
}

impl Watch {
    /// Starts watching `output`: remembers the parent as it is now, if `output` is a pipe
    /// or a socket.
    pub fn new(output: &std::fs::File) -> Watch {
        use std::os::unix::fs::FileTypeExt;
        let piped = output.metadata().is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_socket());
        Watch { parent: piped.then(std::os::unix::process::parent_id) }
    }

    /// True when the reader of `output` or our parent has gone away.
    pub fn gone(&self, output: &impl AsRawFd) -> bool {
        self.parent.is_some_and(|p| p != std::os::unix::process::parent_id()) || hung_up(output.as_raw_fd())
    }
}

/// Whether `fd` has bytes to read now (or its end), without waiting: a reader that does
/// not would wait for the source.
pub fn readable_now(fd: &impl AsRawFd) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: as in `hung_up`.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents != 0
}

/// Whether `fd` reports an error or a hang-up, without waiting.
fn hung_up(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: 0, revents: 0 };
    // SAFETY: `poll` is given one initialised `pollfd` it may write `revents` of, a count
    // of one, and a zero timeout; the descriptor is owned by the caller for the call.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_whose_peer_closed_is_seen() {
        let (peer, ours) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let ours = std::fs::File::from(std::os::fd::OwnedFd::from(ours));
        let watch = Watch::new(&ours);
        assert!(watch.parent.is_some(), "a socket is read by a process");
        assert!(!watch.gone(&ours), "the peer is there");
        drop(peer);
        assert!(watch.gone(&ours), "the peer is gone");
    }

    #[test]
    fn a_file_is_never_gone() {
        let path = std::env::temp_dir().join(format!("iis-tagger-hangup-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("file");
        let watch = Watch::new(&file);
        assert!(watch.parent.is_none(), "a file has no reader to lose");
        assert!(!watch.gone(&file));
        drop(file);
        let _ = std::fs::remove_file(path);
    }
}
