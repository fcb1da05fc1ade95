//! Helpers for the tests of the network front ends: a sidecar process on an ephemeral
//! port, a downstream that records what each connection brought, clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iis-tagger"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

pub fn sigterm(pid: u32) {
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill").success());
}

/// Makes sure this process may open `n` files (raising its soft limit with `prlimit`);
/// false when `prlimit` is needed and missing (the test is then skipped; under CI it fails).
pub fn raise_open_files(n: u64) -> bool {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard): (u64, u64) = (fields[3].parse().unwrap_or(u64::MAX), fields[4].parse().unwrap_or(u64::MAX));
    if soft >= n {
        return true;
    }
    assert!(hard >= n, "the hard open-file limit ({hard}) is below {n}");
    let Some(prlimit) = crate::needs::need(crate::needs::Need::Program("prlimit", &["/usr/bin/prlimit"])) else {
        return false;
    };
    let status = Command::new(prlimit)
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={hard}:{hard}")])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
    true
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The peak resident set size of a process so far (`VmHWM`), in KiB.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until `cond` holds, for at most `limit`.
pub fn wait_for(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_for_every(Duration::from_millis(20), limit, cond)
}

/// [`wait_for`], looking every `step` (for tests that measure the wait itself).
pub fn wait_for_every(step: Duration, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(step);
    }
    cond()
}

/// `iis-tagger serve` on an ephemeral loopback port.
pub struct Sidecar {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<String>>,
}

impl Sidecar {
    /// Starts `iis-tagger serve --listen 127.0.0.1:0 ARGS` and waits for its address.
    pub fn start(args: &[&str]) -> Sidecar {
        Sidecar::start_with(args, &[])
    }

