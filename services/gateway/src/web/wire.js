// Ghost Stream's wire protocol, the browser side: session messages and group streams, as
// services/wire describes them. Every length has the same hard maximum as on the server.

export const MAX_MESSAGE = (1 << 20) + 4096;
export const MAX_FRAME = 4 << 20;

/** Close codes (wire::Code). */
export const Code = Object.freeze({
  NORMAL: 0, ENDED: 1, CAPACITY: 2, NOT_FOUND: 3, PROTOCOL: 4, TOO_LARGE: 5, SHUTDOWN: 6,
  UNAUTHORIZED: 7, INTERNAL: 8, UNAVAILABLE: 9, NAME_IN_USE: 10, TIMEOUT: 11,
});

const JOIN = 4, INIT = 5, END = 6, ERROR = 7, PING = 8, PONG = 9;
const GROUP_MAGIC = 0x47;

export function hexToBytes(hex) {
  if (hex.length % 2 !== 0 || /[^0-9a-f]/i.test(hex)) throw new Error("not hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The Join message: stream id, then the ticket control signed. */
export function encodeJoin(streamId, ticket) {
  const id = new TextEncoder().encode(streamId);
  const body = new Uint8Array(2 + id.length + 4 + ticket.length);
  const view = new DataView(body.buffer);
  view.setUint16(0, id.length);
  body.set(id, 2);
  view.setUint32(2 + id.length, ticket.length);
  body.set(ticket, 6 + id.length);
  const out = new Uint8Array(5 + body.length);
  out[0] = JOIN;
  new DataView(out.buffer).setUint32(1, body.length);
  out.set(body, 5);
  return out;
}

/** The Ping message: asks the relay for its clock; `sentUs` (the page's clock, in
 * microseconds) comes back in the Pong. */
export function encodePing(sentUs) {
  const out = new Uint8Array(5 + 8);
  const view = new DataView(out.buffer);
  out[0] = PING;
  view.setUint32(1, 8);
  view.setBigUint64(5, BigInt(Math.max(0, Math.round(sentUs))));
  return out;
}

/** Bytes in, whole items out: the buffer behind both readers below. Chunks are appended
 * into spare room that doubles as needed, so a large frame arriving in packet-sized pieces
 * costs linear, not quadratic, copying. What `take` returns is a view that stays valid only
 * until the next `push`: callers copy what they keep. */
class Buffer {
  constructor() {
    this.store = new Uint8Array(4096);
    this.start = 0;
    this.end = 0;
  }
  push(chunk) {
    if (this.end + chunk.length > this.store.length) {
      const held = this.end - this.start;
      let size = this.store.length;
      while (size < held + chunk.length) size *= 2;
      const store = size === this.store.length ? this.store : new Uint8Array(size);
      // Same array when only compacting: `set` copies overlapping ranges correctly.
      store.set(this.store.subarray(this.start, this.end));
      this.store = store;
      this.start = 0;
      this.end = held;
    }
    this.store.set(chunk, this.end);
    this.end += chunk.length;
  }
  get length() { return this.end - this.start; }
  view() { return new DataView(this.store.buffer, this.store.byteOffset + this.start, this.length); }
  take(n) {
    const out = this.store.subarray(this.start, this.start + n);
    this.start += n;
    return out;
  }
}

function reader(bytes) {
  let at = 0;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const need = (n) => { if (at + n > bytes.length) throw new Error("malformed message"); };
  return {
    u16() { need(2); const v = view.getUint16(at); at += 2; return v; },
    u32() { need(4); const v = view.getUint32(at); at += 4; return v; },
    u64() { need(8); const v = view.getBigUint64(at); at += 8; return v; },
    str() { const n = this.u16(); need(n); const s = new TextDecoder().decode(bytes.subarray(at, at + n)); at += n; return s; },
    blob() { const n = this.u32(); need(n); const b = bytes.slice(at, at + n); at += n; return b; },
  };
}

/** Session-stream messages from the relay: Init, End, Error or Pong. */
export class MessageReader {
  constructor() { this.buffer = new Buffer(); }
  push(chunk) { this.buffer.push(chunk); }
  next() {
    if (this.buffer.length < 5) return null;
    const view = this.buffer.view();
    const type = view.getUint8(0);
    const len = view.getUint32(1);
    if (len > MAX_MESSAGE) throw new Error(`message of ${len} bytes is too large`);
    if (this.buffer.length < 5 + len) return null;
    this.buffer.take(5);
    const r = reader(this.buffer.take(len));
    switch (type) {
      case INIT: return { type: "init", streamId: r.str(), name: r.str(), init: r.blob() };
      case END: { const last = r.u64(); return { type: "end", lastGroup: last === 0xffffffffffffffffn ? null : Number(last) }; }
      case ERROR: return { type: "error", code: r.u32(), reason: r.str() };
      case PONG: return { type: "pong", sentUs: Number(r.u64()), relayUs: Number(r.u64()) };
      default: throw new Error(`unexpected message type ${type}`);
    }
  }
}

/** One group stream: a header, then frames (capture time in microseconds, payload). */
export class GroupReader {
  constructor() { this.buffer = new Buffer(); this.sequence = null; }
  push(chunk) { this.buffer.push(chunk); }
  /** The next whole frame, `null` when more bytes are needed. */
  next() {
    if (this.sequence === null) {
      if (this.buffer.length < 9) return null;
      const view = this.buffer.view();
      if (view.getUint8(0) !== GROUP_MAGIC) throw new Error("not a group stream");
      this.sequence = Number(view.getBigUint64(1));
      this.buffer.take(9);
    }
    if (this.buffer.length < 12) return null;
    const view = this.buffer.view();
    const captureUs = Number(view.getBigUint64(0));
    const len = view.getUint32(8);
    if (len > MAX_FRAME) throw new Error(`frame of ${len} bytes is too large`);
    if (this.buffer.length < 12 + len) return null;
    this.buffer.take(12);
    return { captureUs, payload: this.buffer.take(len).slice() };
  }
}
