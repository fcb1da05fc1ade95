#!/usr/bin/env python3
"""Throughput with the SigmaHQ Windows rules, and how it grows with the number of rules.

On the generated 1 GiB flat corpus with 2 % candidates (the one of whole-binary.py,
cached in bench-data/), in one session and alternating so that machine noise hits every
command alike, RUNS times each, file -> /dev/null:

  copy             target/release/examples/copy FILE
  built-ins        iis-tagger FILE                        (the 8 built-in rules)
  N rules, T thr   iis-tagger --rules DIR --threads T FILE

where DIR holds the built-ins' company plus N - 8 SigmaHQ rules (every k-th file of
../shared/sigma/rules/windows, sorted by path, so that every category is in), for N in 100,
500 and all (1,597 with the built-ins), with one thread and with --threads 0 (the default:
one per core for such rule sets). Each iis-tagger command is first checked to give the same
output with one thread and with the default. Prints medians: seconds, MB/s, events/s,
the ratio to the copy, peak RSS; and the start-up (rule loading and prefilter) time of each
rule set, from `iis-tagger rules check`.

usage: benches/sigma-scaling.py [--runs 5]
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
whole = __import__("whole-binary")

ROOT = whole.ROOT
SIGMA = os.path.join(ROOT, "..", "shared", "sigma", "rules", "windows")


def rule_files():
    files = []
    for d, _, names in os.walk(SIGMA):
        files += [os.path.join(d, n) for n in names if n.endswith(".yml")]
    return sorted(files)


def subset(files, n, into):
    """A folder with n of the files (every k-th), as symlinks."""
    os.makedirs(into, exist_ok=True)
    step = len(files) / n
    chosen = [files[int(i * step)] for i in range(n)]
    for i, f in enumerate(chosen):
        os.symlink(f, os.path.join(into, "%04d-%s" % (i, os.path.basename(f))))
    return into


def digest(cmd):
    h = hashlib.sha256()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as p:
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    whole.build()
    release = os.path.join(ROOT, "target", "release")
    tagger, copy = os.path.join(release, "iis-tagger"), os.path.join(release, "examples", "copy")
    path, matches = whole.corpus("flat-2pct", "flat", "0.02", "1", "1GiB")
    lines = whole.check(tagger, path, matches)
    size = os.path.getsize(path)
    files = rule_files()
    tmp = tempfile.mkdtemp(prefix="sigma-scaling-")
    sets = [("100", subset(files, 92, os.path.join(tmp, "100"))), ("500", subset(files, 492, os.path.join(tmp, "500"))),
            ("all", SIGMA)]
    cmds = {"copy": [copy, path], "built-ins (8)": [tagger, path]}
    for name, d in sets:
        for threads in ("1", "0"):
            cmds["%s rules, %s" % (name, "1 thread" if threads == "1" else "default threads")] = \
                [tagger, "--rules", d, "--threads", threads, path]
    # The same bytes whatever the threads.
    for name, d in sets:
        a = digest([tagger, "--rules", d, "--threads", "1", path])
        b = digest([tagger, "--rules", d, path])
        if a != b:
            sys.exit("%s rules: the output differs between one thread and the default" % name)
    startup = {}
    for name, d in [("built-ins (8)", None)] + sets:
        argv = [tagger, "rules", "check", "--format", "json"] + ([d] if d else ["--no-builtin", os.path.join(ROOT, "src/rules/builtin")])
        report = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
        startup[name] = (report["loaded"], report["load_seconds"])
    results = {k: [] for k in cmds}
    whole.run(cmds["copy"])
    for _ in range(args.runs):
        for k, cmd in cmds.items():
            results[k].append(whole.run(cmd))
    base = statistics.median(t for t, _ in results["copy"])
    print("command                         runs  median s     MB/s     events/s  x copy  peak RSS")
    for k, rs in results.items():
        t = statistics.median(x for x, _ in rs)
        rss = statistics.median(m for _, m in rs)
        print("%-31s %4d %9.3f %8.0f %12.0f %7.3f %7.1f MiB" % (k, len(rs), t, size / t / 1e6, lines / t, base / t, rss / 1024))
    print("start-up (load + prefilter), from `rules check`:")
    for name, (n, secs) in startup.items():
        print("  %-14s %5d rules  %.3f s" % (name, n, secs))


if __name__ == "__main__":
    main()
