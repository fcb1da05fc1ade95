#!/usr/bin/env python3
"""Whole-binary throughput: iis-tagger against a plain copy and a naive baseline.

Each corpus is generated once by ../shared/tools/gen-sysmon-corpus (fixed seeds, cached in
bench-data/). Then, in one session and alternating so that machine noise hits all of them
alike, each command reads the corpus file and writes to /dev/null, RUNS times:

  copy        target/release/examples/copy FILE      plain 256 KiB read/write (page-aligned buffer)
  iis-tagger  target/release/iis-tagger FILE         the built-in rules
  naive       target/release/examples/naive FILE     serde_json::Value per line, same rules

It prints medians (wall time, peak RSS), MB/s, events/s and the ratios to the copy, and
checks once per corpus that iis-tagger annotated exactly the truth file's matches.

usage: benches/whole-binary.py [--size 1GiB] [--runs 5] [--naive-runs 3]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = os.path.join(ROOT, "..", "shared", "tools", "gen-sysmon-corpus")
DATA = os.path.join(ROOT, "bench-data")
CORPORA = [("flat-2pct", "flat", "0.02", "1"), ("flat-20pct", "flat", "0.20", "2"), ("ecs-2pct", "ecs", "0.02", "3")]


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "iis-tagger", "--example", "copy", "--example", "naive"],
                   cwd=ROOT, check=True)


def corpus(name, schema, rate, seed, size):
    os.makedirs(DATA, exist_ok=True)
    path = os.path.join(DATA, "%s-%s.jsonl" % (name, size))
    truth = path[:-len(".jsonl")] + ".truth"
    if not (os.path.exists(path) and os.path.exists(truth)):
        print("generating %s (%s) ..." % (path, size), file=sys.stderr)
        subprocess.run([sys.executable, GEN, "--size", size, "--schema", schema, "--candidate-rate", rate, "--seed", seed,
                        "-o", path, "--truth", truth], check=True, stderr=subprocess.DEVNULL)
    matches = sum(1 for line in open(truth) if not line.rstrip("\n").endswith("\tcandidate"))
    return path, matches


def run(cmd):
    """Wall seconds and peak RSS (KiB) of one run, output to /dev/null."""
    with open(os.devnull, "wb") as null:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdout=null, stderr=subprocess.PIPE, check=True)
        elapsed = time.perf_counter() - start
    return elapsed, int(proc.stderr.decode().strip().splitlines()[-1])


def check(binary, path, matches):
    out = subprocess.run([binary, path], capture_output=True, check=True).stdout
    got = out.count(b'"iis_tagger":{"risk_score":')
    if got != matches:
        sys.exit("iis-tagger annotated %d lines of %s, the truth file has %d" % (got, path, matches))
    return out.count(b"\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--naive-runs", type=int, default=3)
    args = ap.parse_args()
    build()
    release = os.path.join(ROOT, "target", "release")
    tagger, copy, naive = os.path.join(release, "iis-tagger"), os.path.join(release, "examples", "copy"), os.path.join(release, "examples", "naive")
    rows = []
    for name, schema, rate, seed in CORPORA:
        path, matches = corpus(name, schema, rate, seed, args.size)
        lines = check(tagger, path, matches)
        size = os.path.getsize(path)
        cmds = {"copy": [copy, path], "iis-tagger": [tagger, path]}
        if name == "flat-2pct":
            cmds["naive"] = [naive, path]
        results = {k: [] for k in cmds}
        run(cmds["copy"])  # warm the page cache: this sandbox keeps only ~2 GB of it
        for i in range(args.runs):
            for k, cmd in cmds.items():
                if k == "naive" and i >= args.naive_runs:
                    continue
                results[k].append(run(cmd))
        base = statistics.median(t for t, _ in results["copy"])
        for k, rs in results.items():
            t = statistics.median(x for x, _ in rs)
            rss = statistics.median(m for _, m in rs)
            rows.append((name, k, len(rs), t, size / t / 1e6, lines / t, base / t, rss))
    print("corpus       command     runs  median s     MB/s     events/s  x copy  peak RSS")
    for name, k, n, t, mbs, eps, ratio, rss in rows:
        print("%-12s %-10s %5d %9.3f %8.0f %12.0f %7.3f %7.1f MiB" % (name, k, n, t, mbs, eps, ratio, rss / 1024))
    two = next(r for r in rows if r[0] == "flat-2pct" and r[1] == "iis-tagger")
    twenty = next(r for r in rows if r[0] == "flat-20pct" and r[1] == "iis-tagger")
    naive_row = next(r for r in rows if r[1] == "naive")
    print("iis-tagger throughput, 2 %% / 20 %% candidates: %.2fx; naive time / iis-tagger time (2 %%): %.1fx"
          % (two[4] / twenty[4], naive_row[3] / two[3]))


if __name__ == "__main__":
    main()
