/* Progressive enhancement only: fills the hidden "device_facts" field of our own forms with a
 * few stable facts about this device (screen, time zone, platform, touch), so a returning
 * device is recognised even when its cookie was cleared. Nothing is sent anywhere else and
 * every form works without it. ES5 for old mobile browsers. */
(function () {
  "use strict";

  function facts() {
    var found = {};
    try {
      if (window.screen) {
        found.screen = window.screen.width + "x" + window.screen.height;
      }
      if (window.devicePixelRatio) {
        found.dpr = String(Math.round(window.devicePixelRatio * 100) / 100);
      }
      if (window.Intl && Intl.DateTimeFormat) {
        found.tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
      }
      if (navigator.platform) {
        found.platform = navigator.platform;
      }
      found.touch = String(navigator.maxTouchPoints || 0);
    } catch (error) {
      /* an old browser without one of these: send what we have */
    }
    return JSON.stringify(found);
  }

  function fill() {
    var fields = document.querySelectorAll("input[data-device-facts]");
    if (!fields.length || !window.JSON) {
      return;
    }
    var value = facts();
    for (var i = 0; i < fields.length; i++) {
      fields[i].value = value;
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", fill);
  } else {
    fill();
  }
})();
