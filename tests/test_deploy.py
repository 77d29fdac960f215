"""The production process files: each one loads and says what the README says."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from portal.celery import app

ROOT = Path(__file__).resolve().parents[1]
OWN_MODULES = ("accounts.", "activation.", "api.", "audit.", "portal.", "risk.", "verification.")


def our_tasks():
    app.loader.import_default_modules()
    return [task for name, task in app.tasks.items() if name.startswith(OWN_MODULES)]


def test_every_task_has_a_soft_and_a_hard_time_limit():
    tasks = our_tasks()
    assert len(tasks) >= 10
    for task in tasks:
        soft = task.soft_time_limit or app.conf.task_soft_time_limit
        hard = task.time_limit or app.conf.task_time_limit
        assert soft and hard, task.name
        assert 0 < soft < hard <= 3600, (task.name, soft, hard)


def test_only_the_long_jobs_get_more_than_the_default():
    default = app.conf.task_time_limit
    long_jobs = {task.name for task in our_tasks() if (task.time_limit or default) > default}
    assert long_jobs == {
        "activation.tasks.verify_audit_chains",
        "activation.tasks.run_bulk_recovery",
        "risk.tasks.purge_evaluations",
    }


def test_the_gunicorn_configuration_loads_with_the_app():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--check-config",
            "-c",
            "deploy/gunicorn.conf.py",
            "portal.wsgi",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_procfile_runs_web_worker_and_beat_from_our_files():
    processes = {}
    for line in (ROOT / "deploy" / "Procfile").read_text().splitlines():
        if line and not line.startswith("#"):
            name, command = line.split(":", 1)
            processes[name] = shlex.split(command)
    assert set(processes) == {"web", "worker", "beat"}
    assert processes["web"][:3] == ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
    assert (ROOT / processes["web"][2]).exists()
    assert processes["worker"][:5] == ["celery", "-A", "portal", "--quiet", "worker"]
    assert processes["beat"][:5] == ["celery", "-A", "portal", "--quiet", "beat"]


def test_celery_accepts_every_option_the_procfile_gives_it():
    # `celery -A portal worker --quiet` once stood here: --quiet belongs before the command,
    # and the worker refused to start.
    for line in (ROOT / "deploy" / "Procfile").read_text().splitlines():
        if line.startswith(("worker:", "beat:")):
            command = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line.split(":", 1)[1])
            args = shlex.split(command)
            assert args[0] == "celery"
            result = subprocess.run(
                [sys.executable, "-m", *args, "--help"],
                cwd=ROOT,
                env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, (line, result.stderr[-500:])
