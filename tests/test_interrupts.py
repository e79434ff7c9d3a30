"""Ctrl-C landing in a finalizer (``opsagent.interrupts``): delivered again, never swallowed.

The CI run of ``f0576cb`` had a backup's Ctrl-C printed as "Exception ignored in: <function ...>", after which the
backup kept waiting behind a lock and failed on its own (exit 1 instead of 130).  Each test runs a real process,
sends it a real SIGINT while its main thread is inside a finalizer, and runs the same thing once without the guard:
that control must show the swallowing, so the test can fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .conftest import Project

REPO = Path(__file__).resolve().parent.parent

# the main thread enters a finalizer (``kind``), which tells the test (a marker file) and then stays busy for 1.5 s:
# the test's SIGINT lands inside it
_FINALIZER = textwrap.dedent(
    """
    import gc, os, sys, time, weakref

    MARKER = sys.argv[1]
    KIND = sys.argv[2]

    def busy_finalizer(*_):
        open(MARKER, "w").close()
        start = time.monotonic()
        while time.monotonic() - start < 1.5:
            pass

    class Slow:
        def __del__(self):
            busy_finalizer()

    class Target:
        pass

    def enter_finalizer():
        if KIND == "__del__":
            doomed = Slow()
            del doomed
        elif KIND == "weakref":
            target = Target()
            keep = weakref.ref(target, busy_finalizer)
            del target
        else:  # a garbage collection pass
            gc.callbacks.append(lambda phase, info: phase == "start" and busy_finalizer())
            gc.collect()
    """
)

_SCRIPT = _FINALIZER + textwrap.dedent(
    """
    if sys.argv[3] == "guarded":
        from opsagent.interrupts import keep_interrupts
        keep_interrupts()
    try:
        enter_finalizer()
        time.sleep(2)
        print("swallowed")
    except KeyboardInterrupt:
        print("interrupted after the finalizer")
    """
)


def _interrupt_in_finalizer(marker: Path, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``argv``, SIGINT it once ``marker`` appears (its main thread is in the finalizer); exit code, output."""
    marker.unlink(missing_ok=True)
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env or dict(os.environ)
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the process never entered its finalizer"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


@pytest.mark.parametrize("kind", ["__del__", "weakref", "gc-callback"])
def test_a_ctrl_c_swallowed_by_a_finalizer_is_delivered_after_it(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "in-finalizer"
    script = tmp_path / "script.py"
    script.write_text(_SCRIPT)
    code, output = _interrupt_in_finalizer(marker, [sys.executable, str(script), str(marker), kind, "bare"])
    assert "swallowed" in output and "Exception ignored" in output, output  # the control: Python's own behaviour
    code, output = _interrupt_in_finalizer(marker, [sys.executable, str(script), str(marker), kind, "guarded"])
    assert code == 0 and output.strip() == "interrupted after the finalizer", output


def test_other_unraisable_exceptions_still_reach_the_previous_hook(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        seen = []
        sys.unraisablehook = lambda unraisable: seen.append(type(unraisable.exc_value).__name__)
        from opsagent.interrupts import keep_interrupts
        keep_interrupts()
        keep_interrupts()  # twice: still one hook, the first one kept as the previous
        class Broken:
            def __del__(self):
                raise ValueError("boom")
        doomed = Broken()
        del doomed
        print(seen)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.stdout.strip() == "['ValueError']", done


# the real CLI: its main thread enters a finalizer as the backup's progress display opens, and Ctrl-C lands there
_CLI = _FINALIZER + textwrap.dedent(
    """
    from opsagent.cli import progress
    from opsagent import launch

    if sys.argv[3] == "bare":  # the control: the entry point without its guard
        launch.keep_interrupts = lambda: None
    opened = progress.Waiting.open

    def open_then_finalize(self):
        opened(self)
        enter_finalizer()

    progress.Waiting.open = open_then_finalize
    sys.argv = ["opsagent", "backup", "--host", "sandbox"]
    launch.main()
    """
)


def test_the_cli_exits_130_when_ctrl_c_lands_in_a_finalizer(tmp_path: Path, project: Project) -> None:
    marker = tmp_path / "in-finalizer"
    script = tmp_path / "cli.py"
    script.write_text(_CLI)
    env = {**os.environ, "OPSAGENT_INVENTORY": str(project.root / "inventory.yaml")}
    code, output = _interrupt_in_finalizer(marker, [sys.executable, str(script), str(marker), "__del__", "bare"], env)
    assert code == 0 and "Exception ignored" in output, output  # swallowed: the backup went on and finished
    code, output = _interrupt_in_finalizer(
        marker, [sys.executable, str(script), str(marker), "__del__", "guarded"], env
    )
    assert code == 130 and "interrupted" in output, output
    assert "Exception ignored" not in output and "Traceback" not in output, output
    assert "verified" not in output, output  # stopped: no backup was taken


def test_both_entry_points_install_the_guard() -> None:
    """``opsagent``/``python -m opsagent`` (``launch.main``) and ``inv`` (``tasks.py``)."""
    probe = textwrap.dedent(
        """
        import sys
        {load}
        print(getattr(sys.unraisablehook, "__module__", None))
        """
    )
    loads = {
        "launch.main": "from opsagent import launch\nlaunch.start_early = lambda argv: None\n"
        "launch.exit_at_once = lambda code: None\nsys.argv = ['opsagent', '--version']\nlaunch.main()",
        "tasks.py": "import tasks",
    }
    for name, load in loads.items():
        done = subprocess.run(
            [sys.executable, "-c", probe.format(load=load)], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert done.stdout.strip().splitlines()[-1] == "opsagent.interrupts", (name, done)


# a fleet run of two hosts: h0's run enters a finalizer, h1's sleeps; Ctrl-C (the test's SIGINT) lands in the main
# thread, which passes it on to both workers: h0's arrives inside its finalizer
_FLEET = _FINALIZER + textwrap.dedent(
    """
    from opsagent.inventory import HostConfig
    from opsagent.remote.fleet import FleetInterrupted, HostOutcome, run_fleet

    if sys.argv[3] == "guarded":
        from opsagent.interrupts import keep_interrupts
        keep_interrupts()

    import threading
    both_running = threading.Barrier(2)

    def action(host):
        both_running.wait()
        if host.name == "h0":
            enter_finalizer()
        for _ in range(60):  # 3 s: the host's run goes on when its interrupt was swallowed
            time.sleep(0.05)
        return HostOutcome(host.name)

    hosts = [HostConfig(name=f"h{i}", address="127.0.0.1") for i in range(2)]
    try:
        run_fleet(hosts, action, parallel=2)
        print("not interrupted")
    except FleetInterrupted as interrupted:
        print(" ".join(f"{outcome.host}={outcome.status}" for outcome in interrupted.outcomes))
    """
)


def test_a_fleet_worker_whose_finalizer_swallows_the_interrupt_is_sent_it_again(tmp_path: Path) -> None:
    marker = tmp_path / "in-finalizer"
    script = tmp_path / "fleet.py"
    script.write_text(_FLEET)
    code, output = _interrupt_in_finalizer(marker, [sys.executable, str(script), str(marker), "__del__", "bare"])
    assert output.strip().splitlines()[-1] == "h0=ok h1=interrupted", output  # the control: h0 went on
    code, output = _interrupt_in_finalizer(marker, [sys.executable, str(script), str(marker), "__del__", "guarded"])
    assert code == 0 and output.strip() == "h0=interrupted h1=interrupted", output
