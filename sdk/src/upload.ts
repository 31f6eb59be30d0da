// Resumable, chunked upload of one attachment (chat-node/PROTOCOL.md section 10, HTTP).
//
//   PUT  bytes offset..offset+chunk-1/size  ──200 {offset, state}──▶ next chunk … ──▶ state "ready"
//    │ network error, 5xx, 503 unavailable      │ 409 offset_mismatch {offset}
//    ▼                                          ▼
//   wait (backoff, full jitter) ─▶ HEAD ─▶ Upload-Offset ─▶ continue from there
//
// Every chunk but the last is exactly `chunkBytes` long (the node stores each as one part of a
// multipart upload). Failures in a row are bounded; a chunk that moves the offset resets the count.
// Retried: network errors, 5xx, 408 timeout, 429 busy (after Retry-After), 409 upload_in_progress and
// 400 incomplete (from the node's offset). Refusals that no retry can fix (403, 404, 410 expired or
// failed, 413, other 400s, 415) end the upload as failed.

import { backoffDelay, type BackoffOptions } from './backoff.js';
import type { Attachment } from './types.js';

/** A file to upload: a browser `File` or `Blob`, or anything with a size, a type and `slice`. */
export interface UploadSource {
  readonly name?: string;
  readonly size: number;
  readonly type: string;
  slice(start?: number, end?: number): Blob;
}

/** One HTTP request of an upload. `onProgress` reports body bytes sent so far (where the transport can). */
export interface HttpRequestInit {
  method: 'PUT' | 'HEAD' | 'GET' | 'DELETE';
  url: string;
  headers: Record<string, string>;
  body?: Blob;
  signal: AbortSignal;
  onProgress?: (loaded: number) => void;
}

/** What an upload needs of an HTTP answer. */
export interface HttpAnswer {
  status: number;
  header(name: string): string | null;
  body: string;
}

/** Sends one request; rejects on a network error or when `signal` aborts. */
export type HttpRequest = (init: HttpRequestInit) => Promise<HttpAnswer>;

/** The part of `fetch` an upload uses. */
export type UploadFetch = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: Blob; signal: AbortSignal },
) => Promise<{ status: number; headers: { get(name: string): string | null }; text(): Promise<string> }>;

/** The part of `XMLHttpRequest` an upload uses (browsers: progress inside a chunk). */
export interface XhrLike {
  open(method: string, url: string): void;
  setRequestHeader(name: string, value: string): void;
  getResponseHeader(name: string): string | null;
  send(body?: Blob | null): void;
  abort(): void;
  readonly status: number;
  readonly responseText: string;
  readonly upload?: { onprogress: ((e: { loaded: number }) => void) | null };
  onload: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
  ontimeout: (() => void) | null;
}

/** How an upload ended. `attachment` is the node's state object when it sent one. */
export type UploadOutcome =
  | { state: 'ready'; attachment?: Attachment }
  | { state: 'failed'; code: string; message: string; attachment?: Attachment }
  | { state: 'cancelled' };

/** Options of [`uploadAttachment`]. */
export interface UploadOptions {
  source: UploadSource;
  /** The upload URL, absolute; asked again before every request (the node to use may change). */
  url: () => string;
  /** The node's `upload_chunk_bytes`. */
  chunkBytes: number;
  request: HttpRequest;
  signal?: AbortSignal;
  /** Bytes the node has (or is being sent, inside a chunk) out of the total. */
  onProgress?: (sent: number, total: number) => void;
  /** Failures in a row before giving up (default 6). */
  maxRetries?: number;
  backoff?: BackoffOptions;
  /** Where the upload starts: 0 for a fresh one; `undefined` asks the node first (HEAD). */
  startAt?: number;
  /** Called on 410 `expired` when the URL's own `exp` has passed: resolve with a fresh URL, or null. */
  refreshUrl?: () => Promise<string | null>;
}

/** Consecutive failures tolerated by default (with backoff from 250 ms up to 10 s, about 20 s in all). */
const DEFAULT_RETRIES = 6;
/** A `Retry-After` above this is not waited for (the upload counts it as a failure and backs off). */
const MAX_RETRY_AFTER_MS = 60000;

/** An error that means the caller aborted. */
function aborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted ?? false;
}

