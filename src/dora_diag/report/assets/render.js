// Draws every <div class="figure" data-fig=ID> from the JSON in <script id=ID>, one figure per
// task so the page stays responsive and the first figures show while the rest are drawn. The
// outcome goes on <body> for tests and users: data-first-ms (first figure drawn), data-render-ms
// and data-rendered (figure count) when all are drawn, data-render-error on failure.
(function () {
  var divs = Array.prototype.slice.call(document.querySelectorAll("div.figure[data-fig]"));
  var config = {responsive: false, displaylogo: false, toImageButtonOptions: {format: "svg"}};
  var body = document.body;
  function draw(i) {
    if (i === divs.length) {
      body.setAttribute("data-render-ms", String(Math.round(performance.now())));
      body.setAttribute("data-rendered", String(divs.length));
      return;
    }
    var div = divs[i];
    var spec = JSON.parse(document.getElementById(div.getAttribute("data-fig")).textContent);
    Plotly.newPlot(div, spec.data, spec.layout, config).then(function () {
      if (i === 0) body.setAttribute("data-first-ms", String(Math.round(performance.now())));
      setTimeout(function () { draw(i + 1); }, 0);
    }, function (err) {
      body.setAttribute("data-render-error", String(err));
      console.error(err);
    });
  }
  draw(0);
  // Figures follow the window's width; printed, they are laid out at PRINT_WIDTH (the print
  // stylesheet's page width, wide enough for three panels' titles) and the page is scaled down.
  var PRINT_WIDTH = 1040, pending = null;
  function each(update) { divs.forEach(function (div) { if (div.layout) Plotly.relayout(div, update); }); }
  window.addEventListener("beforeprint", function () { each({width: PRINT_WIDTH}); });
  window.addEventListener("afterprint", function () { each({width: null, autosize: true}); });
  window.addEventListener("resize", function () {
    if (window.matchMedia("print").matches) return;
    clearTimeout(pending);
    pending = setTimeout(function () {
      divs.forEach(function (div) { if (div.layout) Plotly.Plots.resize(div); });
    }, 100);
  });
})();
