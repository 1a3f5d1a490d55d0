"""Run a command with a real pseudo-terminal as its stdout and stderr, as a person at a
terminal would, and read everything it wrote."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def on_a_terminal(
    module_args: Sequence[str], env: dict[str, str], timeout: float = 300
) -> tuple[int, str]:
    """`python -m MODULE ARGS...` on a pseudo-terminal 160 columns wide: its exit code and its
    output (escape sequences kept)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", *module_args],
        cwd=ROOT,
        env={**env, "COLUMNS": "160", "TERM": "xterm"},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout), b"".join(chunks).decode(errors="replace")