/** Waits `ms`, or less when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (aborted(signal)) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done);
  });
}

function parse(body: string): Record<string, any> {
  try {
    const v = JSON.parse(body);
    return v && typeof v === 'object' ? v : {};
  } catch {
    return {};
  }
}

/** The attachment object of an upload answer: nested as `attachment`, or the answer itself. */
function attachmentOf(answer: Record<string, any>): Attachment | undefined {
  if (answer.attachment && typeof answer.attachment === 'object') return answer.attachment as Attachment;
  if (typeof answer.name === 'string' && typeof answer.state === 'string') return answer as Attachment;
  return undefined;
}

/** The code a refusal means when the answer has no `error` field. */
const STATUS_CODES: Record<number, string> = {
  400: 'size_mismatch',
  403: 'forbidden',
  404: 'not_found',
  410: 'expired',
  413: 'too_large',
  415: 'wrong_type',
};

/** The `exp` (ms since the epoch) of a signed URL, or 0. */
function expiry(url: string): number {
  try {
    return Number(new URL(url).searchParams.get('exp')) || 0;
  } catch {
    return 0;
  }
}

/**
 * Uploads `source` to its upload URL in chunks, resuming after errors from the offset the node
 * reports, until the node says the attachment is ready (or failed), the retries run out, or `signal`
 * aborts. Never rejects.
 */
export async function uploadAttachment(o: UploadOptions): Promise<UploadOutcome> {
  const total = o.source.size;
  const chunk = Math.max(1, Math.floor(o.chunkBytes));
  const maxRetries = o.maxRetries ?? DEFAULT_RETRIES;
  let offset = o.startAt ?? 0;
  let known = o.startAt !== undefined;
  let failures = 0;
  let refreshed = false;
  let url = o.url();
  const report = (sent: number) => o.onProgress?.(Math.min(total, Math.max(0, sent)), total);

  /**
   * Counts a failure; false once there were too many in a row. The wait is at least half the backoff
   * ceiling ("equal jitter"): the retries must outlast a node's death and the client's move to another
   * node (about 13 s before the 7th failure with the default backoff), which full jitter does not
   * promise.
   */
  const failed = async (waitMs?: number): Promise<boolean> => {
    failures += 1;
    if (failures > maxRetries) return false;
    const ceiling = backoffDelay(failures, o.backoff, () => 1);
    await sleep(waitMs ?? Math.max(100, ceiling / 2 + backoffDelay(failures, o.backoff) / 2), o.signal);
    return true;
  };
  const gaveUp = (code: string, message: string): UploadOutcome => ({ state: 'failed', code, message });

  for (;;) {
    if (aborted(o.signal)) return { state: 'cancelled' };
    url = o.url() || url;
    let answer: HttpAnswer;
    try {
      if (!known) {
        answer = await o.request({ method: 'HEAD', url, headers: {}, signal: o.signal ?? new AbortController().signal });
        if (answer.status === 200) {
          const at = Number(answer.header('upload-offset'));
          if (Number.isFinite(at) && at >= 0) {
            offset = at;
            known = true;
            report(offset);
            if (offset < total) continue;
            // Every byte is there: ask for the state.
            answer = await o.request({ method: 'GET', url, headers: { accept: 'application/json' }, signal: o.signal ?? new AbortController().signal });
            const s = parse(answer.body);
            if (answer.status === 200 && s.state === 'ready') return { state: 'ready', attachment: attachmentOf(s) };
            if (answer.status === 200 && s.state === 'failed') {
              const a = attachmentOf(s);
              return { state: 'failed', code: a?.error ?? 'failed', message: a?.reason ?? 'the node failed the attachment', attachment: a };
            }
          }
        }
      } else {
        const end = Math.min(total, offset + chunk);
        const start = offset;
        answer = await o.request({
          method: 'PUT',
          url,
          headers: { 'content-range': `bytes ${start}-${end - 1}/${total}` },
          body: o.source.slice(start, end),
          signal: o.signal ?? new AbortController().signal,
          onProgress: (loaded) => report(start + loaded),
        });
        if (answer.status === 200) {
          const s = parse(answer.body);
          const at = Number(s.offset);
          offset = Number.isFinite(at) && at >= start ? at : end;
          if (offset > start) failures = 0;
          report(offset);
          if (s.state === 'ready') return { state: 'ready', attachment: attachmentOf(s) };
          if (s.state === 'failed') {
            const a = attachmentOf(s);
            return { state: 'failed', code: a?.error ?? 'failed', message: a?.reason ?? 'the node failed the attachment', attachment: a };
          }
          if (offset >= total) known = false; // complete but not said ready: ask again
          continue;
        }
      }
    } catch {
      if (aborted(o.signal)) return { state: 'cancelled' };
      // A network error: the chunk may or may not have been stored. Ask the node after a pause.
      known = false;
      if (await failed()) continue;
      return gaveUp('unavailable', `the upload failed ${failures} times in a row (network)`);
    }
    if (aborted(o.signal)) return { state: 'cancelled' };
    const s = parse(answer.body);
    const code = typeof s.error === 'string' ? s.error : (STATUS_CODES[answer.status] ?? `http_${answer.status}`);
    const message = typeof s.message === 'string' ? s.message : `the node answered ${answer.status}`;
    if (answer.status === 409 && code === 'offset_mismatch' && Number.isFinite(Number(s.offset))) {
      // Another attempt stored more (or less) than this one thought: continue where the node is.
      offset = Number(s.offset);
      known = true;
      report(offset);
      if (await failed(0)) continue;
      return gaveUp('offset_mismatch', message);
    }
    if ((answer.status === 400 && code === 'incomplete') || (answer.status === 409 && code === 'upload_in_progress')) {
      // The body broke off before its end (the node kept what it says), or an earlier request of ours
      // is still being read: wait, then continue from the node's offset.
      known = false;
      if (await failed()) continue;
      return gaveUp(code, message);
    }
    if (answer.status === 409 && code === 'already_complete') {
      // An earlier attempt stored the last byte but its answer was lost.
      const a = attachmentOf(s);
      if (a?.state === 'ready') return { state: 'ready', attachment: a };
      known = false;
      offset = total;
      if (await failed(0)) continue;
      return gaveUp(code, message);
    }
    if (answer.status === 429) {
      const after = Number.parseFloat(answer.header('retry-after') ?? '');
      const wait = Number.isFinite(after) && after >= 0 ? Math.min(after * 1000, MAX_RETRY_AFTER_MS) : undefined;
      if (await failed(wait)) continue;
      return gaveUp(code, message);
    }
    if (answer.status === 410 && !refreshed && o.refreshUrl && expiry(url) > 0 && expiry(url) <= Date.now()) {
      // The signed URL itself ran out (a long upload): a fresh one continues the same upload.
      refreshed = true;
      const fresh = await o.refreshUrl();
      if (fresh) {
        url = fresh;
        known = false;
        continue;
      }
    }
    if (answer.status >= 500 || answer.status === 408 || (answer.status === 200 && !known)) {
      known = false;
      if (await failed()) continue;
      return gaveUp(code, message);
    }
    return { state: 'failed', code, message, attachment: attachmentOf(s) };
  }
}

