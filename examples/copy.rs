//! The plain-copy baseline of the benchmarks: read a file (or stdin) in 256 KiB pieces and
//! write every piece to stdout, nothing else. `cargo run --release --example copy -- FILE`.

use std::io::{Read, Write};
use std::os::fd::AsFd;

fn main() -> std::io::Result<()> {
    let mut input: Box<dyn Read> = match std::env::args_os().nth(1) {
        Some(path) => Box::new(std::fs::File::open(path)?),
        None => Box::new(std::io::stdin().lock()),
    };
    // Raw writes to fd 1: `std::io::stdout()` is line-buffered and scans every write for
    // newlines, which is not what a plain copy does.
    let mut out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let mut storage = vec![0u8; 256 * 1024 + 4096];
    let offset = storage.as_ptr().align_offset(4096);
    let buf = &mut storage[offset..offset + 256 * 1024];
    loop {
        let n = match input.read(buf) {
            Ok(0) => return out.flush(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
    }
}
