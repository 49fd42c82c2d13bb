"""Prometheus text metrics: requests by route and status, bytes in and out,
storage-engine call latency."""
from __future__ import annotations

import time
from collections import defaultdict

from aiohttp import web

_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)


class Metrics:
    def __init__(self):
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.bytes_in = 0
        self.bytes_out = 0
        self.engine_calls: dict[str, list] = {}
        self.started = time.time()

    def observe_engine(self, op: str, seconds: float) -> None:
        entry = self.engine_calls.get(op)
        if entry is None:
            entry = self.engine_calls[op] = [0, 0.0, [0] * len(_BUCKETS)]
        entry[0] += 1
        entry[1] += seconds
        for i, b in enumerate(_BUCKETS):
            if seconds <= b:
                entry[2][i] += 1

    def render(self, extra: dict[str, float] | None = None) -> str:
        out = [
            "# HELP hearth_http_requests_total HTTP requests by route, method and status.",
            "# TYPE hearth_http_requests_total counter",
        ]
        for (route, method, status), n in sorted(self.requests.items()):
            out.append(f'hearth_http_requests_total{{route="{route}",method="{method}",status="{status}"}} {n}')
        out += [
            "# HELP hearth_http_request_bytes_total Request body bytes received.",
            "# TYPE hearth_http_request_bytes_total counter",
            f"hearth_http_request_bytes_total {self.bytes_in}",
            "# HELP hearth_http_response_bytes_total Response body bytes sent.",
            "# TYPE hearth_http_response_bytes_total counter",
            f"hearth_http_response_bytes_total {self.bytes_out}",
            "# HELP hearth_engine_call_seconds Storage engine call latency.",
            "# TYPE hearth_engine_call_seconds histogram",
        ]
        for op, (count, total, buckets) in sorted(self.engine_calls.items()):
            for b, n in zip(_BUCKETS, buckets):
                out.append(f'hearth_engine_call_seconds_bucket{{op="{op}",le="{b}"}} {n}')
            out.append(f'hearth_engine_call_seconds_bucket{{op="{op}",le="+Inf"}} {count}')
            out.append(f'hearth_engine_call_seconds_sum{{op="{op}"}} {total:.6f}')
            out.append(f'hearth_engine_call_seconds_count{{op="{op}"}} {count}')
        for name, value in (extra or {}).items():
            out.append(f"# TYPE {name} gauge")
            out.append(f"{name} {value}")
        return "\n".join(out) + "\n"


def metrics_middleware(metrics: Metrics):
    @web.middleware
    async def middleware(request: web.Request, handler):
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            if resp.prepared:
                metrics.bytes_out += resp.body_length
            elif isinstance(getattr(resp, "body", None), (bytes, bytearray)):
                metrics.bytes_out += len(resp.body)
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.requests[(route, request.method, status)] += 1
            if request.content_length:
                metrics.bytes_in += request.content_length
    return middleware


