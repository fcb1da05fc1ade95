#!/usr/bin/env python3
"""Shapes (issue 9): Windows XML lines against the flat JSON lines of the same records, and
this binary against a previous one on flat and ECS, alternated in one run.

The corpora come from ../shared/tools/gen-sysmon-corpus (2.1) with the same seed and
settings in the flat, ecs and xml schemas (the xml schema is the Windows XML rendering of
the flat records), cached in bench-data/. Each command reads the file and writes to
/dev/null, RUNS times, in turn; medians are reported, with events/s and the ratios asked
for: xml events/s as a share of flat events/s, and each corpus's time with this binary
against the previous one. Once per corpus the binary's annotations are checked against the
truth file.

usage: benches/shapes.py --previous PATH/TO/OLD/iis-tagger [--size 256MB] [--runs 5] [--previous-reads-xml]
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
BIN = os.path.join(ROOT, "target", "release", "iis-tagger")
COPY = os.path.join(ROOT, "target", "release", "examples", "copy")


def corpus(schema, size):
    os.makedirs(DATA, exist_ok=True)
    path = os.path.join(DATA, "shapes-%s-%s.%s" % (schema, size, "log" if schema == "xml" else "jsonl"))
    truth = path + ".truth"
    if not (os.path.exists(path) and os.path.exists(truth)):
        print("generating %s ..." % path, file=sys.stderr)
        # --lines from the flat corpus, so that every schema holds the same records.
        subprocess.run([sys.executable, GEN, "--schema", schema, "--seed", "1", "--candidate-rate", "0.02",
                        "--lines", str(lines_for(size)), "-o", path, "--truth", truth],
                       check=True, stderr=subprocess.DEVNULL)
    with open(truth) as t:
        matches = sum(1 for line in t if not line.rstrip("\n").endswith("\tcandidate"))
    return path, matches


def lines_for(size):
    """Lines of the flat corpus of `size` (generated once to count them)."""
    probe = os.path.join(DATA, "shapes-lines-%s.txt" % size)
    if not os.path.exists(probe):
        out = subprocess.run([sys.executable, GEN, "--schema", "flat", "--seed", "1", "--candidate-rate", "0.02",
                              "--size", size, "-o", os.devnull], check=True, capture_output=True, text=True).stderr
        n = int(out.split("lines=")[1].split()[0])
        with open(probe, "w") as f:
            f.write(str(n))
    with open(probe) as f:
        return int(f.read())


def run(cmd):
    """Wall seconds and user CPU seconds of one run (the user time is the process's own work;
    the wall time adds the kernel's reads and writes, which move with the machine's load)."""
    null = os.open(os.devnull, os.O_WRONLY)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.execv(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    os.close(null)
    if status != 0:
        sys.exit("%s failed (status %d)" % (" ".join(cmd), status))
    return wall, usage.ru_utime


def check(binary, path, matches):
    out = subprocess.run([binary, path], capture_output=True, check=True).stdout
    got = out.count(b'"iis_tagger":{"risk_score":') + out.count(b"<iis_tagger risk_score=")
    if got != matches:
        sys.exit("%s annotated %d records of %s, the truth file has %d" % (binary, got, path, matches))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--previous", required=True, help="the previous iis-tagger binary")
    ap.add_argument("--size", default="256MB")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--previous-reads-xml", action="store_true",
                    help="the previous binary reads XML lines too: compare it on the XML corpus as well")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "iis-tagger", "--example", "copy"], cwd=ROOT, check=True)
    corpora = {s: corpus(s, a.size) for s in ("flat", "ecs", "xml")}
    for schema, (path, matches) in corpora.items():
        check(BIN, path, matches)
    commands = []
    for schema, (path, _) in corpora.items():
        commands.append(("copy " + schema, [COPY, path]))
        commands.append(("new " + schema, [BIN, path]))
        if schema != "xml" or a.previous_reads_xml:
            commands.append(("previous " + schema, [a.previous, path]))
    times = {name: [] for name, _ in commands}
    for i in range(a.runs):
        # Every other round in reverse order, so that no command always follows the same one.
        for name, cmd in (commands if i % 2 == 0 else commands[::-1]):
            times[name].append(run(cmd))
    med = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
    user = {name: statistics.median(u for _, u in t) for name, t in times.items()}
    lines = lines_for(a.size)
    print("%d records per corpus, %d runs, medians" % (lines, a.runs))
    for name, _ in commands:
        schema = name.split()[-1]
        size = os.path.getsize(corpora[schema][0])
        print("  %-14s %8.3f s  %7.1f MB/s  %10.0f events/s  user %.3f s"
              % (name, med[name], size / med[name] / 1e6, lines / med[name], user[name]))
    print("xml events/s as a share of flat events/s (new binary): %.2fx" % (med["new flat"] / med["new xml"]))
    for schema in ("flat", "ecs", "xml"):
        if "previous " + schema not in med:
            continue
        change = med["new " + schema] / med["previous " + schema] - 1
        cpu = user["new " + schema] / user["previous " + schema] - 1
        print("%s: new binary %+.1f %% time (%+.1f %% user CPU) against the previous one" % (schema, 100 * change, 100 * cpu))
    for schema in ("flat", "ecs", "xml"):
        print("%s: new binary at %.3fx the plain copy" % (schema, med["copy " + schema] / med["new " + schema]))


if __name__ == "__main__":
    main()
