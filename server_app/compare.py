"""The comparison page (``timetravel serve RUN --compare RUN2``): two runs, or two epochs of one run, side by side.

Two canvases on one epoch slider (RUN2's projection is aligned with RUN's by
``timetravel project RUN2 --align-to RUN``, which ``timetravel fix`` runs), the
test-accuracy curves of both overlaid, the per-class test accuracy of both at the
shown epochs, and the samples whose prediction or suggested label differs between
the two sides, selectable (a row selects the sample on both canvases). With RUN2 the
same run as RUN, the right canvas shows a later epoch: ``offset`` epochs after the
slider's (before / after a chosen epoch).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import Button, ColumnDataSource, DataTable, Div, FactorRange, Slider, Span, Spinner, TableColumn
from bokeh.plotting import figure

from timetravel.server_app.canvas import CANVAS_RASTER_DOTS, CanvasView, make_canvas
from timetravel.server_app.data import RunData

TABLE_ROWS = 500  # changed samples listed (the count says how many there are)


@dataclass
class Side:
    """One side of the comparison: a run and the epoch it shows."""

    data: RunData
    canvas: CanvasView
    epoch: int


def _suggested(data: RunData) -> np.ndarray | None:
    path = data.store.derived_dir("features") / "suggested.npy"
    return np.load(path, mmap_mode="r", allow_pickle=False) if path.exists() else None


def per_class_accuracy(data: RunData, epoch: int) -> tuple[np.ndarray, str]:
    """Accuracy per class at ``epoch`` and what it was measured on.

    On the held-out set when the run recorded one at that epoch, else on the training set
    against its true labels (benchmark runs) or, lacking those, the labels it was trained on.
    """
    store = data.store
    if store.heldout_labels is not None and store.has_heldout(epoch):
        labels, logits, kind = np.asarray(store.heldout_labels), store.logits(epoch, "heldout"), "test"
    elif store.true_labels is not None:
        labels, logits, kind = np.asarray(store.true_labels), store.logits(epoch), "training set, true labels"
    else:
        labels, logits, kind = np.asarray(store.labels), store.logits(epoch), "training set, given labels"
    pred = np.asarray(logits).argmax(axis=1)
    hits = np.bincount(labels, weights=pred == labels, minlength=store.n_classes)
    return hits / np.maximum(np.bincount(labels, minlength=store.n_classes), 1), kind


def changed_samples(left: Side, right: Side) -> np.ndarray:
    """Samples whose prediction (at the shown epochs) differs between the sides, or whose suggested label does
    while one side predicts another class than the label it trained on (elsewhere the suggestion, the most
    likely other class of a well-learned sample, changes for no reason worth a look)."""
    lp, rp = left.data.frame(left.epoch).pred, right.data.frame(right.epoch).pred
    changed = lp != rp
    a, b = _suggested(left.data), _suggested(right.data)
    if a is not None and b is not None and left.data.path != right.data.path:
        doubted = (lp != left.data.labels) | (rp != right.data.labels)
        changed |= (np.asarray(a) != np.asarray(b)) & doubted
    return np.flatnonzero(changed)


def _backend(n_samples: int) -> str:
    return "raster" if n_samples > CANVAS_RASTER_DOTS else "canvas"


class ComparePage:
    """The document of one comparison session.

    Parameters
    ----------
    left, right : RunData
        RUN and RUN2 (the same object to compare two epochs of one run).
    """

    def __init__(self, left: RunData, right: RunData) -> None:
        self.same = left is right
        self.epochs = [e for e in left.epochs if e in right.epochs]
        last = self.epochs[-1]
        start = self.epochs[max(0, len(self.epochs) // 2 - 1)] if self.same else last
        offset = 1 if self.same else 0
        self.left = Side(left, make_canvas(left, left.frame(start), _backend(left.n_samples)), start)
        right_epoch = self._shifted(start, offset)
        self.right = Side(right, make_canvas(right, right.frame(right_epoch), _backend(right.n_samples)),
                          right_epoch)
        self.slider = Slider(start=0, end=max(len(self.epochs) - 1, 1), value=self.epochs.index(start), step=1,
                             title="Epoch", disabled=len(self.epochs) < 2, sizing_mode="stretch_width",
                             name="compare_slider")  # fmt: skip
        self.back = Button(label="◀", width=40, name="compare_back")
        self.forward = Button(label="▶", width=40, name="compare_forward")
        self.offset = Spinner(title="right = left + epochs", value=offset, step=1, low=0 if not self.same else 1,
                              width=150, visible=self.same, name="compare_offset")  # fmt: skip
        self.curves, self.cursors = self._curves()
        self.class_source = ColumnDataSource(dict(x=[], acc=[], color=[]), name="class_accuracy_source")
        self.classes = self._class_figure()
        self.changed_source = ColumnDataSource(
            dict(index=[], given=[], trained=[], pred_left=[], pred_right=[], sugg_left=[], sugg_right=[]),
            name="changed_source")  # fmt: skip
        self.changed_note = Div(text="", name="changed_note")
        self.table = DataTable(source=self.changed_source, columns=[
            TableColumn(field="index", title="#", width=50),
            TableColumn(field="given", title="label (left)", width=80),
            TableColumn(field="trained", title="label (right)", width=80),
            TableColumn(field="pred_left", title="pred. left", width=80),
            TableColumn(field="pred_right", title="pred. right", width=80),
            TableColumn(field="sugg_left", title="suggested left", width=90),
            TableColumn(field="sugg_right", title="suggested right", width=90),
        ], height=260, sizing_mode="stretch_width", index_position=None, selectable="checkbox",
            name="changed_table")  # fmt: skip
        self._details_pending = False
        self._wire()
        self.show()

    # -- views -------------------------------------------------------------------------

    def _name(self, side: Side) -> str:
        return html.escape(side.data.store.manifest.get("dataset") or side.data.path.name) + (
            f" <code>{html.escape(str(side.data.path))}</code>")

    def _curves(self):
        fig = figure(height=200, sizing_mode="stretch_width", toolbar_location=None, y_range=(0, 1.02),
                     title="test accuracy", name="compare_curves")  # fmt: skip
        fig.title.text_font_size = "10pt"
        sides = [("left", self.left, "#1565c0")] + ([] if self.same else [("right", self.right, "#c62828")])
        for name, side, colour in sides:
            points = [(h["epoch"], h["test_acc"]) for h in side.data.store.history if "test_acc" in h]
            if points:
                xs, ys = zip(*points)
                label = side.data.path.name + (" (fixed)" if side.data.store.manifest.get("fixed_from") else "")
                fig.line(list(xs), list(ys), line_color=colour, line_width=2, legend_label=label, name=f"acc_{name}")
        if fig.legend:
            fig.legend.location = "bottom_right"
            fig.legend.label_text_font_size = "9pt"
        cursors = [Span(location=self.left.epoch, dimension="height", line_color="#1565c0", line_width=2),
                   Span(location=self.right.epoch, dimension="height", line_color="#c62828", line_width=2,
                        line_dash="dashed")]  # fmt: skip
        for cursor in cursors:
            fig.add_layout(cursor)
        return fig, cursors

    def _class_figure(self):
        names = self.left.data.class_names
        factors = [(name, side) for name in names for side in ("left", "right")]
        fig = figure(x_range=FactorRange(*factors), height=200, sizing_mode="stretch_width", toolbar_location=None,
                     y_range=(0, 1.02), title="test accuracy per class (left / right)",
                     name="compare_classes")  # fmt: skip
        fig.title.text_font_size = "10pt"
        fig.vbar(x="x", top="acc", width=0.9, color="color", source=self.class_source)
        fig.xaxis.major_label_text_font_size = "0pt"
        fig.xaxis.group_text_font_size = "8pt"
        fig.xgrid.grid_line_color = None
        return fig

    def layout(self):
        header = Div(text=(
            "<span class='tt-app-title'>timetravel</span> &nbsp; <span class='tt-muted'>comparing "
            + (f"two epochs of {self._name(self.left)}" if self.same
               else f"{self._name(self.left)} with {self._name(self.right)}")
            + self._fix_note() + "</span>"), name="compare_header")  # fmt: skip
        canvases = row(self.left.canvas.figure, self.right.canvas.figure, sizing_mode="stretch_both")
        controls = row(self.back, self.forward, self.slider, self.offset, sizing_mode="stretch_width")
        charts = row(self.curves, self.classes, sizing_mode="stretch_width")
        changed = column(Div(text="<div class='tt-h'>Samples that changed</div>"), self.changed_note, self.table,
                         sizing_mode="stretch_width")  # fmt: skip
        return column(header, canvases, controls, charts, changed, sizing_mode="stretch_both")

    def _fix_note(self) -> str:
        fixed = self.right.data.store.manifest.get("fixed_from")
        if self.same or not fixed:
            return ""
        c = fixed.get("corrections", {})
        return (f" &nbsp;·&nbsp; the right run was retrained with {c.get('relabeled', 0)} relabelled and "
                f"{c.get('dropped', 0)} dropped samples")

    # -- behaviour ---------------------------------------------------------------------

    def _wire(self) -> None:
        self.slider.on_change("value_throttled", lambda _a, _o, new: self.go(int(new)))
        self.back.on_click(lambda: self.go(int(self.slider.value) - 1))
        self.forward.on_click(lambda: self.go(int(self.slider.value) + 1))
        self.offset.on_change("value", lambda _a, _o, _n: self.go(int(self.slider.value)))
        self.changed_source.selected.on_change("indices", lambda _a, _o, new: self._select(new))
        for side in (self.left, self.right):
            side.canvas.on_select(self._select_on_canvas)

    def _shifted(self, epoch: int, offset: int) -> int:
        position = min(self.epochs.index(epoch) + int(offset), len(self.epochs) - 1)
        return self.epochs[position]

    def go(self, position: int) -> None:
        """Show the epoch at slider ``position`` (clipped) on the left, and the right one with it."""
        position = int(np.clip(position, 0, len(self.epochs) - 1))
        if self.slider.value != position:
            self.slider.value = position
        self.left.epoch = self.epochs[position]
        self.right.epoch = self._shifted(self.left.epoch, self.offset.value or 0)
        self.show()

    def show(self) -> None:
        """Both canvases now; the per-class chart and the changed samples on the next tick.

        The browser applies messages in order: sending the canvases alone first puts the
        frames on screen before it re-lays out the page for the table and the note.
        """
        for side, cursor in zip((self.left, self.right), self.cursors):
            frame = side.data.frame(side.epoch)
            with side.canvas.one_paint():
                side.canvas.show_frame(frame)
                side.canvas.set_title(self._title(side))
            cursor.location = side.epoch
        doc = self.slider.document
        if doc is None:  # building the page: everything goes out with it
            self._show_details()
        elif not self._details_pending:
            self._details_pending = True
            doc.add_next_tick_callback(self._show_details)
        for side in (self.left, self.right):
            side.data.prefetch(side.epoch)

    def _show_details(self) -> None:
        self._details_pending = False
        self._show_classes()
        self._show_changed()

    def _title(self, side: Side) -> str:
        metrics = next((h for h in side.data.store.history if h.get("epoch") == side.epoch), {})
        acc = f": test accuracy {metrics['test_acc']:.1%}" if "test_acc" in metrics else ""
        return f"{side.data.path.name}, epoch {side.epoch}{acc}"

    def _show_classes(self) -> None:
        names = self.left.data.class_names
        (left, kind), (right, _) = (per_class_accuracy(side.data, side.epoch) for side in (self.left, self.right))
        xs, accs, colours = [], [], []
        for k, name in enumerate(names):
            for side, values, colour in (("left", left, "#1565c0"), ("right", right, "#c62828")):
                xs.append((name, side))
                accs.append(float(values[k]))
                colours.append(colour)
        self.class_source.data = dict(x=xs, acc=accs, color=colours)
        self.classes.title.text = f"accuracy per class, left / right ({kind})"

    def _show_changed(self) -> None:
        changed = changed_samples(self.left, self.right)
        shown = changed[:TABLE_ROWS]
        names = self.left.data.class_names
        lf, rf = self.left.data.frame(self.left.epoch), self.right.data.frame(self.right.epoch)
        sa, sb = _suggested(self.left.data), _suggested(self.right.data)

        def sugg(s, i):
            return "" if s is None else names[int(s[i])]

        self.changed_source.data = dict(
            index=shown.tolist(),
            given=[names[int(self.left.data.labels[i])] for i in shown],
            trained=[names[int(self.right.data.labels[i])] for i in shown],
            pred_left=[names[int(lf.pred[i])] for i in shown],
            pred_right=[names[int(rf.pred[i])] for i in shown],
            sugg_left=[sugg(sa, i) for i in shown],
            sugg_right=[sugg(sb, i) for i in shown],
        )
        more = f" (the first {TABLE_ROWS} listed)" if len(changed) > TABLE_ROWS else ""
        self.changed_note.text = (
            f"<span class='tt-muted'><b name='n_changed'>{len(changed)}</b> samples predicted differently (or with "
            f"another suggested label) at epoch {self.left.epoch} left and {self.right.epoch} right{more}; "
            "select rows to find them on both canvases.</span>")

    def _select(self, rows: list[int]) -> None:
        samples = np.asarray(self.changed_source.data["index"], dtype=np.int64)[list(rows)]
        for side in (self.left, self.right):
            side.canvas.select(samples)

    def _select_on_canvas(self, indices: np.ndarray) -> None:
        for side in (self.left, self.right):
            if list(side.canvas.points.selected.indices) != indices.tolist():
                side.canvas.select(indices)
