#!/usr/bin/env python3
"""Alternates whole commands, RUNS rounds, the order reversed every other round, and prints
each command's median wall, user CPU and system CPU time with the change against the first
command. Standard output and standard error go to /dev/null; a command that fails stops
the run.

usage: benches/ab.py RUNS "CMD A" "CMD B" [...]
e.g.   benches/ab.py 25 "/tmp/prev-target/release/iis-tagger F" "target/release/iis-tagger F"
"""
import os
import shlex
import statistics
import sys
import time


def once(argv):
    null = os.open(os.devnull, os.O_WRONLY)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.execvp(argv[0], argv)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    os.close(null)
    if status != 0:
        sys.exit("%s failed (status %d)" % (shlex.join(argv), status))
    return wall, usage.ru_utime, usage.ru_stime


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    runs, commands = int(sys.argv[1]), sys.argv[2:]
    times = {c: [] for c in commands}
    for i in range(runs):
        for c in commands if i % 2 == 0 else commands[::-1]:
            times[c].append(once(shlex.split(c)))
    base = None
    print("%d rounds, medians" % runs)
    for c in commands:
        wall, user, system = (statistics.median(t[k] for t in times[c]) for k in range(3))
        base = base or (wall, user)
        print("  wall %.3f s (%+.1f %%)  user %.3f s (%+.1f %%)  sys %.3f s  %s"
              % (wall, 100 * (wall / base[0] - 1), user, 100 * (user / base[1] - 1), system, c))


if __name__ == "__main__":
    main()
