// The Kortix console's only script: the live session stream and the session page's tabs.
// Pages are complete without it; it never evaluates what the server sends, it only inserts
// the HTML fragments the server rendered and escaped.
"use strict";

(function () {
  var live = document.getElementById("live");
  if (!live) {
    return;
  }
  var panes = {
    conversation: document.getElementById("conversation"),
    logs: document.getElementById("logs"),
  };
  // Fragments kept in the page; older ones go, so a long session does not grow it forever.
  var MAX_ITEMS = 5000;

  function showTab(name) {
    Object.keys(panes).forEach(function (key) {
      panes[key].hidden = key !== name;
    });
    document.querySelectorAll("[data-tab]").forEach(function (tab) {
      tab.classList.toggle("active", tab.getAttribute("data-tab") === name);
    });
  }
  document.querySelectorAll("[data-tab]").forEach(function (tab) {
    tab.addEventListener("click", function (event) {
      event.preventDefault();
      showTab(tab.getAttribute("data-tab"));
    });
  });
  showTab(location.hash === "#logs" ? "logs" : "conversation");

  if (live.getAttribute("data-live") !== "true") {
    return;
  }
  var status = document.getElementById("status");

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  function append(html) {
    var follow = nearBottom();
    var template = document.createElement("template");
    template.innerHTML = html;
    Array.prototype.slice.call(template.content.children).forEach(function (node) {
      var pane = node.getAttribute("data-pane") === "logs" ? panes.logs : panes.conversation;
      pane.appendChild(node);
      while (pane.children.length > MAX_ITEMS) {
        pane.removeChild(pane.firstElementChild);
      }
      var state = node.getAttribute("data-status");
      if (state && status) {
        status.textContent = state;
        status.className = "badge status-" + state;
      }
    });
    if (follow) {
      window.scrollTo(0, document.body.scrollHeight);
    }
  }

  // The first connection starts after what the page shows; reconnections send
  // Last-Event-ID, which the server prefers.
  var url = live.getAttribute("data-events") + "?after=" +
    encodeURIComponent(live.getAttribute("data-after"));
  var source = new EventSource(url);
  source.addEventListener("entries", function (event) {
    append(event.data);
    live.setAttribute("data-after", event.lastEventId);
  });
  source.addEventListener("end", function () {
    source.close();
    live.setAttribute("data-live", "ended");
  });
  source.addEventListener("signedout", function () {
    source.close();
    location.assign("/");
  });
})();
