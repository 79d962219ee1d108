// Draws every <div class="figure" data-fig=ID> from the JSON in <script id=ID>, then records
// the outcome on <body> (data-rendered = figure count, data-render-ms) for tests and users.
(function () {
  var divs = Array.prototype.slice.call(document.querySelectorAll("div.figure[data-fig]"));
  var config = {responsive: true, displaylogo: false, toImageButtonOptions: {format: "svg"}};
  var drawn = divs.map(function (div) {
    var spec = JSON.parse(document.getElementById(div.getAttribute("data-fig")).textContent);
    return Plotly.newPlot(div, spec.data, spec.layout, config);
  });
  Promise.all(drawn).then(function () {
    document.body.setAttribute("data-render-ms", String(Math.round(performance.now())));
    document.body.setAttribute("data-rendered", String(divs.length));
  }, function (err) {
    document.body.setAttribute("data-render-error", String(err));
    console.error(err);
  });
})();
