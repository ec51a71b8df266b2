// Fragmented MP4 as ffmpeg writes it for Ghost Stream: the init segment (ftyp + moov) gives
// each track's codec and its decoder configuration; each frame's payload is one fragment
// (moof + mdat) of one track, which the first frame of a group may precede with the stream's
// new init segment when its codec setup changed (`splitInit`). Only what WebCodecs needs is
// read; anything malformed throws, except in `splitInit`, which only looks.

const text = new TextDecoder();

/** The box at `at` of a parent ending at `end`, or null when its header is cut short or it
 * overruns the parent. Size 1: a 64-bit size follows the type; size 0: up to the parent's end. */
function boxAt(view, at, end) {
  if (at + 8 > end) return null;
  let size = view.getUint32(at);
  const type = text.decode(new Uint8Array(view.buffer, view.byteOffset + at + 4, 4));
  let header = 8;
  if (size === 1) {
    if (at + 16 > end) return null;
    size = Number(view.getBigUint64(at + 8));
    header = 16;
  } else if (size === 0) {
    size = end - at;
  }
  if (size < header || at + size > end) return null;
  return { type, start: at, body: at + header, end: at + size };
}

function* boxes(view, start, end) {
  for (let at = start; at + 8 <= end;) {
    const b = boxAt(view, at, end);
    if (!b) throw new Error(`the box at byte ${at} overruns its parent`);
    yield b;
    at = b.end;
  }
}

/** A frame's payload split into the init segment it starts with, if any, and its fragment:
 * `{ init, fragment }`, views into `bytes`. `init` is null, and `fragment` all of `bytes`,
 * unless the payload starts with an ftyp and well-formed boxes up to a moov. Never throws. */
export function splitInit(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.byteLength;
  const ftyp = boxAt(view, 0, end);
  if (ftyp && ftyp.type === "ftyp") {
    // Every box is at least a header long: each turn moves on.
    for (let b = boxAt(view, ftyp.end, end); b && b.type !== "moof" && b.type !== "mdat"; b = boxAt(view, b.end, end)) {
      if (b.type === "moov") return { init: bytes.subarray(0, b.end), fragment: bytes.subarray(b.end) };
    }
  }
  return { init: null, fragment: bytes };
}

function child(view, parent, type) {
  for (const b of boxes(view, parent.body, parent.end)) if (b.type === type) return b;
  return null;
}

function path(view, parent, ...types) {
  let at = parent;
  for (const t of types) {
    at = at && child(view, at, t);
  }
  return at;
}

const hex = (n) => n.toString(16).padStart(2, "0");

const AAC_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

function esdsConfig(view, esds) {
  // Descriptors: ES (3) > DecoderConfig (4) > DecoderSpecificInfo (5): the AudioSpecificConfig.
  let at = esds.body + 4;
  const readLen = () => {
    let len = 0;
    for (let i = 0; i < 4; i++) {
      const b = view.getUint8(at++);
      len = (len << 7) | (b & 0x7f);
      if (!(b & 0x80)) break;
    }
    return len;
  };
  while (at < esds.end) {
    const tag = view.getUint8(at++);
    const len = readLen();
    if (tag === 3) { at += 3; continue; }
    if (tag === 4) { at += 13; continue; }
    if (tag === 5) return new Uint8Array(view.buffer.slice(view.byteOffset + at, view.byteOffset + at + len));
    at += len;
  }
  throw new Error("esds without an AudioSpecificConfig");
}

