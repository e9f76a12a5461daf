#!/usr/bin/env python3
"""Where a cancelled isolate's waiter spends its wake-up: a reading of a trace.

Record a fork-backend scenario with the kernel's scheduler events, then feed
`perf script` to this program:

    perf record -m 16M -a -o /tmp/wake.data \
        -e sched:sched_switch -e sched:sched_waking -e sched:sched_wakeup \
        -e signal:signal_generate \
        -- ./build/release/bench/cancellable-bench --only cancel_mid_parse
    perf script -i /tmp/wake.data -F tid,cpu,time,event,trace \
        | python3 bench/trace_wakeups.py [--top N]

A cancellation shows in the trace as the cancelling thread waking the waiter
and, within 100 us, sending SIGKILL. For each one this prints how long the
waiter took from being woken to running, split into "woken -> enqueued" (long
when its CPU was halted and the hypervisor was slow to run it again) and
"enqueued -> running" (long when another task held that CPU), and what its
CPU was doing when the waiter was woken. Cancellations whose switch-in the
trace does not hold (perf may miss an idle CPU's events) are counted apart.
"""

import re
import sys

LINE = re.compile(r"\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+)\s+(.*)")


def read_events(stream):
    events = []
    for line in stream:
        m = LINE.match(line)
        if m:
            name = m[4].rstrip(":").split(":")[-1]
            events.append((int(m[1]), int(m[2]), float(m[3]), name, m[5] + " "))
    return events


def field(text, key):
    m = re.search(key + r"=(\S+)", text)
    return m[1] if m else None


def main():
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 10
    events = read_events(sys.stdin)
    kills = [i for i, e in enumerate(events) if e[3] == "signal_generate" and field(e[4], "sig") == "9"]
    if not kills:
        sys.exit("no SIGKILL in the trace: record a fork-backend scenario")
    # The first SIGKILL comes from the cancelling thread, just after it woke the waiter.
    canceller = events[kills[0]][0]
    i = kills[0]
    while i > 0 and not (events[i][3] == "sched_waking" and events[i][0] == canceller):
        i -= 1
    waiter = int(field(events[i][4], "pid"))

    running = {}  # cpu -> pid of the task running there (0: idle)
    rows, unrecorded = [], 0
    for i, (tid, cpu, t, name, text) in enumerate(events):
        if name == "sched_switch":
            running[cpu] = int(field(text, "next_pid"))
        if not (name == "sched_waking" and tid == canceller and field(text, "pid") == str(waiter)):
            continue
        kill = next((e for e in events[i + 1:i + 400] if e[3] == "signal_generate" and e[0] == canceller
                     and field(e[4], "sig") == "9" and e[2] - t < 100e-6), None)
        if kill is None:
            continue  # not a cancellation (the benchmark arming its waiter)
        worker = int(field(kill[4], "pid"))
        target = int(field(text, "target_cpu"))
        if target == cpu:
            where = "the cancelling thread's CPU"
        elif running.get(target, 0) == 0:
            where = "the other CPU, idle"
        elif running[target] == worker:
            where = "the other CPU, running the worker being killed"
        else:
            where = "the other CPU, running pid %d" % running[target]
        enqueued = ran = None
        for e in events[i + 1:]:
            if e[2] - t > 0.02:
                break
            if e[3] == "sched_wakeup" and field(e[4], "pid") == str(waiter) and enqueued is None:
                enqueued = e[2]
            if e[3] == "sched_switch" and field(e[4], "next_pid") == str(waiter):
                ran = e[2]
                break
        if ran is None:
            unrecorded += 1
            continue
        enqueued = enqueued if enqueued is not None else ran
        rows.append(((ran - t) * 1e6, (enqueued - t) * 1e6, (ran - enqueued) * 1e6, where))

    rows.sort(reverse=True)
    print("canceller %d, waiter %d: %d cancellations with a recorded switch-in, %d without"
          % (canceller, waiter, len(rows), unrecorded))
    if rows:
        print("woken -> running p50 %.0f us" % rows[len(rows) // 2][0])
    slow = {}
    for total, _, _, where in rows:
        if total > 100:
            slow[where] = slow.get(where, 0) + 1
    print("over 100 us: %d" % sum(slow.values()))
    for where, count in sorted(slow.items(), key=lambda item: -item[1]):
        print("  %d with the waiter on %s" % (count, where))
    print("slowest:")
    for total, to_queue, in_queue, where in rows[:top]:
        print("  %7.0f us = woken -> enqueued %6.0f + enqueued -> running %6.0f   waiter's CPU: %s"
              % (total, to_queue, in_queue, where))


if __name__ == "__main__":
    main()
