//! Removes iis-tagger's annotations from a stream, written without the library: on each
//! line, the member `,"iis_tagger":{"risk_score":…}` (or without the comma, in `{}`) that
//! ends right before the final `}`. `strip(tag(x)) == x` is what `scripts/ten-gigabytes.sh`
//! checks by hash. Lines are read whole (the annotation is at their end).
//!
//! `iis-tagger < in | cargo run --release --example strip > out`

use std::io::{BufRead, Write};

const MARKER: &[u8] = b"\"iis_tagger\":{\"risk_score\":";

/// The line without its annotation, as (head, tail) to write.
fn split(line: &[u8]) -> (&[u8], &[u8]) {
    let Some(end) = line.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')) else { return (line, &[]) };
    if line[end] != b'}' {
        return (line, &[]);
    }
    let Some(at) = memchr::memmem::rfind(&line[..end], MARKER) else { return (line, &[]) };
    let from = if at > 0 && line[at - 1] == b',' { at - 1 } else { at };
    (&line[..from], &line[end..])
}

fn main() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut input = std::io::BufReader::with_capacity(1 << 20, stdin.lock());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let (head, tail) = split(&line);
        out.write_all(head)?;
        out.write_all(tail)?;
    }
    out.flush()
}
