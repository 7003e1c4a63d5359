// alignpipe app: the little script the pages need (served from the app itself; no inline script).
// Answers stream over Server-Sent Events into text nodes (never parsed as HTML); when an answer
// is finished, its final form (versions and the flag form) is fetched from the server.
"use strict";

function startStream(box) {
  if (box.dataset.started) return;
  box.dataset.started = "yes";
  var text = box.querySelector(".answer-text");
  var status = box.querySelector(".queue");
  var source = new EventSource(box.dataset.stream);
  source.addEventListener("queue", function (event) {
    var ahead = JSON.parse(event.data).position;
    status.textContent = ahead > 0 ? "Waiting: " + ahead + " answer(s) ahead of yours." : "Writing...";
  });
  source.addEventListener("token", function (event) {
    status.textContent = "Writing...";
    text.textContent += JSON.parse(event.data).text;
  });
  function finish() {
    source.close();
    htmx.ajax("GET", box.dataset.final, {target: box, swap: "outerHTML"});
  }
  source.addEventListener("done", finish);
  source.addEventListener("failed", function (event) {
    source.close();
    status.textContent = JSON.parse(event.data).error || "The model failed to answer.";
    status.classList.add("problem");
  });
  source.onerror = function () { if (source.readyState === EventSource.CLOSED) status.textContent = "Connection lost."; };
}

document.addEventListener("DOMContentLoaded", function () {
  htmx.onLoad(function (element) {
    element.querySelectorAll("[data-stream]").forEach(startStream);
    if (element.matches && element.matches("[data-stream]")) startStream(element);
  });
  document.body.addEventListener("htmx:beforeRequest", function () {
    document.getElementById("problem").textContent = "";
  });
  document.body.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.elt.id === "ask" && event.detail.successful) event.detail.elt.reset();
  });
});
