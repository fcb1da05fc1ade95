//! A deterministic stream of mixed records for long runs (`scripts/ten-gigabytes.sh`):
//! Sysmon records in the flat and ECS shapes (about 2 % of them matching a built-in rule),
//! records respelled with escapes, fullwidth forms, lone surrogates and huge numbers, text,
//! XML, empty lines, random bytes, and now and then a line of 2 MiB (over the default limit).
//! The last line has no newline. Nothing it writes holds the annotation key.
//!
//! `cargo run --release --example stream_gen -- BYTES [SEED] > stream.jsonl`

use std::io::Write;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const IMAGES: &[&str] = &[
    r"C:\\Windows\\System32\\svchost.exe",
    r"C:\\Windows\\System32\\conhost.exe",
    r"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
    r"C:\\Windows\\System32\\cmd.exe",
    r"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
    r"C:\\Windows\\System32\\whoami.exe",
    r"C:\\Windows\\System32\\inetsrv\\appcmd.exe",
];
const PARENTS: &[&str] = &[
    r"C:\\Windows\\explorer.exe",
    r"C:\\Windows\\System32\\services.exe",
    r"C:\\Windows\\System32\\svchost.exe",
    r"C:\\Windows\\System32\\inetsrv\\w3wp.exe",
    r"C:\\Windows\\System32\\msiexec.exe",
];
const SYSMON: &str = "Microsoft-Windows-Sysmon/Operational";

fn record(rng: &mut Rng, out: &mut Vec<u8>) {
    let n = rng.below(1000);
    // Mostly benign pairs; about 2 % are web-server or installer parents.
    let image = if n < 20 { rng.pick(&IMAGES[3..]) } else { rng.pick(&IMAGES[..3]) };
    let parent = if n < 20 { rng.pick(&PARENTS[3..]) } else { rng.pick(&PARENTS[..3]) };
    let pid = rng.below(65536);
    let cmd = if image.ends_with("appcmd.exe") { "appcmd list apppool /text:*" } else { "-k netsvcs -p" };
    let line = match rng.below(3) {
        0 => format!(
            r#"{{"@timestamp":"2024-03-01T01:00:00Z","event":{{"code":"1"}},"winlog":{{"channel":"{SYSMON}"}},"process":{{"pid":{pid},"executable":"{image}","command_line":"{cmd}","parent":{{"executable":"{parent}"}}}}}}"#
        ),
        _ => format!(
            r#"{{"EventTime":"2024-03-01 01:00:00","EventID":1,"Channel":"{SYSMON}","ProcessId":{pid},"Image":"{image}","CommandLine":"{cmd}","ParentImage":"{parent}","Description":"Windows® Host"}}"#
        ),
    };
    out.extend_from_slice(line.as_bytes());
}

fn hostile(rng: &mut Rng, out: &mut Vec<u8>) {
    let line = match rng.below(6) {
        0 => format!(
            r#"{{"EventID":1,"Channel":"{SYSMON}","Image":"C:\\Windows\\System32\\\u0063md.exe","ParentImage":"C:\\w3wp.exe"}}"#
        ),
        1 => format!(
            r#"{{"EventID":1,"Channel":"{SYSMON}","Image":"C:\\ｃｍｄ.exe","ParentImage":"C:/inetsrv/w3wp.exe"}}"#
        ),
        2 => format!(r#"{{"EventID":1,"Channel":"{SYSMON}","Image":"cmd.exe","ParentImage":"w3wp.exe","x":"\ud800"}}"#),
        3 => format!(r#"{{"EventID":1,"Channel":"{SYSMON}","Image":"cmd.exe","ParentImage":"w3wp.exe","n":1e400}}"#),
        4 => format!(
            r#"{{"EventID":1,"Channel":"{SYSMON}","Image":"x.exe","ParentImage":"w3wp.exe","Image":"cmd.exe"}}"#
        ),
        _ => r#"{"EventID":29,"Channel":"Microsoft-IIS-Configuration/Operational","n":[[[[[]]]]]}"#.to_string(),
    };
    out.extend_from_slice(line.as_bytes());
}

fn other(rng: &mut Rng, out: &mut Vec<u8>) {
    match rng.below(5) {
        0 => out.extend_from_slice(b"<Event><System><EventID>1</EventID></System></Event>"),
        1 => out.extend_from_slice(b"plain text, not an event"),
        2 => {}
        3 => out.extend_from_slice(b"\r"),
        _ => {
            let len = rng.below(200);
            for _ in 0..len {
                let b = (rng.next() & 0xFF) as u8;
                out.push(if b == b'\n' { b' ' } else { b });
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1 << 30);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut written = 0u64;
    let mut lines = 0u64;
    while written < total {
        buf.clear();
        while buf.len() < (1 << 20) {
            lines += 1;
            match rng.below(100) {
                0..=94 => record(&mut rng, &mut buf),
                95..=97 => hostile(&mut rng, &mut buf),
                _ => other(&mut rng, &mut buf),
            }
            if lines % (1 << 20) == 0 {
                buf.extend_from_slice(b"{\"EventID\":1,\"Pad\":\"");
                buf.resize(buf.len() + (2 << 20), b'a');
                buf.extend_from_slice(b"\",\"Image\":\"cmd.exe\",\"ParentImage\":\"w3wp.exe\"}");
            }
            buf.push(b'\n');
        }
        let take = buf.len().min((total - written) as usize);
        // The stream ends inside a line (or after the last `\n`): no final newline then.
        let piece = if written + take as u64 >= total {
            buf[..take].strip_suffix(b"\n").unwrap_or(&buf[..take])
        } else {
            &buf[..take]
        };
        out.write_all(piece)?;
        written += take as u64;
    }
    out.flush()
}
