"""The Kafka producer loop every domain's producer shares.

:func:`produce` publishes (key, value) messages from any iterable to one topic,
at a given rate or as fast as the broker takes them, until a count, a duration,
the end of the messages, Ctrl-C or SIGTERM; then flushes what is in flight and
returns a :class:`ProduceSummary`. It knows nothing about the messages.

Delivery accounting: librdkafka reports every message exactly once, as
delivered or failed. Only failures are reported to Python
(``delivery.report.only.error``), because a Python callback per delivered
message would cost a large share of the loop at 100k+ messages/s; delivered is
then ``sent - failed - still in flight``.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain, islice
from types import FrameType
from typing import Any, Final, Protocol

from confluent_kafka import KafkaError, Message, Producer

from riverbed.logs import KAFKA_CLIENT_LOG
from riverbed.settings import Settings
from riverbed.topics import PRODUCER_DEFAULTS

log = logging.getLogger("riverbed.producer")

ProgressCallback = Callable[[str], None]

_UNPACED_CHUNK: Final = 2000  # messages between two checks of the clock when unthrottled
_PACE_TICK_S: Final = 0.01  # a throttled loop sends a tick's worth of messages, then sleeps
_MAX_SLEEP_S: Final = 0.2  # so a stop request is seen quickly even at very low rates
_BUFFER_FULL_POLL_S: Final = 0.01


class KeyedMessage(Protocol):
    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


Messages = Iterable[tuple[bytes | None, bytes | None]] | Iterable[KeyedMessage]


@dataclass(frozen=True)
class ProduceSummary:
    """What a producer run did. ``ok`` is False if any message was not delivered."""

    topic: str
    sent: int
    delivered: int
    failed: int
    undelivered: int  # still in flight when the final flush gave up
    elapsed_s: float  # from the first message to the end of the final flush
    # "count", "duration", "exhausted" (no more messages), "interrupted" or "refused"
    stopped_by: str
    first_error: str | None = None
    seed: int | None = None  # for producers that generate: the seed they used

    @property
    def events_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.undelivered == 0

    def line(self) -> str:
        """One human line, e.g. for the end of ``riverbed produce``."""
        parts = [
            f"{self.topic}: sent {self.sent:,}, delivered {self.delivered:,}, "
            f"failed {self.failed:,}"
        ]
        if self.undelivered:
            parts.append(f", undelivered {self.undelivered:,}")
        parts.append(f" in {self.elapsed_s:.1f} s ({self.events_per_s:,.0f} events/s)")
        if self.stopped_by == "interrupted":
            parts.append(", interrupted")
        if self.seed is not None:
            parts.append(f", seed {self.seed}")
        if self.first_error:
            parts.append(f"; first error: {self.first_error}")
        return "".join(parts)


def producer_config(
    settings: Settings, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The client settings (servers, security) plus the producer defaults, then overrides."""
    return {**settings.kafka_client_config("producer"), **PRODUCER_DEFAULTS, **(overrides or {})}


def produce(
    messages: Messages,
    *,
    topic: str,
    config: Mapping[str, str],
    rate: float | None = None,
    count: int | None = None,
    duration: float | None = None,
    progress: ProgressCallback | None = None,
    progress_interval_s: float = 5.0,
    flush_timeout_s: float = 30.0,
    counts: SendCounts | None = None,
) -> ProduceSummary:
    """Publish messages to ``topic``; stop at ``count`` messages or after ``duration`` seconds.

    ``rate`` is messages per second; None or 0 means as fast as possible.
    ``progress`` receives a line every ``progress_interval_s`` (only runs that
    long report); without it the line is logged at INFO. ``counts`` follows the run
    as it goes (for metrics, read from another thread).
    """
    if count is not None and count < 0:
        raise ValueError("count must be >= 0")
    if rate is not None and rate < 0:
        raise ValueError("rate must be >= 0 (0: as fast as possible)")
    counts = counts if counts is not None else SendCounts()
    producer, deliveries, stop = counting_producer(config, counts)
    pairs = _as_pairs(messages)
    if count is not None:
        pairs = islice(pairs, count)
    report = _Progress(topic, counts, progress, progress_interval_s)
    with stop.on_signals():
        sent, started, stopped_by = _send_all(
            producer,
            topic,
            pairs,
            rate=rate,
            count=count,
            duration=duration,
            stop=stop,
            report=report,
            counts=counts,
        )
    undelivered = flush_remaining(producer, flush_timeout_s, stop, counts)
    elapsed = time.monotonic() - started
    summary = ProduceSummary(
        topic=topic,
        sent=sent,
        delivered=sent - counts.failed - undelivered,
        failed=counts.failed,
        undelivered=undelivered,
        elapsed_s=elapsed,
        stopped_by="refused" if stop.refused else stopped_by,
        first_error=stop.refused or deliveries.first_error,
    )
    if not summary.ok:
        log.warning("%s", summary.line())
    return summary


