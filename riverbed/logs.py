"""Structured, quiet-by-default logging for every Riverbed process.

One line per record, ``logfmt`` style (``ts=… level=… logger=… msg=… key=value``),
so people can read it and tools can parse it. Extra fields come from the
``extra={...}`` argument of a logging call.
"""

from __future__ import annotations

import logging
import sys
import time

from riverbed.settings import Settings, SettingsError, load_settings

# Attributes every LogRecord has; anything else was passed through ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        line = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "WARNING") -> None:
    """Send ``riverbed.*`` records at ``level`` and above to stderr, as logfmt."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger("riverbed")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def command_settings() -> Settings:
    """A command's settings, its logging configured from them; on a wrong setting, the
    message that names it on stderr and exit status 2."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    return settings


class LibrdkafkaLog:
    """librdkafka's own log lines, given to a Kafka client as its ``logger`` setting, as
    records of a Riverbed logger: logfmt like every other line, instead of raw
    ``%4|<time>|GETPID|…`` lines on stderr.

    librdkafka reports the retries it makes by itself (a transaction coordinator still
    loading or moving after a broker restart: "…: retrying") as warnings; they are INFO
    here, since the client gets past them on its own and a flow logs what it retries.
    confluent-kafka hands the lines over in the client's poll() and flush(), so give this
    only to clients that are polled, and read a line's time as that of the next call.

    ``at``: every line at this level instead (DEBUG for a client whose refused
    connections to a node that is down are expected, :func:`riverbed.kafka_admin.quiet_admin`).
    """

    def __init__(self, name: str, at: int | None = None) -> None:
        self._log = logging.getLogger(name)
        self._at = at

    def log(self, level: int, msg: str, *args: object) -> None:
        text = msg % args if args else msg
        if self._at is not None:
            level = self._at
        elif level == logging.WARNING and text.rstrip().endswith("retrying"):
            level = logging.INFO
        self._log.log(level, text)


#: Where the Kafka clients Riverbed makes outside the flows (admin, lag and offsets
#: readers, producers) put librdkafka's lines; a flow's clients use the flow's logger.
KAFKA_CLIENT_LOG = LibrdkafkaLog("riverbed.kafka.client")
