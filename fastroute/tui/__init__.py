"""Terminal views of the event feed: ``fastroute watch`` (lines) and ``fastroute tui`` (Textual)."""
