"""The app's browser-side assets (``assets/``), Bokeh 3.9 workarounds the app depends on, tab panels.

JavaScript and CSS live in ``assets/`` beside ``main.py``. The folder is not called ``static/``:
for an app served at ``/`` Bokeh would serve that folder in place of its own ``/static/``
(BokehJS itself). The files are read once and handed to Bokeh as ``CustomJS`` code and an
``InlineStyleSheet``, so the page needs no extra request.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from bokeh.models import CustomJS, DataTable, InlineStyleSheet, Select, Tabs

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


class TabSlot:
    """One panel of a ``Tabs``: whether it is on show, and a callback when it comes into view.

    Views in hidden tabs skip their updates (an epoch step then costs only what is seen);
    :meth:`on_shown` brings them up to date when the user opens them.
    """

    def __init__(self, tabs: Tabs, index: int) -> None:
        self.tabs, self.index = tabs, index

    def shown(self) -> bool:
        return self.tabs.active == self.index

    def on_shown(self, callback: Callable[[], None]) -> None:
        self.tabs.on_change("active", lambda _a, _o, new: callback() if new == self.index else None)

    def on_hidden(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the user leaves this panel for another."""
        self.tabs.on_change("active", lambda _a, old, new: callback() if old == self.index != new else None)

    def show(self) -> None:
        """Bring this panel to the front."""
        self.tabs.active = self.index


class LazyPanel(TabSlot):
    """A tab whose view and controller are built the first time it is opened, so the page opens fast.

    The panel's child must be a column (a placeholder until then). ``build(slot)`` returns
    ``(layout, controller)``; the controller is wired before its layout
    joins the document (Bokeh 3.9 drops subscriptions made afterwards), started if it has a
    ``start()``, then asked to ``refresh()``. ``prepare(layout)`` runs before the layout joins
    (the app styles its Divs there).
    """

    def __init__(self, tabs: Tabs, index: int, build: Callable[[TabSlot], tuple[Any, Any]],
                 prepare: Callable[[Any], None]) -> None:  # fmt: skip
        super().__init__(tabs, index)
        self._build, self._prepare = build, prepare
        self.controller: Any = None
        tabs.on_change("active", lambda _a, _o, new: self.open() if new == index else None)

    def open(self) -> None:
        """Build the panel now (once)."""
        if self.controller is not None:
            return
        layout, controller = self._build(self)
        self.controller = controller
        controller.wire()
        self._prepare(layout)
        self.tabs.tabs[self.index].child.children = [layout]  # BokehJS re-renders a column's new children
        if hasattr(controller, "start"):
            controller.start()
        controller.refresh()


def choice(select: Select) -> str:
    """The value of ``select`` when it is one of its options, else its first option.

    A Select's value is any string to Bokeh, so a crafted client message can set one that
    no option has; the widget is then put back on its first option (a session whose later
    updates all read the value keeps working).
    """
    values = [o[0] if isinstance(o, tuple) else o for o in select.options]
    if select.value in values or not values:
        return select.value
    select.value = values[0]
    return values[0]
