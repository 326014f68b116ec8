"""What a person sees while a load test runs, and at its end.

In a terminal the view is one screen redrawn in place; written to a log (not
a terminal) it is one line every few seconds.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .stats import Stats, percentile

TTY_REFRESH_S = 0.5
LOG_REFRESH_S = 5.0


def _ms(values: list[float], q: float) -> str:
    value = percentile(values, q)
    return "-" if value is None else f"{value * 1000:.1f}"


def live_lines(stats: Stats) -> list[str]:
    elapsed = stats.elapsed
    rate = stats.achieved_rps
    errors = ", ".join(f"{kind}: {n}" for kind, n in stats.errors.most_common()) or "none"
    workers = ", ".join(f"{url} {n}" for url, n in sorted(stats.per_worker.items())) or "none yet"
    return [
        f"load test  {elapsed:6.1f} s   asked {stats.asked} at {stats.rps:g}/s   sent {stats.sent} ({rate:.1f}/s)",
        f"  routing {stats.routing}   in flight {stats.in_flight}   done {stats.done}   errors {stats.failed}",
        f"  errors by kind: {errors}",
        f"  workers ({len(stats.per_worker)}): {workers}",
        *(
            [f"  sessions of {stats.session_size}: opened {stats.sessions_opened}   ended {stats.sessions_ended}"]
            if stats.session_size
            else []
        ),
        f"  latency ms  p50 {_ms(stats.latencies, 0.5)}  p90 {_ms(stats.latencies, 0.9)}"
        f"  p99 {_ms(stats.latencies, 0.99)}  max {_ms(stats.latencies, 1.0)}"
        + (f"   first byte p50 {_ms(stats.ttfb, 0.5)}" if stats.ttfb else ""),
    ]


def log_line(stats: Stats) -> str:
    elapsed = stats.elapsed
    return (
        f"[{elapsed:6.1f} s] sent {stats.sent}/{stats.asked} routing {stats.routing} in-flight {stats.in_flight} "
        f"done {stats.done} errors {stats.failed} workers {len(stats.per_worker)} "
        f"p50 {_ms(stats.latencies, 0.5)} ms p99 {_ms(stats.latencies, 0.99)} ms"
    )


class LiveView:
    def __init__(self, stats: Stats, out: TextIO | None = None) -> None:
        self.stats = stats
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self._drawn = 0

    @property
    def interval_s(self) -> float:
        return TTY_REFRESH_S if self.tty else LOG_REFRESH_S

    def draw(self) -> None:
        if self.tty:
            lines = live_lines(self.stats)
            # Move up over the previous screen and clear it, then draw anew.
            prefix = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.out.write(prefix + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            self.out.write(log_line(self.stats) + "\n")
        self.out.flush()


def summary_text(summary: dict[str, Any]) -> str:
    def fmt(d: dict[str, Any]) -> str:
        return "  ".join(f"{k} {'-' if v is None else v}" for k, v in d.items())

    lines = [
        "",
        "summary" + (" (stopped early)" if summary["stopped_early"] else ""),
        f"  requests   asked {summary['asked']['requests']}  sent {summary['sent']}  "
        f"succeeded {summary['succeeded']}  failed {summary['failed']}",
        f"  rate       asked {summary['asked']['rps']:g}/s  achieved {summary['achieved_rps']:g}/s  "
        f"(completions {summary['completed_rps']:g}/s over {summary['elapsed_s']:g} s)",
        f"  latency ms {fmt(summary['latency_ms'])}",
    ]
    if summary["ttfb_ms"]["p50"] is not None:
        lines.append(f"  first byte ms {fmt(summary['ttfb_ms'])}")
    lines.append(f"  arrival lag ms {fmt(summary['arrival_lag_ms'])}")
    errors = summary["errors"]
    lines.append("  errors     " + (", ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "none"))
    sessions = summary.get("sessions")
    if sessions:
        ends = ", ".join(f"{k}: {v}" for k, v in sessions["end_errors"].items()) or "none"
        lines.append(
            f"  sessions   of {sessions['size']} requests: opened {sessions['opened']}  ended {sessions['ended']}"
            f"  end errors {ends}"
        )
    workers = summary["workers"]
    lines.append(f"  workers    {len(workers)}")
    for url, count in workers.items():
        lines.append(f"    {url}  {count}")
    return "\n".join(lines) + "\n"