def counting_producer(
    config: Mapping[str, str], counts: SendCounts
) -> tuple[Producer, DeliveryCounter, StopRequest]:
    """A producer whose failed deliveries are counted in ``counts`` and whose fatal client
    errors (an authorization refused) ask the sending loop to stop."""
    deliveries = DeliveryCounter(counts)
    stop = StopRequest()
    producer = Producer(
        {
            **config,
            "on_delivery": deliveries.on_delivery,
            "delivery.report.only.error": True,
            "error_cb": stop.on_client_error,
            # librdkafka's lines (a broker down) as the producer's log lines, handed over
            # in the polls the sending loop makes.
            "logger": KAFKA_CLIENT_LOG,
        }
    )
    counts.in_flight = producer.__len__
    return producer, deliveries, stop


# --- the loop ----------------------------------------------------------------------------


def _send_all(
    producer: Producer,
    topic: str,
    pairs: Iterator[tuple[bytes | None, bytes | None]],
    *,
    rate: float | None,
    count: int | None,
    duration: float | None,
    stop: StopRequest,
    report: _Progress,
    counts: SendCounts,
) -> tuple[int, float, str]:
    """Send in chunks; between chunks, pace, report, and check the stop conditions.

    Returns (messages sent, monotonic start, why it stopped).
    """
    seconds_per_message = 1.0 / rate if rate else 0.0
    chunk = max(1, math.floor(_PACE_TICK_S / seconds_per_message)) if rate else _UNPACED_CHUNK
    started = time.monotonic()
    deadline = started + duration if duration is not None else math.inf
    report.start(started)
    sent = 0
    try:
        while True:
            n = _send_chunk(producer, topic, pairs, chunk)
            sent += n
            counts.sent += n
            if n < chunk:
                return sent, started, "count" if sent == count else "exhausted"
            now = time.monotonic()
            if now >= deadline:
                return sent, started, "duration"
            if stop.requested:
                return sent, started, "interrupted"  # or refused: see produce()
            report.maybe(now, sent)
            if seconds_per_message:
                # Against the start, not the last chunk: no drift, and a slow
                # moment is caught up.
                _sleep_until(min(started + sent * seconds_per_message, deadline), stop)
    except KeyboardInterrupt:
        # Outside the main thread no signal handler is ours: Ctrl-C arrives as this.
        return sent, started, "interrupted"


def _send_chunk(
    producer: Producer,
    topic: str,
    pairs: Iterator[tuple[bytes | None, bytes | None]],
    chunk: int,
) -> int:
    send = producer.produce
    n = 0
    for key, value in islice(pairs, chunk):
        try:
            send(topic, value, key)
        except BufferError:
            produce_when_room(producer, topic, value, key)
        n += 1
    # Serves delivery reports (failures) and frees their memory.
    producer.poll(0)
    return n


