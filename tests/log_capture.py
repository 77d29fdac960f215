"""Capture every log line, down to DEBUG, as production writes it (JSON through portal.logs)."""

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from portal.logs import ContextFilter, JsonFormatter

# Loggers the settings give a level of their own; lowered too, so nothing is left out.
_LEVELLED_LOGGERS = ("", "django", "django.server", "httpx")


class CapturedLogs:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict]:
        """Each line parsed as JSON (a line that is not JSON fails the test here)."""
        return [json.loads(line) for line in self.lines()]


@contextmanager
def captured_json_logs() -> Iterator[CapturedLogs]:
    captured = CapturedLogs()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    loggers = [logging.getLogger(name) for name in _LEVELLED_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield captured
    finally:
        logging.getLogger().removeHandler(handler)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
