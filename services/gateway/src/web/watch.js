// The watch page: joins through the viewer gateway, connects to the relay over WebTransport,
// and tells the viewer, in plain words, where things stand. Exposes what it measures on
// `window.ghost` for tests: `state`, `frames`, `groups`, `delay` {p50, p99} in milliseconds.

import { Code, GroupReader, MessageReader, encodeJoin, hexToBytes } from "/app/wire.js";

const key = decodeURIComponent(location.pathname.replace(/^\/watch\//, ""));
const stateEl = document.getElementById("state");
const detailEl = document.getElementById("detail");
const rejoin = document.getElementById("rejoin");
const fallback = document.getElementById("fallback");
document.getElementById("title").textContent = key;

const ghost = { state: "connecting", frames: 0, groups: 0, delay: { p50: null, p99: null } };
window.ghost = ghost;
const delays = [];
let countdown = null;

function show(kind, text, detail = "") {
  ghost.state = kind;
  stateEl.dataset.kind = kind;
  stateEl.textContent = text;
  detailEl.textContent = detail;
  document.body.dataset.state = kind;
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null;
}

function record(captureUs) {
  const ms = Date.now() - captureUs / 1000;
  delays.push(ms);
  if (delays.length > 3000) delays.splice(0, delays.length - 3000);
  ghost.frames += 1;
  if (ghost.frames % 15 === 1) {
    const sorted = [...delays].sort((a, b) => a - b);
    ghost.delay = { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
    show("live", `Live, ${Math.max(0, Math.round(ghost.delay.p50))} ms behind the streamer`);
  }
}

/** Waits `seconds`, counting down on the page, then tries again. */
function retryIn(seconds, kind, text) {
  clearInterval(countdown);
  let left = Math.max(1, seconds);
  const tick = () => show(kind, text, `Trying again in ${left} s.`);
  tick();
  countdown = setInterval(() => {
    left -= 1;
    if (left <= 0) {
      clearInterval(countdown);
      join();
    } else {
      tick();
    }
  }, 1000);
}

async function readSession(stream) {
  const messages = new MessageReader();
  const reader = stream.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    messages.push(value);
    for (let m = messages.next(); m; m = messages.next()) {
      if (m.type === "init") show("live", "Live", `Joined ${m.name}.`);
      if (m.type === "end") show("ended", "The stream has ended.");
      if (m.type === "error") throw new Error(m.reason);
    }
  }
}

async function readGroup(stream) {
  const group = new GroupReader();
  const reader = stream.getReader();
  let counted = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      group.push(value);
      for (let f = group.next(); f; f = group.next()) {
        if (!counted) { ghost.groups += 1; counted = true; }
        record(f.captureUs);
      }
    }
  } catch {
    // The relay reset this group: the viewer fell behind and skips to the newest.
  }
}

async function readGroups(transport) {
  const reader = transport.incomingUnidirectionalStreams.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    readGroup(value);
  }
}

async function watch(join) {
  show("connecting", "Connecting…", `Relay ${join.relay_id}.`);
  const transport = new WebTransport(`https://${join.relay_addr}/`, {
    serverCertificateHashes: [{ algorithm: "sha-256", value: hexToBytes(join.cert_sha256) }],
  });
  transport.closed.then(
    (info) => closed(info.closeCode),
    (e) => closed(e && typeof e.streamErrorCode === "number" ? e.streamErrorCode : null),
  );
  await transport.ready;
  const session = await transport.createBidirectionalStream();
  const writer = session.writable.getWriter();
  await writer.write(encodeJoin(join.stream_id, hexToBytes(join.ticket)));
  readGroups(transport).catch(() => {});
  await readSession(session.readable);
}

function closed(code) {
  if (ghost.state === "ended" || code === Code.ENDED) {
    show("ended", "The stream has ended.");
  } else if (code === Code.CAPACITY) {
    retryIn(1, "full", "Full right now.");
  } else {
    show("lost", "Connection lost.", "The relay went away. Rejoin to pick up where the stream is now.");
    rejoin.hidden = false;
  }
}

async function join() {
  rejoin.hidden = true;
  show("connecting", "Connecting…");
  let response;
  try {
    response = await fetch(`/streams/${encodeURIComponent(key)}/join`, { method: "POST" });
  } catch (e) {
    return retryIn(2, "lost", "The viewer gateway cannot be reached.");
  }
  const retryAfter = Number(response.headers.get("Retry-After")) || 2;
  if (response.status === 404) {
    return show("missing", "No such stream.", "It may have ended; see the streams that are live now.");
  }
  const answer = await response.json().catch(() => ({}));
  if (response.status === 503 && answer.error === "no_capacity") {
    return retryIn(retryAfter, "full", "Full right now.");
  }
  if (!response.ok) {
    return retryIn(retryAfter, "unavailable", "The service is unavailable right now.", answer.reason);
  }
  try {
    await watch(answer);
  } catch (e) {
    if (ghost.state !== "ended" && ghost.state !== "full") {
      show("lost", "Connection lost.", String(e && e.message ? e.message : e));
      rejoin.hidden = false;
    }
  }
}

rejoin.addEventListener("click", join);

if (typeof WebTransport === "undefined") {
  show(
    "unsupported",
    "This browser cannot play Ghost Stream.",
    "It needs WebTransport, which Chrome, Edge and Firefox have; Safari does not yet. " +
      "From a terminal, the ghost command line plays any stream:",
  );
  fallback.hidden = false;
  fallback.textContent = `ghost watch ${key} --gateway ${location.origin} --output - | ffplay -`;
} else {
  join();
}
