// Draws the dashboard's charts from the data the server embedded in the page.
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("dashboard-data").textContent);
  const layout = (title, extra) => Object.assign({
    title: { text: title, font: { size: 14 } },
    margin: { l: 55, r: 20, t: 40, b: 50 },
    legend: { orientation: "h", y: -0.25 },
    hovermode: "x unified",
  }, extra || {});
  const config = { displaylogo: false, responsive: true };

  function draw(name, traces, chartLayout) {
    const element = document.querySelector(`[data-chart="${name}"]`);
    if (!element) return null;
    element.replaceChildren();
    Plotly.newPlot(element, traces, chartLayout, config);
    element.dataset.drawn = "true";
    return element;
  }

  function traffic(panel) {
    if (panel.empty) return;
    draw("traffic-volume", [
      { type: "bar", name: "online", x: panel.days, y: panel.online },
      { type: "bar", name: "batch", x: panel.days, y: panel.batch },
      { type: "scatter", name: "errors (5xx)", x: panel.days, y: panel.errors, yaxis: "y2" },
      { type: "scatter", name: "rate-limited (429)", x: panel.days, y: panel.rate_limited, yaxis: "y2" },
    ], layout("Predictions per day", {
      barmode: "stack",
      yaxis2: { overlaying: "y", side: "right", title: "requests", rangemode: "tozero" },
    }));
    draw("traffic-latency", [
      { type: "scatter", name: "p50", x: panel.days, y: panel.p50_ms },
      { type: "scatter", name: "p99", x: panel.days, y: panel.p99_ms },
    ], layout("Latency of /predict (ms)", { yaxis: { rangemode: "tozero" } }));
  }

  function scores(panel) {
    if (panel.empty) return;
    const last = panel.distributions.length - 1;
    draw("score-distribution", [
      { type: "bar", name: "reference", x: panel.labels, y: panel.reference, opacity: 0.5 },
      { type: "scatter", name: panel.latest, x: panel.labels, y: panel.distributions[last] },
    ], layout("Score distribution, latest window against the reference", { yaxis: { title: "share" } }));
    draw("decision-rate", [
      { type: "scatter", name: "decided to churn", x: panel.windows, y: panel.decision_rate },
    ], layout("Decision rate", { yaxis: { tickformat: ".0%", rangemode: "tozero" } }));
  }

  function drift(panel) {
    if (panel.empty) return;
    const text = panel.cells.map((row) => row.map((c) => (c ? `${c.method} ${c.value} (threshold ${c.threshold})` : "")));
    const heatmap = draw("drift-heatmap", [{
      type: "heatmap",
      x: panel.windows,
      y: panel.features,
      z: panel.ratio,
      text: text,
      hovertemplate: "%{y} on %{x}<br>%{text}<br>value / threshold: %{z:.2f}<extra></extra>",
      zmin: 0, zmax: 2,
      colorscale: [[0, "#f7fbff"], [0.5, "#fdd49e"], [0.5001, "#ef6548"], [1, "#7f0000"]],
      colorbar: { title: "value / threshold", tickvals: [0, 1, 2], ticktext: ["0", "threshold", "2x"] },
    }], layout("Drift by feature and day", { hovermode: "closest", height: 40 + 22 * panel.features.length, margin: { l: 140, r: 20, t: 40, b: 60 } }));
    if (heatmap) {
      heatmap.on("plotly_click", (event) => {
        const point = event.points[0];
        histogram(panel, point.pointIndex[1], point.pointIndex[0]);
      });
    }
  }

  async function histogram(panel, windowIndex, featureIndex) {
    const feature = panel.features[featureIndex];
    const key = panel.keys[windowIndex];
    const element = document.querySelector('[data-chart="drift-histogram"]');
    const query = new URLSearchParams({ day: key.day, version: key.version, feature: feature });
    const answer = await fetch(`/dashboard/histogram?${query}`, { credentials: "same-origin" });
    if (!answer.ok) {
      element.textContent = `No histogram stored for ${feature} on ${panel.windows[windowIndex]}: run \`churn monitor run\` again.`;
      return;
    }
    const found = await answer.json();
    draw("drift-histogram", [
      { type: "bar", name: "reference", x: found.labels, y: found.reference, opacity: 0.5 },
      { type: "bar", name: panel.windows[windowIndex], x: found.labels, y: found.window },
    ], layout(`${feature}: ${panel.windows[windowIndex]} against the reference`, { yaxis: { title: "share" } }));
    element.dataset.feature = feature;
  }

  function performance(panel) {
    if (panel.empty) return;
    const names = { roc_auc: "ROC AUC", pr_auc: "PR AUC", precision: "precision", recall: "recall" };
    const traces = [];
    for (const [key, name] of Object.entries(names)) {
      traces.push({ type: "scatter", name: `${name} (realised)`, x: panel.windows, y: panel.realised[key] });
    }
    traces.push({ type: "scatter", name: "ROC AUC (estimated)", x: panel.windows, y: panel.estimated.roc_auc, line: { dash: "dot" } });
    const shapes = [];
    if (panel.test.roc_auc !== null) {
      shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: panel.test.roc_auc, y1: panel.test.roc_auc, line: { dash: "dash", color: "#555" } });
    }
    draw("performance", traces, layout("Realised and estimated performance (dashed: test ROC AUC)", { shapes: shapes }));
    draw("coverage", [
      { type: "bar", name: "label coverage", x: panel.windows, y: panel.coverage },
    ], layout("Label coverage", { yaxis: { tickformat: ".0%", range: [0, 1] } }));
  }

  traffic(data.traffic);
  scores(data.scores);
  drift(data.drift);
  performance(data.performance);
  document.body.dataset.ready = "true";
})();
