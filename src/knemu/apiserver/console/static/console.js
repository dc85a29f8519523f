// knemu console: the cluster map, services, flows, traces, chaos and seed tours.
//
// State comes from the api-server's live feed (/console/api/events, server-sent events built
// on its watch): node, pod, service and endpoint-slice summaries plus each node's
// impairments.  Every change re-renders from that state; nothing is ever reloaded.  Flows
// stream from the nodes merged by the api-server (/console/api/flows), as `knemu flows -f`.
// Text is always set with textContent, never parsed as HTML.
"use strict";
(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const state = {
    nodes: new Map(), pods: new Map(), services: new Map(), slices: new Map(),
    impairments: {}, synced: false, trace: null, highlight: null,
  };
  const $ = (id) => document.getElementById(id);
  const byName = (a, b) => a.localeCompare(b, undefined, { numeric: true });
  const keyOf = (o) => (o.namespace ? `${o.namespace}/${o.name}` : o.name);

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c) e.append(c);
    return e;
  }

  function svg(tag, attrs = {}, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // -- the live feed -----------------------------------------------------------------------

  const maps = { Node: state.nodes, Pod: state.pods, Service: state.services, EndpointSlice: state.slices };

  function connect() {
    const source = new EventSource("/console/api/events");
    source.onmessage = (e) => handle(JSON.parse(e.data));
    source.onerror = () => setStatus("reconnecting…", "down"); // EventSource retries by itself
  }

  function handle(m) {
    if (m.type === "RESET") {
      for (const map of Object.values(maps)) map.clear();
      state.synced = false;
      return;
    }
    if (m.type === "SYNCED") state.synced = true;
    else if (m.type === "IMPAIRMENTS") state.impairments = m.nodes || {};
    else if (m.type === "RELIST") return; // the stream ends; EventSource reconnects
    else if (maps[m.kind]) {
      if (m.type === "DELETED") maps[m.kind].delete(keyOf(m.object));
      else maps[m.kind].set(keyOf(m.object), m.object);
    }
    if (state.synced) scheduleRender();
  }

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      render();
    });
  }

  function setStatus(text, cls) {
    const s = $("status");
    s.textContent = text;
    s.className = `status ${cls || ""}`;
  }

  function render() {
    const running = [...state.pods.values()].filter((p) => p.phase === "Running").length;
    setStatus(`live · ${state.nodes.size} nodes · ${running}/${state.pods.size} pods running`, "live");
    renderMap();
    renderServices();
    renderChoices();
  }

  // -- node state ----------------------------------------------------------------------------

  function nodeHealth(name) {
    const node = state.nodes.get(name);
    const reachable = state.impairments[name] !== null;
    if (!node || node.ready !== "True") return { dead: true, label: node ? `NotReady` : "gone" };
    if (!reachable && name in state.impairments) return { dead: true, label: "agent unreachable" };
    return { dead: false, label: "Ready" };
  }

  function describeImpairment(i) {
    const parts = [];
    if (i.partition) parts.push("partition");
    if (i.delay_ms) parts.push(`delay ${i.delay_ms}ms${i.jitter_ms ? `±${i.jitter_ms}` : ""}`);
    if (i.loss_pct) parts.push(`loss ${i.loss_pct}%`);
    if (i.duplicate_pct) parts.push(`dup ${i.duplicate_pct}%`);
    if (i.corrupt_pct) parts.push(`corrupt ${i.corrupt_pct}%`);
    if (i.rate_kbit) parts.push(`rate ${i.rate_kbit}kbit`);
    return parts.join(" ") + (i.peer ? ` ↔ ${i.peer}` : "");
  }

  function impairmentsBetween(a, b) {
    const out = [];
    for (const [self, other] of [[a, b], [b, a]]) {
      for (const i of state.impairments[self] || []) {
        if (!i.peer || i.peer === other) out.push(i);
      }
    }
    return out;
  }

  // -- the map -------------------------------------------------------------------------------

  const GAP = 28, HEADER = 96, POD_H = 38, POD_GAP = 6, PAD = 10;

  function layout(width, nodes) {
    const cols = Math.max(1, Math.min(nodes.length, Math.floor((width + GAP) / (300 + GAP))));
    // One column (phones): links between nodes that are not neighbours run in a right gutter.
    const gutter = cols === 1 && nodes.length > 2 ? Math.min(60, 12 * (nodes.length - 2) + 8) : 0;
    const w = Math.min(420, (width - gutter - GAP * (cols - 1)) / cols);
    const podCols = Math.max(1, Math.floor((w - 2 * PAD + POD_GAP) / (150 + POD_GAP)));
    const podW = (w - 2 * PAD - POD_GAP * (podCols - 1)) / podCols;
    const boxes = new Map(), podsAt = new Map();
    let y = 4;
    for (let r = 0; r < nodes.length; r += cols) {
      const row = nodes.slice(r, r + cols);
      let rowH = 0;
      row.forEach((name, c) => {
        const pods = podsOn(name);
        const h = HEADER + Math.max(1, Math.ceil(pods.length / podCols)) * (POD_H + POD_GAP) + PAD;
        const x = 4 + c * (w + GAP);
        boxes.set(name, { x, y, w, h, router: { x: x + w - 24, y: y + 76 } });
        pods.forEach((p, i) => {
          const px = x + PAD + (i % podCols) * (podW + POD_GAP);
          const py = y + HEADER + Math.floor(i / podCols) * (POD_H + POD_GAP);
          podsAt.set(keyOf(p), { x: px, y: py, w: podW, h: POD_H, pod: p });
        });
        rowH = Math.max(rowH, h);
      });
      for (const name of row) boxes.get(name).h = rowH;
      y += rowH + GAP;
    }
    return { boxes, podsAt, height: Math.max(y - GAP + 8, 120), cols };
  }

  function podsOn(node) {
    return [...state.pods.values()].filter((p) => p.node === node && !p.hostNetwork)
      .sort((a, b) => byName(keyOf(a), keyOf(b)));
  }

  function renderMap() {
    const map = $("map");
    const width = Math.max(map.clientWidth || map.parentElement.clientWidth || 320, 260);
    const nodes = [...state.nodes.keys()].sort(byName);
    const { boxes, podsAt, height, cols } = layout(width - 8, nodes);
    map.setAttribute("viewBox", `0 0 ${width} ${height}`);
    map.setAttribute("height", height);
    map.replaceChildren();
    if (!nodes.length) {
      map.append(svg("text", { x: 12, y: 40, class: "node-meta" }, "no nodes registered yet"));
      return;
    }
    const links = svg("g", { class: "links" }), labels = svg("g", { class: "link-labels" });
    for (let i = 0; i < nodes.length; i++) {
      for (let j = i + 1; j < nodes.length; j++) {
        links.append(drawLink(nodes[i], nodes[j], boxes, cols === 1 ? j - i - 1 : 0, labels));
      }
    }
    map.append(links);
    for (const name of nodes) map.append(drawNode(name, boxes.get(name)));
    for (const spot of podsAt.values()) map.append(drawPod(spot));
    map.append(labels); // above the nodes, so a label over a box stays readable
    if (state.trace) map.append(drawTrace(state.trace, boxes, podsAt));
  }

  function center(b) {
    return { x: b.x + b.w / 2, y: b.y + b.h / 2 };
  }

  function drawLink(a, b, boxes, detour, labels) {
    const A = boxes.get(a), B = boxes.get(b);
    let p = center(A), q = center(B), shape;
    if (detour > 0) { // around the nodes between them, through the gutter
      p = { x: A.x + A.w, y: A.y + A.h / 2 + 6 * detour };
      q = { x: B.x + B.w, y: B.y + B.h / 2 - 6 * detour };
      const gx = A.x + A.w + 8 + 12 * detour;
      shape = svg("path", { d: `M${p.x},${p.y} C${gx},${p.y} ${gx},${q.y} ${q.x},${q.y}`, fill: "none" });
      p = { x: gx, y: (p.y + q.y) / 2 };
      q = p;
    } else {
      shape = svg("line", { x1: p.x, y1: p.y, x2: q.x, y2: q.y });
    }
    const found = impairmentsBetween(a, b);
    const dead = nodeHealth(a).dead || nodeHealth(b).dead || found.some((i) => i.partition);
    const cls = dead ? "dead" : found.length ? "impaired" : "ok";
    const g = svg("g", { "data-testid": `link-${a}-${b}`, "data-state": cls });
    shape.setAttribute("class", `link ${cls}`);
    g.append(shape);
    if (found.length) {
      const label = found.map(describeImpairment).join(", ");
      labels.append(svg("text", { x: (p.x + q.x) / 2 + 4, y: (p.y + q.y) / 2 - 4,
        class: `link-label ${dead ? "dead" : ""}` }, label));
    }
    return g;
  }

  function drawNode(name, b) {
    const node = state.nodes.get(name);
    const health = nodeHealth(name);
    const g = svg("g", { class: `node ${health.dead ? "dead" : ""}`, "data-testid": `node-${name}`,
      "data-ready": health.dead ? "false" : "true" });
    g.append(svg("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 10, class: "node-box" }));
    g.append(svg("text", { x: b.x + 10, y: b.y + 20, class: "node-name" }, name));
    g.append(svg("text", { x: b.x + b.w - 10, y: b.y + 20, "text-anchor": "end",
      class: `node-state ${health.dead ? "notready" : "ready"}` }, health.label));
    const meta = [`underlay ${node.internalIP || "?"}`, `podCIDR ${node.podCIDR || "?"}`,
      `VTEP ${node.vtepMAC || "?"}`];
    meta.forEach((line, i) => g.append(svg("text", { x: b.x + 10, y: b.y + 38 + i * 14, class: "node-meta" }, line)));
    const own = (state.impairments[name] || []).map(describeImpairment).join(", ");
    if (own) g.append(svg("text", { x: b.x + 10, y: b.y + 86, class: "node-impair" }, `⚡ ${own}`));
    g.append(svg("circle", { cx: b.router.x, cy: b.router.y, r: 11, class: "router" }));
    g.append(svg("text", { x: b.router.x, y: b.router.y + 4, "text-anchor": "middle", class: "node-meta" }, "R"));
    g.append(svg("title", {}, `${name}: the agent's router (kube-proxy NAT, VXLAN)`));
    return g;
  }

  function drawPod(spot) {
    const p = spot.pod;
    const lit = state.highlight && matchesLabels(p, state.highlight);
    const g = svg("g", { class: `pod ${p.phase} ${p.terminating ? "terminating" : ""} ${lit ? "highlight" : ""}`,
      "data-testid": `pod-${p.name}`, "data-node": p.node, "data-phase": p.phase, "data-ip": p.ip || "" });
    g.append(svg("rect", { x: spot.x, y: spot.y, width: spot.w, height: spot.h, rx: 5, class: "pod-box" }));
    const name = shorten(p.name, Math.max(8, Math.floor((spot.w - 12) / 6.8)));
    g.append(svg("text", { x: spot.x + 6, y: spot.y + 15, class: "pod-name" }, name));
    g.append(svg("text", { x: spot.x + 6, y: spot.y + 30, class: "pod-meta" },
      `${p.ip || "no IP"} · ${p.terminating ? "Terminating" : p.phase}`));
    g.append(svg("title", {}, `${keyOf(p)} on ${p.node}: ${p.ip || "no IP"}, ${p.phase}`));
    return g;
  }

  // Pod names differ at their end (the ReplicaSet hash and a random suffix): keep both ends.
  function shorten(text, chars) {
    if (text.length <= chars) return text;
    const tail = Math.min(11, Math.floor(chars / 2));
    return `${text.slice(0, chars - tail - 1)}…${text.slice(-tail)}`;
  }

  function matchesLabels(pod, labels) {
    return Object.entries(labels).every(([k, v]) => (pod.labels || {})[k] === v);
  }

  // -- trace drawing -------------------------------------------------------------------------

  function podSpotByIp(podsAt, node, ip) {
    for (const spot of podsAt.values()) {
      if (spot.pod.ip === ip && (!node || spot.pod.node === node)) return spot;
    }
    return null;
  }

  function hopPlace(hop, boxes, podsAt) {
    const flow = hop.flow || {};
    const box = boxes.get(hop.node);
    let spot = null;
    if (hop.point === "from-pod") spot = podSpotByIp(podsAt, hop.node, flow.src_ip);
    if (hop.point === "to-pod") spot = podSpotByIp(podsAt, hop.node, flow.dst_ip);
    if (spot) return { x: spot.x + spot.w / 2, y: spot.y + spot.h / 2 };
    return box ? { ...box.router } : null;
  }

  function drawTrace(trace, boxes, podsAt) {
    const g = svg("g", { class: "trace", "data-testid": "trace-overlay" });
    const points = [];
    const src = podSpotByIp(podsAt, trace.node, trace.probe.src_ip);
    if (src) points.push({ x: src.x + src.w / 2, y: src.y + src.h / 2 });
    const places = trace.hops.map((h) => hopPlace(h, boxes, podsAt));
    for (const p of places) if (p) points.push(p);
    if (points.length > 1) {
      g.append(svg("polyline", { class: "trace-path", points: points.map((p) => `${p.x},${p.y}`).join(" ") }));
    }
    const used = new Map();
    places.forEach((p, i) => {
      if (!p) return;
      const k = `${Math.round(p.x)},${Math.round(p.y)}`;
      const n = used.get(k) || 0;
      used.set(k, n + 1);
      const hop = trace.hops[i];
      const bad = hop.verdict === "DROPPED" || hop.verdict === "REFUSED";
      const m = svg("g", { class: `trace-hop ${bad ? "bad" : ""}`, "data-testid": "trace-hop" });
      m.append(svg("circle", { cx: p.x + n * 16 - 8, cy: p.y - 16, r: 8 }));
      m.append(svg("text", { x: p.x + n * 16 - 8, y: p.y - 12.5 }, String(i + 1)));
      m.append(svg("title", {}, `${i + 1}. ${hop.node} ${hop.point} ${hop.verdict}`));
      g.append(m);
    });
    return g;
  }

  // -- services ------------------------------------------------------------------------------

  function renderServices() {
    const box = $("services");
    const services = [...state.services.values()].sort((a, b) => byName(keyOf(a), keyOf(b)));
    box.replaceChildren();
    for (const s of services) {
      const card = el("div", { class: "svc", "data-testid": `service-${s.namespace}-${s.name}` });
      card.append(el("h3", { text: `${s.namespace}/${s.name} (${s.type})` }));
      const addr = [`ClusterIP ${s.clusterIP || "-"}`];
      for (const ip of s.loadBalancerIPs) addr.push(`LoadBalancer ${ip}`);
      for (const p of s.ports) {
        addr.push(`${p.name ? `${p.name} ` : ""}${p.port}→${p.targetPort ?? p.port}/${p.protocol || "TCP"}` +
          (p.nodePort ? ` NodePort :${p.nodePort}` : ""));
      }
      card.append(el("div", { class: "addr", text: addr.join(" · ") }));
      const eps = el("div", { class: "eps" });
      for (const ep of endpointsOf(s)) {
        eps.append(el("span", { class: `ep ${ep.ready ? "" : "notready"}`, "data-testid": "endpoint",
          "data-ip": ep.ip, text: `${ep.pod || ep.ip} ${ep.ip}${ep.ready ? "" : " (not ready)"}` }));
      }
      if (!eps.childElementCount) eps.append(el("span", { class: "note", text: "no endpoints" }));
      card.append(eps);
      box.append(card);
    }
  }

  function endpointsOf(service) {
    const out = [];
    for (const sl of state.slices.values()) {
      if (sl.namespace === service.namespace && sl.service === service.name) out.push(...sl.endpoints);
    }
    return out.sort((a, b) => byName(a.ip, b.ip));
  }

  function flashEndpoint(ip) {
    for (const chip of document.querySelectorAll(".ep")) {
      if (chip.dataset.ip === ip) {
        chip.classList.add("hot");
        setTimeout(() => chip.classList.remove("hot"), 800);
      }
    }
  }

  // -- choices in forms (pods, nodes) ---------------------------------------------------------

  function fillSelect(select, values, keepFirst) {
    const current = select.value;
    const fixed = keepFirst ? [...select.options].slice(0, 1) : [];
    select.replaceChildren(...fixed, ...values.map((v) => el("option", { value: v, text: v })));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }

  function renderChoices() {
    const nodes = [...state.nodes.keys()].sort(byName);
    const running = [...state.pods.values()].filter((p) => p.ip && !p.hostNetwork && p.phase === "Running");
    fillSelect($("trace-source"), running.map(keyOf).sort(byName), false);
    fillSelect($("chaos-node"), nodes, false);
    fillSelect($("chaos-peer"), nodes, true);
    const targets = [...running.map((p) => `pod/${p.name}`), ...[...state.services.values()].map((s) => `svc/${s.name}`)];
    $("trace-targets").replaceChildren(...targets.map((t) => el("option", { value: t })));
    fillSelect($("capture-target"), [...nodes.map((n) => `node/${n}`),
      ...running.map((p) => `pod/${keyOf(p)}`).sort(byName)], false);
    const checks = $("flow-nodes");
    const have = new Set([...checks.querySelectorAll("input")].map((i) => i.value));
    for (const n of nodes) {
      if (have.has(n)) continue;
      const box = el("input", { type: "checkbox", value: n });
      box.checked = true;
      checks.append(el("label", {}, box, document.createTextNode(` ${n}`)));
    }
  }

  // -- flows ---------------------------------------------------------------------------------

  let following = null;

  function flowLine(e) {
    const t = new Date((e.time || 0) * 1000).toISOString().slice(11, 23);
    let line = `${t} ${e.node} ${e.point} `;
    let extra = e.summary || "(unparsable packet)";
    const tr = e.translated;
    if (tr) { // dnat, unsnat: a new destination; snat, unnat: a new source; hairpin: both
      const nat = e.nat || "";
      const dst = /dnat|unsnat/.test(nat), src = /(^|\+)snat|unnat/.test(nat);
      if (dst) extra += ` => ${tr.dst_ip}:${tr.dst_port}`;
      if (src || !dst) extra += ` => from ${tr.src_ip}:${tr.src_port}`;
      extra += ` [${nat}]`;
    }
    if (e.service) extra += ` service ${e.service}`;
    if (e.outer) extra += ` outer ${e.outer.src_ip} -> ${e.outer.dst_ip}:${e.outer.dst_port} vni ${e.outer.vni}`;
    if (e.reason) extra += ` reason=${e.reason}`;
    if (e.reply) extra += ` reply=${e.reply}`;
    const li = el("li", {}, document.createTextNode(line),
      el("span", { class: `verdict v-${e.verdict}`, text: e.verdict }), document.createTextNode(` ${extra}`));
    li.dataset.verdict = e.verdict;
    return li;
  }

  function flowMatches(e) {
    const verdict = $("flow-verdict").value;
    if (verdict && e.verdict !== verdict) return false;
    const text = $("flow-filter").value.trim();
    if (!text) return true;
    const hay = `${e.summary || ""} ${e.service || ""} ${JSON.stringify(e.translated || {})}`;
    if (hay.includes(text)) return true;
    const pod = [...state.pods.values()].find((p) => p.name === text || keyOf(p) === text);
    return Boolean(pod && pod.ip && hay.includes(pod.ip));
  }

  function addFlow(e) {
    if ((e.nat || "").startsWith("dnat") && e.translated) flashEndpoint(e.translated.dst_ip);
    if (!flowMatches(e)) return;
    const list = $("flows");
    list.prepend(flowLine(e));
    while (list.childElementCount > 300) list.lastChild.remove();
  }

  async function followNodes(nodes, signal) {
    const query = nodes.map((n) => `node=${encodeURIComponent(n)}`).join("&");
    const resp = await fetch(`/console/api/flows?${query}`, { signal });
    if (!resp.ok) throw new Error(`flows: HTTP ${resp.status}`);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line.trim()) continue;
        const e = JSON.parse(line);
        if (e.error) $("flows").prepend(el("li", { class: "error", text: e.error }));
        else addFlow(e);
      }
    }
  }

  function toggleFlows() {
    const button = $("flow-toggle");
    if (following) {
      following.abort();
      following = null;
      button.textContent = "Follow";
      return;
    }
    following = new AbortController();
    button.textContent = "Stop";
    const nodes = [...$("flow-nodes").querySelectorAll("input:checked")].map((i) => i.value);
    followNodes(nodes, following.signal).catch((err) => {
      if (err.name !== "AbortError") $("flows").prepend(el("li", { class: "error", text: String(err.message || err) }));
    });
  }

  function downloadCapture() {
    const [kind, ...rest] = $("capture-target").value.split("/");
    const seconds = Math.min(3600, Math.max(1, Number($("capture-seconds").value) || 10));
    let node = rest[0], query = `duration=${seconds}`;
    if (kind === "pod") {
      const pod = state.pods.get(rest.join("/"));
      if (!pod) return;
      node = pod.node;
      query += `&pod=${encodeURIComponent(rest.join("/"))}`;
    }
    const a = el("a", { href: `/api/v1/nodes/${encodeURIComponent(node)}/proxy/capture?${query}`,
      download: `${rest.join("-")}.pcapng` });
    document.body.append(a);
    a.click();
    a.remove();
  }

  // -- trace ---------------------------------------------------------------------------------

  async function post(path, body) {
    const resp = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(data.message || `HTTP ${resp.status}`);
    return data;
  }

  async function runTrace(ev) {
    ev.preventDefault();
    const summary = $("trace-summary");
    summary.className = "note";
    summary.textContent = "tracing…";
    $("trace-hops").replaceChildren();
    const port = Number($("trace-port").value || 0);
    try {
      const result = await post("/console/api/trace", {
        source: $("trace-source").value, destination: $("trace-destination").value,
        port, protocol: $("trace-protocol").value });
      const p = result.probe;
      summary.textContent = `${p.protocol} ${p.pod} (${p.src_ip}:${p.src_port}) → ${p.dst_ip}:${p.dst_port} ` +
        `(${result.destination}) from ${result.node}: ${result.hops.length} hops` +
        (result.unreachable.length ? `; no answer from ${result.unreachable.join(", ")}` : "");
      result.hops.forEach((h, i) => {
        const li = flowLine(h);
        li.prepend(document.createTextNode(`${i + 1}. `));
        li.dataset.testid = "trace-hop-row";
        li.setAttribute("data-testid", "trace-hop-row");
        $("trace-hops").append(li);
      });
      state.trace = result;
      renderMap();
    } catch (err) {
      summary.className = "note error";
      summary.textContent = String(err.message || err);
    }
  }

  // -- chaos ---------------------------------------------------------------------------------

  const CONFIRM = {
    kill: (n) => `Kill ${n}? Its agent and pods die at once (SIGKILL); only \`knemu chaos start-node\` where the cluster runs brings it back.`,
    freeze: (n, s) => `Freeze ${n} for ${s} s? It forwards nothing and renews no lease until it thaws.`,
    partition: (n, peer) => `Cut ${n}'s underlay from ${peer || "every peer"}?`,
    delay: (n, peer, v) => `Delay ${n}'s underlay traffic to ${peer || "every peer"} by ${v} ms?`,
    loss: (n, peer, v) => `Drop ${v}% of ${n}'s underlay traffic to ${peer || "every peer"}?`,
  };

  async function chaos(action) {
    const node = $("chaos-node").value, peer = $("chaos-peer").value;
    const seconds = Number($("chaos-seconds").value);
    const value = Number(action === "delay" ? $("chaos-delay").value : $("chaos-loss").value);
    const ask = CONFIRM[action];
    if (ask && !window.confirm(ask(node, action === "freeze" ? seconds : peer, value))) return;
    const log = $("chaos-log");
    try {
      const body = { action, node: action === "heal" ? "" : node, peer, value, seconds };
      const result = await post("/console/api/chaos", body);
      for (const line of result.lines) log.prepend(el("li", { text: line }));
    } catch (err) {
      log.prepend(el("li", { class: "error", text: String(err.message || err) }));
    }
  }

  // -- tours ---------------------------------------------------------------------------------

  function objectPath(o) {
    const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
    const base = group ? `/apis/${group}/${version}` : `/api/${version}`;
    const ns = o.metadata.namespace || "default";
    const kind = o.kind.toLowerCase(); // Pod -> pods, NetworkPolicy -> networkpolicies
    const plural = kind.endsWith("y") ? `${kind.slice(0, -1)}ies` : `${kind}s`;
    return `${base}/namespaces/${ns}/${plural}/${encodeURIComponent(o.metadata.name)}`;
  }

  async function applyObjects(objects, out) {
    for (const o of objects) {
      const resp = await fetch(`${objectPath(o)}?fieldManager=knemu-console&force=true`, {
        method: "PATCH", headers: { "Content-Type": "application/apply-patch+yaml" }, body: JSON.stringify(o) });
      const data = await resp.json().catch(() => ({}));
      const what = `${o.kind.toLowerCase()}/${o.metadata.name}`;
      out.append(el("li", { class: resp.ok ? "" : "error",
        text: resp.ok ? `${what} applied` : `${what}: ${data.message || resp.status}` }));
    }
  }

  function showPanel(name) {
    for (const b of $("tabs").querySelectorAll("button")) b.classList.toggle("active", b.dataset.panel === name);
    for (const p of document.querySelectorAll(".panel")) p.classList.toggle("active", p.id === `panel-${name}`);
  }

  function look(step, out) {
    if (step.apply) applyObjects(step.apply, out);
    state.highlight = step.highlight || null;
    if (step.trace) {
      const src = [...state.pods.values()].find((p) => p.ip && p.phase === "Running" && matchesLabels(p, step.trace.sourceLabels));
      if (src) $("trace-source").value = keyOf(src);
      $("trace-destination").value = step.trace.destination;
      $("trace-port").value = step.trace.port;
    }
    if (step.panel) showPanel(step.panel);
    if (step.scale) scale(step.scale);
    renderMap();
  }

  async function scale({ path, replicas }) {
    const resp = await fetch(path, { method: "PATCH", headers: { "Content-Type": "application/merge-patch+json" },
      body: JSON.stringify({ spec: { replicas } }) });
    if (!resp.ok) setStatus(`scale failed: HTTP ${resp.status}`, "down");
  }

  async function loadTours() {
    const resp = await fetch("/console/static/tours.json");
    const tours = await resp.json();
    const box = $("tours");
    for (const tour of tours) {
      const card = el("div", { class: "tour", "data-testid": `tour-${tour.id}` });
      card.append(el("h3", { text: tour.title }), el("p", { class: "note", text: tour.intro }));
      const out = el("ul", { class: "log" });
      const apply = el("button", { type: "button", text: "Apply the manifests", "data-testid": `tour-apply-${tour.id}` });
      apply.addEventListener("click", () => applyObjects(tour.objects, out));
      card.append(apply, out);
      const steps = el("ol");
      for (const step of tour.steps) {
        const btn = el("button", { type: "button", text: step.apply ? "apply" : step.scale ? "scale" : "look" });
        btn.addEventListener("click", () => look(step, out));
        steps.append(el("li", {}, document.createTextNode(`${step.text} `), btn));
      }
      card.append(steps);
      box.append(card);
    }
  }

  // -- wiring --------------------------------------------------------------------------------

  function start() {
    for (const b of $("tabs").querySelectorAll("button")) b.addEventListener("click", () => showPanel(b.dataset.panel));
    $("flow-toggle").addEventListener("click", toggleFlows);
    $("capture-run").addEventListener("click", downloadCapture);
    $("trace-form").addEventListener("submit", runTrace);
    $("trace-clear").addEventListener("click", () => {
      state.trace = null;
      $("trace-hops").replaceChildren();
      $("trace-summary").textContent = "";
      renderMap();
    });
    for (const b of $("chaos-form").querySelectorAll("button[data-action]")) {
      b.addEventListener("click", () => chaos(b.dataset.action));
    }
    window.addEventListener("resize", scheduleRender);
    loadTours().catch((err) => $("tours").append(el("p", { class: "error", text: String(err) })));
    connect();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
