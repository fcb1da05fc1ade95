//! Where the process's messages go: reload outcomes, skipped rule files, the summary at the
//! end. Stderr, unless a mode says otherwise: rsyslog starts an `mmexternal` program with
//! its stderr on the same pipe as its stdout — the reply channel, one line per message — so
//! there a message would be read as the reply to the next message and shift every reply
//! after it. `mmexternal` sends them to its `--log-file`, or nowhere when stderr is that
//! pipe.

use std::io::Write;
use std::sync::Mutex;

enum Sink {
    Stderr,
    File(std::fs::File),
    Nowhere,
}

static SINK: Mutex<Sink> = Mutex::new(Sink::Stderr);

/// Messages go to `file` from now on.
pub fn to_file(file: std::fs::File) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::File(file);
}

/// Messages are dropped from now on.
pub fn nowhere() {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Nowhere;
}

/// Writes `text` as it is (a message ends with its own newline).
pub fn write(text: &str) {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let _ = match &mut *sink {
        Sink::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
        Sink::File(f) => f.write_all(text.as_bytes()),
        Sink::Nowhere => Ok(()),
    };
}

/// Writes one message line.
pub fn say(line: &str) {
    write(&format!("{line}\n"));
}

/// Whether stderr is the same pipe or file as stdout (rsyslog's `mmexternal` child).
pub fn stderr_is_stdout() -> bool {
    use std::os::unix::fs::MetadataExt;
    let meta = |fd: i32| std::fs::metadata(format!("/proc/self/fd/{fd}")).ok().map(|m| (m.dev(), m.ino()));
    matches!((meta(1), meta(2)), (Some(a), Some(b)) if a == b)
}
