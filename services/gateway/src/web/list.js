// The list of live streams: refreshed every two seconds from GET /streams.

const REFRESH_MS = 2000;

const state = document.getElementById("state");
const table = document.getElementById("streams");
const body = table.querySelector("tbody");

/** "3 min 20 s", "1 h 5 min": how long a stream has been live. */
export function liveFor(startedAtUs, nowMs = Date.now()) {
  const s = Math.max(0, Math.floor(nowMs / 1000 - startedAtUs / 1e6));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function row(stream) {
  const tr = document.createElement("tr");
  const name = document.createElement("td");
  const link = document.createElement("a");
  link.href = `/watch/${encodeURIComponent(stream.id)}`;
  link.textContent = stream.name;
  name.append(link);
  const viewers = document.createElement("td");
  viewers.textContent = String(stream.viewers);
  const live = document.createElement("td");
  live.textContent = liveFor(stream.started_at_us);
  tr.append(name, viewers, live);
  return tr;
}

async function refresh() {
  try {
    const response = await fetch("/streams", { cache: "no-store" });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new Error(problem.reason || `the gateway answered ${response.status}`);
    }
    const streams = await response.json();
    body.replaceChildren(...streams.map(row));
    table.hidden = streams.length === 0;
    state.textContent = streams.length === 0 ? "Nobody is live right now." : "";
    state.hidden = streams.length !== 0;
    document.body.dataset.streams = String(streams.length);
  } catch (e) {
    state.hidden = false;
    state.textContent = `The stream list is unavailable right now (${e.message}); retrying.`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
