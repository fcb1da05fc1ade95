//! iis-tagger: an inline detection tagger for Windows and Sysmon event streams.
//!
//! It reads newline-delimited records, recognises the ones that show IIS and web-server
//! persistence (IIS modules installed with appcmd, IIS configuration event 29, app-pool
//! password dumps, web servers spawning shells, web shells written to web roots, IIS
//! module DLLs registered, msiexec spawning discovery tools), and annotates those records
//! in place with the detection's name, MITRE ATT&CK ids and a risk score. Every record
//! passes through, in order; a record that matches nothing comes out byte-identical.
//!
//! # Layout
//!
//! * [`rules`]: Sigma-style rule files → compiled expressions ([`rules::RuleSet`]); the
//!   built-in rules are such files embedded in the binary.
//! * [`fields`] and [`event`]: where each field lives in each event shape, and the values
//!   of one record gathered from its parsed JSON.
//! * [`normalize`]: the canonical, case-folded form values are compared in.
//! * [`prefilter`]: literals derived from the rules, scanned over raw bytes, so that most
//!   lines are never parsed.
//! * [`repair`]: a second chance for records the JSON parser refuses over a lone
//!   surrogate or an out-of-range number.
//! * [`annotate`]: the annotation and its splice into the original bytes.
//! * [`tagger`]: the core, [`Tagger`] and [`Stream`]: bytes in, bytes out, no I/O;
//!   [`sink`]: where a stream writes (unchanged input as ranges, new bytes as bytes).
//! * [`driver`]: the read/tag/write loop of every front end, without the I/O: framing
//!   (lines or octet-counted frames), stopping, and what each kind of end writes.
//! * [`stats`]: what a stream did, and the one table of its counters.
//! * [`framing`]: RFC 6587 octet-counted frames, for the TCP front end.
//! * `evtx` (feature `evtx`): Windows' binary event-log files as evtx_dump JSON lines.
//! * `serve` (feature `serve`): the TCP sidecar, `serve(listener, config, shutdown)`, on
//!   tokio: connections, deadlines, the memory budget, the shared output, metrics.
//!
//! The binary (`src/main.rs`, `src/cli/`) only wires these to the command line, stdin/stdout,
//! files and signals.
//! The design, and how these modules are layered, is `docs/ARCHITECTURE.md`.
//!
//! # Example
//!
//! ```
//! use iis_tagger::{Config, RuleSet, Tagger};
//!
//! let tagger = Tagger::new(RuleSet::builtin()?, Config::default())?;
//! let input = concat!(
//!     r#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","#,
//!     r#""Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe"}"#,
//!     "\n",
//!     "not json at all\n",
//! );
//! let (output, stats) = tagger.tag_all(input.as_bytes());
//! let output = String::from_utf8(output)?;
//! assert!(output.lines().next().unwrap().contains(r#""rule":"webshell_child_process""#));
//! assert_eq!(output.lines().nth(1), Some("not json at all"));
//! assert_eq!(stats.annotated, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod annotate;
pub mod attack_layer;
pub mod driver;
pub mod event;
#[cfg(feature = "evtx")]
pub mod evtx;
pub mod fields;
pub mod framing;
pub mod hunt;
pub mod normalize;
pub mod prefilter;
pub mod reload;
pub mod repair;
pub mod rules;
pub mod scratch;
#[cfg(feature = "serve")]
pub mod serve;
pub mod shapes;
pub mod sink;
pub mod stats;
pub mod syslog;
pub mod tagger;
pub mod xml;
pub mod yaml;

pub use driver::{Driver, End, Ended};
pub use rules::{RuleError, RuleSet, RuleSetBuilder};
pub use sink::{MatchesOnly, Sink};
pub use stats::Stats;
pub use tagger::{Config, ConfigError, SHAPE_SAMPLE_LINES, Stream, Tagger, stream_memory_bound};
