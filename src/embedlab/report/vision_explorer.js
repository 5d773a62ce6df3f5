// The Part 1 explorer of report.html: no library, no network. The lists (which images, in which order) come from
// embedlab.vision.evaluate.confusion_cells / changed_rows; this script shows them and the saved probabilities.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("vision-explorer-data").textContent);
  const C = D.classes, NAMES = { probe: "linear probe", finetune: "fine-tuned" };
  const SHORT = { airplane: "plane", automobile: "car" };  // column headers
  const P = new Float32Array(Uint8Array.from(atob(D.probs), (c) => c.charCodeAt(0)).buffer);
  const $ = (id) => document.getElementById(id);
  const prob = (k, m) => P.subarray((k * D.models.length + D.models.indexOf(m)) * 10, (k * D.models.length + D.models.indexOf(m) + 1) * 10);
  const seen = (k, m) => D.models.includes(m) && !Number.isNaN(prob(k, m)[0]);
  const ranking = (k, m) => [...prob(k, m)].map((p, c) => [c, p]).sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  function picture(k, size) {
    const d = el("span", undefined, "vx-img");
    const r = Math.floor(k / D.columns), c = k % D.columns;
    d.style.backgroundSize = `${D.columns * size}px auto`;
    d.style.backgroundPosition = `-${c * size}px -${r * size}px`;
    d.setAttribute("role", "img");
    d.setAttribute("aria-label", `test image ${D.testIndex[k]}, a ${C[D.labels[k]]}`);
    return d;
  }

  // ---- the two confusion matrices: every cell a button carrying data-model, data-true, data-pred
  let active = null;
  D.models.forEach((m) => {
    const box = el("div", undefined, "vx-matrix"), table = el("table"), head = el("tr");
    box.appendChild(el("strong", `${NAMES[m]} (rows: true class, columns: predicted)`));
    head.appendChild(el("th", ""));
    C.forEach((c) => head.appendChild(el("th", SHORT[c] || c)));
    table.appendChild(el("thead")).appendChild(head);
    const body = table.appendChild(el("tbody")), counts = D.cells[m].counts;
    const top = Math.max(...counts.flatMap((row, t) => row.filter((_, p) => p !== t)), 1);
    counts.forEach((row, t) => {
      const tr = body.appendChild(el("tr"));
      tr.appendChild(el("th", C[t]));
      row.forEach((n, p) => {
        const b = el("button", String(n));
        b.type = "button";
        Object.assign(b.dataset, { model: m, true: t, pred: p });
        b.title = `${NAMES[m]}: ${n} ${C[t]} images predicted ${C[p]}`;
        const a = t === p ? 0 : Math.min(1, n / top);
        b.style.background = t === p ? "#dafbe1" : `rgba(207,34,46,${(0.08 + 0.6 * a).toFixed(3)})`;
        b.addEventListener("click", () => showCell(b));
        tr.appendChild(el("td")).appendChild(b);
      });
    });
    box.appendChild(table);
    $("vx-matrices").appendChild(box);
  });
  function mark(b) { if (active) active.classList.remove("active"); active = b; if (b) b.classList.add("active"); }
  function showCell(b) {
    const m = b.dataset.model, t = +b.dataset.true, p = +b.dataset.pred, n = D.cells[m].counts[t][p];
    const list = D.cells[m].lists[`${t},${p}`] || [];
    mark(b);
    document.querySelectorAll('input[name="vx-change"]').forEach((r) => { r.checked = false; });
    const part = t === p && list.length < n ? `the ${list.length / 2} most and ${list.length / 2} least confident of ${n}` : `all ${n}`;
    show(list, m, `${NAMES[m]}: true ${C[t]}, predicted ${C[p]}: ${part}, ranked by the ${NAMES[m]} model's probability of ${C[p]}.`);
  }

  // ---- fixed / broken / both wrong, per class or all, with the counts and McNemar p per class
  const KIND = { fixed: "fixed by fine-tuning", broken: "broken by fine-tuning", both_wrong: "wrong under both" };
  const select = $("vx-class");
  if (!D.changes) { $("vx-changes-box").hidden = true; $("vx-changes").hidden = true; }
  else {
    select.appendChild(new Option("all classes", "-1"));
    C.forEach((c, i) => select.appendChild(new Option(c, String(i))));
    const tbody = document.querySelector("#vx-changes tbody");
    D.changes.table.forEach((r) => {
      const tr = tbody.appendChild(el("tr"));
      tr.dataset.cls = r.class;
      const counts = [r.images, r.fixed, r.broken, r.both_wrong].map((n) => n.toLocaleString("en-US"));
      [r.class, ...counts, r.p].forEach((v) => tr.appendChild(el("td", v)));
    });
    const showChanges = () => {
      const kind = document.querySelector('input[name="vx-change"]:checked')?.value;
      if (!kind) return;
      const c = +select.value, list = D.changes.lists[kind].filter((k) => c < 0 || D.labels[k] === c);
      const name = c < 0 ? "all classes" : C[c];
      tbody.querySelectorAll("tr").forEach((tr) => tr.classList.toggle("active", tr.dataset.cls === name));
      mark(null);
      show(list, "finetune", `${KIND[kind]}, ${name}: ${list.length} of the ${D.changes.paired.toLocaleString()} test images both models saw, ` +
        "ranked by the fine-tuned model's probability of its prediction.");
    };
    document.querySelectorAll('input[name="vx-change"]').forEach((r) => r.addEventListener("change", showChanges));
    select.addEventListener("change", showChanges);
  }

  // ---- the images of a view, and one image enlarged with both probability vectors
  function top3(k, m) {
    if (!seen(k, m)) return `${NAMES[m]}: not evaluated`;
    return `${NAMES[m]}: ` + ranking(k, m).slice(0, 3).map(([c, p]) => `${C[c]} ${p.toFixed(2)}`).join(", ");
  }
  function show(list, model, text) {
    $("vx-status").textContent = text;
    $("vx-detail").hidden = true;
    $("vx-images").replaceChildren(...list.map((k) => {
      const b = el("button", undefined, "vx-thumb");
      b.type = "button";
      b.dataset.testIndex = D.testIndex[k];
      if (seen(k, model) && ranking(k, model)[0][0] !== D.labels[k]) b.classList.add("wrong");
      b.appendChild(picture(k, 64));
      b.appendChild(el("div", `#${D.testIndex[k]} · true ${C[D.labels[k]]}`));
      D.models.forEach((m) => b.appendChild(el("div", top3(k, m))));
      b.addEventListener("click", () => detail(k));
      return b;
    }));
  }
  function detail(k) {
    const box = $("vx-detail"), table = el("table"), head = el("tr");
    ["class", ...D.models.map((m) => NAMES[m])].forEach((h) => head.appendChild(el("th", h)));
    table.appendChild(el("thead")).appendChild(head);
    const body = table.appendChild(el("tbody"));
    C.forEach((c, i) => {
      const tr = body.appendChild(el("tr", undefined, i === D.labels[k] ? "true" : ""));
      tr.appendChild(el("td", i === D.labels[k] ? `${c} (true)` : c));
      D.models.forEach((m) => tr.appendChild(el("td", seen(k, m) ? prob(k, m)[i].toFixed(4) : "—")));
    });
    const close = el("button", "close");
    close.type = "button";
    close.addEventListener("click", () => { box.hidden = true; });
    const unseen = D.models.filter((m) => !seen(k, m))
      .map((m) => `— : ${NAMES[m]} was not tested on this image (its run scored a subset of the test set)`);
    box.replaceChildren(picture(k, 256), el("div"));
    box.lastChild.append(el("strong", `test image #${D.testIndex[k]}, true class ${C[D.labels[k]]}`), table,
      ...unseen.map((t) => el("p", t, "ex-note")), close);
    box.dataset.testIndex = D.testIndex[k];
    box.hidden = false;
    close.focus();
  }
  $("vx-about").textContent = `Click a cell to see its test images; click an image to enlarge it. ${D.testIndex.length.toLocaleString()} test ` +
    "images are stored in this page (every mistake of either model and the ends of each diagonal cell) as one lossless WebP, " +
    `${Math.round(D.spriteBytes / 1024)} KB.`;
})();
