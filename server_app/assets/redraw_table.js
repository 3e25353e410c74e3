// A DataTable redraws only when its CDSView's indices change, i.e. when the row count changes;
// new data with as many rows (a re-ranked queue of k rows) would stay stale. args: table.
const view = Bokeh.index.find_one(table);
if (view != null) { view.updateGrid(); }
