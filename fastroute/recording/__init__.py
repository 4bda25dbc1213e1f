"""Recording: what happened to every request — events, the request log, metrics.

Nothing here may block or slow a request: events are published without
waiting, log lines are written by a thread of their own, metrics are counters.
"""
