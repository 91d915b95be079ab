"""Run ``anomalyseg segment`` in a child process, follow its JSON progress, cancel the whole tree.

The GUI must never freeze: the engine runs in its own process (the interpreter running Slicer's
Python, ``PythonSlicer -m AnomalySegLib segment ... --progress-format json``). Two threads read its
stdout (protocol lines, see ``AnomalySegLib.progress``) and stderr (log) into a queue; the owner
calls :meth:`InferenceProcess.poll` from its own thread (the GUI from a timer) to get the callbacks
there, never from a reader thread. Plain Python: no Qt, so it is tested outside Slicer.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from AnomalySegLib.progress import ProgressEvent, parse_progress_line

#: How long a cancelled process tree gets to stop on SIGTERM before it is killed.
TERMINATE_GRACE_S = 5.0


def segmentCommand(python: str | Path, inputPath: Path, outputFolder: Path, model: str | None = None,
                   maskPath: Path | None = None, device: str = "auto", threshold: str | None = None,
                   saveIntermediate: bool = False) -> list[str]:
    """The command line of ``anomalyseg segment`` for one input, with JSON progress."""
    command = [str(python), "-m", "AnomalySegLib", "segment", str(inputPath), "-o", str(outputFolder),
               "--device", device, "--progress-format", "json"]
    if model:
        command += ["--model", str(model)]
    if maskPath is not None:
        command += ["--mask", str(maskPath)]
    if threshold:
        command += ["--threshold", str(threshold)]
    if saveIntermediate:
        command.append("--save-intermediate")
    return command


def engineEnvironment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the engine importable and output unbuffered.

    The folder holding ``AnomalySegLib`` (a source checkout, or the extension's
    ``qt-scripted-modules``) goes first on ``PYTHONPATH``: ``PythonSlicer`` does not search the
    module paths of the Slicer application.
    """
    import AnomalySegLib

    environment = dict(os.environ if base is None else base)
    engineParent = str(Path(AnomalySegLib.__file__).resolve().parent.parent)
    paths = [engineParent] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p and p != engineParent]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


class InferenceProcess:
    """One child process whose stdout carries progress events and stderr log text.

    Args:
        onEvent: called with each :class:`ProgressEvent` (from :meth:`poll`, in the caller's thread).
        onLog: called with each other output line (stderr, or stdout lines that are not events).
    """

    def __init__(self, onEvent: Callable[[ProgressEvent], None] | None = None,
                 onLog: Callable[[str], None] | None = None) -> None:
        self.onEvent = onEvent
        self.onLog = onLog
        self.process: subprocess.Popen | None = None
        self.cancelled = False
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._readers: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def start(self, command: Sequence[str], environment: dict[str, str] | None = None,
              workingFolder: Path | None = None) -> None:
        """Start ``command`` in a new process group (so that cancel reaches its children too)."""
        if self.running:
            raise RuntimeError("a process is running already; cancel it or wait for it")
        self.cancelled = False
        self._lines = queue.Queue()
        groupOptions: dict = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32"
            else {"start_new_session": True})
        self.process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", bufsize=1, env=environment,
            cwd=None if workingFolder is None else str(workingFolder), **groupOptions)
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def poll(self) -> bool:
        """Deliver the output read so far to the callbacks; ``True`` while more may come."""
        while True:
            try:
                stream, line = self._lines.get_nowait()
            except queue.Empty:
                break
            event = parse_progress_line(line) if stream == "stdout" else None
            if event is not None:
                if self.onEvent:
                    self.onEvent(event)
            elif self.onLog and line.strip():
                self.onLog(line.rstrip("\r\n"))
        readersDone = all(not reader.is_alive() for reader in self._readers)
        return not (readersDone and self._lines.empty() and not self.running)

    def wait(self, pollIntervalS: float = 0.1) -> int:
        """Block until the process ends, delivering callbacks on the way; returns its exit status."""
        if self.process is None:
            raise RuntimeError("no process was started")
        while self.poll():
            time.sleep(pollIntervalS)
        return self.process.wait()

    def cancel(self) -> None:
        """Stop the process and every process it started (SIGTERM to the group, SIGKILL after a grace)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.cancelled = True
        if sys.platform == "win32":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True)
            self.process.wait()
            return
        group = self.process.pid  # the child leads its own session and process group
        _signalGroup(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        _signalGroup(group, signal.SIGKILL)  # children that outlived their parent, or a stuck parent
        self.process.wait()

    def _read(self, stream, name: str) -> None:
        for line in stream:
            self._lines.put((name, line))
        stream.close()


def _signalGroup(group: int, signalNumber: int) -> None:
    try:
        os.killpg(group, signalNumber)
    except ProcessLookupError:
        pass
