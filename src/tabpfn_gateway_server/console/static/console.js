// tabpfn-gateway admin console: small enhancements; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Copy buttons (shown only when the clipboard can be used).
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field || !navigator.clipboard) { return; }
    var status = button.parentElement.querySelector(".copied");
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(field.value).then(function () {
        if (status) { status.textContent = "Copied."; }
      }, function () {
        field.select();
        if (status) { status.textContent = "Select the key and copy it."; }
      });
    });
  });
  // A confirmation before revoking or removing for good.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
});
