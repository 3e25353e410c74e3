// Keyboard shortcuts: installed once per page; ignored while typing in a widget.
// args: accept, reject, undo, back, forward, play (buttons). The pool tab's buttons are built when
// the tab is first opened, so they are found by name, and act only while on show: there "l" labels
// the pool sample and "u" undoes the last pool label (elsewhere "u" stays the review's undo).
if (window.__timetravel_keys) { return; }
window.__timetravel_keys = true;
const keymap = {"a": accept, "r": reject, "u": undo, "ArrowLeft": back, "ArrowRight": forward, " ": play};
const on_show = {"l": "pool_label", "u": "pool_undo"};
const shown = (name) => {
    const model = accept.document == null ? null : accept.document.get_model_by_name(name);
    const view = model == null ? null : Bokeh.index.find_one(model);
    return view != null && view.el.isConnected && view.el.getClientRects().length > 0 ? model : null;
};
document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    const target = ev.composedPath()[0];
    const tag = target && target.tagName ? target.tagName.toUpperCase() : "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable)) { return; }
    const model = (on_show[ev.key] != null ? shown(on_show[ev.key]) : null) || keymap[ev.key];
    if (model == null || model.disabled) { return; }
    const view = Bokeh.index.find_one(model);
    if (view != null) { ev.preventDefault(); view.click(); }
});