/** Tracks of an init segment: id, kind, timescale and a WebCodecs decoder config. */
export function parseInit(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const top = { body: 0, end: bytes.byteLength };
  const moov = child(view, top, "moov");
  if (!moov) throw new Error("the init segment has no moov");
  const defaults = new Map();
  const mvex = child(view, moov, "mvex");
  if (mvex) {
    for (const b of boxes(view, mvex.body, mvex.end)) {
      if (b.type === "trex") defaults.set(view.getUint32(b.body + 4), view.getUint32(b.body + 20));
    }
  }
  const tracks = [];
  for (const trak of boxes(view, moov.body, moov.end)) {
    if (trak.type !== "trak") continue;
    const tkhd = child(view, trak, "tkhd");
    const mdhd = path(view, trak, "mdia", "mdhd");
    const hdlr = path(view, trak, "mdia", "hdlr");
    const stsd = path(view, trak, "mdia", "minf", "stbl", "stsd");
    if (!tkhd || !mdhd || !hdlr || !stsd) continue;
    const v1 = (b) => view.getUint8(b.body) === 1;
    const id = view.getUint32(tkhd.body + (v1(tkhd) ? 20 : 12));
    const timescale = view.getUint32(mdhd.body + (v1(mdhd) ? 20 : 12));
    const handler = text.decode(new Uint8Array(bytes.buffer, bytes.byteOffset + hdlr.body + 8, 4));
    const entry = boxes(view, stsd.body + 8, stsd.end).next().value;
    if (!entry) continue;
    const track = { id, timescale, kind: handler === "vide" ? "video" : handler === "soun" ? "audio" : "other", defaultFlags: defaults.get(id) ?? 0, config: null };
    if (entry.type === "avc1" || entry.type === "avc3") {
      const avcC = boxes(view, entry.body + 78, entry.end);
      for (const b of avcC) {
        if (b.type !== "avcC") continue;
        const p = (i) => hex(view.getUint8(b.body + i));
        track.config = {
          codec: `${entry.type}.${p(1)}${p(2)}${p(3)}`,
          description: new Uint8Array(bytes.buffer.slice(bytes.byteOffset + b.body, bytes.byteOffset + b.end)),
          codedWidth: view.getUint16(entry.body + 24),
          codedHeight: view.getUint16(entry.body + 26),
          optimizeForLatency: true,
        };
      }
    } else if (entry.type === "Opus" || entry.type === "mp4a") {
      const channels = view.getUint16(entry.body + 16);
      const sampleRate = view.getUint32(entry.body + 24) >>> 16;
      for (const b of boxes(view, entry.body + 28, entry.end)) {
        if (b.type === "dOps") {
          track.config = { codec: "opus", sampleRate: 48000, numberOfChannels: view.getUint8(b.body + 1) };
        }
        if (b.type === "esds") {
          // The AudioSpecificConfig is what the decoder goes by (ffmpeg writes 2 channels in
          // the sample entry of a mono stream), so rate and channels come from it.
          const asc = esdsConfig(view, b);
          const objectType = asc[0] >> 3;
          const rateIndex = ((asc[0] & 0x7) << 1) | (asc[1] >> 7);
          const ascChannels = (asc[1] >> 3) & 0xf;
          track.config = {
            codec: `mp4a.40.${objectType}`,
            sampleRate: AAC_RATES[rateIndex] ?? sampleRate,
            numberOfChannels: ascChannels || channels,
            description: asc,
          };
        }
      }
    }
    tracks.push(track);
  }
  return tracks;
}

const KEY = (flags) => ((flags >>> 24) & 0x3) === 2 || !(flags & 0x10000);

/** The samples of one fragment: track id, and per sample its bytes, times (µs) and key flag. */
export function parseFragment(bytes, tracks) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const top = { body: 0, end: bytes.byteLength };
  let moof = null;
  for (const b of boxes(view, 0, bytes.byteLength)) if (b.type === "moof") { moof = b; break; }
  if (!moof) throw new Error("a fragment without moof");
  const out = [];
  for (const traf of boxes(view, moof.body, moof.end)) {
    if (traf.type !== "traf") continue;
    const tfhd = child(view, traf, "tfhd");
    if (!tfhd) continue;
    const tf = view.getUint32(tfhd.body) & 0xffffff;
    const trackId = view.getUint32(tfhd.body + 4);
    const track = tracks.find((t) => t.id === trackId);
    if (!track) continue;
    let at = tfhd.body + 8;
    let base = moof.start;
    if (tf & 0x1) { base = Number(view.getBigUint64(at)); at += 8; }
    if (tf & 0x2) at += 4;
    let defDuration = 0, defSize = 0, defFlags = track.defaultFlags;
    if (tf & 0x8) { defDuration = view.getUint32(at); at += 4; }
    if (tf & 0x10) { defSize = view.getUint32(at); at += 4; }
    if (tf & 0x20) { defFlags = view.getUint32(at); at += 4; }
    const tfdt = child(view, traf, "tfdt");
    let decode = tfdt ? (view.getUint8(tfdt.body) === 1 ? Number(view.getBigUint64(tfdt.body + 4)) : view.getUint32(tfdt.body + 4)) : 0;
    for (const trun of boxes(view, traf.body, traf.end)) {
      if (trun.type !== "trun") continue;
      const version = view.getUint8(trun.body);
      const rf = view.getUint32(trun.body) & 0xffffff;
      const count = view.getUint32(trun.body + 4);
      let p = trun.body + 8;
      let offset = 0;
      if (rf & 0x1) { offset = view.getInt32(p); p += 4; }
      let firstFlags = null;
      if (rf & 0x4) { firstFlags = view.getUint32(p); p += 4; }
      let data = base + offset;
      for (let i = 0; i < count; i++) {
        const duration = rf & 0x100 ? view.getUint32((p += 4) - 4) : defDuration;
        const size = rf & 0x200 ? view.getUint32((p += 4) - 4) : defSize;
        let flags = rf & 0x400 ? view.getUint32((p += 4) - 4) : defFlags;
        if (i === 0 && firstFlags !== null) flags = firstFlags;
        let cto = 0;
        if (rf & 0x800) { cto = version === 0 ? view.getUint32(p) : view.getInt32(p); p += 4; }
        if (data + size > bytes.byteLength) throw new Error("a sample beyond its fragment");
        out.push({
          track,
          data: bytes.subarray(data, data + size),
          timestamp: Math.round(((decode + cto) * 1e6) / track.timescale),
          duration: Math.round((duration * 1e6) / track.timescale),
          key: KEY(flags),
        });
        decode += duration;
        data += size;
      }
    }
  }
  return out;
}
