// The rewind console: one page over the service's JSON API. No framework, no build step, nothing
// fetched from elsewhere. Every value is put in the page as text (never as HTML), and decimals stay
// exact: tables show them rounded, the exact string is the cell's title and data-exact.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PANELS = ["overview", "state", "timetravel", "history"];
  const LAG_KEEP_MS = 5 * 60 * 1000;
  const SHOWN_ROWS = 1000;
  const FIRST_ROWS = 100;
  const ROWS_PER_FRAME = 300;
  const SHOWN_EVENTS = 2000;
  const POLL_MS = 2000;
  const POLL_RECOVERING_MS = 250;
  const POLL_JOB_MS = 300;
  const DEAD_LETTER_EVERY = 5;
  const POSITIONS_EVERY = 5;

  const drawing = new WeakMap();
  const page = {
    token: sessionStorage.getItem("rewind.token") || "",
    panel: "overview",
    lag: [],
    seen: [],
    positions: [],
    positionsText: "",
    statementsKey: "",
    dropDir: "",
    overviewTicks: 0,
    stateTicks: 0,
    recovering: false,
    failures: 0,
  };

  // Calls

  async function api(path, method = "GET") {
    const headers = { Accept: "application/json" };
    if (page.token) headers.Authorization = "Bearer " + page.token;
    const response = await fetch(path, { method, headers, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return { status: response.status, ok: response.ok, body };
  }

  function showError(text) {
    const box = $("error");
    box.textContent = text || "";
    box.hidden = !text;
  }

  function failure(reply, what) {
    const body = reply.body || {};
    let text = `${what}: ${body.error || "HTTP " + reply.status}`;
    if (body.fix) text += ` (fix: ${body.fix})`;
    if (reply.status === 401 || reply.status === 403) text += " Enter the token at the top.";
    return text;
  }

  // Rendering helpers

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // A decimal string rounded half away from zero to `places`, with thousands separators.
  function roundDecimal(text, places) {
    const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(text));
    if (!match) return String(text);
    const [, sign, whole, fraction = ""] = match;
    const padded = (fraction + "0".repeat(places + 1)).slice(0, places + 1);
    let digits = BigInt(whole + padded.slice(0, places));
    if (Number(padded[places]) >= 5) digits += 1n;
    const shown = digits.toString().padStart(places + 1, "0");
    const integer = shown.slice(0, shown.length - places).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    const decimals = places ? "." + shown.slice(shown.length - places) : "";
    return (sign && digits !== 0n ? "-" : "") + integer + decimals;
  }

  function numCell(value, places = 2) {
    if (value === null || value === undefined) return el("td", { className: "num muted", text: "–" });
    const exact = String(value);
    const cell = el("td", { className: "num", title: exact, "data-exact": exact }, roundDecimal(exact, places));
    if (exact.startsWith("-")) cell.classList.add("negative");
    return cell;
  }

  function textCell(value) {
    return el("td", {}, value === null || value === undefined ? "–" : String(value));
  }

  function link(href, text, label) {
    return el("a", { href, "aria-label": label }, text);
  }

  function accountLinks(account) {
    const cell = el("td", { "data-exact": account });
    cell.append(
      link(`#state/account/${encodeURIComponent(account)}`, account, `account ${account}`),
      " ",
      link(`#history/account/${encodeURIComponent(account)}`, "⟲", `history of account ${account}`),
    );
    return cell;
  }

  function symbolLinks(account, symbol) {
    const cell = el("td", { "data-exact": symbol });
    cell.append(
      symbol,
      " ",
      link(
        `#history/account/${encodeURIComponent(account)}/${encodeURIComponent(symbol)}`,
        "⟲",
        `history of ${symbol} in account ${account}`,
      ),
    );
    return cell;
  }

  function orderLink(orderId) {
    return link(`#history/order/${encodeURIComponent(orderId)}`, orderId, `history of order ${orderId}`);
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function badge(node, text, tone) {
    node.textContent = text;
    node.className = "badge " + (tone || "");
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function bytes(size) {
    if (size === null || size === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = size;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
  }

  function clock(date) {
    return date.toISOString().slice(11, 19) + "Z";
  }

  const TONES = {
    OK: "good", HEALTHY: "good", RECOVERED: "good", ok: "good", live: "good", done: "good",
    WARNING: "warn", REWOUND: "warn", FAILURE_DETECTED: "warn", RECOVERY_IN_PROGRESS: "warn",
    VALIDATING: "warn", running: "warn",
    STALLED: "bad", STOPPED: "bad", DATA_LOSS: "bad", OFFSET_BEYOND_LOG_END: "bad",
    RECOVERY_FAILED: "bad", failing: "bad", failed: "bad",
  };

  // Overview

  function renderRecovery(status) {
    badge($("recovery-state"), status.state, TONES[status.state]);
    const percent = Number(status.progress_percent);
    $("recovery-percent").textContent = percent.toFixed(1);
    $("recovery-progress").value = percent;
    $("recovery-step").textContent = status.current_step ? `· ${status.current_step}` : "";
    $("recovery-eta").textContent =
      status.eta_seconds !== null && status.eta_seconds !== undefined ? `ETA ${age(status.eta_seconds)}` : "";
    $("recovery").dataset.state = status.state;
    $("recovery").dataset.percent = String(percent);
    const steps = Object.entries(status.steps || {}).map(([name, step]) => {
      const total = step.total ? ` ${step.done}/${step.total}` : "";
      const seconds = step.seconds !== null && step.seconds !== undefined ? ` ${step.seconds} s` : "";
      return el("li", { className: "step " + step.status, title: step.detail || "" }, `${name}: ${step.status}${total}${seconds}`);
    });
    $("recovery-steps").replaceChildren(...steps);
    const error = $("recovery-error");
    error.hidden = !status.error;
    error.textContent = status.error || "";
    const key = `${status.state} ${percent.toFixed(1)} ${status.current_step || ""}`;
    const last = page.seen[page.seen.length - 1];
    if (!last || last.key !== key) {
      page.seen.push({ key, at: new Date() });
      if (page.seen.length > 40) page.seen.shift();
      $("recovery-seen").replaceChildren(
        ...page.seen
          .slice()
          .reverse()
          .map((seen) => el("li", { "data-state": seen.key.split(" ")[0] }, `${clock(seen.at)} ${seen.key}`)),
      );
    }
    page.recovering = !["HEALTHY", "RECOVERED", "RECOVERY_FAILED"].includes(status.state) || status.retrying;
  }

  function renderRecoveryHistory(body) {
    const records = body.history || [];
    fill(
      $("recovery-history").tBodies[0],
      records.slice(0, 20).map((record) =>
        el(
          "tr",
          {},
          textCell(record.started_at),
          textCell(record.kind),
          el("td", { title: record.detail || "" }, record.reason || "–"),
          el("td", {}, el("span", { className: "badge " + (TONES[record.outcome] || "") }, record.outcome || "–")),
          numCell(record.duration_seconds === null ? null : String(record.duration_seconds), 3),
        ),
      ),
    );
  }

  function renderHealth(reply) {
    const body = reply.body || {};
    badge($("health-status"), body.status || `HTTP ${reply.status}`, TONES[body.status] || "bad");
    const items = Object.entries(body.checks || {}).map(([name, check]) => {
      const details = Object.entries(check)
        .filter(([key]) => !["ok", "error", "fix"].includes(key))
        .map(([key, value]) => `${key}: ${typeof value === "object" ? JSON.stringify(value) : value}`)
        .join(", ");
      return el(
        "li",
        { className: check.ok ? "ok" : "failing", "data-check": name },
        el("span", { className: "badge " + (check.ok ? "good" : "bad") }, check.ok ? "ok" : "failing"),
        " ",
        el("strong", {}, name),
        check.error ? el("div", { className: "error" }, check.error + (check.fix ? ` (fix: ${check.fix})` : "")) : null,
        details ? el("div", { className: "muted small" }, details) : null,
      );
    });
    $("health").replaceChildren(...items);
  }

  // Partitions of the events topic (the one with the most partitions) by number; others by the
  // last part of their topic's name, e.g. config[0].
  function lagKey(body, part) {
    const counts = {};
    for (const p of body.partitions || []) counts[p.topic] = (counts[p.topic] || 0) + 1;
    const events = body.topic || Object.keys(counts).sort((a, b) => counts[b] - counts[a])[0];
    if (part.topic === events) return String(part.partition);
    return `${String(part.topic).split(".").pop()}[${part.partition}]`;
  }

  function renderLag(body) {
    badge($("lag-status"), body.status, TONES[body.status]);
    const evaluated = body.evaluated_at * 1000;
    const last = page.lag[page.lag.length - 1];
    if (!last || last.t !== evaluated) {
      const sample = { t: evaluated, parts: {} };
      for (const part of body.partitions || []) sample.parts[lagKey(body, part)] = part.lag_messages || 0;
      page.lag.push(sample);
    }
    while (page.lag.length && page.lag[0].t < evaluated - LAG_KEEP_MS) page.lag.shift();
    fill(
      $("lag").tBodies[0],
      (body.partitions || []).map((part) =>
        el(
          "tr",
          { "data-partition": lagKey(body, part) },
          el(
            "td",
            { title: `${part.topic}[${part.partition}]` },
            el("span", { className: `swatch s${colour(lagKey(body, part))}` }),
            ` ${lagKey(body, part)}`,
          ),
          el("td", { title: part.reason || "" }, el("span", { className: "badge " + (TONES[part.status] || "") }, part.status)),
          numCell(part.lag_messages === null ? null : String(part.lag_messages), 0),
          numCell(part.lag_seconds === null ? null : String(part.lag_seconds), 3),
          numCell(part.consume_rate === null ? null : String(part.consume_rate), 1),
        ),
      ),
    );
    $("lag-window").textContent = `last ${age((evaluated - (page.lag[0] ? page.lag[0].t : evaluated)) / 1000)}, ${page.lag.length} samples; max ${Math.max(0, ...page.lag.flatMap((s) => Object.values(s.parts)))} messages`;
    drawLagChart();
  }

  function colour(key) {
    const number = Number(key);
    return Number.isInteger(number) ? number % 8 : 7;
  }

  function drawLagChart() {
    const svg = $("lag-chart");
    const ns = "http://www.w3.org/2000/svg";
    const width = 300;
    const height = 80;
    const samples = page.lag;
    const nodes = [];
    const axis = document.createElementNS(ns, "line");
    for (const [name, value] of Object.entries({ x1: 0, y1: height - 1, x2: width, y2: height - 1 })) axis.setAttribute(name, value);
    axis.setAttribute("class", "axis");
    nodes.push(axis);
    if (samples.length) {
      const start = samples[0].t;
      const span = Math.max(1, samples[samples.length - 1].t - start);
      const top = Math.max(1, ...samples.flatMap((s) => Object.values(s.parts)));
      const partitions = Object.keys(samples[samples.length - 1].parts);
      for (const partition of partitions) {
        const points = samples
          .filter((s) => partition in s.parts)
          .map((s) => `${(((s.t - start) / span) * width).toFixed(1)},${(height - 2 - (s.parts[partition] / top) * (height - 6)).toFixed(1)}`);
        if (points.length === 1) points.push(`${width},${points[0].split(",")[1]}`);
        const line = document.createElementNS(ns, "polyline");
        line.setAttribute("points", points.join(" "));
        line.setAttribute("class", `line s${colour(partition)}`);
        nodes.push(line);
      }
    }
    svg.replaceChildren(...nodes);
  }

  function renderSnapshots(body) {
    const now = Date.now() / 1000;
    fill(
      $("snapshots").tBodies[0],
      (body.snapshots || []).map((row) =>
        el(
          "tr",
          { "data-store": row.store, "data-location": row.location || "local" },
          textCell(row.store),
          numCell(row.offset === undefined ? null : String(row.offset), 0),
          el("td", { title: row.created_at ? new Date(row.created_at * 1000).toISOString() : "" }, row.created_at ? age(now - row.created_at) : "–"),
          el("td", { className: "num", title: row.file_size === undefined ? "" : `${row.file_size} bytes` }, bytes(row.file_size)),
          el("td", { title: row.path || "" }, row.error ? `${row.location || "local"}: ${row.store ? "damaged" : "not listed"}: ${row.error}` : row.location || "local"),
        ),
      ),
    );
  }

  // Reconciliation

  function breakKeyCell(item) {
    if (item.entity === "order") return el("td", { "data-exact": item.key }, orderLink(item.key));
    if (item.entity === "position" && item.account) return symbolLinks(item.account, item.key);
    return el("td", { "data-exact": item.key }, item.key);
  }

  function renderReconciliation(body) {
    const last = body.last;
    const table = $("reconcile-breaks");
    if (!last) {
      badge($("reconcile-status"), "none yet", "");
      $("reconcile-summary").textContent = "No reconciliation since the service started.";
      $("reconcile-counts").replaceChildren();
      fill(table.tBodies[0], []);
      table.dataset.finished = "";
      return;
    }
    const finished = new Date(last.finished_at * 1000);
    badge($("reconcile-status"), last.clean ? "clean" : `${last.breaks_total} breaks`, last.clean ? "good" : "bad");
    const summary = $("reconcile-summary");
    summary.textContent = `${last.statement.name}: ${age(Date.now() / 1000 - last.finished_at)} ago, against ${last.compared_with.source}`;
    summary.title = finished.toISOString();
    if (table.dataset.finished === String(last.finished_at)) return; // drawn already: keep focus and scroll
    const counts = [
      ...Object.entries(last.matches || {}).map(([kind, count]) => el("li", { "data-matches": kind }, `${kind}: ${count} match`)),
      ...Object.entries(last.breaks_by_kind || {})
        .filter(([, count]) => count > 0)
        .map(([kind, count]) => el("li", { "data-breaks": kind }, el("span", { className: "badge bad" }, `${kind}: ${count}`))),
    ];
    $("reconcile-counts").replaceChildren(...counts);
    const rows = last.breaks.map((item) =>
      el(
        "tr",
        { "data-kind": item.kind, "data-entity": item.entity },
        el("td", { title: item.entity }, item.kind),
        item.account ? accountLinks(item.account) : textCell(null),
        breakKeyCell(item),
        numCell(item.statement, 4),
        numCell(item.rewind, 4),
        numCell(item.difference, 4),
      ),
    );
    if (last.breaks_total > last.breaks.length) {
      rows.push(el("tr", {}, el("td", { colspan: 6, className: "muted" }, `… ${last.breaks_total - last.breaks.length} more (rewind reconcile lists them all)`)));
    }
    fill(table.tBodies[0], rows);
    table.dataset.finished = String(last.finished_at);
  }

  function fillStatementSelect(select, statements, kind, optional) {
    const chosen = select.value;
    const ordered = [...statements.filter((s) => s.kind === kind), ...statements.filter((s) => s.kind !== kind)];
    const options = optional ? [el("option", { value: "" }, "none")] : [];
    if (!optional && !ordered.length) options.push(el("option", { value: "" }, "(no statement in the drop folder)"));
    options.push(...ordered.map((s) => el("option", { value: s.name }, s.name)));
    select.replaceChildren(...options);
    if (ordered.some((s) => s.name === chosen)) select.value = chosen;
    else select.value = optional ? "" : ordered.length ? ordered[0].name : "";
  }

  function renderStatements(body) {
    page.dropDir = body.drop_dir;
    $("reconcile-folder").textContent = `statements from ${body.drop_dir}`;
    const key = JSON.stringify(body.statements.map((s) => s.name));
    if (key === page.statementsKey) return;
    page.statementsKey = key;
    fillStatementSelect($("reconcile-positions"), body.statements, "positions", false);
    fillStatementSelect($("reconcile-balances"), body.statements, "balances", true);
    fillStatementSelect($("reconcile-orders"), body.statements, "orders", true);
  }

  async function reconcileNow() {
    const positions = $("reconcile-positions").value;
    if (!positions) throw new Error(`reconcile: put a statement file in the drop folder ${page.dropDir || ""} first`);
    const params = new URLSearchParams({ positions });
    for (const kind of ["balances", "orders"]) {
      const name = $(`reconcile-${kind}`).value;
      if (name) params.set(kind, name);
    }
    const asOf = $("reconcile-as-of").value.trim();
    if (asOf) params.set("as_of", asOf);
    const files = [...params].filter(([kind]) => kind !== "as_of").map(([kind, name]) => `${kind} ${name}`).join(", ");
    const question = `Reconcile the state with ${files}${asOf ? ` as of ${asOf}` : ""}? It compares and changes nothing.`;
    if (!(await confirmAction(question))) return;
    $("reconcile").disabled = true;
    $("action-result").textContent = "reconcile: running…";
    let reply;
    try {
      reply = await api(`/reconcile?${params}`, "POST");
    } finally {
      renderMode();
    }
    if (!reply.ok) {
      $("action-result").textContent = "";
      throw new Error(failure(reply, "reconcile"));
    }
    const report = reply.body;
    $("action-result").textContent = `reconcile: ${report.clean ? "clean" : report.breaks.length + " breaks"}`;
    const last = await api("/reconcile");
    if (last.ok) renderReconciliation(last.body);
  }

  function renderAnomalies(body) {
    $("anomalies-total").textContent = `${body.total} in all`;
    fill(
      $("anomalies").tBodies[0],
      (body.anomalies || []).map((row) =>
        el(
          "tr",
          { className: row.benign ? "benign" : "" },
          textCell(row.partition),
          numCell(String(row.offset), 0),
          el("td", { title: row.event_id }, row.event_type),
          el("td", {}, el("span", { className: "badge " + (row.benign ? "" : "warn") }, row.kind)),
          el("td", { className: "wrap" }, row.detail),
        ),
      ),
    );
  }

  function renderDeadLetters(body) {
    $("dead-total").textContent = `${body.total} in ${body.topic}`;
    fill(
      $("dead-letters").tBodies[0],
      (body.dead_letters || []).map((row) =>
        el(
          "tr",
          {},
          textCell(row.logged_at),
          textCell(row.source_topic ? `${row.source_topic}[${row.source_partition}]@${row.source_offset}` : "–"),
          textCell(row.key),
          el("td", { className: "wrap", title: row.error_class || "" }, row.error || "–"),
        ),
      ),
    );
  }

  async function refreshOverview() {
    const recovery = await api("/recovery/status");
    if (!recovery.ok) throw new Error(failure(recovery, "recovery status"));
    renderRecovery(recovery.body);
    if (page.recovering && page.overviewTicks % 8 !== 0) {
      page.overviewTicks += 1;
      return;
    }
    const [health, lag, snapshots, history, anomalies, reconciliation, statements] = await Promise.all([
      api("/health"),
      api("/lag"),
      api("/snapshots"),
      api("/recovery/history"),
      api("/state/anomalies"),
      api("/reconcile"),
      api("/reconcile/statements"),
    ]);
    renderHealth(health);
    if (lag.ok) renderLag(lag.body);
    else badge($("lag-status"), lag.body && lag.body.error ? "not measured" : `HTTP ${lag.status}`, "warn");
    if (snapshots.ok) renderSnapshots(snapshots.body);
    if (history.ok) renderRecoveryHistory(history.body);
    if (anomalies.ok) renderAnomalies(anomalies.body);
    if (reconciliation.ok) renderReconciliation(reconciliation.body);
    if (statements.ok) renderStatements(statements.body);
    markOnce("rewind:overview");
    if (page.overviewTicks % DEAD_LETTER_EVERY === 0) {
      const dead = await api("/dead-letters");
      if (dead.ok) renderDeadLetters(dead.body);
    }
    page.overviewTicks += 1;
    for (const [name, reply] of Object.entries({ snapshots, history, anomalies, reconciliation, statements })) {
      if (!reply.ok) throw new Error(failure(reply, name));
    }
  }

  // State

  function positionRow(row) {
    return el(
      "tr",
      { "data-account": row.account_id, "data-symbol": row.symbol },
      accountLinks(row.account_id),
      symbolLinks(row.account_id, row.symbol),
      numCell(row.quantity, 4),
      numCell(row.average_cost, 4),
      numCell(row.realized_pnl),
      numCell(row.unrealized_pnl),
      numCell(row.fees),
    );
  }

  // The first FIRST_ROWS rows are drawn at once, the rest ROWS_PER_FRAME per animation frame, so
  // the page paints before thousands of rows are built; a newer call stops an older one's drawing.
  // data-complete is "true" once every shown row is in the table.
  function renderPositionTable(table, countNode, rows, filter) {
    const wanted = (filter || "").trim().toLowerCase();
    const matching = wanted
      ? rows.filter((r) => r.account_id.toLowerCase().includes(wanted) || r.symbol.toLowerCase().includes(wanted))
      : rows;
    const shown = matching.slice(0, SHOWN_ROWS);
    const generation = (drawing.get(table) || 0) + 1;
    drawing.set(table, generation);
    table.dataset.complete = "false";
    fill(table.tBodies[0], shown.slice(0, FIRST_ROWS).map(positionRow));
    countNode.textContent =
      matching.length > SHOWN_ROWS
        ? `showing ${SHOWN_ROWS} of ${matching.length} (search to narrow)`
        : `${matching.length}${wanted ? " matching" : ""} of ${rows.length}`;
    table.dataset.rows = String(shown.length);
    markOnce(`rewind:${table.id}`);
    let next = FIRST_ROWS;
    const more = () => {
      if (drawing.get(table) !== generation) return;
      if (next < shown.length) {
        table.tBodies[0].append(...shown.slice(next, next + ROWS_PER_FRAME).map(positionRow));
        next += ROWS_PER_FRAME;
        requestAnimationFrame(more);
        return;
      }
      table.dataset.complete = "true";
      markOnce(`rewind:${table.id}-all`);
    };
    if (next < shown.length) requestAnimationFrame(more);
    else more();
  }

  // Performance marks for bench/bench_console.py: when each view first showed its data.
  const marked = new Set();
  function markOnce(name) {
    if (marked.has(name)) return;
    marked.add(name);
    performance.mark(name);
  }

  async function refreshPositions() {
    const reply = await api("/state/positions");
    if (!reply.ok) throw new Error(failure(reply, "positions"));
    const text = JSON.stringify(reply.body.positions);
    if (text === page.positionsText) return;
    page.positionsText = text;
    page.positions = reply.body.positions;
    renderPositionTable($("positions"), $("positions-count"), page.positions, $("search").value);
  }

  function fieldList(entries) {
    const list = el("dl", { className: "fields" });
    for (const [name, value, places] of entries) {
      list.append(el("dt", {}, name));
      const exact = value === null || value === undefined ? null : String(value);
      const shown = exact !== null && places !== undefined ? roundDecimal(exact, places) : exact === null ? "–" : exact;
      list.append(el("dd", { title: exact || "", "data-exact": exact || "", "data-field": name }, shown));
    }
    return list;
  }

  async function showOrder(orderId) {
    const box = $("order");
    const reply = await api(`/state/orders/${encodeURIComponent(orderId)}`);
    box.hidden = false;
    if (!reply.ok) {
      box.replaceChildren(el("p", { className: "error" }, failure(reply, `order ${orderId}`)));
      return;
    }
    const o = reply.body;
    box.replaceChildren(
      el("h3", {}, "Order ", orderLink(o.order_id), " ", el("span", { className: "badge" }, o.status)),
      fieldList([
        ["account_id", o.account_id],
        ["symbol", o.symbol],
        ["side", o.side],
        ["order_type", o.order_type],
        ["limit_price", o.limit_price, 4],
        ["quantity", o.quantity, 4],
        ["filled", o.filled, 4],
        ["leaves", o.leaves, 4],
        ["average_fill_price", o.average_fill_price, 4],
        ["filled_notional", o.filled_notional, 2],
        ["event_count", o.event_count],
        ["last_offset", o.last_offset],
      ]),
      el("p", {}, link(`#history/order/${encodeURIComponent(o.order_id)}`, "Show its history", `history of order ${o.order_id}`)),
    );
  }

  async function showAccount(account) {
    const box = $("account");
    const reply = await api(`/state/accounts/${encodeURIComponent(account)}`);
    box.hidden = false;
    if (!reply.ok) {
      box.replaceChildren(el("p", { className: "error" }, failure(reply, `account ${account}`)));
      return;
    }
    const a = reply.body;
    const risk = a.risk || {};
    const balances = el(
      "table",
      { id: "account-balances" },
      el("thead", {}, el("tr", {}, el("th", {}, "Currency"), el("th", { className: "num" }, "Amount"))),
      el("tbody", {}, ...a.balances.map((b) => el("tr", {}, textCell(b.currency), numCell(b.amount)))),
    );
    box.replaceChildren(
      el("h3", {}, `Account ${a.account_id} `, link(`#history/account/${encodeURIComponent(a.account_id)}`, "history", `history of account ${a.account_id}`)),
      el("h4", {}, "Risk"),
      fieldList([
        ["gross_exposure", risk.gross_exposure, 2],
        ["net_exposure", risk.net_exposure, 2],
        ["realized_pnl", risk.realized_pnl, 2],
        ["open_order_notional", risk.open_order_notional, 2],
        ["fees", risk.fees, 2],
        ["gross_limit", risk.gross_limit, 2],
        ["gross_limit_usage_percent", risk.gross_limit_usage_percent, 2],
      ]),
      el("h4", {}, "Balances"),
      balances,
      el("p", { className: "muted" }, `${a.positions.length} positions (filtered below)`),
    );
    $("search").value = account;
    renderPositionTable($("positions"), $("positions-count"), page.positions, account);
  }

  // Jobs (time travel, history)

  async function runJob(kind, query, parts) {
    const reply = await api(`/${kind}?${query}`, "POST");
    if (!reply.ok) throw new Error(failure(reply, kind === "timetravel" ? "time travel" : "history"));
    parts.box.hidden = false;
    let job = reply.body;
    for (;;) {
      const progress = job.progress;
      badge(parts.phase, `${job.status} · ${progress.phase}`, TONES[job.status]);
      parts.percent.textContent = progress.total ? `${progress.done} of ${progress.total} (${progress.percent}%)` : "";
      parts.progress.value = progress.percent;
      parts.box.dataset.status = job.status;
      if (job.status !== "running") break;
      await new Promise((resolve) => setTimeout(resolve, POLL_JOB_MS));
      const next = await api(`/${kind}/${job.id}`);
      if (!next.ok) throw new Error(failure(next, "job"));
      job = next.body;
    }
    if (job.status === "failed") throw new Error(`${job.error}${job.fix ? ` (fix: ${job.fix})` : ""}`);
    return job.result;
  }

  function renderDiff(diff) {
    const box = $("tt-diff");
    if (diff.identical) {
      box.replaceChildren(el("p", { "data-identical": "true" }, `identical to now: digest ${diff.a.digest}`));
      return;
    }
    const parts = [];
    for (const store of diff.stores) {
      if (store.identical) {
        parts.push(el("p", { className: "muted" }, `${store.store}: identical`));
        continue;
      }
      const where =
        store.digest_a === null ? `only now (offset ${store.offset_b})`
          : store.digest_b === null ? `only then (offset ${store.offset_a})`
            : `offset ${store.offset_a} → ${store.offset_b}`;
      const details = el("details", { className: "store", "data-store": store.store }, el("summary", {}, `${store.store}: ${where}`));
      for (const [table, change] of Object.entries(store.tables)) {
        details.append(el("h4", {}, `${table}: ${change.rows_a} → ${change.rows_b} rows (${change.added} added, ${change.removed} removed, ${change.changed} changed)`));
        const list = el("ul", { className: "changes" });
        for (const row of change.changes) {
          if (row.kind === "changed") {
            const fields = Object.entries(row.fields).map(([name, pair]) => `${name}: ${pair.old ?? "–"} → ${pair.new ?? "–"}`).join("; ");
            list.append(el("li", { className: "changed" }, `~ ${row.key}  ${fields}`));
          } else {
            list.append(el("li", { className: row.kind }, `${row.kind === "added" ? "+" : "-"} ${row.key}`));
          }
        }
        if (change.truncated) list.append(el("li", { className: "muted" }, "… more rows differ (counts above are exact)"));
        details.append(list);
      }
      parts.push(details);
    }
    box.replaceChildren(...parts);
  }

  async function startTimeTravel() {
    const mode = document.querySelector('input[name="tt-mode"]:checked').value;
    const value = (mode === "at" ? $("tt-at") : $("tt-to")).value.trim();
    if (!value) throw new Error(mode === "at" ? "enter a time, e.g. 2026-11-21T14:03:00Z" : "enter offsets, e.g. 0:1200");
    $("tt-result").hidden = true;
    $("tt-result").dataset.ready = "false";
    $("tt-start").disabled = true;
    performance.clearMarks("rewind:timetravel-start");
    performance.clearMarks("rewind:timetravel-done");
    performance.mark("rewind:timetravel-start");
    try {
      const result = await runJob("timetravel", `${mode}=${encodeURIComponent(value)}`, {
        box: $("tt-job"), phase: $("tt-phase"), percent: $("tt-percent"), progress: $("tt-progress"),
      });
      const points = Object.entries(result.points).map(([store, events]) => `${store}: first ${events}`).join(", ");
      const bases = result.stores.map((s) => `${s.store} from ${s.snapshot_offset === null ? "log start" : "snapshot @" + s.snapshot_offset}`).join(", ");
      $("tt-summary").textContent = `${mode === "at" ? "At " + value : "To " + value}: ${points}. Built ${bases}.`;
      renderDiff(result.diff);
      renderPositionTable($("tt-positions"), $("tt-count"), result.state.positions, "");
      fill(
        $("tt-balances").tBodies[0],
        result.state.balances.slice(0, SHOWN_ROWS).map((b) => el("tr", {}, accountLinks(b.account_id), textCell(b.currency), numCell(b.amount))),
      );
      $("tt-result").hidden = false;
      $("tt-result").dataset.ready = "true";
      performance.mark("rewind:timetravel-done");
    } finally {
      $("tt-start").disabled = false;
    }
  }

  function stateAfter(row) {
    const state = row.state || {};
    if ("order" in state) {
      const o = state.order;
      if (!o) return [el("span", {}, "order: none")];
      return [
        el("span", { className: "badge" }, o.status),
        fieldList([
          ["filled", o.filled, 4], ["quantity", o.quantity, 4], ["leaves", o.leaves, 4],
          ["average_fill_price", o.average_fill_price, 4], ["limit_price", o.limit_price, 4],
        ]),
      ];
    }
    const parts = [];
    if ("position" in state) {
      const p = state.position;
      parts.push(p ? fieldList([["position", p.quantity, 4], ["average_cost", p.average_cost, 4], ["realized_pnl", p.realized_pnl, 2], ["fees", p.fees, 2]]) : el("span", {}, "position: none"));
    }
    if (state.risk) {
      const r = state.risk;
      parts.push(fieldList([["gross_exposure", r.gross_exposure, 2], ["net_exposure", r.net_exposure, 2], ["open_order_notional", r.open_order_notional, 2]]));
    }
    if (state.balances && state.balances.length) {
      parts.push(fieldList(state.balances.map((b) => [`balance ${b.currency}`, b.amount, 2])));
    }
    return parts;
  }

  async function startHistory(kind, id, symbol) {
    $("history-kind").value = kind;
    $("history-id").value = id;
    $("history-symbol").value = symbol || "";
    let query = `${kind}=${encodeURIComponent(id)}`;
    if (symbol) query += `&symbol=${encodeURIComponent(symbol)}`;
    $("timeline").replaceChildren();
    $("timeline").dataset.ready = "false";
    $("history-summary").textContent = "";
    const result = await runJob("history", query, {
      box: $("history-job"), phase: $("history-phase"), percent: $("history-percent"), progress: $("history-progress"),
    });
    const start = result.start.snapshot_offset === null ? "the log start" : `snapshot @${result.start.snapshot_offset}`;
    const anomalies = result.rows.filter((r) => r.anomaly).length;
    $("history-summary").textContent =
      `${kind} ${id}${symbol ? " " + symbol : ""}: partition ${result.partition}, offsets ${result.window.first_offset}–${result.window.last_offset}, ` +
      `replayed ${result.start.events_replayed} events from ${start}; ${result.rows.length} events, ${anomalies} anomalies.`;
    const shown = result.rows.slice(-SHOWN_EVENTS);
    if (shown.length < result.rows.length) {
      $("history-summary").textContent += ` Showing the last ${SHOWN_EVENTS}: narrow it with a symbol.`;
    }
    $("timeline").replaceChildren(
      ...shown.map((row) => {
        const fields = Object.entries(row.fields).map(([name, value]) => `${name}=${value}`).join(" ");
        const item = el(
          "li",
          { className: row.anomaly ? "event anomaly" : "event", "data-partition": row.partition, "data-offset": row.offset, "data-event-type": row.event_type, "data-state": JSON.stringify(row.state) },
          el("div", { className: "when" }, `p${row.partition}@${row.offset}`, el("br"), el("time", { datetime: row.logged_at }, row.logged_at)),
          el(
            "div",
            { className: "what" },
            el("strong", {}, row.event_type),
            " ",
            row.account_id ? link(`#history/account/${encodeURIComponent(row.account_id)}`, row.account_id, `history of account ${row.account_id}`) : null,
            " ",
            row.fields.order_id ? orderLink(row.fields.order_id) : null,
            el("div", { className: "muted small wrap" }, fields),
            row.anomaly ? el("div", { className: "error" }, `anomaly ${row.anomaly.kind}${row.anomaly.benign ? " (benign)" : ""}: ${row.anomaly.detail}`) : null,
            el("div", { className: "after" }, el("span", { className: "muted" }, "after: "), ...stateAfter(row)),
          ),
        );
        return item;
      }),
    );
    $("timeline").dataset.ready = "true";
  }

  // Mutations

  function confirmAction(text) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      const done = (answer) => {
        $("confirm-ok").removeEventListener("click", ok);
        $("confirm-cancel").removeEventListener("click", cancel);
        dialog.removeEventListener("cancel", cancel);
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      const ok = () => done(true);
      const cancel = () => done(false);
      $("confirm-ok").addEventListener("click", ok);
      $("confirm-cancel").addEventListener("click", cancel);
      dialog.addEventListener("cancel", cancel);
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function mutate(path, question, what) {
    if (!(await confirmAction(question))) return;
    const reply = await api(path, "POST");
    $("action-result").textContent = reply.ok ? `${what}: done` : failure(reply, what);
    if (reply.ok) await refreshOverview();
  }

  function renderMode() {
    $("mode").textContent = page.token ? "token set" : "read-only";
    for (const button of document.querySelectorAll(".mutation")) {
      button.disabled = !page.token;
      button.title = page.token ? "" : "Enter the token first";
    }
  }

  // Navigation, polling, keyboard

  function route() {
    const hash = decodeURIComponent(location.hash.replace(/^#/, ""));
    const [panel, ...rest] = hash.split("/");
    page.panel = PANELS.includes(panel) ? panel : "overview";
    for (const name of PANELS) {
      $(`panel-${name}`).hidden = name !== page.panel;
      const tab = $(`tab-${name}`);
      if (name === page.panel) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    const act = async () => {
      if (page.panel === "state") {
        await refreshPositions();
        if (rest[0] === "account" && rest[1]) await showAccount(rest[1]);
        if (rest[0] === "order" && rest[1]) await showOrder(rest[1]);
      } else if (page.panel === "history" && (rest[0] === "order" || rest[0] === "account") && rest[1]) {
        await startHistory(rest[0], rest[1], rest[0] === "account" ? rest[2] : undefined);
      } else if (page.panel === "overview") {
        await refreshOverview();
      }
    };
    guard(act());
  }

  function guard(promise) {
    promise.then(
      () => showError(""),
      (error) => showError(error.message || String(error)),
    );
  }

  async function tick() {
    try {
      if (page.panel === "overview") await refreshOverview();
      else if (page.panel === "state") {
        page.stateTicks += 1;
        if (page.stateTicks % POSITIONS_EVERY === 0) await refreshPositions();
      }
      else {
        const recovery = await api("/recovery/status");
        if (recovery.ok) renderRecovery(recovery.body);
      }
      page.failures = 0;
      $("live").textContent = `live · ${clock(new Date())}`;
      $("live").className = "live good";
    } catch (error) {
      page.failures += 1;
      $("live").textContent = `retrying (${page.failures})`;
      $("live").className = "live bad";
      if (error instanceof Error && !(error instanceof TypeError)) showError(error.message);
    }
    setTimeout(tick, page.recovering ? POLL_RECOVERING_MS : POLL_MS);
  }

  function setTheme(theme) {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("rewind.theme", theme);
    $("theme").textContent = theme === "dark" ? "Light theme" : "Dark theme";
    $("theme").setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
  }

  function currentTheme() {
    return document.documentElement.dataset.theme || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  }

  function typing(target) {
    return target instanceof HTMLInputElement || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement;
  }

  function start() {
    const saved = localStorage.getItem("rewind.theme");
    if (saved === "dark" || saved === "light") setTheme(saved);
    else $("theme").textContent = currentTheme() === "dark" ? "Light theme" : "Dark theme";
    $("token").value = page.token;
    renderMode();

    $("theme").addEventListener("click", () => setTheme(currentTheme() === "dark" ? "light" : "dark"));
    $("help-open").addEventListener("click", () => $("help").showModal());
    $("help-close").addEventListener("click", () => $("help").close());
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      page.token = $("token").value.trim();
      if (page.token) sessionStorage.setItem("rewind.token", page.token);
      else sessionStorage.removeItem("rewind.token");
      renderMode();
      route();
    });
    $("search-form").addEventListener("submit", (event) => event.preventDefault());
    $("search").addEventListener("input", () => renderPositionTable($("positions"), $("positions-count"), page.positions, $("search").value));
    $("order-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("order-id").value.trim();
      if (id) location.hash = `#state/order/${encodeURIComponent(id)}`;
    });
    for (const radio of document.querySelectorAll('input[name="tt-mode"]')) {
      radio.addEventListener("change", () => {
        const mode = document.querySelector('input[name="tt-mode"]:checked').value;
        $("tt-at").disabled = mode !== "at";
        $("tt-to").disabled = mode !== "to";
      });
    }
    $("tt-form").addEventListener("submit", (event) => {
      event.preventDefault();
      guard(startTimeTravel());
    });
    $("history-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("history-id").value.trim();
      if (!id) return;
      const kind = $("history-kind").value;
      const symbol = $("history-symbol").value.trim();
      const target = `#history/${kind}/${encodeURIComponent(id)}${kind === "account" && symbol ? "/" + encodeURIComponent(symbol) : ""}`;
      if (location.hash === target) route();
      else location.hash = target;
    });
    $("snapshot-now").addEventListener("click", () =>
      guard(mutate("/snapshots", "Snapshot every store now?", "snapshot")),
    );
    $("reconcile-form").addEventListener("submit", (event) => {
      event.preventDefault();
      guard(reconcileNow());
    });
    $("rebuild").addEventListener("click", () =>
      guard(mutate("/rebuild", "Rebuild the live state from the newest valid snapshot and the log? Reads answer from the old state until it is swapped in.", "rebuild")),
    );
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target) || document.querySelector("dialog[open]")) return;
      const index = ["1", "2", "3", "4"].indexOf(event.key);
      if (index >= 0) {
        location.hash = `#${PANELS[index]}`;
        $("main").focus();
      } else if (event.key === "/") {
        event.preventDefault();
        location.hash = "#state";
        $("search").focus();
      } else if (event.key === "t") {
        setTheme(currentTheme() === "dark" ? "light" : "dark");
      } else if (event.key === "?") {
        $("help").showModal();
      }
    });
    window.addEventListener("hashchange", route);
    route();
    setTimeout(tick, POLL_MS);
  }

  start();
})();
