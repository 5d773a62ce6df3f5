// The movie explorer of report.html: no library, no network. Title matching mirrors
// embedlab.movies.titles.TitleIndex; scores mirror embedlab.movies.recommend (float64, ties to the lower row).
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("explorer-data").textContent);
  const N = D.titles.length, dim = D.dim, K = D.k;
  const bytes = Uint8Array.from(atob(D.vectors), (c) => c.charCodeAt(0));
  const V = new Float32Array(bytes.buffer);
  const norms = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let s = 0;
    for (let j = 0; j < dim; j++) { const x = V[i * dim + j]; s += x * x; }
    norms[i] = Math.max(Math.sqrt(s), 1e-12);
  }
  const $ = (id) => document.getElementById(id);
  const input = $("explorer-search"), list = $("explorer-suggestions"), status = $("explorer-status");
  const tbody = document.querySelector("#explorer-results tbody");
  let selected = -1, top = [], active = -1;

  // ---- title matching (TitleIndex): exact title, else normalised keys, article optional, year optional
  const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const ARTICLE_SUFFIX = new RegExp("^(.*),\\s*(" + D.articles.map(esc).join("|") + ")$", "i");
  const YEAR = /\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$/;
  const BARE_YEAR = /^(.*\S)\s+((?:18[89]|19\d|20\d)\d)$/;  // titles.BARE_YEAR
  function moveArticle(name) {
    const m = name.match(ARTICLE_SUFFIX);
    if (!m) return name;
    return m[2] + (m[2].endsWith("'") ? "" : " ") + m[1];
  }
  // movielens.normalise: NFKC, case folded (str.casefold: lower case, and D.fold where the two differ), Latin-like
  // diacritics and invisible format characters dropped, anything but letters, digits, marks and symbols a space
  const casefold = (t) => Array.from(t, (c) => (Object.hasOwn(D.fold, c) ? D.fold[c] : c.toLowerCase())).join("");
  const LATIN_MARKS = /[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\ufe20-\ufe2f]/gu;
  const normalise = (t) => casefold(moveArticle(t.trim().normalize("NFKC"))).normalize("NFD").replace(LATIN_MARKS, "")
    .replace(/\p{Cf}/gu, "").replace(/[^\p{L}\p{N}\p{M}\p{So}]+/gu, " ").normalize("NFC").trim().split(/\s+/).join(" ");
  function dropArticle(key) {
    const i = key.indexOf(" ");
    if (i < 0) return key;
    return D.articles.includes(key.slice(0, i)) ? key.slice(i + 1) : key;
  }
  function splitTitle(t) {
    const m = t.match(YEAR);
    return m ? [t.slice(0, m.index).trim(), parseInt(m[1], 10)] : [t.trim(), null];
  }
  const foldNumerals = (key) => key.split(" ").map((w) => (Object.hasOwn(D.numerals, w) ? D.numerals[w] : w)).join(" ");
  // every film of the release: the N the page holds (rows 0..N-1), then those it does not (too few likes, or none),
  // so that a query finds the film it names among all films, as embedlab recommend does
  const O = D.others;
  const ALL = {
    titles: D.titles.concat(O.titles),
    likes: D.likes.concat(O.likes),
    names: D.names.concat(O.keys.map((k, i) => k.slice(0, O.nNames[i]))),
    keys: D.keys.concat(O.keys),
    digitKeys: D.digitKeys.concat(O.keys.map((ks) => [...new Set(ks.map(foldNumerals))])),
    years: D.years.concat(O.titles.map((t) => splitTitle(t)[1])),
  };
  const NA = ALL.titles.length;
  const lower = ALL.titles.map((t) => t.toLowerCase());
  const exact = new Map(D.titles.map((t, i) => [t.toLowerCase(), i]));  // the query buttons name held titles exactly
  // TitleIndex.candidates: the first rule that matches any film decides; rows most liked first
  function lookup(q) {
    q = q.trim();
    const [name, year] = splitTitle(q);
    const key = normalise(name);
    const byLikes = (rows) => rows.sort((a, b) => ALL.likes[b] - ALL.likes[a] || a - b);
    const exactRows = [];  // the title as stored comes first, even one with no letter or digit to make a key of
    for (let i = 0; i < NA; i++) if (lower[i] === q.toLowerCase()) exactRows.push(i);
    if (exactRows.length || !key) return byLikes(exactRows);
    const bare = dropArticle(key), digits = foldNumerals(key), bareDigits = foldNumerals(bare);
    const rules = [
      (i) => ALL.names[i].includes(key),
      (i) => ALL.keys[i].includes(key) || ALL.keys[i].includes(bare),
      (i) => ALL.keys[i].some((k) => k.startsWith(key) || k.startsWith(bare)),
      (i) => ALL.keys[i].some((k) => (" " + k + " ").includes(" " + bare + " ")),
      (i) => ALL.digitKeys[i].some((k) => k === digits || k === bareDigits || k.startsWith(bareDigits)
                                      || (" " + k + " ").includes(" " + bareDigits + " ")),
    ];
    for (const matches of rules) {
      const rows = [];
      for (let i = 0; i < NA; i++) if (matches(i) && (year === null || ALL.years[i] === year)) rows.push(i);
      if (rows.length) return byLikes(rows);
    }
    const bareYear = q.match(BARE_YEAR);  // "star wars 1977": nothing is named so, so the last word is the year
    if (year === null && bareYear) return lookup(`${bareYear[1]} (${bareYear[2]})`);
    return [];
  }
  // TitleMatch.note: the query matched several films, the most liked is shown
  function severalNote(rows) {
    if (rows.length < 2) return "";
    const others = rows.slice(1).map((i) => ALL.titles[i]);
    const listed = others.slice(0, 5).join("; ") + (others.length > 5 ? `; … and ${others.length - 5} more` : "");
    return `${rows.length} titles match; the most-liked is shown (add the year to choose: ${listed})`;
  }
  window.embedlabLookup = (q) => lookup(q).map((i) => ALL.titles[i]);  // what the tests compare with TitleIndex
  // the titles a name begins; for a typo, none: then the titles whose name is closest by edit distance (at most
  // 40 % of the longer one changed), as TitleIndex.lookup suggests close titles
  function suggestions(q) {
    const key = normalise(splitTitle(q)[0]);
    if (!key) return [];
    const alt = dropArticle(key);
    const hits = [];
    for (let i = 0; i < N; i++) {
      if (D.keys[i].some((k) => k.startsWith(key) || k.startsWith(alt))) hits.push(i);
    }
    if (hits.length) return hits.sort((a, b) => D.likes[b] - D.likes[a] || a - b).slice(0, 8);
    // a name, or its first words as many as were typed ("star warz" is close to "star wars ..."); the closest first,
    // then the most liked
    const words = key.split(" ").length, close = [];
    for (let i = 0; i < N; i++) {
      const forms = D.keys[i].flatMap((k) => [k, k.split(" ").slice(0, words).join(" ")]);
      const d = Math.min(...forms.map((k) => editDistance(key, k) / Math.max(key.length, k.length)));
      if (d <= 0.4) close.push([d, i]);
    }
    return close.sort((a, b) => a[0] - b[0] || D.likes[b[1]] - D.likes[a[1]] || a[1] - b[1]).slice(0, 8).map((c) => c[1]);
  }
  function editDistance(a, b) {  // Levenshtein, two rows
    if (Math.abs(a.length - b.length) > 0.4 * Math.max(a.length, b.length)) return Math.max(a.length, b.length);
    let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const row = [i];
      for (let j = 1; j <= b.length; j++) {
        row.push(Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)));
      }
      prev = row;
    }
    return prev[b.length];
  }

  // ---- scores (embedlab.movies.recommend.similar_items): every other stored movie is a candidate
  function metric() { return document.querySelector('input[name="explorer-metric"]:checked').value; }
  function topK(q, how) {
    const scores = new Float64Array(N);
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let t = 0; t < dim; t++) s += V[q * dim + t] * V[j * dim + t];
      scores[j] = how === "cosine" ? s / (norms[q] * norms[j]) : s;
    }
    const idx = [];
    for (let j = 0; j < N; j++) if (j !== q) idx.push(j);
    idx.sort((a, b) => scores[b] - scores[a] || a - b);
    return idx.slice(0, K).map((j) => [j, scores[j]]);
  }
  function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }
  function render() {
    tbody.replaceChildren();
    if (selected < 0) { top = []; draw(); return; }
    top = topK(selected, metric());
    top.forEach(([j, s], r) => {
      const tr = document.createElement("tr");
      [String(r + 1), D.titles[j], D.genres[j], s.toFixed(4), String(D.likes[j])].forEach((t) => tr.appendChild(cell(t)));
      tbody.appendChild(tr);
    });
    status.textContent = `Top ${top.length} for ${D.titles[selected]} (${metric()}, ${D.likes[selected]} likes; movies with >= ${D.minLikes} likes):`;
    draw();
  }
  // the box is emptied once a movie is chosen (its title shows as the box's placeholder and in the line above the
  // list), so that a click and a new title never run into the old one
  function select(i, note) {
    selected = i;
    input.value = "";
    input.placeholder = `${D.titles[i]} — type another title`;
    input.dataset.selected = D.titles[i];
    list.replaceChildren();
    render();
    if (note) status.textContent += " " + note;
  }

  // ---- search box: suggestions while typing, Enter picks the match (or the most-liked suggestion)
  function showSuggestions() {
    list.replaceChildren();
    active = -1;
    suggestions(input.value).forEach((i) => {
      const li = document.createElement("li");
      li.textContent = `${D.titles[i]} — ${D.likes[i]} likes`;
      li.dataset.row = i;
      li.addEventListener("mousedown", (e) => { e.preventDefault(); select(i); });
      list.appendChild(li);
    });
  }
  input.addEventListener("input", showSuggestions);
  input.addEventListener("keydown", (e) => {
    const items = [...list.children];
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (!items.length) return;
      active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      items.forEach((li, n) => li.classList.toggle("active", n === active));
    } else if (e.key === "Enter") {
      e.preventDefault();
      if (active >= 0 && items[active]) return select(+items[active].dataset.row);
      if (!input.value.trim()) return;
      const rows = lookup(input.value);
      if (rows.length && rows[0] < N) return select(rows[0], severalNote(rows));
      const typed = input.value;
      selected = -1;
      delete input.dataset.selected;
      render();
      if (rows.length) {  // the film it names is one the page does not hold: say why, as embedlab recommend would
        const t = ALL.titles[rows[0]], n = ALL.likes[rows[0]];
        status.textContent = (n ? `${t} has only ${n} likes (< ${D.minLikes}): this page lists the movies with >= ` +
          `${D.minLikes} likes; embedlab recommend answers it, noting that its vector is mostly noise.`
          : `${t} is in the catalogue but nobody liked it in this run, so it has no embedding.`) +
          (rows.length > 1 ? " " + severalNote(rows) + "." : "");
        return;
      }
      // no film: nothing is listed, and the close titles are offered to click
      showSuggestions();
      status.textContent = `No movie matches "${typed}"` +
        (list.children.length ? "; did you mean one of these?" : ".");
    } else if (e.key === "Escape") list.replaceChildren();
  });
  input.addEventListener("blur", () => setTimeout(() => list.replaceChildren(), 150));
  document.querySelectorAll('input[name="explorer-metric"]').forEach((r) => {
    r.checked = r.value === D.metric;
    r.addEventListener("change", render);
  });
  D.queries.forEach((t) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = t;
    b.addEventListener("click", () => select(exact.get(t.toLowerCase())));
    $("explorer-buttons").appendChild(b);
  });
  $("explorer-about").textContent = `${N.toLocaleString()} movies with >= ${D.minLikes} likes, their d = ${dim} vectors stored in this page ` +
    `(float32, ${Math.round(bytes.length / 1024)} KB)${D.capped ? ", the most-liked ones only" : ""}; the lists are computed here and equal ` +
    "those of embedlab recommend for this run.";

  // ---- the map: canvas scatter, hover for the title, selected movie and its top-k highlighted
  const canvas = $("explorer-map"), tip = $("explorer-tip"), colourBox = $("explorer-colour");
  const M = D.map;
  if (!M) { $("explorer-map-box").style.display = "none"; }
  const TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
    "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5"];
  const colourOf = new Map();
  if (M) {
    const counts = new Map();
    M.genre.forEach((g) => { if (g !== null) counts.set(g, (counts.get(g) || 0) + 1); });
    [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).forEach(([g], i) => colourOf.set(g, TAB20[i % 20]));
    $("explorer-legend").replaceChildren(...[...colourOf.entries()].map(([g, c]) => {
      const div = document.createElement("div");
      div.innerHTML = `<span class="sw" style="background:${c}"></span>`;
      div.appendChild(document.createTextNode(`${g} (${counts.get(g)})`));
      return div;
    }));
  }
  let px = [], py = [];
  function layout() {
    const w = canvas.clientWidth || 800, h = canvas.clientHeight || 520, dpr = window.devicePixelRatio || 1;
    canvas.width = w * dpr; canvas.height = h * dpr;
    const xs = M.x.filter((v) => v !== null), ys = M.y.filter((v) => v !== null);
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys), pad = 12;
    px = M.x.map((v) => (v === null ? null : pad + ((v - x0) / (x1 - x0 || 1)) * (w - 2 * pad)));
    py = M.y.map((v) => (v === null ? null : h - pad - ((v - y0) / (y1 - y0 || 1)) * (h - 2 * pad)));
  }
  function draw() {
    if (!M) return;
    layout();
    const ctx = canvas.getContext("2d"), dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const coloured = colourBox.checked, faded = selected >= 0;
    for (let i = 0; i < N; i++) {
      if (px[i] === null) continue;
      ctx.globalAlpha = faded ? 0.35 : 0.7;
      ctx.fillStyle = coloured ? colourOf.get(M.genre[i]) || "#999" : "#8c959f";
      ctx.beginPath(); ctx.arc(px[i], py[i], 2.2, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
    top.forEach(([j]) => {
      if (px[j] === null) return;
      ctx.strokeStyle = "#cf222e"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(px[j], py[j], 6, 0, 2 * Math.PI); ctx.stroke();
    });
    if (selected >= 0 && px[selected] !== null) {
      ctx.fillStyle = "#000"; ctx.strokeStyle = "#fff"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(px[selected], py[selected], 7, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
      ctx.font = "bold 13px system-ui, sans-serif"; ctx.lineWidth = 3; ctx.strokeStyle = "#fff";
      ctx.strokeText(D.titles[selected], px[selected] + 10, py[selected] - 8); ctx.fillText(D.titles[selected], px[selected] + 10, py[selected] - 8);
    }
  }
  function nearest(e) {
    const r = canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
    let best = -1, bd = 64;  // within 8 px
    for (let i = 0; i < N; i++) {
      if (px[i] === null) continue;
      const d2 = (px[i] - x) ** 2 + (py[i] - y) ** 2;
      if (d2 < bd) { bd = d2; best = i; }
    }
    return [best, x, y];
  }
  if (M) {
    canvas.addEventListener("mousemove", (e) => {
      const [i, x, y] = nearest(e);
      if (i < 0) { tip.style.display = "none"; return; }
      tip.textContent = `${D.titles[i]} · ${D.genres[i]} · ${D.likes[i]} likes`;
      tip.style.left = `${Math.min(x + 12, canvas.clientWidth - 200)}px`; tip.style.top = `${y + 12}px`; tip.style.display = "block";
    });
    canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    canvas.addEventListener("click", (e) => { const [i] = nearest(e); if (i >= 0) select(i); });
    colourBox.addEventListener("change", draw);
    window.addEventListener("resize", draw);
  }
  if (D.queries.length) select(exact.get(D.queries[0].toLowerCase())); else draw();
})();
