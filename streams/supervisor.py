"""``talkstream run``: supervises the processes of the main job.

Starts the embedded broker when ``KAFKA_BROKER`` is unset, the sandbox systems
when their URLs are unset, and a worker (``talkstream worker``) pointed at
them; prints where everything listens; stops everything it started, by PID,
on Ctrl-C / SIGTERM or when the worker dies.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from streams.embedded_broker import EmbeddedBroker, EmbeddedBrokerError
from streams.settings import Settings


@dataclass
class Child:
    name: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Supervisor:
    settings: Settings
    out: object = field(default=sys.stdout)
    broker: EmbeddedBroker | None = None
    children: list[Child] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start_broker(self) -> str:
        if self.settings.kafka_broker:
            self.say(f"broker: {self.settings.kafka_broker} (external)")
            return self.settings.kafka_broker
        self.broker = EmbeddedBroker().start()
        self.env["KAFKA_BROKER"] = self.broker.url
        # the embedded broker needs single-record batches (known; no self-check needed)
        self.env["TALKSTREAM_SINGLE_RECORD_BATCHES"] = "on"
        self.say(f"embedded broker listening on {self.broker.url} (pid {self.broker.pid})")
        return self.broker.url

    def spawn(self, name: str, args: list[str]) -> Child:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=self.env)
        child = Child(name, proc)
        self.children.append(child)
        return child

    def start_worker(self, loglevel: str = "info") -> Child:
        child = self.spawn("worker", ["worker", "-l", loglevel, "--without-web"]
                           if not self.settings.web_enabled else ["worker", "-l", loglevel])
        self.say(f"worker started (pid {child.pid})")
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        if self.broker is not None:
            pid = self.broker.pid
            self.broker.stop()
            self.broker = None
            self.say(f"embedded broker stopped (pid {pid})")

    def run(self, loglevel: str = "info") -> int:
        """Run until Ctrl-C/SIGTERM or until a child exits; returns the exit code."""
        stop_requested = {"signal": None}

        def on_signal(signum, _frame) -> None:
            stop_requested["signal"] = signum

        old_int = signal.signal(signal.SIGINT, on_signal)
        old_term = signal.signal(signal.SIGTERM, on_signal)
        try:
            try:
                self.start_broker()
            except EmbeddedBrokerError as exc:
                self.say(f"error: {exc}")
                return 2
            worker = self.start_worker(loglevel)
            while stop_requested["signal"] is None:
                if not worker.alive():
                    self.say(f"worker exited with code {worker.process.returncode}")
                    return worker.process.returncode or 1
                time.sleep(0.2)
            self.say("stopping ...")
            return 0
        finally:
            self.stop()
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
