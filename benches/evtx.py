#!/usr/bin/env python3
"""EVTX files: iis-tagger against the parser's own dump tool and rsigma, in one session.

The corpus's EVTX files are small (882 records in all, at most 565 in one), so a run over
one is mostly process start-up. The measure is a large file stitched from their chunks
(benches/evtx-stitch.py, cached in bench-data/), and, for start-up included, the eight
files themselves. In one session, RUNS rounds, the order reversed every other round, each
command's output to /dev/null, medians of wall, user and system time:

  evtx_dump -t 1 -o jsonl BIG        the parsing floor: the evtx crate's own tool, one thread
  iis-tagger --threads 1 BIG         parse and tag with the built-in rules
  iis-tagger --threads 1 BIG.jsonl   tag only: the same records as JSON lines (evtx_dump's)
  iis-tagger --rules SIGMA ... BIG   iis-tagger with the SigmaHQ Windows rules, one thread
  rsigma engine eval -e @BIG ...     the rival with the same rules (its EVTX reader; --jq lifts
                                     EventData to the top, where its rules look)

iis-tagger's parsing cost per record is (tagger on BIG - tagger on BIG.jsonl) / records, set
against evtx_dump's whole cost per record (issue 13 asks for 1.5x at most). Before timing,
iis-tagger's output with its annotations stripped is checked equal to evtx_dump's.

usage: benches/evtx.py [--runs 7] [--chunks 800] [--evtx-dump PATH] [--rsigma PATH]
"""
import argparse
import glob
import os
import shlex
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ab = __import__("ab")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "bench-data")
CORPUS = os.path.join(ROOT, "..", "shared", "corpus", "evtx")
SIGMA = os.path.join(ROOT, "..", "shared", "sigma", "rules", "windows")
TAGGER = os.path.join(ROOT, "target", "release", "iis-tagger")
STRIP = os.path.join(ROOT, "target", "release", "examples", "strip")
FLATTEN = ('.Event.EventData + {EventID: .Event.System.EventID, Channel: .Event.System.Channel, '
           'Provider_Name: .Event.System.Provider["#attributes"].Name}')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--chunks", type=int, default=800)
    ap.add_argument("--evtx-dump", default="evtx_dump")
    ap.add_argument("--rsigma", help="rsigma built with --features evtx (left out if not given)")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(CORPUS, "*.evtx")))
    os.makedirs(DATA, exist_ok=True)
    big = os.path.join(DATA, "stitched-%d.evtx" % args.chunks)
    if not os.path.exists(big):
        subprocess.run([sys.executable, os.path.join(ROOT, "benches", "evtx-stitch.py"), "--chunks",
                        str(args.chunks), "-o", big] + files, check=True)
    twin = big + ".jsonl"
    with open(twin, "wb") as out:
        subprocess.run([args.evtx_dump, "-t", "1", "-o", "jsonl", big], stdout=out, stderr=subprocess.DEVNULL,
                       check=True)
    records = sum(1 for _ in open(twin, "rb"))
    tagged = subprocess.run([TAGGER, "--threads", "1", big], stdout=subprocess.PIPE, check=True).stdout
    stripped = subprocess.run([STRIP], input=tagged, stdout=subprocess.PIPE, check=True).stdout
    if stripped != open(twin, "rb").read():
        sys.exit("iis-tagger's records differ from evtx_dump's")
    corpus_records = sum(
        len(subprocess.run([args.evtx_dump, "-o", "jsonl", f], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           check=True).stdout.splitlines()) for f in files)

    q = shlex.quote
    commands = [
        ("evtx_dump -t 1 (parsing floor)", "%s -t 1 -o jsonl %s" % (args.evtx_dump, big), records),
        ("iis-tagger, 1 thread, EVTX", "%s --threads 1 %s" % (TAGGER, big), records),
        ("iis-tagger, 1 thread, the same records as JSON lines", "%s --threads 1 %s" % (TAGGER, twin), records),
        ("evtx_dump, 8 corpus files (8 processes)",
         "sh -c %s" % q("for f in %s; do %s -t 1 -o jsonl \"$f\"; done" % (" ".join(q(f) for f in files),
                                                                         args.evtx_dump)), corpus_records),
        ("iis-tagger, 8 corpus files (1 process, 1 thread)", "%s --threads 1 -r %s" % (TAGGER, CORPUS),
         corpus_records),
        ("iis-tagger, 8 corpus files (1 process, 2 threads)", "%s --threads 2 -r %s" % (TAGGER, CORPUS),
         corpus_records),
        ("iis-tagger, SigmaHQ rules, 1 thread, EVTX",
         "%s --threads 1 --no-builtin --rules %s %s" % (TAGGER, SIGMA, big), records),
    ]
    if args.rsigma:
        # rsigma reads an EVTX record as the nested evtx_dump object; its rules name the
        # EventData fields at the top, so --jq lifts them there (without it, nothing matches).
        commands += [
            ("rsigma engine eval, SigmaHQ rules, EVTX",
             "%s engine eval -q -r %s --jq %s -e @%s" % (args.rsigma, SIGMA, q(FLATTEN), big), records),
        ]
    for _, c, _ in commands:
        ab.once(shlex.split(c))
    times = {c: [] for _, c, _ in commands}
    for i in range(args.runs):
        for _, c, _ in commands if i % 2 == 0 else commands[::-1]:
            times[c].append(ab.once(shlex.split(c)))
    print("%d rounds, medians; the stitched file: %d chunks, %d records, %.1f MiB" %
          (args.runs, args.chunks, records, os.path.getsize(big) / 2**20))
    print("| command | wall s | user s | sys s | CPU µs/record |")
    print("|---|---|---|---|---|")
    cpu = {}
    for name, c, n in commands:
        wall = statistics.median(t[0] for t in times[c])
        user = statistics.median(t[1] for t in times[c])
        sys_ = statistics.median(t[2] for t in times[c])
        cpu[name] = user + sys_
        print("| %s | %.3f | %.3f | %.3f | %.2f |" % (name, wall, user, sys_, (user + sys_) / n * 1e6))
    floor = cpu["evtx_dump -t 1 (parsing floor)"]
    parse = cpu["iis-tagger, 1 thread, EVTX"] - cpu["iis-tagger, 1 thread, the same records as JSON lines"]
    print()
    print("iis-tagger's EVTX parsing, per record: %.2f µs; evtx_dump's whole run: %.2f µs: %.2fx" %
          (parse / records * 1e6, floor / records * 1e6, parse / floor))
    print("iis-tagger parse and tag against evtx_dump parse alone: %.2fx" % (cpu["iis-tagger, 1 thread, EVTX"] / floor))
    if args.rsigma:
        mine, theirs = "iis-tagger, SigmaHQ rules, 1 thread, EVTX", "rsigma engine eval, SigmaHQ rules, EVTX"
        print("SigmaHQ rules on EVTX: rsigma %.2f s CPU, iis-tagger %.2f s: %.2fx" %
              (cpu[theirs], cpu[mine], cpu[theirs] / cpu[mine]))


if __name__ == "__main__":
    main()
