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
  const side = Math.max(1, Math.round(size * dpr)), lo = Math.floor(side / 2);
  const tint = (alpha) => Uint32Array.from(colors, (c) => (c & 0xffffff) | (alpha << 24));
  // One dot: a side x side square of pixels, written in place (a fill() call per row costs 3x more at 50k dots).
  const paint = (i, lut) => {
    const px = Math.floor((xs[i] - x0) * kx) - lo, py = Math.floor((ys[i] - y0) * ky) - lo;
    if (!(px > -side && px < W && py > -side && py < H)) { return; }
    const c = lut[cs[i]], c0 = px < 0 ? 0 : px, c1 = px + side > W ? W : px + side;
    const r1 = py + side > H ? H : py + side;
    for (let r = py < 0 ? 0 : py; r < r1; r++) {
      for (let k = r * W + c0, end = r * W + c1; k < end; k++) { img[k] = c; }
    }
  };
  const shown = view_filter.booleans;
  const picked = points.selected.indices;
  const n = xs.length;
  if (picked.length == 0) {
    const on = tint(alpha_on);
    for (let i = 0; i < n; i++) { if (shown == null || shown[i]) { paint(i, on); } }
  } else {
    const off = tint(alpha_off), full = tint(255);
    const isPicked = new Uint8Array(n);
    for (const i of picked) { isPicked[i] = 1; }
    for (let i = 0; i < n; i++) { if (!isPicked[i] && (shown == null || shown[i])) { paint(i, off); } }
    for (const i of picked) { if (shown == null || shown[i]) { paint(i, full); } }
  }
  const { ndarray } = Bokeh.require("core/util/ndarray");
  // check_eq: false: the image is new on every draw, and Bokeh's equality check would compare every pixel
  target.setv({data: {image: [ndarray(img, {dtype: "uint32", shape: [H, W]})],
                      x: [x0], y: [y0], dw: [xr.end - x0], dh: [yr.end - y0]}}, {sync: false, check_eq: false});
  if (points.data.x !== xs) {  // a new frame: hand it to the scatter once it is on screen and the slider rests
    clearTimeout(view.__tt_hits);
    view.__tt_hits = setTimeout(() => {
      const now = positions.data;
      if (points.data.x !== now.x) {
        points.setv({data: {...points.data, x: now.x, y: now.y, pred: now.pred, conf: now.conf}},
                    {sync: false, check_eq: false});
      }
    }, HIT_SYNC_MS);
  }
};
draw(0);
