"""``sndif-harness shell``: the interactive prompt driven through tmux as a person would,
``-c`` and scripts against the reference backend and snd_be, and leaving by every way
(EOF, exit(), SIGTERM, an error in -c) leaves no process behind."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from requires import unavailable

ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness"]
PROMPT = "sndif>>> "
OPEN = ("sr(0, OpenReq(pcm_rate=48000, pcm_format='S16_LE', pcm_channels=2, "
        "buffer_sz=65536, gref_directory=share_buffer(0), period_sz=4096))")
HW_QUERY = ("sr(0, HwParamReq(formats=['S16_LE'], rates_min=8000, rates_max=48000, "
            "channels_min=1, channels_max=2, buffer_min=64, buffer_max=16384, "
            "period_min=64, period_max=16384))")


# --- processes ----------------------------------------------------------------------------

def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (a backend in its own session is still a child)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            for k in kids:
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(pred: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for: {what()}")
        time.sleep(0.1)


def assert_all_gone(pids: set[int], timeout: float = 15.0) -> None:
    wait_until(lambda: not any(alive(p) for p in pids), timeout,
               lambda: "processes still running: " + ", ".join(
                   f"{p} {_cmdline(p)}" for p in pids if alive(p)))


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_shell(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, "shell", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=_env())


# --- tmux -------------------------------------------------------------------------------

class Tmux:
    """One private tmux server (its own socket) running one command in one pane."""

    def __init__(self, command: list[str]) -> None:
        self.out: Path | None = None
        self.base = ["tmux", "-L", f"sndif-test-{uuid.uuid4().hex[:8]}"]
        cmd = f"cd {shlex.quote(str(ROOT))} && exec {shlex.join(command)}"
        self._run("new-session", "-d", "-s", "t", "-x", "220", "-y", "80", cmd)
        self.pid = int(self._run("display-message", "-p", "-t", "t", "#{pane_pid}"))

    def _run(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True,
                              check=True, timeout=10, env=_env()).stdout.strip()

    def screen(self) -> str:
        try:
            return self._run("capture-pane", "-p", "-J", "-t", "t", "-S", "-200")
        except subprocess.CalledProcessError:
            return "(session gone)"

    def send(self, *keys: str) -> None:
        self._run("send-keys", "-t", "t", *keys)

    def line(self, text: str) -> None:
        self.send("-l", text)
        self.send("Enter")

    def wait_for(self, *texts: str, timeout: float = 30.0, after: int = 0) -> str:
        """Wait until every text shows on the screen after ``after`` characters."""
        got = ""

        def seen() -> bool:
            nonlocal got
            got = self.screen()[after:]
            return all(t in got for t in texts)

        wait_until(seen, timeout, lambda: f"{texts!r} on the screen:\n{got}")
        return got

    def prompts(self) -> int:
        return self.screen().count(PROMPT.rstrip())

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux_shell(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        unavailable("tmux not found: apt-get install tmux")
    t = Tmux([*HARNESS, "shell", "--plain", "--out", str(tmp_path / "out")])
    t.out = tmp_path / "out"
    try:
        yield t
    finally:
        t.kill()


def _torn_down(t: Tmux) -> None:
    """Not only gone (PDEATHSIG would see to that) but stopped in order: the world's
    teardown marks the backend log when it stops the backend."""
    assert t.out is not None
    wait_until(lambda: "backend stopped (end of run)" in _read(t.out / "backend.log"), 15,
               lambda: "the teardown's mark in backend.log")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _started(t: Tmux) -> set[int]:
    t.wait_for("leave with", PROMPT.rstrip(), timeout=60)
    procs = descendants(t.pid)
    assert procs, "the world runs processes (the simulated Xen, the backend)"
    return procs | {t.pid}


def test_interactive_shell_explores_and_leaves_nothing_behind(tmux_shell):
    t = tmux_shell
    procs = _started(t)
    banner = t.screen()
    assert "connected to backend reference" in banner and "streams[0]: 0/0 playback" in banner

    mark = len(t.screen())
    t.line("ls(OpenReq)")
    t.wait_for("pcm_rate", "pcm_format", "buffer_sz", "gref_directory", "period_sz",
               after=mark)

    mark = len(t.screen())
    t.line(OPEN)
    out = t.wait_for("XenSndResp", "operation=OPEN", after=mark)
    assert "status=OK" in out

    # an error shows the user's traceback only, and the prompt comes back
    n = t.prompts()
    mark = len(t.screen())
    t.line("sr(0, b'short')")
    out = t.wait_for("ValueError: a request is 64 octets, not 5", after=mark)
    wait_until(lambda: t.prompts() > n, 10, t.screen)
    assert 'File "<sndif-shell>", line 1' in out
    assert "console.py" not in out and "helpers.py" not in out

    mark = len(t.screen())
    t.line("print(len(events(0)), trace.show(3))")
    t.wait_for("resp id=", after=mark)

    t.send("C-d")
    assert_all_gone(procs)
    _torn_down(t)


@pytest.mark.parametrize("leave", ["exit()", "sigterm", "sighup"])
def test_every_way_out_tears_the_world_down(tmux_shell, leave):
    t = tmux_shell
    procs = _started(t)
    if leave == "exit()":
        t.line("exit()")
    else:
        os.kill(t.pid, signal.SIGTERM if leave == "sigterm" else signal.SIGHUP)
    assert_all_gone(procs)
    _torn_down(t)


# --- non-interactive ----------------------------------------------------------------------

def test_c_sends_requests_and_prints_decoded_responses(tmp_path):
    res = run_shell("--out", str(tmp_path), "-c",
                    f"r = {HW_QUERY}; print(r.summary()); print(repr({OPEN}))")
    assert res.returncode == 0, res.stderr
    assert "sndif resp id=0 HW_PARAM_QUERY status=OK" in res.stdout
    assert "operation=OPEN" in res.stdout and "status=OK" in res.stdout
    assert (tmp_path / "trace.jsonl").stat().st_size > 0


HELPERS = """
rep = play(0, 0.3)
print("PLAYED", rep.ok, len(events(0)) == len(rep.positions) > 0)
print("STATE", xs.read(xs.be + "/state"))
fid = fault("evtchn.notify", "EINVAL", mode="always", domid=card.domid)
print("FAULTS", fault.list())
try:
    sr(0, CloseReq())
