//! Windows' binary event-log files (`.evtx`) as records for the driver: each readable
//! record becomes one line of compact JSON in the shape `evtx_dump -o jsonl` writes
//! (`{"Event":{"#attributes":…,"System":{…},"EventData":{…}}}`), which the shape table
//! already reads (the `evtx_dump` shape), so rules see the same fields as for the JSON
//! lines of the same log.
//!
//! The file is recognised by its signature ([`is_evtx`]), not its name. Parsing is the
//! `evtx` crate's, one chunk (64 KiB of the file) at a time, so memory is bounded by a
//! chunk and its rendering whatever the file's size. A damaged file yields every record
//! that can be read: a chunk or record that cannot be is skipped and reported
//! ([`Damage`]: which chunk, which record, why), and reading goes on with the next.

use std::path::Path;
use std::sync::Arc;

use evtx::{EvtxParser, ParserSettings, RenderedChunkItem};

/// The first eight bytes of an EVTX file.
pub const SIGNATURE: &[u8; 8] = b"ElfFile\0";

/// Whether `head` (the first bytes of a file) starts as an EVTX file does.
pub fn is_evtx(head: &[u8]) -> bool {
    head.starts_with(SIGNATURE)
}

/// A part of a file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The chunk's number in the file, when known.
    pub chunk: Option<u64>,
    /// The record's id, when known.
    pub record: Option<u64>,
    /// What the parser said.
    pub message: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.chunk, self.record) {
            (Some(c), Some(r)) => write!(f, "chunk {c}, record {r}: {}", self.message),
            (Some(c), None) => write!(f, "chunk {c}: {}", self.message),
            (None, Some(r)) => write!(f, "record {r}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// What reading a file did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Read {
    /// Records read and handed on.
    pub records: u64,
    /// The parts that could not be read, in file order.
    pub damage: Vec<Damage>,
    /// The reader was told to stop before the end.
    pub stopped: bool,
}

/// A file that is not an EVTX file at all (its header cannot be read).
#[derive(Debug, thiserror::Error)]
#[error("not a readable EVTX file: {message}")]
pub struct NotEvtx {
    message: String,
}

/// The error's message with its causes, one after the other (`evtx`'s top-level messages
/// say only which step failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn settings() -> Arc<ParserSettings> {
    Arc::new(ParserSettings::new().num_threads(1).indent(false).separate_json_attributes(false))
}

/// Reads the records of the EVTX file at `path` in file order (oldest chunk first, as
/// Windows reads a log that has wrapped around), handing the records of each chunk to
/// `each` as JSON lines (every one ended by `\n`; a JSON string holds no newline), with
/// how many and how far into the file, until `each` returns false.
pub fn read_path(path: &Path, each: impl FnMut(At, &[u8]) -> bool) -> Result<Read, NotEvtx> {
    let file = std::fs::File::open(path).map_err(|e| NotEvtx { message: e.to_string() })?;
    read_file(file, each)
}

/// [`read_path`] over an open file.
pub fn read_file(file: std::fs::File, each: impl FnMut(At, &[u8]) -> bool) -> Result<Read, NotEvtx> {
    let len = file.metadata().map_err(|e| NotEvtx { message: e.to_string() })?.len();
    let parser = EvtxParser::from_read_seek(file).map_err(|e| NotEvtx { message: chain(&e) })?;
    Ok(read(parser, len, each))
}

/// [`read_path`] over the bytes of a file.
pub fn read_bytes(bytes: Vec<u8>, each: impl FnMut(At, &[u8]) -> bool) -> Result<Read, NotEvtx> {
    let len = bytes.len() as u64;
    let parser = EvtxParser::from_buffer(bytes).map_err(|e| NotEvtx { message: chain(&e) })?;
    Ok(read(parser, len, each))
}

/// What the records handed over at once are, and how far into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// How many records (lines).
    pub records: u64,
    /// Bytes of the file read so far, in whole chunks (for progress: the file's length by
    /// the last chunk).
    pub bytes_read: u64,
}

/// Bytes of the file header, and of each chunk.
const HEADER_BYTES: u64 = 4096;
const CHUNK_BYTES: u64 = 65536;

fn read<T: std::io::Read + std::io::Seek>(
    parser: EvtxParser<T>,
    len: u64,
    mut each: impl FnMut(At, &[u8]) -> bool,
) -> Read {
    let settings = settings();
    let mut parser = parser.with_configuration((*settings).clone());
    let mut out = Read::default();
    // The parser reads the chunks the file holds; one the file ends inside of (a copy cut
    // short, a log still being written) it passes over without a word: say so.
    let named = u64::from(parser.header().chunk_count);
    let truncated = (len < HEADER_BYTES + named * CHUNK_BYTES).then(|| Damage {
        chunk: Some(len.saturating_sub(HEADER_BYTES) / CHUNK_BYTES),
        record: None,
        message: format!(
            "the file ends {len} bytes in, inside the chunks its header names ({named}, {} bytes): truncated",
            HEADER_BYTES + named * CHUNK_BYTES
        ),
    });
    // A chunk at a time, rendered by the parser into one buffer of JSON lines: what
    // `evtx_dump -o jsonl` does, at its cost (it keeps the programs compiled for a chunk's
    // templates for the chunks after it; rendering record by record costs 1.5 times as
    // much). `chunks_json_bytes` is the crate's own, hidden from its documentation; the
    // version is pinned in Cargo.toml, and the twins test holds the output to evtx_dump's.
    for (i, chunk) in (0u64..).zip(parser.chunks_json_bytes(false)) {
        let bytes_read = len.min(HEADER_BYTES + (i + 1) * CHUNK_BYTES);
        let mut records = 0;
        for item in &chunk.items {
            match item {
                RenderedChunkItem::Record { .. } => records += 1,
                RenderedChunkItem::Failed(e) => {
                    out.damage.push(Damage { chunk: chunk_of(e).or(Some(i)), record: record_of(e), message: chain(e) })
                }
            }
        }
        out.records += records;
        if records > 0 && !each(At { records, bytes_read }, &chunk.data) {
            out.stopped = true;
            break;
        }
    }
    if !out.stopped {
        out.damage.extend(truncated);
    }
    out
}

fn chunk_of(e: &evtx::err::EvtxError) -> Option<u64> {
    match e {
        evtx::err::EvtxError::FailedToParseChunk { chunk_id, .. } => Some(*chunk_id),
        evtx::err::EvtxError::FailedToReadRecordAt { chunk, .. } => *chunk,
        _ => None,
    }
}

fn record_of(e: &evtx::err::EvtxError) -> Option<u64> {
    match e {
        evtx::err::EvtxError::FailedToParseRecord { record_id, .. } => Some(*record_id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_what_makes_a_file_evtx() {
        assert!(is_evtx(b"ElfFile\0\0\0\0\0"));
        assert!(!is_evtx(b"ElfFile"), "too short to be the header");
        assert!(!is_evtx(b"{\"Event\":{}}"));
    }

    #[test]
    fn bytes_that_are_not_evtx_are_refused_not_read() {
        assert!(read_bytes(b"not an event log at all, not even close".to_vec(), |_, _| true).is_err());
        let mut header = SIGNATURE.to_vec();
        header.resize(4096, 0);
        // A signature and nothing else: no chunk, no records, no panic.
        if let Ok(read) = read_bytes(header, |_, _| panic!("no record")) {
            assert_eq!(read.records, 0);
        }
    }
}
