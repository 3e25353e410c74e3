"""Time travel: the slider, step and play controls move the session from epoch to epoch."""

from __future__ import annotations

from functools import partial

from timetravel.server_app.data import EpochFrame
from timetravel.server_app.session import FRAME, Session
from timetravel.server_app.timeline import TimelineView


class TimeTravel:
    """Loads the epoch the timeline asks for and makes it the session's frame.

    A cached epoch is shown at once; any other is loaded off the event loop, and while it
    loads only the newest request is remembered, so dragging the slider never queues up
    stale epochs.
    """

    def __init__(self, session: Session, timeline: TimelineView) -> None:
        self.s, self.timeline = session, timeline
        self.wanted_epoch = session.frame.epoch
        self.loading = False
        self._play_callback = None

    def wire(self) -> None:
        self.timeline.on_epoch(self._want)
        self.timeline.on_step(self.step)
        self.timeline.on_play(self._on_play)
        self.s.subscribe(self._on_change)

    def step(self, delta: int) -> None:
        """Move the slider ``delta`` epochs on."""
        self.timeline.set_position(self.timeline.position() + delta)

    def _on_change(self, changed: frozenset[str]) -> None:
        if FRAME in changed:
            self.timeline.show_epoch(self.s.frame.epoch)
            self.s.data.prefetch(self.s.frame.epoch)

    def _want(self, epoch: int) -> None:
        self.wanted_epoch = epoch
        self._request_frame()

    def _request_frame(self) -> None:
        """Show ``wanted_epoch``: at once when cached, else load it off the loop (newest request wins)."""
        if self.loading or self.wanted_epoch == self.s.frame.epoch:
            return
        epoch = self.wanted_epoch
        data = self.s.data
        if epoch in data.cached_epochs():
            self.s.change(frame=data.frame(epoch))
            return
        self.loading = True
        self.s.background(partial(data.frame, epoch), self._frame_loaded, f"loading epoch {epoch}",
                          failed=self._load_failed)  # fmt: skip

    def _frame_loaded(self, frame: EpochFrame) -> None:
        self.loading = False
        self.s.change(frame=frame)
        self._request_frame()

    def _load_failed(self) -> None:
        self.loading = False

    def _on_play(self, playing: bool) -> None:
        if self._play_callback is not None:
            self.s.doc.remove_periodic_callback(self._play_callback)
            self._play_callback = None
        self.timeline.show_playing(playing)
        if playing:
            if self.timeline.at_last():
                self.timeline.set_position(0)
            self._play_callback = self.s.doc.add_periodic_callback(self._play_tick, int(1000 / self.timeline.fps()))

    def _play_tick(self) -> None:
        if self.loading:
            return
        if self.timeline.at_last():
            self.timeline.stop_playing()
            return
        self.step(1)
