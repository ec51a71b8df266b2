// The fallback decoder: Media Source Extensions (or Safari's ManagedMediaSource, the one an
// iPhone has), for browsers without WebCodecs. The stream is fragmented MP4 already, so the
// init segment and each frame's fragment go to one SourceBuffer as they arrive, and a
// <video> element plays them; the page keeps it at the live edge, jumping over a skipped
// group's gap. Same interface as the WebCodecs player in watch.js: `push`, `skipTo`,
// `close`, and `init`, the init segment it was made from.

import { parseFragment, parseInit } from "/app/mp4.js";

/** How far the picture may trail the newest media before it jumps to it, in seconds: a
 * skipped group, or a stall, leaves it behind. */
const BEHIND_S = 0.5;
/** Where it lands, before the newest media's end, in seconds. */
const LAND_S = 0.05;
/** Past this much behind the newest media (seconds), the picture plays a little faster until
 * it is back: a small lag is caught up without a jump. */
const CATCH_UP_S = 0.12;
/** Media kept behind the picture, in seconds; older is removed from the buffer. */
const KEEP_S = 10;
/** Fragments waiting for the SourceBuffer at most; past it the oldest are dropped. */
const QUEUE = 600;

/** The MediaSource constructor this browser has, if any. */
export function mediaSource() {
  if (typeof ManagedMediaSource !== "undefined") return ManagedMediaSource;
  if (typeof MediaSource !== "undefined") return MediaSource;
  return null;
}

/** The MIME type of an init segment's tracks, with their codecs. */
export function mimeOf(tracks) {
  const codecs = tracks.filter((t) => t.config).map((t) => t.config.codec);
  const kind = tracks.some((t) => t.kind === "video") ? "video" : "audio";
  return `${kind}/mp4; codecs="${codecs.join(",")}"`;
}

export class MsePlayer {
  /** Plays `init` and what follows in `video`; `rendered(captureUs)` is called for each
   * picture shown (where the browser tells), `failed(error)` when the browser refuses. */
  constructor(init, video, { rendered, failed }) {
    this.init = init;
    this.tracks = parseInit(init);
    this.video = video;
    this.rendered = rendered;
    this.failed = failed;
    this.captures = new Map();
    this.queue = [init];
    this.waitingForKey = true;
    this.closed = false;
    const Source = mediaSource();
    if (!Source) throw new Error("no Media Source Extensions here");
    const mime = mimeOf(this.tracks);
    if (Source.isTypeSupported && !Source.isTypeSupported(mime)) {
      throw new Error(`this browser cannot play ${mime}`);
    }
    this.source = new Source();
    // ManagedMediaSource plays only where remote playback is off.
    video.disableRemotePlayback = true;
    video.muted = true;
    video.playsInline = true;
    video.autoplay = true;
    this.url = URL.createObjectURL(this.source);
    video.src = this.url;
    this.source.addEventListener("sourceopen", () => this.open(mime), { once: true });
    if (typeof video.requestVideoFrameCallback === "function") {
      const shown = (_now, meta) => {
        if (this.closed) return;
        const us = Math.round(meta.mediaTime * 1e6);
        const capture = this.captures.get(us) ?? this.captures.get(us - 1) ?? this.captures.get(us + 1);
        if (capture !== undefined) this.rendered(capture);
        video.requestVideoFrameCallback(shown);
      };
      video.requestVideoFrameCallback(shown);
    }
  }

  open(mime) {
    if (this.closed) return;
    try {
      this.buffer = this.source.addSourceBuffer(mime);
    } catch (e) {
      this.failed(e);
      return;
    }
    this.buffer.mode = "segments";
    this.buffer.addEventListener("updateend", () => {
      this.follow();
      this.pump();
    });
    this.buffer.addEventListener("error", () => this.failed(new Error("the browser could not decode the stream")));
    this.pump();
  }

  /** One fragment, with the capture time the publisher stamped it with. */
  push(payload, captureUs) {
    if (this.closed) return;
    let samples;
    try {
      samples = parseFragment(payload, this.tracks);
    } catch {
      return;
    }
    const video = samples.filter((s) => s.track.kind === "video");
    if (video.length > 0) {
      // After a skipped group, media resumes at a keyframe: what comes before it is late.
      if (this.waitingForKey && !video[0].key) return;
      this.waitingForKey = false;
      for (const s of video) this.captures.set(s.timestamp, captureUs);
      while (this.captures.size > 600) this.captures.delete(this.captures.keys().next().value);
    }
    this.queue.push(payload.slice());
    if (this.queue.length > QUEUE) this.queue.splice(1, this.queue.length - QUEUE);
    this.pump();
  }

  pump() {
    if (!this.buffer || this.buffer.updating || this.queue.length === 0 || this.closed) return;
    try {
      this.buffer.appendBuffer(this.queue.shift());
    } catch (e) {
      // Full: make room behind the picture and try again on the next update.
      if (e && e.name === "QuotaExceededError") this.trim(2);
      else this.failed(e);
    }
  }

  /** Keeps the picture at the live edge, and the buffer to what is still to come. */
  follow() {
    const ranges = this.buffer.buffered;
    if (ranges.length === 0) return;
    const last = ranges.length - 1;
    const start = ranges.start(last);
    const end = ranges.end(last);
    const now = this.video.currentTime;
    if (now < start || end - now > BEHIND_S) this.video.currentTime = Math.max(start, end - LAND_S);
    this.video.playbackRate = end - this.video.currentTime > CATCH_UP_S ? 1.1 : 1;
    if (this.video.paused) this.video.play().catch(() => {});
    if (now - ranges.start(0) > KEEP_S + 5) this.trim(KEEP_S);
  }

  /** Removes media more than `keep` seconds behind the picture. */
  trim(keep) {
    const before = this.video.currentTime - keep;
    if (!this.buffer || this.buffer.updating || before <= 0) return;
    try {
      this.buffer.remove(0, before);
    } catch {
      // Removing is a nicety; the next update tries again.
    }
  }

  /** A new group begins: whatever came before its keyframe is late. */
  skipTo() {
    this.waitingForKey = true;
  }

  close() {
    this.closed = true;
    try {
      if (this.source.readyState === "open") this.source.endOfStream();
    } catch {
      // Already ended.
    }
    this.video.removeAttribute("src");
    this.video.load();
    URL.revokeObjectURL(this.url);
  }
}
