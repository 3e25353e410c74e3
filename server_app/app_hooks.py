"""Server lifecycle hooks: Bokeh runs this file once per server, before any session.

``on_server_loaded`` opens the run named on the app's command line and warms it, so
``bokeh serve server_app --args RUN`` behaves like ``timetravel serve RUN``.
"""

from __future__ import annotations

import sys

from timetravel.server_app.context import AppContext

# Bokeh sets sys.argv to the app's arguments only while it runs this file's top level.
_ARGV = sys.argv[1:]


def on_server_loaded(server_context) -> None:
    """Attach the shared :class:`AppContext` to the server context and warm it."""
    context = AppContext(_ARGV)
    server_context.timetravel = context
    context.warm()


def on_server_unloaded(server_context) -> None:
    """Stop the run's background work."""
    context = getattr(server_context, "timetravel", None)
    if context is not None:
        context.close()
