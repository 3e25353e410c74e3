"""Time travel: the epoch slider, step and play controls, and the training curves with a cursor."""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import partial
from typing import Callable

from bokeh.layouts import column, row
from bokeh.models import (
    BasicTicker,
    BoxAnnotation,
    Button,
    ColumnDataSource,
    CustomJSTickFormatter,
    Div,
    Label,
    Select,
    Slider,
    Span,
    Toggle,
)
from bokeh.plotting import figure

from timetravel.server_app._bokeh import choice
from timetravel.server_app.data import RunData

# Frames per second offered by the play control.
SPEEDS = ("1", "2", "4", "8")
METRICS = (("train_acc", "train accuracy", "#1565c0"), ("test_acc", "test accuracy", "#2e7d32"))


@dataclass
class TimelineView:
    """Epoch controls; the slider's value is a position in ``epochs``, not an epoch number."""

    epochs: list[int]
    slider: Slider
    back: Button
    forward: Button
    play: Toggle
    speed: Select
    cursor: Span
    layout: object

    def position(self) -> int:
        return int(self.slider.value)

    def epoch(self) -> int:
        return self.epochs[self.position()]

    def at_last(self) -> bool:
        return self.position() >= len(self.epochs) - 1

    def set_position(self, position: int) -> None:
        """Move the slider to ``position`` (clipped to the epochs)."""
        self.slider.value = int(min(max(position, 0), len(self.epochs) - 1))

    def show_epoch(self, epoch: int) -> None:
        """Move the training curves' cursor to ``epoch``."""
        self.cursor.location = epoch

    def fps(self) -> float:
        return float(choice(self.speed))

    def playing(self) -> bool:
        return bool(self.play.active)

    def stop_playing(self) -> None:
        self.play.active = False

    def show_playing(self, playing: bool) -> None:
        self.play.label = "❚❚ Pause" if playing else "▶ Play"

    def on_epoch(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(epoch)`` whenever the slider moves."""
        self.slider.on_change("value", lambda _a, _o, new: callback(self.epochs[int(new)]))

    def on_step(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(-1)`` / ``callback(1)`` for the step buttons."""
        self.back.on_click(partial(callback, -1))
        self.forward.on_click(partial(callback, 1))

    def on_play(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(playing)`` when play is toggled or the speed changes while playing."""
        self.play.on_change("active", lambda _a, _o, active: callback(bool(active)))
        self.speed.on_change("value", lambda _a, _o, _n: self.playing() and callback(True))

    def shortcuts(self) -> dict[str, object]:
        """The buttons the keyboard drives (see ``assets/keys.js``)."""
        return dict(back=self.back, forward=self.forward, play=self.play)


def caption(data: RunData, epoch: int) -> str:
    """The canvas title for ``epoch``: its place among the projected epochs, how it was recorded, its metrics.

    Runs that mix train-pass and eval-pass epochs say which this one is: train-pass dots carry dropout and
    augmentation noise, so a jump at an eval-pass epoch is the change of mode, not of the model.
    """
    store = data.store
    metrics = next((h for h in store.history if h.get("epoch") == epoch), {})
    shown = ", ".join(f"{name} {metrics[key]:.1%}" for key, name, _ in METRICS if key in metrics)
    kind = f", {store.epoch_pass(epoch)} pass" if "epoch_passes" in store.manifest else ""
    return (f"epoch {epoch} ({data.epochs.index(epoch) + 1} of {len(data.epochs)}{kind})"
            f"{': ' + shown if shown else ''}")


def _history_figure(data: RunData, epoch: int) -> tuple[object, Span]:
    history = [h for h in data.store.history if any(k in h for k, _, _ in METRICS)]
    fig = figure(height=110, sizing_mode="stretch_width", toolbar_location=None, y_range=(0, 1.02), name="history")
    fig.xaxis.axis_label = None
    fig.xaxis.ticker = BasicTicker(min_interval=1)
    fig.yaxis.ticker.desired_num_ticks = 3
    fig.min_border_left = 40
    for key, name, colour in METRICS:
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            xs, ys = zip(*points)
            src = ColumnDataSource(dict(epoch=list(xs), value=list(ys)))
            fig.line("epoch", "value", source=src, line_color=colour, line_width=2, legend_label=name)
    if fig.legend:
        fig.legend.location = "top_left"  # the curves rise to the right, where the AUM window is shaded
        fig.legend.label_text_font_size = "9pt"
        fig.legend.background_fill_alpha = 0.6
        fig.legend.padding = 2
        fig.legend.spacing = 0
    cursor = Span(location=epoch, dimension="height", line_color="#ff6f00", line_width=2)
    fig.add_layout(cursor)
    return fig, cursor


def _mark_early_stop(fig, data: RunData) -> Div | None:
    """Shade the epochs the early-stopped AUM averages and mark where the model starts to memorise.

    From the run's detection (``timetravel detect``); nothing without one, or without a labelled
    held-out set. Returns a note that says the window in words, as ``timetravel detect`` prints it.
    """
    from timetravel.detection import load_early_stop
    from timetravel.errors import TimetravelError
    from timetravel.features import describe_early_stop

    try:
        early_stop = load_early_stop(data.store)
    except TimetravelError:  # the review tab says what is wrong with the detection
        return
    if early_stop is None:
        return
    first, last, over = early_stop["first_epoch"], early_stop["last_epoch"], early_stop["overfit_epoch"]
    fig.add_layout(BoxAnnotation(left=first - 0.5, right=last + 0.5, fill_color="#ffb74d", fill_alpha=0.18,
                                 line_alpha=0, name="early_stop_window"))  # fmt: skip
    fig.add_layout(Label(x=first - 0.5, y=4, y_units="screen", x_offset=3, text="early-stopped AUM",
                         text_font_size="8pt", text_color="#e65100", name="early_stop_label"))  # fmt: skip
    if over is not None:
        fig.add_layout(Span(location=over, dimension="height", line_color="#c62828", line_dash="dashed",
                            line_width=1, name="overfit_marker"))  # fmt: skip
        late = over > (data.epochs[0] + data.epochs[-1]) / 2  # then the words go left of the line, not off the plot
        fig.add_layout(Label(x=over, y=1.0, x_offset=-3 if late else 3, text="memorising from here",
                             text_align="right" if late else "left", text_baseline="top", text_font_size="8pt",
                             text_color="#c62828", name="overfit_label"))  # fmt: skip
    return Div(text=f"<span class='tt-muted'>{html.escape(describe_early_stop(early_stop))}</span>",
               name="early_stop_note", sizing_mode="stretch_width", styles={"font-size": "11px"})


def make_timeline(data: RunData, epoch: int) -> TimelineView:
    """Build the slider, the player and the training curves, positioned at ``epoch``."""
    epochs = list(data.epochs)
    slider = Slider(
        start=0,
        end=max(len(epochs) - 1, 1),
        value=epochs.index(epoch),
        step=1,
        title="Epoch",
        format=CustomJSTickFormatter(args=dict(epochs=epochs), code="return String(epochs[Math.round(tick)])"),
        disabled=len(epochs) < 2,
        sizing_mode="stretch_width",
        name="epoch_slider",
    )
    back = Button(label="◀", width=40, name="step_back", html_attributes={"title": "previous epoch (←)"})
    forward = Button(label="▶", width=40, name="step_forward", html_attributes={"title": "next epoch (→)"})
    play = Toggle(label="▶ Play", width=80, name="play", html_attributes={"title": "play / pause (space)"})
    speed = Select(value="2", options=[(s, f"{s} fps") for s in SPEEDS], width=80, name="speed")
    history, cursor = _history_figure(data, epoch)
    note = _mark_early_stop(history, data)
    controls = row(back, play, forward, speed, slider, sizing_mode="stretch_width")
    layout = column(controls, history, *([note] if note is not None else []), sizing_mode="stretch_width")
    return TimelineView(epochs, slider, back, forward, play, speed, cursor, layout)