except OSError as exc:
    print("REFUSED", exc.errno)
print("CLEARED", fault.clear(fid))
streams[0].kick()
print("LATE", [r.status for r in streams[0].collect(1, 5)])
print(trace.export(sys.argv[1]))
"""


def test_helpers_play_events_xs_fault_and_export(tmp_path):
    pcap = tmp_path / "x.pcapng"
    res = run_shell("--out", str(tmp_path / "o"), "-c", "import sys\n" + HELPERS, str(pcap))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "PLAYED True True" in out and "STATE 4" in out
    assert "op='evtchn.notify'" in out and "REFUSED 22" in out and "CLEARED 1" in out
    assert "LATE ['OK']" in out  # the request stayed on the ring: a kick delivers it
    assert pcap.stat().st_size > 0 and f"{pcap}: " in out


def test_c_error_is_the_user_traceback_and_status_1(tmp_path):
    res = run_shell("--out", str(tmp_path), "-c", "x = 1\nstreams[0].nonexistent")
    assert res.returncode == 1
    assert 'File "<string>", line 2' in res.stderr and "AttributeError" in res.stderr
    assert "console.py" not in res.stderr and "runpy" not in res.stderr


def test_script_with_arguments_and_exit_status(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("import sys\nprint('ARGS', sys.argv[1:])\n"
                      "r = sr(streams[1], XenSndReq(operation='CLOSE'))\n"
                      "print(r.summary())\nsys.exit(3)\n")
    res = run_shell("--out", str(tmp_path / "o"), str(script), "a", "b")
    assert res.returncode == 3, res.stderr
    assert "ARGS ['a', 'b']" in res.stdout and "CLOSE status=" in res.stdout


def test_sigterm_during_c_tears_down(tmp_path):
    proc = subprocess.Popen([*HARNESS, "shell", "--out", str(tmp_path), "-c",
                             "print('READY', flush=True); import time; time.sleep(60)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=_env())
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        procs = descendants(proc.pid)
        assert procs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert_all_gone(procs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("args", [["--vsnd", "[['nonsense, x=1']]"],
                                  ["--backend", "bogus:thing"],
                                  ["--unique-id", "{bogus}"]])
def test_bad_world_options_are_one_line_status_2(tmp_path, args):
    res = run_shell("--out", str(tmp_path), *args, "-c", "print('ran')", timeout=60)
    assert res.returncode == 2
    assert "ran" not in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sndif-harness: "), res.stderr


# --- snd_be -------------------------------------------------------------------------------

@pytest.mark.slow
def test_c_against_snd_be_decodes_its_responses(snd_be_binary, tmp_path):
    res = run_shell("--out", str(tmp_path), "--backend", f"exec:{snd_be_binary} -v *:Debug",
                    "--audio", "pulse", "--unique-id", "pulse<{device}>", "-c",
                    f"print(repr({HW_QUERY})); print(repr({OPEN}))")
    assert res.returncode == 0, res.stderr + (tmp_path / "backend.log").read_text()[-3000:]
    assert "operation=HW_PARAM_QUERY" in res.stdout and "HwParamResp" in res.stdout
    assert "formats=0x4 (S16_LE)" in res.stdout
    assert "operation=OPEN" in res.stdout and "status=OK" in res.stdout
