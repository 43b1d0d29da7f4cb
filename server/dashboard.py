"""The dashboard page: one self-contained HTML file (inline CSS and JS, no build step).

It reads only the public API: /queue/stats, /queue/history, /jobs, /jobs/{id}, /jobs/{id}/logs,
/dlq, and follows /events (EventSource) to update without a reload. Served at /dashboard and
/admin; with API_KEY set, ApiKeyMiddleware asks a browser for the key once (a session cookie).
"""

from __future__ import annotations

from pathlib import Path

PAGE = (Path(__file__).resolve().parent / "static" / "dashboard.html").read_text(encoding="utf-8")
