// The console's small enhancements; every page works without them.
// Local times, copy buttons, the delete dialog, rate-limit presets and the
// in-place check of the metadata JSON. No inline script anywhere (CSP).
(function () {
  "use strict";

  // Times in the browser's time zone (the year only when it is not this one); the
  // UTC value stays in the title, seen on hover.
  function localTimes(root) {
    var parts = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
    var short = new Intl.DateTimeFormat(undefined, parts);
    var long = new Intl.DateTimeFormat(undefined, Object.assign({ year: "numeric" }, parts));
    var year = new Date().getFullYear();
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.textContent = (when.getFullYear() === year ? short : long).format(when);
      }
    });
  }

  function copyText(target) {
    if (target.value !== undefined && target.tagName === "INPUT") {
      return target.value;
    }
    return target.textContent;
  }

  function copy(button) {
    var selector = button.getAttribute("data-copy");
    var target = document.querySelector(selector);
    var status = document.querySelector('[data-copied-for="' + selector + '"]');
    if (!target) {
      return;
    }
    var text = copyText(target);
    function done(ok) {
      if (status) {
        status.textContent = ok ? "Copied to the clipboard." : "Select the text and copy it (Ctrl+C or ⌘C).";
      }
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      return;
    }
    // Not a secure context (plain http on another host than localhost): select it.
    if (target.select) {
      target.focus();
      target.select();
    } else {
      var range = document.createRange();
      range.selectNodeContents(target);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    done(ok);
  }

  function copyButtons(root) {
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () { copy(button); });
    });
    root.querySelectorAll("[data-select-on-focus]").forEach(function (input) {
      input.addEventListener("focus", function () { input.select(); });
    });
  }

  function dialogs(root) {
    root.querySelectorAll("[data-dialog]").forEach(function (opener) {
      var dialog = document.querySelector(opener.getAttribute("data-dialog"));
      if (!dialog || typeof dialog.showModal !== "function") {
        return; // the link leads to the confirmation page instead
      }
      opener.addEventListener("click", function (event) {
        event.preventDefault();
        dialog.showModal();
      });
      dialog.querySelectorAll("[data-close]").forEach(function (button) {
        button.addEventListener("click", function () {
          dialog.close();
          opener.focus();
        });
      });
    });
  }

  function presets(form) {
    var requests = form.querySelector('input[name="requests"]');
    var interval = form.querySelector('input[name="interval"]');
    var custom = form.querySelector('input[name="preset"][value="custom"]');
    if (!requests || !interval) {
      return;
    }
    form.querySelectorAll('input[name="preset"][data-requests]').forEach(function (radio) {
      radio.addEventListener("change", function () {
        if (radio.checked) {
          requests.value = radio.getAttribute("data-requests");
          interval.value = radio.getAttribute("data-interval");
        }
      });
    });
    function typed() {
      if (custom) {
        custom.checked = true;
      }
    }
    requests.addEventListener("input", typed);
    interval.addEventListener("input", typed);
  }

  function checkJson(area) {
    var text = area.value.trim();
    if (!text) {
      return "";
    }
    var value;
    try {
      value = JSON.parse(text);
    } catch (e) {
      return "Not valid JSON: " + e.message;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return 'Labels are a JSON object, e.g. {"environment": "production"}.';
    }
    return "";
  }

  function jsonFields(form) {
    form.querySelectorAll("textarea[data-json-object]").forEach(function (area) {
      var error = form.querySelector('[data-error-for="' + area.name + '"]');
      var field = area.closest(".field");
      function show(message) {
        if (error) {
          error.textContent = message;
          error.hidden = !message;
        }
        if (message) {
          area.setAttribute("aria-invalid", "true");
          if (field) { field.classList.add("invalid"); }
        } else {
          area.removeAttribute("aria-invalid");
          if (field) { field.classList.remove("invalid"); }
        }
      }
      area.addEventListener("input", function () { show(checkJson(area)); });
      form.addEventListener("submit", function (event) {
        var message = checkJson(area);
        if (message) {
          event.preventDefault();
          show(message);
          area.focus();
        }
      });
    });
  }

  // The password rule, ticked off while typing (the server has the last word: it also
  // refuses guessable passwords).
  var RULES = {
    length: function (v) { return v.length >= 8; },
    upper: function (v) { return /[A-Z]/.test(v); },
    lower: function (v) { return /[a-z]/.test(v); },
    digit: function (v) { return /[0-9]/.test(v); },
  };

  function passwordRules(root) {
    root.querySelectorAll("[data-rules-for]").forEach(function (list) {
      var input = document.getElementById(list.getAttribute("data-rules-for"));
      if (!input) {
        return;
      }
      list.hidden = false;
      function update() {
        list.querySelectorAll("[data-rule]").forEach(function (item) {
          var ok = RULES[item.getAttribute("data-rule")](input.value);
          item.classList.toggle("met", ok);
          item.setAttribute("aria-label", item.textContent + (ok ? ": done" : ": not yet"));
        });
      }
      input.addEventListener("input", update);
      update();
    });
  }

  // A page whose next step is another site (linking GitHub or Google): go on to it.
  // (A form post cannot be redirected there: CSP form-action 'self'.)
  function follow(root) {
    var link = root.querySelector("a[data-follow]");
    if (link) {
      window.location.assign(link.href);
    }
  }

  function start() {
    passwordRules(document);
    follow(document);
    localTimes(document);
    copyButtons(document);
    dialogs(document);
    document.querySelectorAll("form[data-key-form]").forEach(function (form) {
      presets(form);
      jsonFields(form);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
