#!/usr/bin/env python3
"""Issue 12's measures, in one run:

1. The cost of N Sigma filters (0, 10, 100) on the built-in rules and on the SigmaHQ
   Windows rules: whole-binary runs over one generated corpus, the commands alternated,
   medians of RUNS (benches/ab.py's method). Each filter is `rules: any` for
   process_creation with an allow-list selection on Computer, so it applies to every
   process-creation rule and is evaluated on each of their matches.
2. The pause a reload causes on a running stream: records are written to iis-tagger's
   stdin at a steady rate, and the longest gap between two output records is measured
   with no reload, and with a SIGHUP every 0.5 s (each rebuilding the whole set on the
   reload thread, while the stream goes on).

usage: benches/reload.py [--runs 5] [--size 50MB] [--rate 20000] [--seconds 6]
Writes bench-data/ (generated corpora, filter files); prints a table for BENCHMARKS.md.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import once  # noqa: E402  (the alternating runner's one timed run)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "iis-tagger")
DATA = os.path.join(ROOT, "bench-data")
SIGMA = os.path.join(ROOT, "..", "shared", "sigma", "rules", "windows")
GEN = os.path.join(ROOT, "..", "shared", "tools", "gen-sysmon-corpus")


def corpus(size):
    path = os.path.join(DATA, "flat-reload-%s.jsonl" % size)
    if not os.path.exists(path):
        subprocess.run([GEN, "--size", size, "--match-rate", "0.01", "-o", path], check=True)
    return path


def filters(n):
    folder = os.path.join(DATA, "filters-%d" % n)
    if os.path.isdir(folder):
        return folder
    os.makedirs(folder)
    for i in range(n):
        with open(os.path.join(folder, "mf_%03d.yml" % i), "w") as f:
            f.write(
                "title: allow-list %d\nlogsource:\n  category: process_creation\n  product: windows\n"
                "filter:\n  rules: any\n  allowed:\n    Computer|startswith: 'BUILD-%03d-'\n"
                "    ParentImage|endswith: '\\\\tool%d.exe'\n  condition: not allowed\n" % (i, i, i)
            )
    return folder


def filter_cost(runs, path):
    commands = []
    for rules in ["built-in", "SigmaHQ"]:
        for n in [0, 10, 100]:
            argv = [BIN, "--threads", "1"]
            if rules == "SigmaHQ":
                argv += ["--rules", SIGMA, "--skip-invalid-rules"]
            if n:
                argv += ["--filters", filters(n)]
            argv.append(path)
            commands.append(((rules, n), argv))
    times = {k: [] for k, _ in commands}
    for i in range(runs):
        for k, argv in commands if i % 2 == 0 else commands[::-1]:
            wall, user, system = once(argv)
            times[k].append((wall, user + system))
    size = os.path.getsize(path)
    print("\n## Filters: cost on %d MB, medians of %d alternated runs, one thread\n" % (size // 10**6, runs))
    print("| rules | filters | wall s | CPU s | MB/s | CPU vs 0 filters |")
    print("|---|---:|---:|---:|---:|---:|")
    for (rules, n), _ in commands:
        wall = statistics.median(t[0] for t in times[(rules, n)])
        cpu = statistics.median(t[1] for t in times[(rules, n)])
        base = statistics.median(t[1] for t in times[(rules, 0)])
        print("| %s | %d | %.2f | %.2f | %.0f | %+.1f %% |" % (rules, n, wall, cpu, size / wall / 1e6, 100 * (cpu / base - 1)))


def record(seq):
    return (
        '{"seq":%d,"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"web01",'
        '"Image":"C:\\\\Windows\\\\System32\\\\cmd.exe","ParentImage":"C:\\\\Windows\\\\System32\\\\inetsrv\\\\w3wp.exe"}\n'
        % seq
    )


def pause(rules_args, rate, seconds, reload_every):
    """The longest gap between output records (and their count) for a stream of `rate`
    records a second, SIGHUP every `reload_every` seconds (None: never)."""
    proc = subprocess.Popen(
        [BIN, "--threads", "1"] + rules_args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stamps = []
    lines = [0]

    def reader():
        buf = b""
        last = None
        gap = 0.0
        while True:
            chunk = proc.stdout.read1(1 << 16)
            if not chunk:
                break
            now = time.perf_counter()
            n = chunk.count(b"\n")
            if n:
                if last is not None:
                    gap = max(gap, now - last)
                last = now
                lines[0] += n
        stamps.append(gap)

    t = threading.Thread(target=reader)
    t.start()
    batch = max(1, rate // 200)
    start = time.perf_counter()
    seq = 0
    next_reload = start + 1.0 if reload_every else None
    reloads = 0
    while time.perf_counter() - start < seconds:
        proc.stdin.write("".join(record(seq + k) for k in range(batch)).encode())
        proc.stdin.flush()
        seq += batch
        due = start + seq / rate
        if next_reload and time.perf_counter() >= next_reload:
            proc.send_signal(signal.SIGHUP)
            reloads += 1
            next_reload += reload_every
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    proc.stdin.close()
    t.join()
    err = proc.stderr.read().decode()
    proc.wait()
    loaded = err.count("rules reloaded")
    assert lines[0] == seq, "every record came out (%d of %d)" % (lines[0], seq)
    return stamps[0], seq, reloads, loaded


def reload_pause(rate, seconds):
    print("\n## Reload pause: %d records/s for %d s, longest gap between output records\n" % (rate, seconds))
    print("| rules | reloads | reloads done | records | longest gap ms |")
    print("|---|---:|---:|---:|---:|")
    for name, args in [("built-in", []), ("SigmaHQ", ["--rules", SIGMA, "--skip-invalid-rules"])]:
        for every in [None, 0.5]:
            gaps = []
            for _ in range(3):
                gap, n, reloads, loaded = pause(args, rate, seconds, every)
                gaps.append(gap)
            print("| %s | %s | %d | %d | %.1f (runs: %s) |" % (
                name, "none" if every is None else "every %.1f s" % every, loaded, n,
                1000 * statistics.median(gaps), ", ".join("%.1f" % (1000 * g) for g in gaps)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="50MB")
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--seconds", type=int, default=6)
    args = ap.parse_args()
    os.makedirs(DATA, exist_ok=True)
    print("command: benches/reload.py --runs %d --size %s --rate %d --seconds %d" % (args.runs, args.size, args.rate, args.seconds))
    filter_cost(args.runs, corpus(args.size))
    reload_pause(args.rate, args.seconds)


if __name__ == "__main__":
    main()
