#!/usr/bin/env python3
"""Start-up latency of `moat run` up to the workload's first instruction.

    startup_latency.py MOAT RUNS MODE...

The workload is `/bin/date +%s%N`: it prints the wall-clock time at which it began, so
the time from launching moat to that instant is what a user waits for before their
program runs; the time until moat has exited (clean-up included) is reported beside it.
Modes run in alternating blocks of ten, because a sandbox's namespaces are freed by the
kernel after moat exits and that work lands on whichever run comes next. Prints one JSON
object per mode: medians and ranges in milliseconds.
"""
import json
import statistics
import subprocess
import sys
import time

BLOCK = 10


def one_run(moat, mode):
    started = time.time_ns()
    child = subprocess.Popen(
        [moat, "run", "--net", mode, "--", "/bin/date", "+%s%N"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    line = child.stdout.readline()
    status = child.wait()
    ended = time.time_ns()
    if status != 0 or not line.strip().isdigit():
        sys.exit(f"startup_latency.py: moat run --net {mode} failed (status {status})")
    return (int(line) - started) / 1e6, (ended - started) / 1e6


def main():
    moat, runs, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    samples = {mode: ([], []) for mode in modes}
    for mode in modes:  # warm-up: page cache, first nftables table
        one_run(moat, mode)
    while any(len(samples[m][0]) < runs for m in modes):
        for mode in modes:
            for _ in range(min(BLOCK, runs - len(samples[mode][0]))):
                to_workload, whole = one_run(moat, mode)
                samples[mode][0].append(to_workload)
                samples[mode][1].append(whole)
    for mode, (to_workload, whole) in samples.items():
        print(json.dumps({
            "mode": mode,
            "runs": runs,
            "to_workload_ms": statistics.median(to_workload),
            "to_workload_range": [min(to_workload), max(to_workload)],
            "whole_ms": statistics.median(whole),
            "whole_range": [min(whole), max(whole)],
        }))


if __name__ == "__main__":
    main()
