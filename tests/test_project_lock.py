"""The project lock: a second run stops naming the holder, or waits for it; a killed holder
frees it (the kernel drops an flock with its process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from components.project_lock import LOCK_FILE, ProjectBusy, project_lock

HOLD = """
import sys, time
from pathlib import Path
from components.project_lock import project_lock
with project_lock(Path(sys.argv[1]), 0, "test holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(root, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_stops_at_once_naming_the_holder(tmp_path):
    holder = hold(tmp_path, 30)
    try:
        started = time.monotonic()
        with pytest.raises(ProjectBusy, match=f"pid {holder.pid} on .*test holder, since "):
            with project_lock(tmp_path, 0, "second"):
                pass
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_run_says_who_it_waits_for_then_runs(tmp_path):
    holder = hold(tmp_path, 3)
    said = []
    started = time.monotonic()
    with project_lock(tmp_path, 60, "waiter", say=said.append):
        assert time.monotonic() - started > 1.5     # it got the lock only once the holder was done
        assert f"pid {os.getpid()}" in (tmp_path / LOCK_FILE).read_text()
    assert holder.wait(timeout=30) == 0
    assert len(said) == 1 and f"held by pid {holder.pid}" in said[0]


def test_waiting_runs_out_with_the_holder_named(tmp_path):
    holder = hold(tmp_path, 30)
    try:
        with pytest.raises(ProjectBusy, match=f"pid {holder.pid}"):
            with project_lock(tmp_path, 2, "impatient", say=lambda _: None):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    holder = hold(tmp_path, 30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with project_lock(tmp_path, 0, "after the crash"):
        pass
