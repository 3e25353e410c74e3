"""Workarounds for Bokeh 3.9 behaviour the app depends on (each says which and why)."""

from __future__ import annotations

from bokeh.models import CustomJS, DataTable

# A DataTable redraws only when its CDSView's indices change, i.e. when the row count
# changes; new data with as many rows (a re-ranked queue of k rows) would stay stale.
_REDRAW_TABLE_JS = "const view = Bokeh.index.find_one(table); if (view != null) { view.updateGrid(); }"


def redraw_table_on_new_data(table: DataTable) -> None:
    """Make ``table`` redraw whenever its source's data is replaced or updated."""
    table.source.js_on_change("data", CustomJS(args=dict(table=table), code=_REDRAW_TABLE_JS))
