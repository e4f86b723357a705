// headpursuit report: concept and colour-by selectors, and the head detail panel.
// The data (per concept: every per-head number, its rank, its colour, the top heads; per
// explained head: its HTML) is the JSON in #hp-data, written by headpursuit.report.html.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("hp-data").textContent);
  var conceptSelect = document.getElementById("hp-concept");
  var quantitySelect = document.getElementById("hp-quantity");
  var maps = document.getElementById("hp-maps");
  var detail = document.getElementById("hp-detail");
  var groupNodes = Array.prototype.slice.call(maps.querySelectorAll(".hp-group"));
  var SVG = "http://www.w3.org/2000/svg";
  var state = { group: 0, quantity: 0, pinned: null, shown: null };

  function fmt(value) {
    return value === null || value === undefined ? "\u2013" : String(Number(value.toPrecision(3)));
  }

  function headName(group, i) {
    return "L" + Math.floor(i / group.n_heads) + "H" + (i % group.n_heads);
  }

  function node(tag, text, className) {
    var element = document.createElement(tag);
    if (text !== undefined && text !== null) element.textContent = text;
    if (className) element.className = className;
    return element;
  }

  function cells(g) {
    return groupNodes[g].querySelectorAll("svg.hp-heatmap rect.hp-cell");
  }

  function paint() {
    var group = data.groups[state.group];
    var quantity = group.quantities[state.quantity];
    var svg = groupNodes[state.group].querySelector("svg.hp-heatmap");
    Array.prototype.forEach.call(cells(state.group), function (cell, i) {
      cell.setAttribute("fill", quantity.colours[i]);
      var rank = quantity.ranks[i] === null ? "" : " (#" + quantity.ranks[i] + ")";
      cell.querySelector("title").textContent =
        headName(group, i) + " \u00b7 " + quantity.label + " " + fmt(quantity.values[i]) + rank;
    });
    var frames = svg.querySelector("g.hp-outlines");
    while (frames.firstChild) frames.removeChild(frames.firstChild);
    var size = group.size;
    quantity.top.forEach(function (i) {
      var layer = Math.floor(i / group.n_heads);
      var rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", (i % group.n_heads) * size + 1);
      rect.setAttribute("y", (group.n_layers - 1 - layer) * size + 1);
      rect.setAttribute("width", size - 2);
      rect.setAttribute("height", size - 2);
      rect.setAttribute("fill", "none");
      rect.setAttribute("stroke", "#e4002b");
      rect.setAttribute("stroke-width", "2");
      frames.appendChild(rect);
    });
    svg.querySelector(".hp-colourbar .hp-low").textContent = quantity.low;
    svg.querySelector(".hp-colourbar .hp-high").textContent = quantity.high;
    svg.querySelector(".hp-colourbar .hp-label").textContent = quantity.label;
  }

  function selectGroup(g) {
    state.group = g;
    state.quantity = 0;
    state.pinned = null;
    Array.prototype.forEach.call(document.querySelectorAll("[data-group]"), function (element) {
      element.hidden = Number(element.getAttribute("data-group")) !== g;
    });
    while (quantitySelect.firstChild) quantitySelect.removeChild(quantitySelect.firstChild);
    data.groups[g].quantities.forEach(function (quantity, q) {
      var option = node("option", quantity.label);
      option.value = String(q);
      quantitySelect.appendChild(option);
    });
    quantitySelect.value = "0";
    markPinned();
    paint();
    var count = data.groups[g].n_layers * data.groups[g].n_heads;
    if (state.shown !== null && state.shown.i < count) show(state.shown.i);
  }

  function markPinned() {
    Array.prototype.forEach.call(maps.querySelectorAll("rect.hp-pinned"), function (cell) {
      cell.classList.remove("hp-pinned");
    });
    if (state.pinned !== null) cells(state.group)[state.pinned].classList.add("hp-pinned");
  }

  function show(i) {
    var group = data.groups[state.group];
    var name = headName(group, i);
    state.shown = { i: i };
    detail.textContent = "";
    var title = node("h3", name + " \u2014 " + group.label);
    if (state.pinned === i) title.appendChild(node("span", " (pinned; click again to release)", "hp-meta"));
    detail.appendChild(title);
    detail.appendChild(node("div", "rank among the " + group.n_ranked + " heads ranked, high to low", "hp-sub"));
    var table = node("table");
    var head = node("tr");
    ["number", "value", "rank"].forEach(function (text) { head.appendChild(node("th", text)); });
    table.appendChild(head);
    group.quantities.forEach(function (quantity) {
      var row = node("tr");
      row.appendChild(node("td", quantity.label));
      row.appendChild(node("td", fmt(quantity.values[i]), "hp-n"));
      row.appendChild(node("td", quantity.ranks[i] === null ? "\u2013" : "#" + quantity.ranks[i], "hp-n"));
      table.appendChild(row);
    });
    detail.appendChild(table);
    var elsewhere = [];
    data.groups.forEach(function (other, g) {
      if (g === state.group || other.fingerprint !== group.fingerprint ||
          other.n_layers !== group.n_layers || other.n_heads !== group.n_heads) return;
      var primary = other.quantities[0];
      var rank = primary.ranks[i] === null ? "\u2013" : "#" + primary.ranks[i];
      elsewhere.push(other.label + " " + rank);
    });
    if (elsewhere.length) {
      detail.appendChild(node("div", "rank for the other concepts: " + elsewhere.join(", "), "hp-sub"));
    }
    if (group.atoms.length && group.atoms[i].length) {
      var atoms = node("div", "concept tokens SOMP chose for this head: ", "hp-sub");
      group.atoms[i].forEach(function (token) {
        atoms.appendChild(node("span", token, "hp-tok"));
        atoms.appendChild(document.createTextNode(" "));
      });
      var unnamed = group.n_atoms - group.atoms[i].length;
      if (unnamed > 0) atoms.appendChild(document.createTextNode("and " + unnamed + " more (their text is in no explanation given)"));
      detail.appendChild(atoms);
    }
    var explained = data.explanations[group.fingerprint + "|" + name];
    if (explained) {
      var holder = node("div", null, "hp-explained");
      holder.innerHTML = explained;  // built and escaped by headpursuit.report.html
      detail.appendChild(holder);
    } else {
      detail.appendChild(node("p", "No SOMP/logit-lens tokens for this head; run `headpursuit explain --head " +
        name + "` and add the file to the report.", "hp-hint"));
    }
  }

  function cellIndex(target) {
    var cell = target.closest ? target.closest("rect.hp-cell") : null;
    return cell ? Number(cell.getAttribute("data-i")) : null;
  }

  maps.addEventListener("mouseover", function (event) {
    var i = cellIndex(event.target);
    if (i !== null && state.pinned === null) show(i);
  });
  maps.addEventListener("click", function (event) {
    var i = cellIndex(event.target);
    if (i === null) return;
    state.pinned = state.pinned === i ? null : i;
    markPinned();
    show(i);
  });
  conceptSelect.addEventListener("change", function () { selectGroup(Number(conceptSelect.value)); });
  quantitySelect.addEventListener("change", function () {
    state.quantity = Number(quantitySelect.value);
    paint();
  });
  conceptSelect.value = "0";
  selectGroup(0);
})();