    /// The same, with global options (rules) before `serve`.
    pub fn start_with(args: &[&str], global: &[&str]) -> Sidecar {
        let mut child = bin()
            .args(global)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let mut stdout = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stdout.read_to_end(&mut all);
            all
        });
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let wants_metrics = args.contains(&"--metrics");
        let (mut addr, mut metrics) = (None, None);
        let mut seen = String::new();
        while addr.is_none() || (wants_metrics && metrics.is_none()) {
            let mut line = String::new();
            if err.read_line(&mut line).expect("stderr") == 0 {
                panic!("the sidecar exited before listening: {seen}");
            }
            seen.push_str(&line);
            if let Some(a) = line.trim().strip_prefix("iis-tagger: listening on ") {
                addr = Some(a.parse().expect("address"));
            }
            if let Some(m) = line.trim().strip_prefix("iis-tagger: metrics on http://") {
                metrics = Some(m.trim_end_matches("/metrics").parse().expect("metrics address"));
            }
        }
        let stderr = std::thread::spawn(move || {
            let mut rest = seen;
            let _ = err.read_to_string(&mut rest);
            rest
        });
        Sidecar { child, addr: addr.expect("address"), metrics, stdout: Some(stdout), stderr: Some(stderr) }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).expect("connects")
    }

    /// The metrics page.
    pub fn metrics(&self) -> String {
        let addr = self.metrics.expect("started with --metrics");
        let mut s = TcpStream::connect(addr).expect("metrics connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        let mut page = String::new();
        s.read_to_string(&mut page).expect("response");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        page.split_once("\r\n\r\n").expect("body").1.to_string()
    }

    /// A metric's value (`name` with its labels, as written).
    pub fn metric(&self, name: &str) -> u64 {
        let page = self.metrics();
        let line = page
            .lines()
            .find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name))
            .unwrap_or_else(|| panic!("no metric {name} in\n{page}"));
        line.rsplit_once(' ').expect("value").1.parse().expect("number")
    }

    /// SIGTERM, then the exit status, stdout and stderr.
    pub fn stop(mut self) -> (ExitStatus, Vec<u8>, String) {
        sigterm(self.pid());
        self.wait()
    }

    /// Waits for the process to end by itself.
    pub fn wait(&mut self) -> (ExitStatus, Vec<u8>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("the sidecar did not exit within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = self.stdout.take().expect("stdout").join().expect("stdout thread");
        let err = self.stderr.take().expect("stderr").join().expect("stderr thread");
        (status, out, err)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A downstream: accepts connections one after another and keeps what each brought.
/// `pace`, if set, makes it read 4 KiB at a time with that pause between reads (a slow
/// reader) while `slow` is true.
pub struct Downstream {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Vec<u8>>>>,
    pub received: Arc<AtomicU64>,
    pub slow: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Downstream {
    pub fn start(pace: Option<Duration>) -> Downstream {
        Downstream::on(TcpListener::bind("127.0.0.1:0").expect("bind"), pace)
    }

    /// On a listener already bound (to listen again on the same port after a restart).
    pub fn on(listener: TcpListener, pace: Option<Duration>) -> Downstream {
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(AtomicU64::new(0));
        let slow = Arc::new(AtomicBool::new(pace.is_some()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, r, sl, st) = (conns.clone(), received.clone(), slow.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut readers = Vec::new();
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let index = {
                    let mut all = c.lock().expect("lock");
                    all.push(Vec::new());
                    all.len() - 1
                };
                let (c, r, sl) = (c.clone(), r.clone(), sl.clone());
                readers.push(std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let slow = sl.load(Ordering::SeqCst);
                        let want = if slow { 4096 } else { buf.len() };
                        match conn.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                c.lock().expect("lock")[index].extend_from_slice(&buf[..n]);
                                r.fetch_add(n as u64, Ordering::SeqCst);
                            }
                        }
                        if slow {
                            std::thread::sleep(pace.unwrap_or_default());
                        }
                    }
                }));
            }
            for r in readers {
                let _ = r.join();
            }
        });
        Downstream { addr, conns, received, slow, stop, accept: Some(accept) }
    }

    /// Where `needle` first occurs in what connection `conn` brought, from byte `from` on.
    pub fn find(&self, conn: usize, needle: &[u8], from: usize) -> Option<usize> {
        let all = self.conns.lock().expect("lock");
        let bytes = all.get(conn)?;
        memchr::memmem::find(bytes.get(from..)?, needle).map(|i| from + i)
    }

    /// Bytes received so far, per connection.
    pub fn snapshot(&self) -> Vec<Vec<u8>> {
        self.conns.lock().expect("lock").clone()
    }

    /// Stops accepting; waits for the open connections to end; returns what they brought.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.accept.take() {
            a.join().expect("downstream thread");
        }
        let mut all = self.conns.lock().expect("lock").clone();
        // The connection made to wake the accept loop brought nothing.
        if all.last().is_some_and(Vec::is_empty) {
            all.pop();
        }
        all
    }
}

/// `n` lines of connection `conn`, each a small JSON record naming both (some of them
/// detections), ended by `\n`.
pub fn numbered_lines(conn: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 200);
    for i in 0..n {
        if i % 50 == 7 {
            out.extend_from_slice(
                format!(
                    r#"{{"conn":{conn},"seq":{i},"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe"}}"#
                )
                .as_bytes(),
            );
        } else {
            out.extend_from_slice(
                format!(
                    r#"{{"conn":{conn},"seq":{i},"EventID":1,"Image":"C:\\Windows\\explorer.exe","pad":"{}"}}"#,
                    "x".repeat(i % 97)
                )
                .as_bytes(),
            );
        }
        out.push(b'\n');
    }
    out
}

/// Checks output made of `numbered_lines`: every line whole and parsing, each (conn, seq)
/// once, in order per connection; returns the lines per connection.
pub fn check_numbered(output: &[u8], conns: usize, per_conn: usize) {
    let mut next = vec![0usize; conns];
    for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("a torn or interleaved line ({e}): {}", String::from_utf8_lossy(line)));
        let (c, s) = (v["conn"].as_u64().expect("conn") as usize, v["seq"].as_u64().expect("seq") as usize);
        assert_eq!(s, next[c], "connection {c}: line {s} where {} was due", next[c]);
        next[c] += 1;
        assert_eq!(v.get("iis_tagger").is_some(), s % 50 == 7, "annotation of {c}/{s}");
    }
    for (c, n) in next.iter().enumerate() {
        assert_eq!(*n, per_conn, "connection {c}: {n} of {per_conn} lines came out");
    }
}
