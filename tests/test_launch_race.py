"""Two `cosmos upsample` runs of the same command at the same time start ONE worker.

The launch snippet (remote/jobctl.py) checks whether the job's worker is alive and starts it if
not; two launchers that both look before either has written the pid file would both start one,
and two workers would then share the job folder (every item sent to the engine twice, results
and status written by both). Run by a real `sh`, as on the host.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from cosmos_workflow.remote import jobctl


def test_concurrent_launchers_start_the_worker_once_and_all_follow_it(tmp_path):
    job = tmp_path / "jobs" / "0123456789abcdef"
    job.mkdir(parents=True)
    starts = tmp_path / "starts"
    # A "worker" that records each start, runs a little while and says so.
    worker = f"echo started >> {starts}; sleep 1; echo worker-output"
    command = jobctl.launch_and_follow(str(job), worker)

    def launch(_):
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)

    with ThreadPoolExecutor(max_workers=6) as pool:
        runs = list(pool.map(launch, range(6)))

    assert starts.read_text().splitlines() == ["started"]  # one worker, however many launchers
    for run in runs:
        assert "worker-output" in run.stdout, run.stdout + run.stderr
        assert run.stdout.rstrip().endswith(f"{jobctl.EXIT_PREFIX}0"), run.stdout
    assert not (job / "launching").exists()


def test_a_launcher_that_died_holding_the_lock_does_not_block_the_next_one(tmp_path):
    job = tmp_path / "jobs" / "0123456789abcdef"
    (job / "launching").mkdir(parents=True)  # left by a launcher killed mid-launch…
    subprocess.run(["touch", "-d", "10 minutes ago", str(job / "launching")], check=True)
    starts = tmp_path / "starts"
    command = jobctl.launch_and_follow(str(job), f"echo started >> {starts}")

    run = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)

    assert starts.read_text().splitlines() == ["started"], run.stdout + run.stderr
    assert run.stdout.rstrip().endswith(f"{jobctl.EXIT_PREFIX}0")
