"""An agent program run as ws-server runs it: own process group, pipes on
0/1/2, nothing in its environment but PATH and the run's names. Every read
is bounded by a timeout."""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

TIMEOUT = 10


def fail(message):
    sys.exit(f"FAIL: {message}")


class Agent:
    def __init__(self, argv, run_id="r1", agent="example"):
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "AGENTWS_RUN_ID": run_id,
               "AGENTWS_AGENT": agent}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, text=True,
                                     start_new_session=True, close_fds=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # EOF

    def write(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def send(self, message):
        self.write(json.dumps(message))

    def close_stdin(self):
        self.proc.stdin.close()

    def line(self, timeout=TIMEOUT):
        """The next stdout line; None at EOF."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            fail(f"no line from {self.proc.args} within {timeout} s")

    def event(self, timeout=TIMEOUT):
        line = self.line(timeout)
        if line is None:
            fail(f"stdout closed where an event was due; stderr: {self.stderr()}")
        return json.loads(line)

    def expect_eof(self, timeout=TIMEOUT):
        line = self.line(timeout)
        if line is not None:
            fail(f"more output where the end was due: {line!r}")

    def wait(self, timeout=TIMEOUT):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            fail(f"{self.proc.args} still running after {timeout} s")

    def terminate_group(self):
        os.killpg(self.proc.pid, signal.SIGTERM)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stderr(self):
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read()


def check(condition, message):
    if not condition:
        fail(message)
