// The watch page: joins through the viewer gateway, connects to the relay over WebTransport
// or, where that is missing, blocked or known to stall, over WebSocket (the TCP carrier),
// decodes the picture and the sound with WebCodecs as they arrive (no buffer beyond the
// decoders' own), and tells the viewer, in plain words, where things stand. Exposes what it
// measures on `window.ghost` for tests: `state`, `frames` (received), `rendered` (video
// frames drawn), `audio` (audio frames decoded), `groups`, `setups` (codec setups changed
// mid-stream and followed), and `delay` {p50, p99}: capture to render, in milliseconds,
// over the last 3,000 frames or since `ghost.reset()`; `carrier`, "webtransport" or
// "websocket", the one in use; `clockOffset`, milliseconds to add to this device's clock to
// read the stack's (a phone's clock may be seconds off; the delay is read on the stack's);
// `decoder`, "webcodecs" or "mse" (Media Source Extensions, where WebCodecs is missing, or
// asked for with `?decoder=mse`).
// Where nothing can play, `state` is
// "insecure" (a page over plain http at an address other than the viewer's own machine, with
// `https`, the address to open instead) or "unsupported" (a browser without what it takes,
// named in `missing`).

import { parseFragment, parseInit, splitInit } from "/app/mp4.js";
import { Code, GroupReader, MessageReader, encodeJoin, encodePing, hexToBytes } from "/app/wire.js";
import { WebSocketTransport } from "/app/ws.js";
import { MsePlayer, mediaSource } from "/app/mse.js";

