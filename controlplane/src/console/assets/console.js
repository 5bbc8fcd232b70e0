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

  // Fragments wait for the next frame and go in together: one layout (and one scroll) per
  // frame however many records arrived, rather than one per record.
  var pending = [];
  var scheduled = false;

  function append(html) {
    pending.push(html);
    if (pending.length > MAX_ITEMS) {
      pending.shift();
    }
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(flush);
    }
  }

  function flush() {
    scheduled = false;
    var follow = nearBottom();
    var template = document.createElement("template");
    template.innerHTML = pending.join("");
    pending = [];
    Array.prototype.slice.call(template.content.children).forEach(function (node) {
      var pane = node.getAttribute("data-pane") === "logs" ? panes.logs : panes.conversation;
      pane.appendChild(node);
      var state = node.getAttribute("data-status");
      if (state && status) {
        status.textContent = state;
        status.className = "badge status-" + state;
      }
    });
    [panes.logs, panes.conversation].forEach(function (pane) {
      while (pane.children.length > MAX_ITEMS) {
        pane.removeChild(pane.firstElementChild);
      }
    });
    if (follow) {
      window.scrollTo(0, document.body.scrollHeight);
    }
  }

  // Each connection starts after what the page shows (data-after follows every event);
  // EventSource's own reconnections send Last-Event-ID, which the server prefers.
  var source = null;
  var ended = false;
  function connect() {
    if (source || ended) {
      return;
    }
    var url = live.getAttribute("data-events") + "?after=" +
      encodeURIComponent(live.getAttribute("data-after"));
    source = new EventSource(url);
    live.setAttribute("data-connected", "true");
    source.addEventListener("entries", function (event) {
      append(event.data);
      live.setAttribute("data-after", event.lastEventId);
    });
    source.addEventListener("end", function () {
      ended = true;
      disconnect();
      live.setAttribute("data-live", "ended");
    });
    source.addEventListener("signedout", function () {
      disconnect();
      location.assign("/");
    });
  }
  function disconnect() {
    if (source) {
      source.close();
      source = null;
      live.setAttribute("data-connected", "false");
    }
  }
  // Over plain HTTP/1.1 a browser keeps at most six connections per host, and each live
  // page holds one: a page left in the background lets its connection go after a while and
  // picks up where it was when it is shown again (the server resumes from a checkpoint).
  var HIDDEN_GRACE_MS = 10000;
  var hiddenTimer = null;
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") {
      var grace = Number(live.getAttribute("data-hidden-grace-ms") || HIDDEN_GRACE_MS);
      hiddenTimer = setTimeout(disconnect, grace);
    } else {
      clearTimeout(hiddenTimer);
      connect();
    }
  });
  connect();
})();
