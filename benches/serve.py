#!/usr/bin/env python3
"""The TCP sidecar under load and faults, against a plain TCP relay in the same run.

Throughput: a sender (examples/tcp_bench.rs) writes the corpus over C connections to the
server, which forwards to a sink that counts lines; the time is from the sink's first byte
to its last line. The server is either `iis-tagger serve` (the built-in rules, lines
framing) or `tcp_bench relay` (the same job without tagging: whole lines of each
connection forwarded as they come). Commands alternate, RUNS times each; medians.

Then, once each:
  * 1,000 connections x 1,000 lines: time, and the sidecar's peak RSS;
  * slow downstream: the sink reads 4 KiB every 5 ms while a client pushes 200 MB; the
    sidecar's RSS is sampled every 100 ms for 5 s;
  * downstream restart: the sink dies (reset) after 20 MB and listens again 0.5 s later;
    the lines lost in flight are counted.

usage: benches/serve.py [--runs 5] [--size 1GiB] [--previous OLD/iis-tagger] [--throughput-only]
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
whole = __import__("whole-binary")

ROOT = whole.ROOT
RELEASE = os.path.join(ROOT, "target", "release")
TAGGER = os.path.join(RELEASE, "iis-tagger")
TOOL = os.path.join(RELEASE, "examples", "tcp_bench")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit("nothing listens on %d" % port)


def start_sink(lines, pace=None):
    port = free_port()
    cmd = [TOOL, "sink", "127.0.0.1:%d" % port, str(lines)] + ([str(pace)] if pace else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc, port


PREVIOUS = None  # --previous: another iis-tagger binary, alternated with this one


def start_server(kind, sink_port, extra=()):
    port = free_port()
    if kind == "relay":
        cmd = [TOOL, "relay", "127.0.0.1:%d" % port, "127.0.0.1:%d" % sink_port]
    else:
        binary = PREVIOUS if kind == "previous" else TAGGER
        cmd = [binary, "serve", "--listen", "127.0.0.1:%d" % port, "--forward", "127.0.0.1:%d" % sink_port] + list(extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def throughput(kind, path, lines, conns):
    sink, sink_port = start_sink(lines)
    server, port = start_server(kind, sink_port)
    subprocess.run([TOOL, "send", "127.0.0.1:%d" % port, path, str(conns)], check=True, stdout=subprocess.DEVNULL)
    out = sink.stdout.read()
    sink.wait()
    rss = peak_rss_kib(server.pid)
    stop(server)
    m = re.search(r"received (\d+) lines in ([0-9.]+) s", out)
    if not m or int(m.group(1)) < lines:
        sys.exit("%s: the sink did not get every line: %s" % (kind, out))
    return float(m.group(2)), rss


def numbered(path, conns, per_conn):
    with open(path, "w") as f:
        for c in range(conns):
            for i in range(per_conn):
                f.write('{"conn":%d,"seq":%d,"EventID":1,"Image":"C:\\\\Windows\\\\explorer.exe","pad":"%s"}\n' % (c, i, "x" * (i % 97)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--previous", help="a previous iis-tagger binary, alternated with this one in the throughput runs")
    ap.add_argument("--throughput-only", action="store_true", help="skip the load and fault scenarios")
    args = ap.parse_args()
    global PREVIOUS
    PREVIOUS = args.previous
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "iis-tagger", "--example", "tcp_bench"], cwd=ROOT, check=True)
    path, _ = whole.corpus("flat-2pct", "flat", "0.02", "1", args.size)
    size = os.path.getsize(path)
    lines = sum(chunk.count(b"\n") for chunk in iter(lambda f=open(path, "rb"): f.read(1 << 24), b""))
    print("throughput over loopback, %s flat 2 %% corpus (%d lines), lines framing, %d runs each, medians:" % (args.size, lines, args.runs))
    print("connections  server       median s     MB/s     events/s  peak RSS  x relay")
    for conns in (1, 4):
        results = {"relay": [], "iis-tagger": []}
        if PREVIOUS:
            results["previous"] = []
        for _ in range(args.runs):
            for kind in results:
                results[kind].append(throughput(kind, path, lines, conns))
        relay_t = statistics.median(t for t, _ in results["relay"])
        for kind, rs in results.items():
            t = statistics.median(x for x, _ in rs)
            rss = statistics.median(m for _, m in rs)
            print("%11d  %-10s %9.3f %8.0f %12.0f %6.1f MiB %7.2f" % (conns, kind, t, size / t / 1e6, lines / t, rss / 1024, relay_t / t))

    if args.throughput_only:
        return
    tmp = os.path.join(whole.DATA, "serve-load")
    os.makedirs(tmp, exist_ok=True)
    # 1,000 x 1,000.
    load = os.path.join(tmp, "thousand.jsonl")
    numbered(load, 1000, 1000)
    sink, sink_port = start_sink(1000 * 1000)
    server, port = start_server("iis-tagger", sink_port, ["--max-connections", "1100"])
    start = time.time()
    subprocess.run([TOOL, "send", "127.0.0.1:%d" % port, load, "1000"], check=True, stdout=subprocess.DEVNULL)
    out = sink.stdout.read()
    sink.wait()
    rss = peak_rss_kib(server.pid)
    stop(server)
    print("1,000 connections x 1,000 lines (%d MB): %s; sidecar peak RSS %.1f MiB; %.1f s wall"
          % (os.path.getsize(load) // 1000000, out.strip(), rss / 1024, time.time() - start))

    # Slow downstream.
    slow = os.path.join(tmp, "slow.jsonl")
    numbered(slow, 1, 2000000)
    slow_lines = 2000000
    sink, sink_port = start_sink(slow_lines, pace=5)
    server, port = start_server("iis-tagger", sink_port)
    sender = subprocess.Popen([TOOL, "send", "127.0.0.1:%d" % port, slow, "1"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    samples = []
    for _ in range(50):
        samples.append(rss_kib(server.pid))
        time.sleep(0.1)
    print("slow downstream (4 KiB per 5 ms), client pushing %d MB: sidecar RSS over 5 s min %.1f / median %.1f / max %.1f MiB; client still blocked: %s"
          % (os.path.getsize(slow) // 1000000, min(samples) / 1024, statistics.median(samples) / 1024, max(samples) / 1024,
             sender.poll() is None))
    sender.kill()
    sink.kill()
    stop(server)

    # Downstream restart.
    restart_lines = 1000000
    restart = os.path.join(tmp, "restart.jsonl")
    numbered(restart, 1, restart_lines)
    port_sink = free_port()
    flaky = subprocess.Popen([TOOL, "flaky", "127.0.0.1:%d" % port_sink, str(restart_lines), str(20 * 1000 * 1000)],
                             stdout=subprocess.PIPE, text=True)
    assert flaky.stdout.readline().strip() == "ready"
    server, port = start_server("iis-tagger", port_sink)
    subprocess.run([TOOL, "send", "127.0.0.1:%d" % port, restart, "1"], check=True, stdout=subprocess.DEVNULL)
    out = flaky.stdout.read()
    flaky.wait()
    stop(server)
    print("downstream restart after 20 MB (%d lines of %d bytes on average): %s"
          % (restart_lines, os.path.getsize(restart) // restart_lines, out.strip()))


if __name__ == "__main__":
    main()
