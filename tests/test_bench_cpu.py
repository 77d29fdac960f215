"""The benchmarks' CPU accounting: a process that ended mid-phase still counts (issue 16)."""

import subprocess
import sys
import time

from bench.surge import cpu_seconds

# A child burning 0.4 s of CPU, run and waited for by a parent that then idles: as a PostgreSQL
# postmaster outlives a backend that ended.
BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
PARENT = f"""
import subprocess, sys, time
subprocess.run([sys.executable, "-c", {BURN!r}])
print("child ended", flush=True)
time.sleep(30)
"""


def test_the_cpu_of_a_child_that_ended_stays_in_its_parents_figure():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert parent.stdout.readline().strip() == "child ended"
        time.sleep(0.1)
        used = cpu_seconds({parent.pid: "parent"})["parent"]
        # The child's 0.4 s, though no process of it is left; Python's start-up on top.
        assert used >= 0.35
    finally:
        parent.kill()
        parent.wait()
