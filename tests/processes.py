"""Real processes for integration tests: the simulator, Celery workers and beat."""

import os
import re
import signal
import subprocess
from pathlib import Path

from django.conf import settings
from django.db import connection

from .fixtures import ROOT, RunningSimulator, free_port, python, wait_until


class Process:
    """A child process in its own process group, its output kept for failure messages."""

    def __init__(self, args: list[str], env: dict[str, str], name: str, tmp_path: Path) -> None:
        self.name = name
        self.log_path = tmp_path / f"{name}.log"
        self._log = self.log_path.open("a")
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the process and its children at once, as a crashed machine would."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def pause(self) -> None:
        """SIGSTOP the process, as a long garbage-collection or virtual-machine pause would."""
        os.killpg(self.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.popen.pid, signal.SIGCONT)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def portal_env(**extra: str) -> dict[str, str]:
    """The environment of a portal process that shares this test's database, broker and cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        PYTHONUNBUFFERED="1",
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.TEST_REDIS_URL,
        CACHE_URL=settings.TEST_REDIS_URL.replace("redis://", "rediscache://"),
        SMS_BACKEND="verification.sms.ConsoleBackend",
    )
    env.update(extra)
    return env


def start_simulator(tmp_path: Path, *options: str) -> tuple[Process, RunningSimulator]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_"))}
    env.update(DJANGO_SETTINGS_MODULE="portal.settings", PYTHONUNBUFFERED="1")
    process = Process(
        [python(), "manage.py", "run_core_simulator", f"--port={port}", *options],
        env,
        "simulator",
        tmp_path,
    )
    wait_until(lambda: "listening" in process.output(), timeout=30, what="the simulator")
    return process, RunningSimulator(f"http://127.0.0.1:{port}")


def start_worker(tmp_path: Path, name: str, env: dict[str, str]) -> Process:
    process = Process(
        [
            python(),
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--concurrency=2",
            "--without-mingle",
            "--without-gossip",
            f"--hostname={name}@%h",
            "--loglevel=INFO",
        ],
        env,
        name,
        tmp_path,
    )
    wait_until(lambda: re.search(r"ready\.", process.output()), timeout=60, what=name)
    return process


def start_beat(
    tmp_path: Path, env: dict[str, str], *, name: str = "beat", options: tuple[str, ...] = ()
) -> Process:
    """Start beat; it has started, though it may still wait for another beat's lock."""
    process = Process(
        [
            python(),
            "-m",
            "celery",
            "-A",
            "portal",
            "beat",
            f"--schedule={tmp_path / f'{name}-schedule'}",
            "--loglevel=INFO",
            *options,
        ],
        env,
        name,
        tmp_path,
    )
    wait_until(lambda: "beat: Starting" in process.output(), timeout=60, what=name)
    return process
