// Hovering a heatmap cell shows its unit's value distribution in the selection and in the reference.
// args: cells (the heatmap's source), units (per-unit histograms: edges, sel, ref, name), hist (the histogram's source).
const hovered = cb_data.index.indices;
if (hovered.length == 0) { return; }
const j = cells.data.col[hovered[0]];
const edges = units.data.edges[j], sel = units.data.sel[j], ref = units.data.ref[j];
const left = [], right = [], a = [], b = [];
for (let i = 0; i < sel.length; i++) { left.push(edges[i]); right.push(edges[i + 1]); a.push(sel[i]); b.push(ref[i]); }
if (hist.tags[0] === j) { return; }
hist.tags = [j];
hist.data = {left: left, right: right, sel: a, ref: b};
title.text = `unit ${units.data.name[j]}: values in the selection (blue) and the reference (grey)`;
