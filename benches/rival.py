#!/usr/bin/env python3
"""iis-tagger against rsigma with the SigmaHQ Windows rules, side by side in one run (issue 11).

On the generated flat corpus with 2 % near misses (seed 1, cached in bench-data/), file on
stdin, output to /dev/null, RUNS rounds alternating (order reversed every other round):

  copy                      target/release/examples/copy (the limit)
  iis-tagger, built-ins     the 8 built-in rules
  iis-tagger, SigmaHQ, T    --no-builtin --rules SIGMA --threads T (1, and the default)
  rsigma, SigmaHQ           rsigma engine eval -q -r SIGMA -p sysmon (its fastest flags here)

Loading is timed apart (each tool on an empty input, same rounds), and events/s are steady
state: lines / (median time - median load). Peak RSS from /usr/bin/time. Before timing, the
two tools' detections are compared: the set of (RecordNumber, rule id) each finds, for the
rules both load; the differences are printed (and counted), not hidden.

rsigma is not built here: install it once outside the repository,
  cargo install rsigma --version 0.23.0 --locked --root DIR     (~15 minutes)
and pass --rsigma DIR/bin/rsigma.

usage: benches/rival.py --rsigma PATH [--runs 5] [--size 100MB]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
whole = __import__("whole-binary")

ROOT = whole.ROOT
SIGMA = os.path.join(ROOT, "..", "shared", "sigma", "rules", "windows")


def timed(argv, stdin_path):
    """Wall seconds, user + system CPU seconds and peak RSS (KiB) of one run."""
    with open(stdin_path, "rb") as stdin, open(os.devnull, "wb") as null:
        start = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M %U %S"] + argv, stdin=stdin, stdout=null,
                           stderr=subprocess.PIPE, check=True)
        wall = time.perf_counter() - start
    rss, user, sys_ = p.stderr.decode().strip().splitlines()[-1].split()
    return wall, float(user) + float(sys_), int(rss)


def ours(tagger, path):
    """(RecordNumber, rule id) of every detection iis-tagger makes with the SigmaHQ rules."""
    out = subprocess.run([tagger, "--no-builtin", "--rules", SIGMA, "--matches-only", path], capture_output=True,
                         check=True).stdout
    found = set()
    for line in out.splitlines():
        record = json.loads(line)
        for d in record["iis_tagger"]["detections"]:
            found.add((record["RecordNumber"], d.get("id")))
    return found


def theirs(rsigma, path):
    out = subprocess.run([rsigma, "engine", "eval", "-q", "-r", SIGMA, "-p", "sysmon", "--include-event", "-e",
                          "@" + path], capture_output=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        m = json.loads(line)
        event = m.get("event") or {}
        found.add((event.get("RecordNumber"), m.get("rule_id")))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rsigma", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="100MB")
    args = ap.parse_args()
    whole.build()
    release = os.path.join(ROOT, "target", "release")
    tagger, copy = os.path.join(release, "iis-tagger"), os.path.join(release, "examples", "copy")
    path, matches = whole.corpus("flat-2pct", "flat", "0.02", "1", args.size)
    lines = whole.check(tagger, path, matches)

    a, b = ours(tagger, path), theirs(args.rsigma, path)
    print("detections (RecordNumber, rule id): iis-tagger %d, rsigma %d, both %d; only iis-tagger %d, only rsigma %d"
          % (len(a), len(b), len(a & b), len(a - b), len(b - a)))
    for what, diff in (("only iis-tagger", a - b), ("only rsigma", b - a)):
        rules = {}
        for _, rule in diff:
            rules[rule] = rules.get(rule, 0) + 1
        for rule, n in sorted(rules.items(), key=lambda kv: -kv[1])[:10]:
            print("  %s: rule %s, %d records" % (what, rule, n))

    sigma = ["--no-builtin", "--rules", SIGMA]
    cmds = {
        "copy": ([copy], None),
        "iis-tagger, built-ins": ([tagger], None),
        "iis-tagger, SigmaHQ, 1 thread": ([tagger, "--threads", "1"] + sigma, "iis-tagger load"),
        "iis-tagger, SigmaHQ, default threads": ([tagger] + sigma, "iis-tagger load"),
        "rsigma, SigmaHQ, -p sysmon": ([args.rsigma, "engine", "eval", "-q", "-r", SIGMA, "-p", "sysmon"], "rsigma load"),
        "iis-tagger load": ([tagger, "--threads", "1"] + sigma, None),
        "rsigma load": ([args.rsigma, "engine", "eval", "-q", "-r", SIGMA, "-p", "sysmon"], None),
    }
    empty = os.path.join(whole.DATA, "empty.jsonl")
    open(empty, "wb").close()
    inputs = {k: (empty if k.endswith("load") else path) for k in cmds}
    results = {k: [] for k in cmds}
    names = list(cmds)
    for i in range(args.runs):
        for k in names if i % 2 == 0 else names[::-1]:
            results[k].append(timed(cmds[k][0], inputs[k]))
    med = {k: tuple(statistics.median(r[j] for r in rs) for j in range(3)) for k, rs in results.items()}
    print("%d rounds, medians; %s: %d lines, %d bytes" % (args.runs, os.path.basename(path), lines,
                                                           os.path.getsize(path)))
    print("| command | wall s | CPU s | steady events/s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for k in names:
        wall, cpu, rss = med[k]
        load = cmds[k][1]
        steady = lines / max(wall - med[load][0], 1e-9) if load else lines / wall
        rate = "—" if k.endswith("load") else "%.0f" % steady
        print("| %s | %.3f | %.3f | %s | %.1f |" % (k, wall, cpu, rate, rss / 1024))
    one = lines / (med["iis-tagger, SigmaHQ, 1 thread"][0] - med["iis-tagger load"][0])
    rival = lines / (med["rsigma, SigmaHQ, -p sysmon"][0] - med["rsigma load"][0])
    print("SigmaHQ, one thread, steady state: iis-tagger %.0f events/s, rsigma %.0f: %.2fx" % (one, rival, one / rival))
    print("loading: iis-tagger %.3f s, rsigma %.3f s: %.2f of rsigma's" %
          (med["iis-tagger load"][0], med["rsigma load"][0], med["iis-tagger load"][0] / med["rsigma load"][0]))
    print("built-ins against the copy: %.3fx" % (med["copy"][0] / med["iis-tagger, built-ins"][0]))


if __name__ == "__main__":
    main()