/** An [`HttpRequest`] over `fetch`: progress per chunk (Node, or browsers without XMLHttpRequest). */
export function fetchRequest(fetchFn: UploadFetch): HttpRequest {
  return async (r) => {
    const init: { method: string; headers: Record<string, string>; body?: Blob; signal: AbortSignal } = {
      method: r.method,
      headers: r.headers,
      signal: r.signal,
    };
    if (r.body !== undefined) init.body = r.body;
    const res = await fetchFn(r.url, init);
    const body = r.method === 'HEAD' ? '' : await res.text();
    if (r.body !== undefined && res.status === 200) r.onProgress?.(r.body.size);
    return { status: res.status, header: (n) => res.headers.get(n), body };
  };
}

/** An [`HttpRequest`] over `XMLHttpRequest`: progress inside a chunk, as the browser sends it. */
export function xhrRequest(XHR: new () => XhrLike): HttpRequest {
  return (r) =>
    new Promise<HttpAnswer>((resolve, reject) => {
      const x = new XHR();
      x.open(r.method, r.url);
      for (const [k, v] of Object.entries(r.headers)) x.setRequestHeader(k, v);
      if (r.onProgress && x.upload) {
        const progress = r.onProgress;
        x.upload.onprogress = (e) => progress(e.loaded);
      }
      const onAbort = () => x.abort();
      const settle = () => r.signal.removeEventListener('abort', onAbort);
      x.onload = () => {
        settle();
        resolve({ status: x.status, header: (n) => x.getResponseHeader(n), body: x.responseText });
      };
      x.onerror = () => {
        settle();
        reject(new Error('network error'));
      };
      x.ontimeout = x.onerror;
      x.onabort = () => {
        settle();
        reject(new Error('aborted'));
      };
      r.signal.addEventListener('abort', onAbort);
      x.send(r.body ?? null);
    });
}
