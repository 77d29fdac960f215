/* Progressive enhancement only: every page works without this file.
 * Written for old mobile browsers: ES5, XMLHttpRequest, no build step. */
(function () {
  "use strict";

  function pollStatus(box) {
    var url = box.getAttribute("data-status-url");
    var every = (parseInt(box.getAttribute("data-refresh-seconds"), 10) || 3) * 1000;

    function schedule(delay) {
      window.setTimeout(poll, delay);
    }

    function poll() {
      var request = new XMLHttpRequest();
      request.open("GET", url, true);
      request.setRequestHeader("Accept", "application/json");
      request.onload = function () {
        if (request.status !== 200) {
          schedule(every * 2);
          return;
        }
        var data = JSON.parse(request.responseText);
        box.innerHTML = data.html;
        box.setAttribute("data-state", data.state);
        if (data.in_progress) {
          schedule(every);
        }
      };
      request.onerror = function () {
        schedule(every * 2);
      };
      request.send();
    }

    schedule(every);
  }

  function countDown(counter) {
    var seconds = parseInt(counter.textContent, 10);
    var timer = window.setInterval(function () {
      seconds -= 1;
      if (seconds <= 0) {
        window.clearInterval(timer);
        var box = counter.parentNode;
        while (box && !box.hasAttribute("data-countdown-box")) {
          box = box.parentNode;
        }
        if (box) {
          box.parentNode.removeChild(box);
        }
        return;
      }
      counter.textContent = String(seconds);
    }, 1000);
  }

  var boxes = document.querySelectorAll("[data-status-url]");
  for (var i = 0; i < boxes.length; i += 1) {
    pollStatus(boxes[i]);
  }
  var counters = document.querySelectorAll("[data-countdown]");
  for (var j = 0; j < counters.length; j += 1) {
    countDown(counters[j]);
  }
})();
