// The TCP carrier, the browser side: QUIC-style streams over one WebSocket (subprotocol
// `ghost-ws.1`, services/transport/src/ws.rs), behind the part of the WebTransport interface
// the watch page uses, so the page reads groups and the session stream the same way over
// either carrier. Every message is one frame: type (u8), stream id (u32), body.

export const PROTOCOL = "ghost-ws.1";

const DATA = 0, FIN = 1, RESET = 2, STOP = 3, CLOSE = 4;
const HEADER = 5;
/** Nothing at all from the relay for this long (it sends media, and pings the browser
 * answers unseen, all the time): the connection is lost. */
const SILENCE_MS = 5000;

function frame(type, id, body = new Uint8Array(0)) {
  const out = new Uint8Array(HEADER + body.length);
  const view = new DataView(out.buffer);
  out[0] = type;
  view.setUint32(1, id);
  out.set(body, HEADER);
  return out;
}

function coded(type, id, code) {
  const body = new Uint8Array(4);
  new DataView(body.buffer).setUint32(0, code);
  return frame(type, id, body);
}

/** An error as a WebTransport stream's: `streamErrorCode` says why. */
function streamError(code) {
  const e = new Error(`stream reset (${code})`);
  e.streamErrorCode = code;
  return e;
}

export class WebSocketTransport {
  /** Connects to `url` (`ws://` or `wss://`). */
  constructor(url) {
    this.socket = new WebSocket(url, PROTOCOL);
    this.socket.binaryType = "arraybuffer";
    this.streams = new Map();
    this.nextBidi = 0;
    this.peerNextUni = 0;
    this.over = false;
    this.heard = Date.now();
    let incoming;
    this.incomingUnidirectionalStreams = new ReadableStream({ start: (c) => { incoming = c; } });
    this.incoming = incoming;
    this.ready = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve(), { once: true });
      this.socket.addEventListener("error", () => reject(new Error("WebSocket failed")), { once: true });
    });
    this.closed = new Promise((resolve, reject) => {
      this.settle = (info, error) => {
        if (this.over) return;
        this.over = true;
        clearInterval(this.watchdog);
        const lost = error || new Error("connection closed");
        for (const s of this.streams.values()) {
          try { s.controller.error(info ? streamError(info.closeCode) : lost); } catch { /* done */ }
        }
        this.streams.clear();
        try { this.incoming.close(); } catch { /* done */ }
        if (info) resolve(info); else reject(lost);
        try { this.socket.close(); } catch { /* done */ }
      };
    });
    // Nothing is done with a rejection nobody awaits.
    this.ready.catch(() => {});
    this.socket.addEventListener("message", (e) => this.receive(new Uint8Array(e.data)));
    this.socket.addEventListener("close", () => this.settle(null, new Error("connection lost")));
    this.watchdog = setInterval(() => {
      if (Date.now() - this.heard > SILENCE_MS) this.settle(null, new Error("the relay went silent"));
    }, 1000);
  }

  send(bytes) {
    if (!this.over && this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes);
  }

  /** A readable for stream `id`: frames in, a stop out when the reader cancels it. */
  readable(id) {
    return new ReadableStream({
      start: (controller) => { this.streams.set(id, { controller }); },
      cancel: () => {
        if (this.streams.delete(id)) this.send(coded(STOP, id, 0));
      },
    });
  }

  receive(msg) {
    if (this.over) return;
    this.heard = Date.now();
    if (msg.length < HEADER) return this.fail("frame shorter than its header");
    const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    const type = msg[0];
    const id = view.getUint32(1);
    const body = msg.subarray(HEADER);
    if (type === CLOSE) {
      const closeCode = body.length >= 4 ? view.getUint32(HEADER) : 0;
      const reason = new TextDecoder().decode(body.subarray(4));
      return this.settle({ closeCode, reason });
    }
    if (type === STOP) return; // The page never writes after its join.
    // A one-way stream the relay opens: a new id opens it.
    if ((id & 3) === 3 && id >> 2 >= this.peerNextUni) {
      this.peerNextUni = (id >> 2) + 1;
      this.incoming.enqueue(this.readable(id));
    }
    const stream = this.streams.get(id);
    if (!stream) return; // Cancelled or over: what was on its way is dropped.
    if (type === DATA) {
      stream.controller.enqueue(body.slice());
    } else if (type === FIN) {
      this.streams.delete(id);
      stream.controller.close();
    } else if (type === RESET) {
      this.streams.delete(id);
      stream.controller.error(streamError(body.length >= 4 ? view.getUint32(HEADER) : 0));
    } else {
      this.fail("unknown frame type");
    }
  }

  fail(why) {
    this.settle(null, new Error(`the relay broke the protocol: ${why}`));
  }

  /** The session stream: both ways, opened by the page. */
  async createBidirectionalStream() {
    await this.ready;
    const id = this.nextBidi << 2;
    this.nextBidi += 1;
    const readable = this.readable(id);
    const writable = new WritableStream({
      write: (chunk) => this.send(frame(DATA, id, chunk)),
      close: () => this.send(frame(FIN, id)),
    });
    return { readable, writable };
  }

  close(info = {}) {
    const body = new TextEncoder().encode(info.reason || "");
    const out = new Uint8Array(4 + body.length);
    new DataView(out.buffer).setUint32(0, info.closeCode || 0);
    out.set(body, 4);
    this.send(frame(CLOSE, 0, out));
    this.settle({ closeCode: info.closeCode || 0, reason: info.reason || "" });
  }
}
