"""Web pages of the specrag server (server-side rendered, self-contained: no external assets).

* :mod:`app.server.ui.routes`: ``router`` (``GET /ui/runs/{run_id}``: a run's trace as a page).
* :mod:`app.server.ui.view`: what the page shows, computed from a ``RunTrace``.
* ``templates/``: Jinja2 templates and the inlined stylesheet.
"""
