#!/usr/bin/env python3
"""Lists the longest uninterruptible (D-state) sleeps of threads, with the
kernel stack they slept in, from a perf recording of context switches:

    perf record -a -g -e sched:sched_switch -o sched.data -- sleep 7
    perf script -i sched.data | benches/tools/d-state-stalls.py [COUNT] [COMM-PREFIX]

A broker worker in D state inside the append path (fallocate, ftruncate,
a page fault waiting on the disk) holds every produce and fetch of that
partition; this is how such stalls were found (BENCHMARKS.md, issue 8).
"""
import re
import sys

SWITCH = re.compile(
    r"^(\S+)\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+sched:sched_switch: prev_comm=.* "
    r"prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=.* next_pid=(\d+)"
)


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    prefix = sys.argv[2] if len(sys.argv) > 2 else ""
    slept_at, stacks, names, stalls = {}, {}, {}, []
    current = None
    for line in sys.stdin:
        match = SWITCH.search(line)
        if match:
            name, _, time, prev, state, nxt = match.groups()
            time = float(time)
            current = None
            if state.startswith("D"):
                slept_at[prev], stacks[prev], names[prev] = time, [], name
                current = prev
            if nxt in slept_at and nxt != prev:
                stack = " < ".join(stacks[nxt][2:24])
                stalls.append(((time - slept_at.pop(nxt)) * 1000, names[nxt], nxt, stack))
            continue
        fields = line.split()
        if current and len(fields) >= 2:
            stacks[current].append(fields[1].split("+")[0])
    stalls = [s for s in stalls if s[1].startswith(prefix)]
    stalls.sort(reverse=True)
    for ms, name, tid, stack in stalls[:count]:
        print(f"{ms:8.2f} ms  {name}/{tid}: {stack}")


if __name__ == "__main__":
    main()
