"""Prometheus metrics, named after vLLM's (prefix ``realm_``) so existing dashboards fit.

Per-request histograms and counters are recorded by `RequestMetrics` as a request's tokens
arrive; the engine's state (running and waiting sequences, KV pool use, prefix-cache hits)
is read when ``/metrics`` is scraped, so it is never stale. Labels: ``model`` (the served
id) and ``backend``. Each app has its own registry, so two servers in one process (tests)
do not share counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Latency buckets (seconds) and token-count buckets, close to vLLM's.
LATENCY = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
TOKENS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
LABELS = ("model", "backend")


class Metrics:
    """Every metric of one server."""

    def __init__(self, engines: Callable[[], Iterable[tuple[str, str, object]]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            "realm_time_to_first_token_seconds", "Time to first token.", LABELS, buckets=LATENCY, registry=r
        )
        self.itl = Histogram(
            "realm_inter_token_latency_seconds", "Time between tokens.", LABELS, buckets=LATENCY, registry=r
        )
        self.e2e = Histogram(
            "realm_e2e_request_latency_seconds",
            "Request latency, end to end.",
            LABELS,
            buckets=LATENCY,
            registry=r,
        )
        self.queue_time = Histogram(
            "realm_request_queue_time_seconds",
            "Time from arrival to the first engine step that runs it.",
            LABELS,
            buckets=LATENCY,
            registry=r,
        )
        self.prompt_tokens_hist = Histogram(
            "realm_request_prompt_tokens", "Prompt tokens per request.", LABELS, buckets=TOKENS, registry=r
        )
        self.generation_tokens_hist = Histogram(
            "realm_request_generation_tokens",
            "Generated tokens per request.",
            LABELS,
            buckets=TOKENS,
            registry=r,
        )
        self.prompt_tokens = Counter("realm_prompt_tokens", "Prompt tokens taken.", LABELS, registry=r)
        self.generation_tokens = Counter("realm_generation_tokens", "Tokens generated.", LABELS, registry=r)
        self.success = Counter(
            "realm_request_success", "Requests finished.", (*LABELS, "finished_reason"), registry=r
        )
        self.errors = Counter("realm_request_errors", "Requests refused or failed.", ("code",), registry=r)
        self.load_seconds = GaugeLoad()
        r.register(self.load_seconds)
        r.register(_EngineCollector(engines))

    def model_loaded(self, served, seconds: float) -> None:
        self.load_seconds.seconds[(served.id, served.backend)] = seconds

    def request(self, model: str, backend: str, n_prompt: int) -> RequestMetrics:
        return RequestMetrics(self, model, backend, n_prompt)


class RequestMetrics:
    """One request's timings, recorded as its choices' tokens arrive."""

    def __init__(self, metrics: Metrics, model: str, backend: str, n_prompt: int) -> None:
        self.m = metrics
        self.labels = (model, backend)
        self.start = time.perf_counter()
        self.last: dict[int, float] = {}  # choice -> when its last token came
        self.n_generated = 0
        self.n_prompt = n_prompt

    def token(self, choice: int) -> None:
        now = time.perf_counter()
        previous = self.last.get(choice)
        if previous is None:
            self.m.ttft.labels(*self.labels).observe(now - self.start)
        else:
            self.m.itl.labels(*self.labels).observe(now - previous)
        self.last[choice] = now
        self.n_generated += 1

    def queued(self, seconds: float) -> None:
        self.m.queue_time.labels(*self.labels).observe(seconds)

    def finish(self, reasons: Iterable[str]) -> None:
        labels = self.labels
        self.m.e2e.labels(*labels).observe(time.perf_counter() - self.start)
        self.m.prompt_tokens_hist.labels(*labels).observe(self.n_prompt)
        self.m.generation_tokens_hist.labels(*labels).observe(self.n_generated)
        self.m.prompt_tokens.labels(*labels).inc(self.n_prompt)
        self.m.generation_tokens.labels(*labels).inc(self.n_generated)
        for reason in reasons:
            self.m.success.labels(*labels, reason).inc()


class GaugeLoad(Collector):
    """``realm_model_load_seconds``: how long each model took to load."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = {}

    def collect(self):
        family = GaugeMetricFamily("realm_model_load_seconds", "Model load time.", labels=LABELS)
        for labels, value in self.seconds.items():
            family.add_metric(labels, value)
        yield family


class _EngineCollector(Collector):
    """Gauges and counters read from each engine when scraped."""

    def __init__(self, engines: Callable[[], Iterable[tuple[str, str, object]]]) -> None:
        self.engines = engines

    def collect(self):
        running = GaugeMetricFamily(
            "realm_requests_running", "Sequences in the engine's steps.", labels=LABELS
        )
        waiting = GaugeMetricFamily(
            "realm_requests_waiting", "Requests queued for the engine.", labels=LABELS
        )
        usage = GaugeMetricFamily(
            "realm_kv_cache_usage_ratio", "Fraction of the KV pool's blocks in use.", labels=LABELS
        )
        hits = CounterMetricFamily(
            "realm_prefix_cache_hits", "Prompt tokens found in the prefix cache.", labels=LABELS
        )
        steps = CounterMetricFamily("realm_engine_steps", "Batched engine steps run.", labels=LABELS)
        queries = CounterMetricFamily(
            "realm_prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", labels=LABELS
        )
        for model, backend, engine in self.engines():
            labels = (model, backend)
            pool = engine.pool
            running.add_metric(labels, len(engine.running))
            waiting.add_metric(labels, len(engine.waiting))
            usage.add_metric(labels, 1.0 - pool.n_free / pool.n_blocks)
            hits.add_metric(labels, engine.prefix_hit_tokens)
            queries.add_metric(labels, engine.prefix_query_tokens)
            steps.add_metric(labels, engine.steps)
        yield from (running, waiting, usage, hits, queries, steps)