def produce_when_room(
    producer: Producer, topic: str, value: bytes | None, key: bytes | None = None, **kwargs: Any
) -> None:
    """``producer.produce``, waiting while the local queue is full: librdkafka delivers
    some (serving delivery reports), then it tries again. ``kwargs`` as for produce."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(_BUFFER_FULL_POLL_S)


def _sleep_until(when: float, stop: StopRequest) -> None:
    while not stop.requested:
        remaining = when - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, _MAX_SLEEP_S))


def flush_remaining(
    producer: Producer, timeout_s: float, stop: StopRequest, counts: SendCounts
) -> int:
    """Wait for what is in flight; return how many messages are still undelivered, and
    settle ``counts`` with that number (the run is over: :meth:`SendCounts.settle`).

    When the cluster refused the producer (wrong credentials), nothing in flight can
    arrive: its messages are dropped at once (they count as failed) instead of
    waiting out the timeout.
    """
    deadline = time.monotonic() + timeout_s
    try:
        while len(producer) and not stop.refused and time.monotonic() < deadline:
            producer.flush(min(0.5, max(deadline - time.monotonic(), 0)))
        if stop.refused:
            producer.purge()
            producer.flush(1.0)  # serves the purged messages' delivery reports
    except KeyboardInterrupt:
        log.warning("flush interrupted; %d messages may be undelivered", len(producer))
    undelivered = len(producer)
    counts.settle(undelivered)
    return undelivered


def _as_pairs(messages: Messages) -> Iterator[tuple[bytes | None, bytes | None]]:
    """(key, value) pairs from either pairs or objects with ``key`` and ``value``."""
    it = iter(messages)
    first = next(it, None)
    if first is None:
        return iter(())
    rest = chain((first,), it)
    if isinstance(first, tuple):
        return rest  # type: ignore[return-value]
    return ((m.key, m.value) for m in rest)  # type: ignore[union-attr]


# --- delivery reports, progress, signals -------------------------------------------------


@dataclass
class SendCounts:
    """What a running :func:`produce` has done so far; another thread (the metrics
    endpoint) may read it at any time."""

    sent: int = 0
    failed: int = 0
    in_flight: Callable[[], int] = lambda: 0  # messages sent, neither delivered nor failed

    @property
    def delivered(self) -> int:
        return self.sent - self.failed - self.in_flight()

    def settle(self, undelivered: int) -> None:
        """After the final flush: what stayed undelivered, and no more reference to the
        client. Its callbacks reach these counts, and ``in_flight`` reached the client: a
        cycle through a C object, which Python's collector never frees, so every run left
        a client behind with its threads, reconnecting for as long as the process lived."""
        self.in_flight = lambda: undelivered


class DeliveryCounter:
    def __init__(self, counts: SendCounts) -> None:
        self.first_error: str | None = None
        self._counts = counts

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # only failures are reported, but be safe
            return
        self._counts.failed += 1
        if self.first_error is None:
            self.first_error = str(err)
            log.error("delivery to %s failed: %s", msg.topic(), err)


class _Progress:
    """A line every interval: sent, delivered, failed, and the rate since the last line."""

    def __init__(
        self,
        topic: str,
        counts: SendCounts,
        callback: ProgressCallback | None,
        interval_s: float,
    ) -> None:
        self._topic = topic
        self._counts = counts
        self._callback = callback
        self._interval = interval_s
        self._last_at = 0.0
        self._last_sent = 0

    def start(self, now: float) -> None:
        self._last_at = now

    def maybe(self, now: float, sent: int) -> None:
        if now - self._last_at < self._interval:
            return
        rate = (sent - self._last_sent) / (now - self._last_at)
        counts = self._counts
        line = (
            f"{self._topic}: sent {sent:,}, delivered {counts.delivered:,}, "
            f"failed {counts.failed:,}, "
            f"{rate:,.0f} events/s"
        )
        if self._callback is not None:
            self._callback(line)
        else:
            log.info("%s", line)
        self._last_at, self._last_sent = now, sent


class StopRequest:
    """Ctrl-C or SIGTERM while sending: finish the chunk, flush, summarise.

    A second Ctrl-C raises KeyboardInterrupt as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self.refused: str | None = None  # why the cluster refused this client, if it did

    def on_client_error(self, err: KafkaError) -> None:
        """librdkafka's error_cb. Connection trouble passes: librdkafka retries until
        message.timeout.ms, after which the affected messages fail through on_delivery.
        Refused credentials do not pass: stop sending at once and say so."""
        if err.code() != KafkaError._AUTHENTICATION and not err.fatal():
            log.warning("kafka client: %s", err)
            return
        if self.refused is None:
            self.refused = f"Kafka refused this producer: {err.str()}"
            log.error(
                "%s. Check RIVERBED_KAFKA_SASL_USERNAME and RIVERBED_KAFKA_SASL_PASSWORD_FILE "
                "(or, on Riverbed's secured cluster, its users' files in kafka/secrets/users)",
                self.refused,
            )
        self.requested = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.info("stop requested (%s); flushing", signal.Signals(signum).name)

    def on_signals(self) -> _SignalScope:
        return _SignalScope(self._handle)


class _SignalScope:
    """Installs a handler for SIGINT and SIGTERM for a block, when in the main thread."""

    def __init__(self, handler: Callable[[int, FrameType | None], Any]) -> None:
        self._handler = handler
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