/** The stream a watch page's path names: its id or its name. */
function streamOf(pathname) {
  return decodeURIComponent(pathname.replace(/^\/watch\//, ""));
}

const key = streamOf(location.pathname);
const stateEl = document.getElementById("state");
const detailEl = document.getElementById("detail");
const rejoin = document.getElementById("rejoin");
const fallback = document.getElementById("fallback");
const command = document.getElementById("command");
const secure = document.getElementById("secure");
const secureLink = document.getElementById("secure-link");
document.getElementById("title").textContent = key;

const canvas = document.getElementById("picture");
const video = document.getElementById("video");
const sound = document.getElementById("sound");
const ghost = {
  state: "connecting", carrier: null, clockOffset: null, decoder: null,
  frames: 0, rendered: 0, audio: 0, groups: 0, setups: 0,
  delay: { p50: null, p99: null },
};
window.ghost = ghost;
const delays = [];
// Starts the delay figures afresh (tests measure a steady window, past the decoder's start).
ghost.reset = () => { delays.length = 0; };
let countdown = null;

function show(kind, text, detail = "") {
  ghost.state = kind;
  stateEl.dataset.kind = kind;
  stateEl.textContent = text;
  detailEl.textContent = detail;
  document.body.dataset.state = kind;
}

/** This device's clock against the relay's, on which frames' capture times are: the relay
 * answers each Ping with its clock, and the answer with the shortest round trip, taken to
 * have spent half of it each way (as NTP does), gives the offset. */
const clock = { offsetMs: 0, bestRttMs: Infinity, pings: 0, timer: null };

/** The stack's clock, in milliseconds, as well as this page can tell it. */
function stackNow() {
  return Date.now() + clock.offsetMs;
}

/** Whether delays can be read yet: an answer came, or the relay (an older one) never
 * answers and its clock is taken to be ours. */
function clockKnown() {
  return clock.bestRttMs !== Infinity || clock.pings >= 3;
}

function pong(m) {
  const receivedUs = Date.now() * 1000;
  const rttUs = receivedUs - m.sentUs;
  if (rttUs < 0 || rttUs / 1000 > clock.bestRttMs) return;
  clock.bestRttMs = rttUs / 1000;
  clock.offsetMs = (m.relayUs - (m.sentUs + rttUs / 2)) / 1000;
  ghost.clockOffset = clock.offsetMs;
}

/** Asks the relay's clock three times in the first second, then every 10 s. */
function startPings(writer) {
  clearTimeout(clock.timer);
  Object.assign(clock, { offsetMs: 0, bestRttMs: Infinity, pings: 0 });
  const ping = () => {
    writer.write(encodePing(Date.now() * 1000)).catch(() => clearTimeout(clock.timer));
    clock.pings += 1;
    clock.timer = setTimeout(ping, clock.pings < 3 ? 300 : 10000);
  };
  ping();
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null;
}

/** A frame shown: its delay from capture to now. Frames of the join's group that were
 * captured before the join are sent at once to start the picture; they are drawn but say
 * nothing about the delay of the live stream, so they are not counted in it. */
function rendered(captureUs) {
  ghost.rendered += 1;
  document.body.dataset.rendered = String(ghost.rendered);
  // `joinedAt` is on this device's clock; the offset may have come in since.
  if (captureUs / 1000 < joinedAt + clock.offsetMs || !clockKnown()) return;
  delays.push(stackNow() - captureUs / 1000);
  if (delays.length > 3000) delays.splice(0, delays.length - 3000);
  if (delays.length % 15 === 1) {
    const sorted = [...delays].sort((a, b) => a - b);
    ghost.delay = { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
    document.body.dataset.delayP50 = ghost.delay.p50.toFixed(1);
    document.body.dataset.delayP99 = ghost.delay.p99.toFixed(1);
    show("live", `Live, ${Math.max(0, Math.round(ghost.delay.p50))} ms behind the streamer`,
      `Over ${CARRIERS[ghost.carrier] || ghost.carrier}.`);
  }
}

/** Whether sound decoded as 32-bit floats is copied out as s32-planar (see `floatPlane`);
 * off for good once the browser says it cannot convert to that (the standard requires
 * conversion to f32-planar only). */
let floatsAsS32 = true;

/** Plane `c` of decoded sound `data` as 32-bit floats. A copy in f32-planar, the one
 * conversion every browser has, except from samples that are f32 already: WebKitGTK 2.50
 * on GLib older than 2.76 (Debian 12's) crashes the page on a copy that converts nothing
 * (it frees GLib slice memory with free()), so those go through s32-planar where the browser
 * converts to that, which loses nothing a listener hears. */
function floatPlane(data, c) {
  const plane = new Float32Array(data.numberOfFrames);
  if (floatsAsS32 && data.format.startsWith("f32")) {
    const ints = new Int32Array(data.numberOfFrames);
    try {
      data.copyTo(ints, { planeIndex: c, format: "s32-planar" });
      for (let i = 0; i < ints.length; i++) plane[i] = ints[i] / 2147483648;
      return plane;
    } catch (e) {
      if (e.name !== "NotSupportedError") throw e;
      floatsAsS32 = false;
    }
  }
  data.copyTo(plane, { planeIndex: c, format: "f32-planar" });
  return plane;
}

/** The decoders of one codec setup: made from an init segment, fed each fragment. */
class Player {
  constructor(init) {
    this.init = init;
    this.tracks = parseInit(init);
    this.captures = new Map();
    this.video = null;
    this.audio = null;
    this.waitingForKey = true;
    this.audioAt = 0;
    const video = this.tracks.find((t) => t.kind === "video" && t.config);
    const audio = this.tracks.find((t) => t.kind === "audio" && t.config);
    if (video) {
      this.video = new VideoDecoder({
        output: (frame) => this.draw(frame),
        error: (e) => show("lost", "The picture cannot be decoded.", String(e)),
      });
      this.video.configure(video.config);
    }
    if (audio && typeof AudioDecoder !== "undefined") {
      this.context = new AudioContext({ latencyHint: "interactive" });
      this.audio = new AudioDecoder({
        output: (data) => this.play(data),
        error: () => { this.audio = null; },
      });
      this.audio.configure(audio.config);
      if (this.context.state === "suspended") {
        sound.hidden = false;
        sound.onclick = () => { this.context.resume(); sound.hidden = true; };
      }
    }
  }

  /** One fragment, with the capture time the publisher stamped it with. */
  push(payload, captureUs) {
    for (const s of parseFragment(payload, this.tracks)) {
      if (s.track.kind === "video" && this.video) {
        // After a skipped group the decoder needs a keyframe; frames before it are dropped.
        if (this.waitingForKey && !s.key) continue;
        this.waitingForKey = false;
        this.captures.set(s.timestamp, captureUs);
        if (this.captures.size > 300) this.captures.delete(this.captures.keys().next().value);
        this.video.decode(new EncodedVideoChunk({ type: s.key ? "key" : "delta", timestamp: s.timestamp, duration: s.duration, data: s.data }));
      } else if (s.track.kind === "audio" && this.audio) {
        this.audio.decode(new EncodedAudioChunk({ type: "key", timestamp: s.timestamp, duration: s.duration, data: s.data }));
      }
    }
  }

  /** A new group begins: whatever the decoder still holds of an older one is late. */
  skipTo() {
    this.waitingForKey = true;
  }

  draw(frame) {
    if (canvas.width !== frame.displayWidth) canvas.width = frame.displayWidth;
    if (canvas.height !== frame.displayHeight) canvas.height = frame.displayHeight;
    canvas.getContext("2d").drawImage(frame, 0, 0);
    const captureUs = this.captures.get(frame.timestamp);
    frame.close();
    if (captureUs !== undefined) rendered(captureUs);
  }

  play(data) {
    ghost.audio += 1;
    document.body.dataset.audio = String(ghost.audio);
    const ctx = this.context;
    const buffer = ctx.createBuffer(data.numberOfChannels, data.numberOfFrames, data.sampleRate);
    for (let c = 0; c < data.numberOfChannels; c++) {
      buffer.copyToChannel(floatPlane(data, c), c);
    }
    data.close();
    // Play on arrival; more than a quarter second queued means we fell behind: start over.
    const now = ctx.currentTime;
    if (this.audioAt < now || this.audioAt > now + 0.25) this.audioAt = now + 0.02;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    source.start(this.audioAt);
    this.audioAt += buffer.duration;
  }

  close() {
    for (const d of [this.video, this.audio]) {
      if (d && d.state !== "closed") d.close();
    }
    if (this.context) this.context.close();
  }
}

/** The decoder this page uses: WebCodecs where the browser has it (the picture drawn as each
 * frame decodes), else Media Source Extensions (a <video> element kept at the live edge). */
const decoder =
  typeof VideoDecoder === "undefined" || new URLSearchParams(location.search).get("decoder") === "mse"
    ? "mse"
    : "webcodecs";
ghost.decoder = decoder;

/** A player for the codec setup in `init`, with the page's decoder. */
function makePlayer(init) {
  if (decoder === "webcodecs") return new Player(init);
  canvas.hidden = true;
  video.hidden = false;
  if (video.muted) {
    sound.hidden = false;
    sound.onclick = () => { video.muted = false; sound.hidden = true; };
  }
  return new MsePlayer(init, video, {
    rendered,
    failed: (e) => show("lost", "The picture cannot be decoded.", String(e && e.message ? e.message : e)),
  });
}

let player = null;
let newestGroup = -1;
let joinedAt = Infinity;

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The first frame of a group may start with the stream's init segment as of that group
 * (its codec setup changed: a new resolution, say). A new one takes over from the player,
 * whose decoders are closed first; the one in use is just dropped. Returns the fragment. */
function followInit(payload) {
  const { init, fragment } = splitInit(payload);
  if (!init || (player && sameBytes(init, player.init))) return fragment;
  if (player) player.close();
  player = null;
  try {
    player = makePlayer(init.slice());
    ghost.setups += 1;
  } catch (e) {
    show("lost", "The picture cannot be decoded.", String(e));
  }
  return fragment;
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
      if (m.type === "pong") pong(m);
      if (m.type === "init") {
        joinedAt = Date.now();
        document.getElementById("title").textContent = m.name;
        document.title = `${m.name}: Ghost Stream`;
        if (player) player.close();
        player = m.init.length > 0 ? makePlayer(m.init) : null;
        show("live", "Live", `Joined ${m.name}.`);
      }
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
        const first = !counted;
        if (first) {
          counted = true;
          ghost.groups += 1;
          if (group.sequence > newestGroup) {
            newestGroup = group.sequence;
            if (player) player.skipTo();
          }
        }
        ghost.frames += 1;
        // An older group still arriving after a newer one began is late: dropped whole.
        if (group.sequence < newestGroup) continue;
        const fragment = first ? followInit(f.payload) : f.payload;
        if (player) player.push(fragment, f.captureUs);
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

/** The carriers' names as the page shows them. */
const CARRIERS = { webtransport: "WebTransport", websocket: "WebSocket" };
/** How long WebTransport has to itself before WebSocket joins the race. */
const HEAD_START_MS = 300;
/** How long a carrier that won is tried first on the next visits. */
const REMEMBER_MS = 24 * 3600 * 1000;
const REMEMBERED = "ghost-carrier";

/** Safari's WebTransport stalls for good after some thousands of incoming streams (one per
 * group here): Safari goes straight to WebSocket. */
function stallsOnWebTransport(ua) {
  return /Safari\//.test(ua) && !/Chrome\/|Chromium\/|Edg\/|Firefox\/|Android/.test(ua);
}

/** The carrier a recent visit settled on, if any. */
function remembered() {
  try {
    const [name, at] = (localStorage.getItem(REMEMBERED) || "").split(" ");
    return CARRIERS[name] && Date.now() - Number(at) < REMEMBER_MS ? name : null;
  } catch {
    return null;
  }
}

function remember(name) {
  try { localStorage.setItem(REMEMBERED, `${name} ${Date.now()}`); } catch { /* private mode */ }
}

/** Which carriers to try, first first: WebTransport then WebSocket after a head start, or
 * WebSocket alone where WebTransport is missing, stalls, or lost the last race. */
export function carriers(env) {
  if (!env.WebTransport || env.stalls || env.remembered === "websocket") return ["websocket"];
  return ["webtransport", "websocket"];
}

function openCarrier(name, join) {
  if (name === "websocket") {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return new WebSocketTransport(`${scheme}://${join.relay_addr}/`);
  }
  // The stack's own relay certificates are short-lived and pinned by hash; an operator's
  // certificate from a public CA is verified by name, as for any web site.
  const options = join.cert_public
    ? {}
    : { serverCertificateHashes: [{ algorithm: "sha-256", value: hexToBytes(join.cert_sha256) }] };
  return new WebTransport(`https://${join.relay_addr}/`, options);
}

/** Races the carriers to the relay: the first connected is kept and the other closed before
 * it joins (a ticket seats one viewer). WebSocket starts after WebTransport's head start, or
 * at once when WebTransport fails first. */
function race(join) {
  const order = carriers({
    WebTransport: typeof WebTransport !== "undefined",
    stalls: stallsOnWebTransport(navigator.userAgent),
    remembered: remembered(),
  });
  return new Promise((resolve, reject) => {
    const open = [];
    let failed = 0;
    let won = false;
    let next = 0;
    let timer = null;
    const launch = () => {
      clearTimeout(timer);
      if (next >= order.length || won) return;
      const name = order[next++];
      let transport;
      try {
        transport = openCarrier(name, join);
      } catch (e) {
        return lose(e);
      }
      open.push(transport);
      transport.ready.then(() => {
        if (won) return transport.close();
        won = true;
        clearTimeout(timer);
        for (const other of open) if (other !== transport) try { other.close(); } catch { /* gone */ }
        resolve({ name, transport });
      }, lose);
      if (next < order.length) timer = setTimeout(launch, HEAD_START_MS);
    };
    const lose = (e) => {
      failed += 1;
      if (won) return;
      if (next < order.length) launch();
      else if (failed >= order.length) reject(e || new Error("no carrier reached the relay"));
    };
    launch();
  });
}

async function watch(join) {
  show("connecting", "Connecting…", `Relay ${join.relay_id}.`);
  const { name, transport } = await race(join);
  ghost.carrier = name;
  document.body.dataset.carrier = name;
  remember(name);
  transport.closed.then(
    (info) => closed(info.closeCode),
    (e) => closed(e && typeof e.streamErrorCode === "number" ? e.streamErrorCode : null),
  );
  await transport.ready;
  const session = await transport.createBidirectionalStream();
  const writer = session.writable.getWriter();
  await writer.write(encodeJoin(join.stream_id, hexToBytes(join.ticket)));
  startPings(writer);
  readGroups(transport).catch(() => {});
  await readSession(session.readable);
}

function closed(code) {
  clearTimeout(clock.timer);
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

/** What the page needs of the browser, and who has it, in the words a viewer lacking it reads. */
const NEEDS = {
  WebSocket: "WebSocket, which every browser of the last decade has",
  VideoDecoder:
    "WebCodecs' VideoDecoder or Media Source Extensions, which current Chrome, Edge, Firefox " +
    "and Safari have",
};

/** Why nothing can play here, or null when the page can play. Browsers give WebTransport and
 * WebCodecs to secure pages only (https, or the viewer's own 127.0.0.1 or localhost): over
 * plain http at any other address both are missing in every browser, which is not the
 * browser's fault, so that case is told apart before anything is said to be missing. `env`
 * describes a browser: `secure`, and whether it has each of `NEEDS`. */
export function obstacle(env) {
  if (!env.secure) return { kind: "insecure", missing: [] };
  const missing = Object.keys(NEEDS).filter((need) => !env[need]);
  return missing.length > 0 ? { kind: "unsupported", missing } : null;
}

/** The https address of the page at `href`: on the origin `httpsOrigin` names (the gateway's
 * `<meta name="ghost-https" content="https://host:port">`, where it serves https somewhere
 * of its own), else on the same host at https's default port, 443, where a public stack
 * serves it. Path, query and fragment stay as they are. */
export function httpsAddress(href, httpsOrigin) {
  const url = new URL(href);
  let origin = null;
  try {
    origin = httpsOrigin ? new URL(httpsOrigin) : null;
  } catch {
    origin = null;
  }
  url.protocol = "https:";
  if (origin && origin.protocol === "https:") {
    url.hostname = origin.hostname;
    // Set apart from the name: a host without a port would keep the old one.
    url.port = origin.port;
  } else {
    url.port = "";
  }
  return url.href;
}

/** What the page says when nothing can play (`why`, from `obstacle`) at `href`: the state
 * line, the detail, the https address to open (when that is the way), and the command line
 * that plays the stream from a terminal. */
export function message(why, href, httpsOrigin) {
  const url = new URL(href);
  const command = `ghost watch ${streamOf(url.pathname)} --gateway ${url.origin} --output - | ffplay -`;
  if (why.kind === "insecure") {
    return {
      text: "This page must be opened over https to play.",
      detail:
        "Browsers play live video (WebTransport and WebCodecs) only on pages opened over " +
        "https, or at the viewer's own 127.0.0.1 or localhost; this one came over plain " +
        "http. Open it over https:",
      https: httpsAddress(href, httpsOrigin),
      command,
    };
  }
  return {
    text: "This browser cannot play Ghost Stream.",
    detail: `It needs ${why.missing.map((need) => NEEDS[need]).join(", and ")}.`,
    https: null,
    command,
  };
}

/** Says why nothing can play, with nothing over the words: the picture's box is hidden. */
function explain(why) {
  const httpsOrigin = document.querySelector('meta[name="ghost-https"]')?.content;
  const said = message(why, location.href, httpsOrigin);
  canvas.hidden = true;
  video.hidden = true;
  ghost.missing = why.missing;
  ghost.https = said.https;
  show(why.kind, said.text, said.detail);
  if (said.https) {
    secureLink.href = said.https;
    secureLink.textContent = said.https;
    secure.hidden = false;
  }
  command.textContent = said.command;
  fallback.hidden = false;
}

const why = obstacle({
  // Only a browser that says it is not secure is taken at its word; one too old to say is
  // judged by what it has.
  secure: window.isSecureContext !== false,
  WebSocket: typeof WebSocket !== "undefined",
  VideoDecoder: typeof VideoDecoder !== "undefined" || mediaSource() !== null,
});
if (why) {
  explain(why);
} else {
  join();
}
