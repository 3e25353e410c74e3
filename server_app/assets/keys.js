// Keyboard shortcuts: installed once per page; ignored while typing in a widget.
// args: accept, reject, undo, back, forward, play (buttons).
if (window.__timetravel_keys) { return; }
window.__timetravel_keys = true;
const keymap = {"a": accept, "r": reject, "u": undo, "ArrowLeft": back, "ArrowRight": forward, " ": play};
document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    const target = ev.composedPath()[0];
    const tag = target && target.tagName ? target.tagName.toUpperCase() : "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable)) { return; }
    const model = keymap[ev.key];
    if (model == null || model.disabled) { return; }
    const view = Bokeh.index.find_one(model);
    if (view != null) { ev.preventDefault(); view.click(); }
});
