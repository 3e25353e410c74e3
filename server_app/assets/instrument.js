// Test and benchmark instrumentation (server_app/_testing.py), never loaded by the app itself.
// Installed with page.add_init_script before the app loads. Times are performance.now()
// values, i.e. milliseconds since the page was requested (navigation start).
// * __tt.first: the end of the first canvas paint that drew every point;
// * __tt.step(pos): move the epoch slider, resolve when the canvas has repainted with the
//   new positions (PlotView "repainted" signal after the data arrived) and one more
//   animation frame has passed, so the frame is on screen; also reports when the new
//   positions arrived in the page (data_ms) and when that paint ended (paint_ms);
// * __tt.decide(name): click the accept/reject/undo button, resolve when the queue table
//   shows a new first row (read from its DOM) on the next animation frame;
// * __tt.viewStep(pos, source) / __tt.viewSelect(indices, source): move the epoch slider / select
//   samples on the canvas, resolve when the named data source of a view (e.g. "confusion_source")
//   has new data and two more animation frames have passed (the view drawn it).
window.__tt = {first: null, firstPaints: 0};
(() => {
  const models = () => {
    const B = window.Bokeh;
    const doc = B && B.documents && B.documents[0];
    if (doc == null) { return null; }
    const plot = doc.get_model_by_name("canvas");
    const view = plot && B.index.find_one(plot);
    const src = doc.get_model_by_name("points_source");
    // epoch frames arrive in positions_source with the raster renderer (canvas.py), else in points_source
    return view == null ? null : {doc, plot, view, src, pos: doc.get_model_by_name("positions_source") ?? src,
                                  dots: doc.get_model_by_name("dots_source")};
  };
  // the raster renderer draws the dots into dots_source's image: a frame counts once that image is in
  const dotsIn = (m, before) => m.dots == null || ((m.dots.data.image || []).length > 0 && m.dots.data !== before);
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve(performance.now())));
  const watchFirst = () => {
    const m = models();
    if (m == null) { requestAnimationFrame(watchFirst); return; }
    const drawn = () => m.src.get_length() > 0 && dotsIn(m, null);
    if (drawn() && m.view._render_count > 0) { window.__tt.first = performance.now(); return; }
    m.view.repainted.connect(() => {
      window.__tt.firstPaints += 1;
      if (window.__tt.first == null && drawn()) { window.__tt.first = performance.now(); }
    });
  };
  requestAnimationFrame(watchFirst);
  window.__tt.models = models;
  window.__tt.step = (pos) => new Promise((resolve) => {
    const m = models();
    const slider = m.doc.get_model_by_name("epoch_slider");
    const before = m.pos.data.x, dotsBefore = m.dots == null ? null : m.dots.data;
    const t0 = performance.now();
    let arrived = null;
    const onData = () => {
      if (arrived == null && m.pos.data.x !== before) { arrived = performance.now(); }
    };
    const onPaint = () => {
      onData();
      if (arrived != null && dotsIn(m, dotsBefore)) {
        m.view.repainted.disconnect(onPaint);
        m.pos.change.disconnect(onData);
        m.pos.properties.data.change.disconnect(onData);
        const painted = performance.now();
        frame().then((shown) => resolve({data_ms: arrived - t0, paint_ms: painted - t0, drawn_ms: shown - t0}));
      }
    };
    m.pos.change.connect(onData);
    m.pos.properties.data.change.connect(onData);
    m.view.repainted.connect(onPaint);
    slider.value = pos;
  });
  const firstRow = (table) => {
    const view = Bokeh.index.find_one(table);
    const cell = view && view.shadow_el.querySelector(".slick-row .slick-cell.l1");
    return cell ? cell.textContent.trim() : null;
  };
  window.__tt.queueTop = () => {
    const m = models();
    return m == null ? null : firstRow(m.doc.get_model_by_name("queue_table"));
  };
  const viewUpdate = (source, act) => new Promise((resolve, reject) => {
    const m = models();
    const src = m.doc.get_model_by_name(source);
    const before = src.data;
    const t0 = performance.now();
    const poll = (now) => {
      if (src.data !== before) { frame().then(frame).then((shown) => resolve({shown_ms: shown - t0})); return; }
      if (now - t0 > 20000) { reject(new Error(`${source} did not change within 20 s`)); return; }
      requestAnimationFrame(poll);
    };
    act(m);
    requestAnimationFrame(poll);
  });
  window.__tt.viewStep = (pos, source) => viewUpdate(source, (m) => {
    m.doc.get_model_by_name("epoch_slider").value = pos;
  });
  window.__tt.viewSelect = (indices, source) => viewUpdate(source, (m) => { m.src.selected.indices = indices; });
  window.__tt.decide = (name) => new Promise((resolve, reject) => {
    const m = models();
    const button = m.doc.get_model_by_name(name);
    const table = m.doc.get_model_by_name("queue_table");
    const before = firstRow(table);
    const t0 = performance.now();
    const poll = (now) => {
      const top = firstRow(table);
      if (top !== before) { frame().then((shown) => resolve({shown_ms: shown - t0, top})); return; }
      if (now - t0 > 10000) { reject(new Error("queue did not change within 10 s")); return; }
      requestAnimationFrame(poll);
    };
    Bokeh.index.find_one(button).click();
    requestAnimationFrame(poll);
  });
})();
