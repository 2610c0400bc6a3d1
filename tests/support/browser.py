"""Headless Chromium driven over the DevTools protocol, for the tests that open pages.

``chromium --dump-dom --virtual-time-budget=N`` lets the browser decide when a page
is done, and under load it has hung past two minutes on the dashboard (its virtual
time never ran out). Here the test decides: it loads the page, polls a JavaScript
condition in real time until the page shows what it waits for, then reads the DOM and
takes a screenshot, each step with a deadline.

The protocol runs over ``--remote-debugging-pipe`` (JSON messages, each ended by a
NUL byte, on file descriptors 3 and 4 of the browser), so no port is opened and no
client library is needed: Playwright could drive Debian's Chromium too, but brings a
Node.js driver of its own for a few page loads.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

# Chromium reads commands from fd 3 and writes answers and events to fd 4.
_CHROMIUM_IN, _CHROMIUM_OUT = 3, 4


class Page:
    """One page in a headless Chromium of its own; ``with Page(profile) as page``."""

    def __init__(self, profile: Path, *, width: int = 1400, height: int = 2400) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            pytest.fail("chromium is not installed: `make test` installs Debian's chromium")
        commands_r, self._commands = os.pipe()
        self._answers, answers_w = os.pipe()
        # The child's ends, moved above 3 and 4 so that putting one there cannot
        # overwrite the other.
        child_in = fcntl.fcntl(commands_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(answers_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(commands_r)
        os.close(answers_w)

        def onto_3_and_4() -> None:  # in the child, before exec; dup2 clears close-on-exec
            os.dup2(child_in, _CHROMIUM_IN)
            os.dup2(child_out, _CHROMIUM_OUT)

        self._process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=onto_3_and_4,
            close_fds=False,  # keeps 3 and 4; every other descriptor is close-on-exec
        )
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._session = None
            self.send("Browser.close", timeout=10)
        except (OSError, TimeoutError, RuntimeError):
            pass
        finally:
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            os.close(self._commands)
            os.close(self._answers)

    # -- what the tests use -------------------------------------------------------------

    def open(self, url: str, ready: str, *, timeout: float = 60) -> str:
        """Load ``url``, wait until the JavaScript expression ``ready`` is true, and
        return the page's HTML. Fails with the page's text if it never gets ready."""
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                shown = self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(f"{url} never showed {ready} in {timeout:.0f} s:\n{shown}")
            time.sleep(0.25)
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self, path: Path) -> None:
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def evaluate(self, expression: str) -> Any:
        answer = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    # -- the protocol -------------------------------------------------------------------

    def send(self, method: str, *, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def _read(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method}")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self._process.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)
