"""Request counters and latency histograms, rendered with the scheduler's numbers as Prometheus text."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, math.inf)


class Histogram:
    def __init__(self) -> None:
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(LATENCY_BUCKETS):
            if value <= bound:
                self.buckets[index] += 1
        self.total += value
        self.count += 1


@dataclass
class TargetStats:
    """One route target (a local model or `remote:model`): what the balancer reads and /metrics shows."""

    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=Histogram)

    def finished(self, ok: bool, seconds: float) -> None:
        self.in_flight -= 1
        self.requests += 1
        self.errors += not ok
        self.latency.observe(seconds)


class Metrics:
    """Per-app request metrics; lives on app.state, never at module level."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.targets: defaultdict[str, TargetStats] = defaultdict(TargetStats)
        self.remote_healthy: dict[str, int] = {}  # 1 or 0 per remote, as of its last check or request

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        self.latency[route].observe(seconds)

    def render(self, workers: list[dict[str, Any]], scheduler_metrics: dict[str, Any]) -> str:
        lines: list[str] = []
        lines += _family("stacklet_requests_total", "counter", "HTTP requests by route and status.",
                         ((_labels(method=m, route=r, status=s), n) for (m, r, s), n in sorted(self.requests.items())))
        lines += _histogram("stacklet_request_duration_seconds", "route", self.latency)
        lines += _family("stacklet_tokens_total", "counter", "Tokens processed, by model and type.",
                         ((_labels(model=model, type=kind), n) for model, kind, n in _tokens(scheduler_metrics)))
        lines += _family("stacklet_queue_depth", "gauge", "Requests waiting for each loaded model.",
                         ((_labels(model=w["model"]), w.get("queue_depth", 0)) for w in workers))
        lines += _family("stacklet_models_loaded", "gauge", "Models with a running worker.",
                         [("", len(workers))])
        crashes = sorted(scheduler_metrics.get("crashes", {}).items())
        lines += _family("stacklet_worker_crashes_total", "counter", "Workers that exited unexpectedly, by model.",
                         ((_labels(model=model), n) for model, n in crashes))
        for key, help_text in ENGINE_GAUGES.items():
            lines += _family(f"stacklet_{key}", "gauge", help_text,
                             ((_labels(model=w["model"]), w["engine"][key]) for w in workers
                              if key in w.get("engine", {})))
        lines += self._render_targets()
        return "\n".join(lines) + "\n"

    def _render_targets(self) -> list[str]:
        targets = sorted(self.targets.items())
        lines = _family("stacklet_target_requests_total", "counter", "Requests relayed to each route target.",
                        ((_labels(target=t), s.requests) for t, s in targets))
        lines += _family("stacklet_target_errors_total", "counter", "Relayed requests that failed, per target.",
                         ((_labels(target=t), s.errors) for t, s in targets))
        lines += _family("stacklet_target_in_flight", "gauge", "Requests in flight to each target.",
                         ((_labels(target=t), s.in_flight) for t, s in targets))
        lines += _histogram("stacklet_target_duration_seconds", "target", {t: s.latency for t, s in targets})
        lines += _family("stacklet_remote_healthy", "gauge", "1 when a remote upstream is healthy, else 0.",
                         ((_labels(remote=r), up) for r, up in sorted(self.remote_healthy.items())))
        return lines


# What a text worker's batching engine reports (as of the scheduler's last look at the worker).
ENGINE_GAUGES = {
    "active_sequences": "Sequences generating in each text model's batch.",
    "waiting_requests": "Requests admitted by a text model but waiting for KV cache room.",
    "kv_cells_used": "KV cache cells in use, per text model.",
    "kv_cells_total": "KV cache cells, per text model.",
    "cached_prefixes": "Finished sequences kept in RAM for prefix reuse, per text model.",
}


def _tokens(scheduler_metrics: dict[str, Any]) -> Iterable[tuple[str, str, int]]:
    """{"tokens": {model: {"prompt": n, "completion": n}}} -> (model, type, n) rows."""
    for model, counts in sorted(scheduler_metrics.get("tokens", {}).items()):
        for kind, count in sorted(counts.items()):
            yield model, kind, count


def _histogram(name: str, label: str, latency: dict[str, Histogram]) -> list[str]:
    lines = [f"# HELP {name} Time from request to the end of the response.", f"# TYPE {name} histogram"]
    for key, histogram in sorted(latency.items()):
        for bound, count in zip(LATENCY_BUCKETS, histogram.buckets, strict=True):
            le = "+Inf" if bound == math.inf else repr(bound)
            lines.append(f"{name}_bucket{_labels(**{label: key, 'le': le})} {count}")
        lines.append(f"{name}_sum{_labels(**{label: key})} {histogram.total}")
        lines.append(f"{name}_count{_labels(**{label: key})} {histogram.count}")
    return lines


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"] + [f"{name}{labels} {v}" for labels, v in samples]


def _labels(**labels: Any) -> str:
    def escape(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels.items()) + "}"
