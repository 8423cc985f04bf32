"""Self-contained HTML reports (``report.html``) of a training run, a sweep or a reproduction:
figures embedded as base64 PNG, rendered from a Jinja2 template with autoescaping."""

from nclab.report.render import environment, render_report, write_manifest

__all__ = ["environment", "render_report", "write_manifest"]
