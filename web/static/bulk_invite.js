// Bulk invitations with progress: the list is read here, split into chunks
// and sent to the JSON endpoint one chunk at a time. Without this script the
// form posts the whole list and the server answers with a results page.
(function () {
  "use strict";
  var form = document.getElementById("bulk-form");
  if (!form || !window.fetch || !window.FileReader) { return; }
  var maxRows = parseInt(form.dataset.maxRows, 10);
  var chunk = parseInt(form.dataset.chunk, 10);
  var bar = document.getElementById("bulk-bar");
  var status = document.getElementById("bulk-status");
  var box = document.getElementById("bulk-progress");
  var errorBox = document.getElementById("bulk-error");
  var table = document.getElementById("bulk-results");
  var labels = {
    invited: "Invited", already_member: "Already a member", already_invited: "Already invited",
    invalid_address: "Invalid address", invalid_role: "Unknown role (admin, member or viewer)",
    over_seat_limit: "Over the seat limit of the plan"
  };

  function showError(message) { errorBox.textContent = message; errorBox.hidden = false; }

  function parse(text, defaultRole) {
    var rows = [];
    var lines = text.replace(/^\uFEFF/, "").split(/\r\n|\n|\r/);
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i].trim();
      if (!line) { continue; }
      var cells = line.split(/[,;\t]/).map(function (c) { return c.trim().replace(/^"|"$/g, ""); });
      if (rows.length === 0 && /^(e-?mail|address)$/i.test(cells[0])) { continue; }
      rows.push({ line: i + 1, email: cells[0], role: (cells[1] || defaultRole).toLowerCase() });
    }
    return rows;
  }

  function addResults(results) {
    var body = table.tBodies[0];
    results.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.className = r.outcome;
      [String(r.line), r.email, labels[r.outcome] || r.outcome].forEach(function (v) {
        var td = document.createElement("td");
        td.textContent = v;  // text, never HTML: the list is untrusted
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.hidden = false;
  }

  function send(rows, done) {
    var total = rows.length, sent = 0;
    box.hidden = false;
    function next() {
      if (sent >= total) { status.textContent = "Done: " + total + " rows."; done(); return; }
      var part = rows.slice(sent, sent + chunk);
      fetch(form.dataset.api, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify({ rows: part })
      }).then(function (resp) {
        return resp.json().then(function (body) { return { ok: resp.ok, body: body }; });
      }).then(function (r) {
        if (!r.ok) { showError((r.body.error && r.body.error.message) || "The invitations could not be sent."); return; }
        addResults(r.body.results);
        sent += part.length;
        bar.value = Math.round(100 * sent / total);
        status.textContent = sent + " of " + total + " rows processed";
        next();
      }).catch(function () { showError("The connection failed; rows already shown were processed."); });
    }
    next();
  }

  form.addEventListener("submit", function (event) {
    var submitter = event.submitter;
    if (submitter && submitter.value === "csv") { return; }  // the server answers with a file
    event.preventDefault();
    errorBox.hidden = true;
    table.tBodies[0].innerHTML = "";
    var defaultRole = form.elements.role.value;
    var file = form.elements.file.files[0];
    function go(text) {
      var rows = parse(text, defaultRole);
      if (rows.length === 0) { showError("The list has no addresses."); return; }
      if (rows.length > maxRows) {
        showError("A list has at most " + maxRows + " rows; this one has " + rows.length + ". Split it and invite the rest in another list.");
        return;
      }
      send(rows, function () {});
    }
    if (file) {
      var reader = new FileReader();
      reader.onload = function () {
        var bytes = new Uint8Array(reader.result);
        var text;
        try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); }
        catch (e) { showError("The file is not UTF-8 text: save it as CSV in UTF-8 and upload it again."); return; }
        go(text);
      };
      reader.readAsArrayBuffer(file);
    } else {
      go(form.elements.list.value);
    }
  });
})();
