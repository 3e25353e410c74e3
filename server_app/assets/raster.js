// Browser side of the raster dot layer (see canvas.py). Runs on every change that moves or recolours
// dots (positions, colour column, filter, selection, zoom/pan); writes the image straight into the
// ``dots`` source without syncing it back to the server.
const noPaint = () => {};
// The hit-testing scatter takes a frame's positions once the slider has rested this long.
const HIT_SYNC_MS = 150;
const draw = (attempt) => {
  const view = Bokeh.index.find_one(fig);
  const W0 = view == null ? 0 : view.frame.bbox.width, H0 = view == null ? 0 : view.frame.bbox.height;
  if (!(W0 > 0 && H0 > 0)) {  // not laid out yet
    if (attempt < 600) { requestAnimationFrame(() => draw(attempt + 1)); }
    return;
  }
  if (view.__tt_resize == null) {  // Bokeh resizes the plot without a change event: redraw at the new size
    view.__tt_resize = new ResizeObserver(() => requestAnimationFrame(() => draw(0)));
    view.__tt_resize.observe(view.el);
  }
  // The scatter stays for hover, tap and box/lasso, fully transparent: skip its per-dot canvas paths
  // (20 ms a frame at 50k dots). Bokeh may rebuild the glyph views, so this is checked on every draw.
  const sv = Bokeh.index.find_one(scatter);
  for (const g of sv == null ? [] : [sv.glyph, sv.selection_glyph, sv.nonselection_glyph, sv.decimated_glyph,
                                     sv.muted_glyph, sv.hover_glyph]) {
    if (g != null) { g._paint = noPaint; }
  }
  const dpr = window.devicePixelRatio || 1;
  const W = Math.max(1, Math.round(W0 * dpr)), H = Math.max(1, Math.round(H0 * dpr));
  const x0 = xr.start, y0 = yr.start, kx = W / (xr.end - x0), ky = H / (yr.end - y0);
  const data = positions.data, xs = data.x, ys = data.y, cs = data[dots.tags[0]];
  const img = new Uint32Array(W * H);
  const side = Math.max(1, Math.round(size * dpr)), lo = Math.floor(side / 2), hi = side - lo;
  const paint = (i, alpha) => {
    const px = Math.floor((xs[i] - x0) * kx), py = Math.floor((ys[i] - y0) * ky);
    if (!(px > -side && px < W + side && py > -side && py < H + side)) { return; }
    const c = (colors[cs[i]] & 0xffffff) | (alpha << 24);
    const r0 = Math.max(0, py - lo), r1 = Math.min(H, py + hi), c0 = Math.max(0, px - lo), c1 = Math.min(W, px + hi);
    for (let r = r0; r < r1; r++) { img.fill(c, r * W + c0, r * W + c1); }
  };
  const shown = view_filter.booleans;
  const picked = points.selected.indices;
  const n = xs.length;
  if (picked.length == 0) {
    for (let i = 0; i < n; i++) { if (shown == null || shown[i]) { paint(i, alpha_on); } }
  } else {
    const isPicked = new Uint8Array(n);
    for (const i of picked) { isPicked[i] = 1; }
    for (let i = 0; i < n; i++) { if (!isPicked[i] && (shown == null || shown[i])) { paint(i, alpha_off); } }
    for (const i of picked) { if (shown == null || shown[i]) { paint(i, 255); } }
  }
  const { ndarray } = Bokeh.require("core/util/ndarray");
  target.setv({data: {image: [ndarray(img, {dtype: "uint32", shape: [H, W]})],
                      x: [x0], y: [y0], dw: [xr.end - x0], dh: [yr.end - y0]}}, {sync: false});
  if (points.data.x !== xs) {  // a new frame: hand it to the scatter once it is on screen and the slider rests
    clearTimeout(view.__tt_hits);
    view.__tt_hits = setTimeout(() => {
      const now = positions.data;
      if (points.data.x !== now.x) {
        points.setv({data: {...points.data, x: now.x, y: now.y, pred: now.pred, conf: now.conf}}, {sync: false});
      }
    }, HIT_SYNC_MS);
  }
};
draw(0);
