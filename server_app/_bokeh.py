"""The app's browser-side assets (``assets/``) and the Bokeh 3.9 workarounds the app depends on.

JavaScript and CSS live in ``assets/`` beside ``main.py``. The folder is not called ``static/``:
for an app served at ``/`` Bokeh would serve that folder in place of its own ``/static/``
(BokehJS itself). The files are read once and handed to Bokeh as ``CustomJS`` code and an
``InlineStyleSheet``, so the page needs no extra request.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from bokeh.models import CustomJS, DataTable, InlineStyleSheet

ASSETS = Path(__file__).resolve().parent / "assets"


@lru_cache(maxsize=None)
def asset_text(name: str) -> str:
    """The text of ``assets/NAME`` (cached for the life of the process)."""
    return (ASSETS / name).read_text(encoding="utf-8")


def custom_js(name: str, **args: Any) -> CustomJS:
    """A ``CustomJS`` running ``assets/NAME`` with ``args``."""
    return CustomJS(args=args, code=asset_text(name))


def stylesheet() -> InlineStyleSheet:
    """A new stylesheet model holding ``assets/app.css`` (one per document)."""
    return InlineStyleSheet(css=asset_text("app.css"))


def redraw_table_on_new_data(table: DataTable) -> None:
    """Make ``table`` redraw whenever its source's data is replaced or updated (see ``redraw_table.js``)."""
    table.source.js_on_change("data", custom_js("redraw_table.js", table=table))
