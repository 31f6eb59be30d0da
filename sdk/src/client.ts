// The Switchboard client: one connection to one node of a cluster at a time, kept alive across node
// deaths and drains, with every room and direct-message sequence recovered without a gap or a
// duplicate (chat-node/PROTOCOL.md).
//
//   connect() ─▶ GET {registry}/v1/assign ─▶ WebSocket url ─▶ hello (token | user, dm_since)
//                      ▲                                         │ welcome
//                      │ backoff (full jitter, capped)           ▼
//   close / reconnect notice / pong timeout ◀──── join rooms (since = last contiguous seq)
//                                                 resend unacknowledged sends (same client_id)
//
// Room messages are emitted once per sequence number: `lastSeq` is the highest sequence up to which
// every message was seen, `above` holds the ones seen beyond it (own messages acknowledged before
// their predecessors arrived). A hole in a live stream is filled from history.
//
// Files (PROTOCOL.md section 10): a send with `files` declares them (name, size, type); its ack
// brings one upload URL per file, and each file is uploaded in chunks over HTTP (upload.ts) to the
// node's HTTP base (the WebSocket URL with ws→http, path removed). The current state of every
// attachment seen is kept by id, so `attachment` updates, history pages and recovered messages are
// applied idempotently: a final state (ready, failed) is never replaced by an older `pending`.

import { backoffDelay, type BackoffOptions } from './backoff.js';
import { Emitter } from './emitter.js';
import { fetchRequest, uploadAttachment, xhrRequest, type HttpRequest, type UploadFetch, type UploadSource, type XhrLike } from './upload.js';
import type {
  Ack,
  Assignment,
  Attachment,
  AttachmentDeclaration,
  AttachmentUpdate,
  DirectMessage,
  DmAck,
  ErrorFrame,
  HistoryPage,
  Joined,
  LastSeen,
  Left,
  Limits,
  Message,
  Presence,
  Read,
  ReconnectNotice,
  ServerFrame,
  Typing,
  UploadTicket,
  Welcome,
} from './types.js';

/** The part of the WebSocket API the client uses (the browser's, or the `ws` package's in Node). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: any) => void): void;
}

/** A WebSocket constructor: `globalThis.WebSocket` in browsers, `(await import('ws')).WebSocket` in Node. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The part of `fetch` the client uses. */
export type FetchLike = (
  url: string,
  init?: { method?: string; headers?: Record<string, string>; body?: string | Blob; cache?: 'no-store'; signal?: AbortSignal },
) => Promise<{ ok: boolean; status: number; headers: { get(name: string): string | null }; json(): Promise<any>; text(): Promise<string> }>;

/** Why a token is asked for: a new connection, a renewal before expiry, or after the node said it expired. */
export type TokenReason = 'connect' | 'refresh' | 'expired';

/** A fixed token, or a function asked for one on every connect and before the session's token expires. */
export type TokenSource = string | ((reason: TokenReason) => string | Promise<string>);

/** Options of [`SwitchboardClient`]. */
export interface ClientOptions {
  /** Base URL of the registry (or of a standalone node), e.g. `https://chat.example.com`. */
  registry: string;
  /** Token mode: the JWT (or a source of fresh ones) sent in `hello` and renewed with `refresh`. */
  token?: TokenSource;
  /** Open mode (development only): the user name to claim. Ignored when `token` is given. */
  user?: string;
  /** The WebSocket constructor; default `globalThis.WebSocket` (Node 20 has none: pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /** The fetch function; default `globalThis.fetch`. */
  fetch?: FetchLike;
  /** Reconnect backoff (default 250 ms doubling to a 10 s cap, full jitter). */
  backoff?: BackoffOptions;
  /** The last direct-message sequence this device has seen (sent as `dm_since`). */
  dmSince?: number;
  /** Application ping interval; a missing `pong` drops the connection (default 20 s / 10 s). */
  pingIntervalMs?: number;
  /** How long a `pong` may take. */
  pongTimeoutMs?: number;
  /** How long opening the socket and getting `welcome` may take (default 8 s). */
  connectTimeoutMs?: number;
  /** Renew the token this long before it expires (default 60 s). */
  refreshBeforeMs?: number;
  /** How often a send refused with `unavailable`/`internal` is retried before it fails (default 5). */
  maxSendRetries?: number;
  /** Prefix of generated `client_id`s (default: random per client). */
  clientIdPrefix?: string;
  /**
   * How uploads send HTTP requests; default `XMLHttpRequest` where there is one (progress inside a
   * chunk), else `fetch` (progress per chunk).
   */
  httpRequest?: HttpRequest;
  /** Upload failures in a row (network, 5xx, busy) before a file is given up (default 6). */
  maxUploadRetries?: number;
}

/** Where the connection is. */
export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** A room message as emitted: `recovered` when it came through recovery or gap filling. */
export interface MessageEvent {
  message: Message;
  /** Delivered by `join` with `since` after a reconnect, or fetched to fill a hole. */
  recovered: boolean;
  /** Sent by this client (matched by `client_id`). */
  own: boolean;
}

/** A send that the node acknowledged; `attachments` (pending) when it carried files. */
export type Sent =
  | { kind: 'room'; clientId: string; room: string; body: string; seq: number; id: string; ts: number; duplicate: boolean; attachments?: Attachment[] }
  | { kind: 'dm'; clientId: string; to: string; body: string; id: string; ts: number; duplicate: boolean; attachments?: Attachment[] };

/** The outcome of `send`/`dm`: acknowledged, or failed for good with the node's (or the client's) code. */
export type SendResult = ({ ok: true } & Sent) | { ok: false; clientId: string; code: string; message: string };

/** Upload progress of one file of a send. */
export interface UploadProgress {
  clientId: string;
  /** The file's position in `files`. */
  index: number;
  /** The attachment id (known once the send is acknowledged). */
  id: string | null;
  name: string;
  /** Bytes sent (inside a chunk where the transport reports it) and the file's size. */
  sent: number;
  total: number;
}

/** How the upload of one file of a send ended. */
export interface UploadResult {
  clientId: string;
  index: number;
  id: string | null;
  name: string;
  /** `cancelled`: by `cancel()`, `close()`, or because the send itself failed. */
  state: 'ready' | 'failed' | 'cancelled';
  /** Why it failed: an HTTP refusal (`wrong_type`, `too_large`, `expired`, ...) or `unavailable`. */
  code?: string;
  message?: string;
  /** The node's state object when it sent one. */
  attachment?: Attachment;
}

/** What `send` and `dm` return: the `client_id` at once, the outcome later (never rejected). */
export interface SendHandle {
  clientId: string;
  result: Promise<SendResult>;
  /** With files: resolves when every upload has ended, in the order of `files` (empty without). */
  uploads: Promise<UploadResult[]>;
  /** Stops the uploads; a send not yet written to the node is dropped (result `cancelled`). */
  cancel(): void;
}

/** Options of `send` and `dm`. */
export interface SendOptions {
  /** The `client_id` (default: generated). */
  clientId?: string;
  /** Files to attach (1–10; `File`s in browsers, `Blob`s or `File`s in Node). The body may then be empty. */
  files?: UploadSource[];
  /** Called with the progress of each file (also emitted as `uploadProgress`). */
  onProgress?: (p: UploadProgress) => void;
}

/** An attachment's state changed (an `attachment` frame, or an upload's own answer). */
export interface AttachmentEvent {
  messageId: string;
  /** Room messages. */
  room?: string;
  seq?: number;
  /** Direct messages. */
  from?: string;
  to?: string;
  attachment: Attachment;
}

/** A queued send changed state (for showing "sending…", "retrying in 2 s"). */
export interface SendStateEvent {
  clientId: string;
  kind: 'room' | 'dm';
  state: 'queued' | 'sent' | 'retrying' | 'paused';
  retryInMs?: number;
  code?: string;
}

/** Recovery after a reconnect finished for a room. */
export interface RecoveredEvent {
  room: string;
  /** The sequence the client re-joined with. */
  since: number;
  /** The room's `last_seq` when re-joined. */
  target: number;
  /** How many missed messages came back. */
  count: number;
  /** Messages between `since` and the room's `first_seq` were no longer kept. */
  gone: boolean;
  node: string | null;
  previousNode: string | null;
}

/** The connection went away; the client reconnects after `retryInMs`. */
export interface DisconnectedEvent {
  /** The close code, or 0 when the client gave up on the socket itself. */
  code: number;
  reason: string;
  node: string | null;
  retryInMs: number;
  attempt: number;
}

/** Every event of the client, by name. */
export interface ClientEvents {
  state: { state: ConnectionState; node: string | null };
  welcome: Welcome & { previousNode: string | null; url: string };
  disconnected: DisconnectedEvent;
  joined: { room: string; joined: Joined; rejoin: boolean };
  left: Left;
  message: MessageEvent;
  recovered: RecoveredEvent;
  sent: Sent;
  sendState: SendStateEvent;
  sendFailed: { clientId: string; kind: 'room' | 'dm'; body: string; room?: string; to?: string; code: string; message: string };
  dm: DirectMessage;
  /** An attachment became ready or failed (once per change, whatever repeats it). */
  attachment: AttachmentEvent;
  uploadProgress: UploadProgress;
  uploadDone: UploadResult;
  presence: Presence;
  typing: Typing;
  read: Read;
  reconnectNotice: ReconnectNotice;
  refreshed: { expiresAt: number };
  /** An `error` frame not answered through a promise or a send (e.g. a dropped typing frame). */
  error: ErrorFrame;
  /** The client stopped for good: `close()` was called, or the node refused the identity (4001). */
  closed: { code: number; reason: string };
}

/** A refusal: an `error` frame's code, `disconnected`, `closed`, or a client-side check. */
export class SwitchboardError extends Error {
  /** The protocol's error code (PROTOCOL.md section 7) or `disconnected` / `closed` / `invalid`. */
  readonly code: string;
  /** When the node said when to try again. */
  readonly retryAfterMs: number | undefined;

  constructor(code: string, message: string, retryAfterMs?: number) {
    super(message);
    this.name = 'SwitchboardError';
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

/** User names (PROTOCOL.md section 2). */
export const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
/** Room names (PROTOCOL.md section 2). */
export const ROOM_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;

const OPEN = 1;
/** The node relays one typing frame per user and room every 2 s; more are dropped. */
const TYPING_EVERY_MS = 2000;
/** A recovery that does not reach the re-join's `last_seq` (messages gone meanwhile) ends after this. */
const RECOVERY_TIMEOUT_MS = 5000;
/** Close 4029 (flooding) means the client is too fast: wait at least this before reconnecting. */
const FLOOD_PAUSE_MS = 5000;
/** Ids remembered for deduplication (a user's inbox keeps at most 1000 direct messages). */
const IDS_KEPT = 2000;
const HISTORY_MAX = 200;
const LAST_SEEN_MAX = 100;
/** Attachment states remembered (to apply updates and repeats idempotently). */
const ATTACHMENTS_KEPT = 2000;
/** PROTOCOL.md section 10: the node's chunk size when its welcome predates attachments. */
const DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024;
const MAX_FILES = 10;
const MAX_FILE_NAME = 255;
/** A MIME type: `type/subtype`. */
const MIME = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$/;

/**
 * The name the node will show (chat-node/PROTOCOL.md section 10): the last path segment, control
 * characters, quotes, backquotes and `<>` made `_`, at most 255 characters, no leading dots.
 */
export function safeFileName(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? name;
  const cleaned = [...base]
    .map((ch) => (/[\u0000-\u001f\u007f-\u009f"'`<>]/.test(ch) ? '_' : ch))
    .slice(0, MAX_FILE_NAME)
    .join('')
    .trim()
    .replace(/^\.+/, '')
    .trim();
  return cleaned || 'file';
}

/** Adds `id` to a set that keeps only the newest `IDS_KEPT` entries (insertion order). */
function remember(set: Set<string>, id: string): void {
  set.add(id);
  if (set.size > IDS_KEPT) {
    const oldest = set.values().next().value;
    if (oldest !== undefined) set.delete(oldest);
  }
}

interface RoomState {
  wanted: boolean;
  joined: boolean;
  haveBase: boolean;
  lastSeq: number;
  firstSeq: number;
  above: Set<number>;
  myRead: number;
  lastTyping: number;
  recovery: (RecoveredEvent & { timer: ReturnType<typeof setTimeout> | undefined }) | null;
  waiters: { resolve: (j: Joined) => void; reject: (e: SwitchboardError) => void }[];
}

interface Pending {
  kind: 'room' | 'dm';
  clientId: string;
  room?: string;
  to?: string;
  body: string;
  state: 'queued' | 'sent';
  tries: number;
  notBefore: number;
  resolve: (r: SendResult) => void;
  job?: UploadJob;
}

/** The files of one send, from declaration to the end of the last upload. */
interface UploadJob {
  clientId: string;
  files: UploadSource[];
  declared: AttachmentDeclaration[];
  /** The send frame, kept to ask for fresh upload URLs (a resend acks with new ones). */
  frame: Record<string, unknown>;
  abort: AbortController;
  onProgress?: (p: UploadProgress) => void;
  resolve: (r: UploadResult[]) => void;
  started: boolean;
}

interface Request {
  resolve: (frame: any) => void;
  reject: (err: SwitchboardError) => void;
}

/**
 * A Switchboard chat client. Create it, subscribe to events with `on`, call `connect()`, then `join`
 * rooms and `send`. It reconnects by itself (through the registry) until `close()`.
 */
export class SwitchboardClient extends Emitter<ClientEvents> {
  private readonly opts: ClientOptions;
  private readonly WS: WebSocketConstructor;
  private readonly fetchFn: FetchLike;
  private ws: WebSocketLike | null = null;
  private welcomed = false;
  private stateValue: ConnectionState = 'idle';
  private nodeValue: string | null = null;
  /** The node the current (or last) socket was opened to, as the registry named it. */
  private dialedNode: string | null = null;
  /** The node lost or not opened last: the next assignment asks the registry to avoid it. */
  private avoidNode: string | null = null;
  private previousNode: string | null = null;
  private userValue: string | null;
  private limitsValue: Limits | null = null;
  private attempt = 0;
  private dialEpoch = 0;
  private minDelayMs = 0;
  private tokenReason: TokenReason = 'connect';
  private token: string | null = null;
  private expiresAt = 0;
  private dmSeqValue: number;
  private readonly dmIds = new Set<string>();
  /** Recently acknowledged room `client_id`s (to tell own messages that arrive after their ack). */
  private readonly sentIds = new Set<string>();
  private readonly rooms = new Map<string, RoomState>();
  private readonly pending = new Map<string, Pending>();
  private readonly requests = new Map<string, Request>();
  /** `req` of each `join` in flight → its room (a refusal names only the `req`). */
  private readonly joinReqs = new Map<string, string>();
  /** The current state of every attachment seen, by id (the newest `ATTACHMENTS_KEPT`). */
  private readonly attachmentStates = new Map<string, Attachment>();
  /** Room attachments last known as pending (looked up again after a reconnect: updates sent while
   * this client was away are not replayed). */
  private readonly pendingRoomAttachments = new Map<string, { room: string; seq: number }>();
  /** Uploads that have not ended, by `client_id`. */
  private readonly jobs = new Map<string, UploadJob>();
  /** Acks asked for again (fresh upload URLs), by `client_id`. */
  private readonly ticketWaiters = new Map<string, (tickets: UploadTicket[] | null) => void>();
  private readonly http: HttpRequest;
  private wsUrl: string | null = null;
  private reqN = 0;
  private clientN = 0;
  private readonly clientTag: string;
  private tokens = 1;
  private tokensAt = 0;
  private pausedUntil = 0;
  private timers: Record<'retry' | 'connect' | 'ping' | 'pong' | 'refresh' | 'pump', ReturnType<typeof setTimeout> | undefined> = {
    retry: undefined,
    connect: undefined,
    ping: undefined,
    pong: undefined,
    refresh: undefined,
    pump: undefined,
  };

  constructor(options: ClientOptions) {
    super();
    this.opts = options;
    const g = globalThis as any;
    const WS = options.WebSocket ?? (g.WebSocket as WebSocketConstructor | undefined);
    if (!WS) throw new SwitchboardError('invalid', 'no WebSocket: pass one as `WebSocket` (in Node: the `ws` package)');
    const fetchFn = options.fetch ?? (typeof g.fetch === 'function' ? (g.fetch.bind(g) as FetchLike) : undefined);
    if (!fetchFn) throw new SwitchboardError('invalid', 'no fetch: pass one as `fetch`');
    if (options.token === undefined && !(options.user && USER_NAME.test(options.user))) {
      throw new SwitchboardError('invalid_name', 'give a `token`, or a valid `user` name for an open-mode node');
    }
    this.WS = WS;
    this.fetchFn = fetchFn;
    const XHR = g.XMLHttpRequest as (new () => XhrLike) | undefined;
    this.http = options.httpRequest ?? (XHR && !options.fetch ? xhrRequest(XHR) : fetchRequest(fetchFn as unknown as UploadFetch));
    this.userValue = options.token === undefined ? (options.user ?? null) : null;
    this.dmSeqValue = Math.max(0, Math.floor(options.dmSince ?? 0));
    this.clientTag = options.clientIdPrefix ?? Math.random().toString(36).slice(2, 10);
  }

  // ------------------------------------------------------------------ state

  /** Where the connection is. */
  get state(): ConnectionState {
    return this.stateValue;
  }
  /** The node this client is connected to (from `welcome`), or null. */
  get node(): string | null {
    return this.nodeValue;
  }
  /** The user name (from `welcome` in token mode). */
  get user(): string | null {
    return this.userValue;
  }
  /** The node's limits (from `welcome`). */
  get limits(): Limits | null {
    return this.limitsValue;
  }
  /** The highest direct-message sequence seen (pass it as `dmSince` to a later client). */
  get dmSeq(): number {
    return this.dmSeqValue;
  }
  /** The sequence up to which every message of `room` was seen (0 before the first `joined`). */
  lastSeq(room: string): number {
    return this.rooms.get(room)?.lastSeq ?? 0;
  }
  /** The oldest sequence the room still keeps, as of the last `joined`. */
  firstSeq(room: string): number {
    return this.rooms.get(room)?.firstSeq ?? 0;
  }
  /** Whether `room` is joined on the current connection. */
  isJoined(room: string): boolean {
    return this.rooms.get(room)?.joined ?? false;
  }
  /** Sends not yet acknowledged, in the order they were written. */
  get pendingCount(): number {
    return this.pending.size;
  }

  // ------------------------------------------------------------------ connection

  /** Starts connecting (through the registry); the client keeps reconnecting until `close()`. */
  connect(): void {
    if (this.stateValue === 'closed') this.stateValue = 'idle';
    if (this.ws || this.stateValue === 'connecting') return;
    void this.dial();
  }

  /** Reconnects now instead of waiting out the backoff (e.g. a "retry now" button). */
  reconnectNow(): void {
    if (this.stateValue !== 'reconnecting') return;
    this.attempt = 0;
    clearTimeout(this.timers.retry);
    void this.dial();
  }

  /** Leaves every room and closes for good: pending sends fail with `closed`. */
  close(): void {
    if (this.stateValue === 'closed') return;
    for (const [room, r] of this.rooms) if (r.joined) this.sendFrame({ type: 'leave', room });
    this.stop(1000, 'closed by the client');
  }

  private setState(state: ConnectionState): void {
    if (this.stateValue === state) return;
    this.stateValue = state;
    this.emit('state', { state, node: state === 'connected' ? this.nodeValue : null });
  }

  private async dial(): Promise<void> {
    clearTimeout(this.timers.retry);
    this.setState('connecting');
    // A newer dial (reconnectNow, close) makes this one stale: it must not open a second socket.
    const epoch = ++this.dialEpoch;
    const stale = () => epoch !== this.dialEpoch || this.stateValue !== 'connecting';
    let assign: Assignment;
    let url: string;
    try {
      if (this.opts.token !== undefined) {
        const src = this.opts.token;
        try {
          this.token = typeof src === 'string' ? src : await src(this.tokenReason);
        } catch (err) {
          throw new Error(`no token: ${(err as Error).message}`);
        }
        this.tokenReason = 'connect';
      }
      if (stale()) return;
      const assignUrl = new URL('/v1/assign', this.opts.registry);
      // Not back to the node just lost while another has room (PROTOCOL.md section 1).
      if (this.avoidNode !== null) assignUrl.searchParams.set('avoid', this.avoidNode);
      this.dialedNode = null;
      const res = await this.fetchFn(assignUrl.toString(), {
        cache: 'no-store',
        headers: { accept: 'application/json' },
      });
      if (stale()) return;
      if (res.status === 503) {
        const after = Number.parseFloat(res.headers.get('retry-after') ?? '0');
        this.lost(0, 'no chat node is available', Number.isFinite(after) ? after * 1000 : 0);
        return;
      }
      if (!res.ok) throw new Error(`the registry answered ${res.status}`);
      assign = (await res.json()) as Assignment;
      if (typeof assign?.url !== 'string') throw new Error('the registry named no node');
      url = this.dialUrl(assign.url);
      this.dialedNode = typeof assign.node === 'string' ? assign.node : null;
    } catch (err) {
      if (!stale()) this.lost(0, `cannot get a node (${(err as Error).message})`, 0);
      return;
    }
    if (stale()) return;
    this.open(url);
  }

  /** A registry may advertise a wildcard listen address: dial the registry's host then. */
  private dialUrl(raw: string): string {
    const base = new URL(this.opts.registry);
    const u = new URL(raw, base);
    if (u.hostname === '0.0.0.0' || u.hostname === '[::]' || u.hostname === '::') u.hostname = base.hostname;
    if (u.protocol === 'http:') u.protocol = 'ws:';
    if (u.protocol === 'https:') u.protocol = 'wss:';
    return u.toString();
  }

  private open(url: string): void {
    let ws: WebSocketLike;
    try {
      ws = new this.WS(url);
    } catch (err) {
      this.lost(0, `cannot open ${url} (${(err as Error).message})`, 0);
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    clearTimeout(this.timers.connect);
    this.timers.connect = setTimeout(() => {
      if (this.ws === ws && !this.welcomed) this.drop('the node did not answer in time');
    }, this.opts.connectTimeoutMs ?? 8000);
    ws.addEventListener('open', () => {
      if (this.ws !== ws) return;
      const hello: Record<string, unknown> = { type: 'hello' };
      if (this.token !== null) hello.token = this.token;
      else hello.user = this.userValue;
      if (this.dmSeqValue > 0) hello.dm_since = this.dmSeqValue;
      ws.send(JSON.stringify(hello));
    });
    ws.addEventListener('message', (ev: { data: unknown }) => {
      if (this.ws !== ws) return;
      let frame: ServerFrame;
      try {
        frame = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data));
      } catch {
        return;
      }
      if (frame && typeof frame.type === 'string') this.onFrame(frame, url);
    });
    ws.addEventListener('close', (ev: { code?: number; reason?: string }) => {
      if (this.ws !== ws) return;
      this.onClosed(ev.code ?? 1006, ev.reason ?? '');
    });
    ws.addEventListener('error', () => {
      // A close event follows; nothing to do here (and Node's `ws` throws on an unhandled error).
    });
  }

  /** Gives up on the current socket at once (its late events are ignored) and reconnects. */
  private drop(why: string): void {
    const ws = this.ws;
    this.ws = null;
    try {
      ws?.close();
    } catch {
      // already closing
    }
    this.lost(0, why, 0);
  }

  private onClosed(code: number, reason: string): void {
    this.ws = null;
    if (code === 4001) {
      this.stop(code, reason || 'the node refused the identity');
      return;
    }
    if (code === 4011) this.tokenReason = 'expired';
    let minDelay = this.minDelayMs;
    this.minDelayMs = 0;
    if (code === 4029) minDelay = Math.max(minDelay, FLOOD_PAUSE_MS);
    this.lost(code, reason, minDelay);
  }

  /** The connection is gone (or never came): forget per-connection state and schedule a reconnect. */
  private lost(code: number, reason: string, minDelayMs: number): void {
    if (this.dialedNode !== null) this.avoidNode = this.dialedNode;
    this.connectionGone();
    const delay = Math.max(minDelayMs, backoffDelay(this.attempt, this.opts.backoff));
    this.attempt += 1;
    this.setState('reconnecting');
    this.emit('disconnected', { code, reason, node: this.nodeValue, retryInMs: delay, attempt: this.attempt });
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => void this.dial(), delay);
  }

  private connectionGone(): void {
    for (const name of ['connect', 'ping', 'pong', 'refresh', 'pump'] as const) clearTimeout(this.timers[name]);
    clearInterval(this.timers.ping);
    this.welcomed = false;
    for (const r of this.rooms.values()) {
      r.joined = false;
      this.finishRecovery(r);
    }
    for (const p of this.pending.values()) if (p.state === 'sent') p.state = 'queued';
    this.joinReqs.clear();
    const requests = [...this.requests.values()];
    this.requests.clear();
    for (const q of requests) q.reject(new SwitchboardError('disconnected', 'the connection was lost before the answer came'));
  }

  /** Stops for good. */
  private stop(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = null;
    this.dialEpoch += 1;
    clearTimeout(this.timers.retry);
    this.connectionGone();
    try {
      ws?.close(1000, 'bye');
    } catch {
      // already closed
    }
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.resolve({ ok: false, clientId: p.clientId, code: 'closed', message: reason });
    for (const job of [...this.jobs.values()]) this.cancelJob(job);
    for (const w of [...this.ticketWaiters.values()]) w(null);
    this.ticketWaiters.clear();
    for (const r of this.rooms.values()) {
      for (const w of r.waiters.splice(0)) w.reject(new SwitchboardError('closed', reason));
    }
    this.setState('closed');
    this.emit('closed', { code, reason });
  }

  private sendFrame(frame: Record<string, unknown>): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || !this.welcomed) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  private nextReq(prefix: string): string {
    this.reqN += 1;
    return `${prefix}-${this.reqN}`;
  }

  private request<T>(frame: Record<string, unknown>, prefix: string): Promise<T> {
    const req = this.nextReq(prefix);
    return new Promise<T>((resolve, reject) => {
      if (!this.sendFrame({ ...frame, req })) {
        reject(new SwitchboardError('disconnected', 'not connected'));
        return;
      }
      this.requests.set(req, { resolve, reject });
    });
  }

  // ------------------------------------------------------------------ frames from the node

  private onFrame(f: ServerFrame, url: string): void {
    const req = 'req' in f && f.req !== undefined ? String(f.req) : undefined;
    switch (f.type) {
      case 'welcome':
        return this.onWelcome(f, url);
      case 'refreshed':
        this.expiresAt = f.expires_at;
        this.scheduleRefresh();
        this.emit('refreshed', { expiresAt: f.expires_at });
        return;
      case 'joined':
        return this.onJoined(f);
      case 'left':
        return this.onLeft(f, req);
      case 'message':
        return this.onMessage(f);
      case 'ack':
        return this.onAck(f);
      case 'dm':
        return this.onDm(f);
      case 'dm_ack':
        return this.onDmAck(f);
      case 'presence':
        return this.emit('presence', f);
      case 'typing':
        return this.emit('typing', f);
      case 'read': {
        const r = this.rooms.get(f.room);
        if (r && f.user === this.userValue) r.myRead = Math.max(r.myRead, f.seq);
        return this.emit('read', f);
      }
      case 'history':
        for (const m of f.messages ?? []) this.applyAttachments(m, true);
        if (req) this.answer(req, f);
        return;
      case 'last_seen':
        if (req) this.answer(req, f);
        return;
      case 'attachment':
        return this.onAttachment(f);
      case 'pong':
        clearTimeout(this.timers.pong);
        return;
      case 'reconnect':
        return this.onReconnectNotice(f);
      case 'error':
        return this.onError(f, req);
      default:
        return;
    }
  }

  private answer(req: string, frame: unknown): void {
    const q = this.requests.get(req);
    if (!q) return;
    this.requests.delete(req);
    q.resolve(frame);
  }

  private onWelcome(f: Welcome, url: string): void {
    clearTimeout(this.timers.connect);
    this.welcomed = true;
    this.attempt = 0;
    this.avoidNode = null;
    this.previousNode = this.nodeValue;
    this.nodeValue = f.node;
    this.userValue = f.user;
    this.limitsValue = f.limits;
    this.wsUrl = url;
    if (typeof f.dm_seq === 'number' && this.dmSeqValue > f.dm_seq) {
      // The inbox was forgotten and its sequence started again: everything kept comes again.
      this.dmSeqValue = 0;
      this.dmIds.clear();
    }
    this.expiresAt = f.expires_at ?? 0;
    this.scheduleRefresh();
    this.startPing();
    this.tokens = this.burst();
    this.tokensAt = Date.now();
    this.setState('connected');
    this.emit('welcome', { ...f, previousNode: this.previousNode, url });
    for (const [room, r] of this.rooms) if (r.wanted) this.sendJoin(room, r);
    this.pump();
  }

  private sendJoin(room: string, r: RoomState): void {
    const req = this.nextReq('join');
    this.joinReqs.set(req, room);
    const frame: Record<string, unknown> = { type: 'join', room, req };
    if (r.haveBase) frame.since = r.lastSeq;
    this.sendFrame(frame);
  }

  private onJoined(f: Joined): void {
    if (f.req !== undefined) this.joinReqs.delete(String(f.req));
    const r = this.rooms.get(f.room);
    if (!r || !r.wanted) return;
    r.joined = true;
    r.firstSeq = f.first_seq || 0;
    const rejoin = r.haveBase;
    if (!r.haveBase) {
      r.haveBase = true;
      r.lastSeq = Math.max(r.lastSeq, f.last_seq || 0);
    } else {
      this.startRecovery(f.room, r, f);
    }
    for (const w of r.waiters.splice(0)) w.resolve(f);
    this.emit('joined', { room: f.room, joined: f, rejoin });
    if (rejoin) void this.refreshPendingAttachments(f.room);
    if (r.recovery && r.lastSeq >= r.recovery.target) this.finishRecovery(r);
    this.pump();
  }

  private startRecovery(room: string, r: RoomState, f: Joined): void {
    const target = f.last_seq || 0;
    let since = r.lastSeq;
    if (since > target) {
      // The room expired and started again: recovery starts at its first message.
      since = 0;
      r.lastSeq = 0;
      r.above.clear();
    }
    const gone = since + 1 < r.firstSeq;
    if (gone) this.advanceTo(r, r.firstSeq - 1);
    r.recovery = { room, since, target, count: 0, gone, node: this.nodeValue, previousNode: this.previousNode, timer: undefined };
    if (r.lastSeq < target) r.recovery.timer = setTimeout(() => this.finishRecovery(r), RECOVERY_TIMEOUT_MS);
  }

  private finishRecovery(r: RoomState): void {
    const rec = r.recovery;
    if (!rec) return;
    clearTimeout(rec.timer);
    r.recovery = null;
    const { timer: _timer, ...event } = rec;
    this.emit('recovered', event);
  }

  /** Records `seq` as seen; false when it was seen before. */
  private markSeen(r: RoomState, seq: number): boolean {
    if (seq <= r.lastSeq || r.above.has(seq)) return false;
    r.above.add(seq);
    this.advanceTo(r, r.lastSeq);
    return true;
  }

  /** Moves `lastSeq` to at least `seq`, then over every contiguous sequence seen above it. */
  private advanceTo(r: RoomState, seq: number): void {
    if (seq > r.lastSeq) {
      r.lastSeq = seq;
      for (const s of r.above) if (s <= seq) r.above.delete(s);
    }
    while (r.above.delete(r.lastSeq + 1)) r.lastSeq += 1;
  }

  private deliver(r: RoomState, m: Message, recovered: boolean): boolean {
    if (!this.markSeen(r, m.seq)) return false;
    this.applyAttachments(m);
    const cid = m.client_id;
    const own = m.from === this.userValue && cid !== null && (this.pending.has(cid) || this.sentIds.has(cid) || cid.startsWith(`${this.clientTag}-`));
    const rec = r.recovery;
    const inRecovery = rec !== null && m.seq > rec.since && m.seq <= rec.target;
    if (rec && inRecovery) rec.count += 1;
    this.emit('message', { message: m, recovered: recovered || inRecovery, own });
    if (rec && r.lastSeq >= rec.target) this.finishRecovery(r);
    return true;
  }

  private onMessage(m: Message): void {
    const r = this.rooms.get(m.room);
    if (!r || !r.haveBase) return;
    const gapFrom = r.lastSeq;
    const fresh = this.deliver(r, m, false);
    if (fresh && !r.recovery && m.seq > gapFrom + 1) void this.fillGap(m.room, r, gapFrom, m.seq);
  }

  /** A hole in a live stream (the node dropped something): fetch exactly the missing range. */
  private async fillGap(room: string, r: RoomState, after: number, upTo: number): Promise<void> {
    let before = upTo;
    while (before - 1 > after && r.lastSeq < before - 1) {
      let page: HistoryPage;
      try {
        page = await this.request<HistoryPage>(
          { type: 'history', room, before, limit: Math.min(HISTORY_MAX, before - 1 - after) },
          'gap',
        );
      } catch {
        return; // the reconnect's `since` recovers it instead
      }
      for (const m of page.messages) if (m.seq > after) this.deliver(r, m, true);
      const oldest = page.messages.length ? page.messages[0].seq : after;
      if (!page.has_more || oldest <= after + 1 || page.messages.length === 0) break;
      before = oldest;
    }
    // Messages no longer kept cannot be had: move past them.
    this.advanceTo(r, upTo - 1);
  }

  private onAck(a: Ack): void {
    if (this.answerTickets(a.client_id, a.attachments)) return;
    const p = a.client_id ? this.pending.get(a.client_id) : undefined;
    if (!p || p.kind !== 'room' || p.room === undefined) return;
    this.pending.delete(p.clientId);
    remember(this.sentIds, p.clientId);
    const attachments = this.ownAttachments(p, a.attachments);
    const r = this.rooms.get(a.room);
    if (r) {
      const m: Message = { type: 'message', room: a.room, seq: a.seq, id: a.id, from: this.userValue ?? '', ts: a.ts, body: p.body, client_id: p.clientId };
      if (attachments) m.attachments = attachments;
      this.deliver(r, m, false);
    }
    const sent: Sent = { kind: 'room', clientId: p.clientId, room: p.room, body: p.body, seq: a.seq, id: a.id, ts: a.ts, duplicate: a.duplicate };
    if (attachments) sent.attachments = attachments;
    this.emit('sent', sent);
    p.resolve({ ok: true, ...sent });
    if (p.job) this.startUploads(p.job, a.attachments ?? [], a.duplicate, { messageId: a.id, room: a.room, seq: a.seq });
  }

  private onDm(d: DirectMessage): void {
    if (this.dmIds.has(d.id)) return;
    remember(this.dmIds, d.id);
    this.applyAttachments(d);
    if (Number.isFinite(d.seq) && d.to === this.userValue) this.dmSeqValue = Math.max(this.dmSeqValue, d.seq);
    this.emit('dm', d);
  }

  private onDmAck(a: DmAck): void {
    if (this.answerTickets(a.client_id, a.attachments)) return;
    const p = a.client_id ? this.pending.get(a.client_id) : undefined;
    if (!p || p.kind !== 'dm' || p.to === undefined) return;
    this.pending.delete(p.clientId);
    const attachments = this.ownAttachments(p, a.attachments);
    const sent: Sent = { kind: 'dm', clientId: p.clientId, to: p.to, body: p.body, id: a.id, ts: a.ts, duplicate: a.duplicate };
    if (attachments) sent.attachments = attachments;
    this.emit('sent', sent);
    p.resolve({ ok: true, ...sent });
    if (p.job) this.startUploads(p.job, a.attachments ?? [], a.duplicate, { messageId: a.id, from: this.userValue ?? undefined, to: p.to });
  }

  private onLeft(f: Left, req: string | undefined): void {
    const r = this.rooms.get(f.room);
    if (r) {
      r.joined = false;
      r.wanted = false;
      this.finishRecovery(r);
      for (const p of [...this.pending.values()]) {
        if (p.kind === 'room' && p.room === f.room) this.fail(p, 'not_joined', `left ${f.room}`);
      }
      this.rooms.delete(f.room);
    }
    if (req) this.answer(req, f);
    this.emit('left', f);
  }

  private onReconnectNotice(f: ReconnectNotice): void {
    this.emit('reconnectNotice', f);
    // The node closes with 1012 soon; leaving now keeps sends from landing on a draining node.
    const ws = this.ws;
    this.ws = null;
    try {
      ws?.close(1000, 'draining');
    } catch {
      // already closing
    }
    this.lost(1012, `${this.nodeValue ?? 'the node'} is draining`, Number(f.retry_after_ms) || 0);
  }

  private onError(f: ErrorFrame, req: string | undefined): void {
    const p = req !== undefined ? this.pending.get(req) : undefined;
    if (p) return this.onSendError(p, f);
    const joining = req !== undefined ? this.joinReqs.get(req) : undefined;
    if (joining !== undefined) return this.onJoinError(joining, req as string, f);
    const q = req !== undefined ? this.requests.get(req) : undefined;
    if (q) {
      this.requests.delete(req as string);
      q.reject(new SwitchboardError(f.code, f.message, f.retry_after_ms));
      return;
    }
    if (f.code === 'rate_limited') {
      // A typing, read or ping frame was dropped: hold the outbox for a moment.
      this.pausedUntil = Math.max(this.pausedUntil, Date.now() + (Number(f.retry_after_ms) || 1000));
    }
    this.emit('error', f);
  }

  private onSendError(p: Pending, f: ErrorFrame): void {
    if (f.code === 'rate_limited') {
      // Our pacing was not enough (typing and read frames count too): hold the whole outbox.
      const wait = Number(f.retry_after_ms) || 1000;
      this.pausedUntil = Math.max(this.pausedUntil, Date.now() + wait);
      p.state = 'queued';
      this.emit('sendState', { clientId: p.clientId, kind: p.kind, state: 'paused', retryInMs: wait, code: f.code });
      this.pump();
      return;
    }
    if ((f.code === 'unavailable' || f.code === 'internal') && p.tries < (this.opts.maxSendRetries ?? 5)) {
      p.tries += 1;
      const wait = Math.max(100, backoffDelay(p.tries, this.opts.backoff));
      p.state = 'queued';
      p.notBefore = Date.now() + wait;
      this.emit('sendState', { clientId: p.clientId, kind: p.kind, state: 'retrying', retryInMs: wait, code: f.code });
      this.pump();
      return;
    }
    this.fail(p, f.code, f.message);
  }

  private fail(p: Pending, code: string, message: string): void {
    this.pending.delete(p.clientId);
    if (p.job) this.cancelJob(p.job);
    this.emit('sendFailed', { clientId: p.clientId, kind: p.kind, body: p.body, room: p.room, to: p.to, code, message });
    p.resolve({ ok: false, clientId: p.clientId, code, message });
  }

  // ------------------------------------------------------------------ timers

  private startPing(): void {
    clearInterval(this.timers.ping);
    const every = this.opts.pingIntervalMs ?? 20000;
    this.timers.ping = setInterval(() => {
      if (!this.sendFrame({ type: 'ping', req: 'ping' })) return;
      clearTimeout(this.timers.pong);
      this.timers.pong = setTimeout(() => this.drop('the node stopped answering'), this.opts.pongTimeoutMs ?? 10000);
    }, every);
  }

  private scheduleRefresh(): void {
    clearTimeout(this.timers.refresh);
    const src = this.opts.token;
    if (typeof src !== 'function' || !this.expiresAt) return;
    const wait = Math.max(1000, this.expiresAt - Date.now() - (this.opts.refreshBeforeMs ?? 60000));
    this.timers.refresh = setTimeout(async () => {
      let token: string | null = null;
      try {
        token = await src('refresh');
      } catch {
        // the node closes with 4011 at expiry; the reconnect asks for a token again
      }
      if (token && token !== this.token) {
        this.token = token;
        this.sendFrame({ type: 'refresh', token, req: 'refresh' });
      } else this.scheduleRefresh();
    }, wait);
  }

  // ------------------------------------------------------------------ rooms

  /**
   * Joins `room` (now, and again after every reconnect, with `since` so nothing is missed). Resolves
   * with the first `joined`; rejects with the node's refusal (`forbidden`, `invalid_name`,
   * `too_many_rooms`). `since`: the last sequence already seen, to get every later message as
   * `message` events.
   */
  join(room: string, options: { since?: number } = {}): Promise<Joined> {
    if (!ROOM_NAME.test(room)) return Promise.reject(new SwitchboardError('invalid_name', `"${room}" is not a valid room name`));
    let r = this.rooms.get(room);
    if (!r) {
      r = { wanted: true, joined: false, haveBase: false, lastSeq: 0, firstSeq: 0, above: new Set(), myRead: 0, lastTyping: 0, recovery: null, waiters: [] };
      this.rooms.set(room, r);
    }
    if (options.since !== undefined && !r.haveBase) {
      r.haveBase = true;
      r.lastSeq = Math.max(0, Math.floor(options.since));
    }
    const state = r;
    return new Promise<Joined>((resolve, reject) => {
      state.waiters.push({ resolve, reject });
      if (!state.joined && this.welcomed) this.sendJoin(room, state);
    });
  }

  /** A refused `join` (its `req` names the room): transient refusals are retried, others end the join. */
  private onJoinError(room: string, req: string, f: ErrorFrame): void {
    this.joinReqs.delete(req);
    const r = this.rooms.get(room);
    if (!r || !r.wanted) return;
    if (f.code === 'rate_limited' || f.code === 'unavailable' || f.code === 'internal') {
      const wait = Number(f.retry_after_ms) || Math.max(100, backoffDelay(1, this.opts.backoff));
      const ws = this.ws;
      setTimeout(() => {
        if (this.ws === ws && this.welcomed && r.wanted && !r.joined) this.sendJoin(room, r);
      }, wait);
      return;
    }
    const err = new SwitchboardError(f.code, f.message, f.retry_after_ms);
    for (const w of r.waiters.splice(0)) w.reject(err);
    this.onLeft({ type: 'left', room }, undefined);
    this.emit('error', f);
  }

  /** Leaves `room`; its unacknowledged sends fail with `not_joined`. */
  async leave(room: string): Promise<void> {
    const r = this.rooms.get(room);
    if (!r) return;
    if (r.joined) {
      try {
        await this.request<Left>({ type: 'leave', room }, 'leave');
        return;
      } catch {
        // disconnected: nothing to leave on the node
      }
    }
    this.onLeft({ type: 'left', room }, undefined);
  }

  // ------------------------------------------------------------------ sending

  /**
   * Sends `body` to `room` with a `client_id`. It goes out when the room is joined, paced below the
   * node's rate limit, and is resent with the same `client_id` after every reconnect until acknowledged
   * (so it is stored once). The result resolves when acknowledged or failed for good.
   */
  send(room: string, body: string, options: SendOptions = {}): SendHandle {
    return this.enqueue({ kind: 'room', room, body }, options);
  }

  /** Sends a direct message to `to`, like `send`. */
  dm(to: string, body: string, options: SendOptions = {}): SendHandle {
    return this.enqueue({ kind: 'dm', to, body }, options);
  }

  /** The declaration of `files`, or why the node would refuse them (checked against its limits). */
  private declare(files: UploadSource[]): AttachmentDeclaration[] | { code: string; message: string } {
    const l = this.limitsValue;
    if (l && l.attachments === false) return { code: 'attachments_disabled', message: 'this node stores no files' };
    const most = Math.min(MAX_FILES, l?.max_attachments ?? MAX_FILES);
    if (files.length > most) return { code: 'invalid_attachment', message: `at most ${most} files per message` };
    const declared: AttachmentDeclaration[] = [];
    for (const f of files) {
      const name = [...(f.name || 'file')].slice(0, MAX_FILE_NAME).join('');
      const type = f.type || 'application/octet-stream';
      if (!Number.isSafeInteger(f.size) || f.size < 1) return { code: 'invalid_attachment', message: `${name} is empty` };
      if (l?.max_attachment_bytes !== undefined && f.size > l.max_attachment_bytes) {
        return { code: 'too_large', message: `${name} is larger than ${l.max_attachment_bytes} bytes` };
      }
      if (!MIME.test(type)) return { code: 'invalid_attachment', message: `${name} has no valid type (${type})` };
      if (l?.attachment_types && !l.attachment_types.includes(type.toLowerCase())) {
        return { code: 'unsupported_type', message: `${name}: files of type ${type} are not accepted` };
      }
      declared.push({ name, size: f.size, type });
    }
    return declared;
  }

  private enqueue(what: { kind: 'room' | 'dm'; room?: string; to?: string; body: string }, options: SendOptions): SendHandle {
    this.clientN += 1;
    const clientId = options.clientId ?? `${this.clientTag}-${Date.now().toString(36)}-${this.clientN}`;
    let resolve!: (r: SendResult) => void;
    const result = new Promise<SendResult>((res) => {
      resolve = res;
    });
    let resolveUploads!: (r: UploadResult[]) => void;
    const uploads = new Promise<UploadResult[]>((res) => {
      resolveUploads = res;
    });
    const files = options.files ?? [];
    let job: UploadJob | undefined;
    const handle: SendHandle = { clientId, result, uploads, cancel: () => this.cancelSend(clientId, job) };
    const max = this.limitsValue?.max_body_chars ?? 4000;
    const refuse = (code: string, message: string) => {
      resolve({ ok: false, clientId, code, message });
      resolveUploads(files.map((f, index) => ({ clientId, index, id: null, name: f.name || 'file', state: 'cancelled', code, message })));
    };
    const declared = files.length ? this.declare(files) : [];
    if (!Array.isArray(declared)) refuse(declared.code, declared.message);
    else if (what.body.length === 0 && files.length === 0) refuse('invalid_body', 'the body is empty');
    else if ([...what.body].length > max) refuse('too_large', `the body is longer than ${max} characters`);
    else if (what.kind === 'room' && !this.rooms.get(what.room ?? '')?.wanted) refuse('not_joined', `join ${what.room} first`);
    else if (what.kind === 'dm' && !USER_NAME.test(what.to ?? '')) refuse('invalid_name', `"${what.to}" is not a valid user name`);
    else if (clientId.length < 1 || clientId.length > 64) refuse('invalid_body', 'a client_id has 1 to 64 characters');
    else if (this.stateValue === 'closed') refuse('closed', 'the client is closed');
    else {
      const frame: Record<string, unknown> =
        what.kind === 'room' ? { type: 'send', room: what.room, body: what.body, client_id: clientId } : { type: 'dm', to: what.to, body: what.body, client_id: clientId };
      if (declared.length) {
        frame.attachments = declared;
        job = { clientId, files, declared, frame, abort: new AbortController(), onProgress: options.onProgress, resolve: resolveUploads, started: false };
        this.jobs.set(clientId, job);
      } else resolveUploads([]);
      this.pending.set(clientId, { ...what, clientId, state: 'queued', tries: 0, notBefore: 0, resolve, job });
      this.emit('sendState', { clientId, kind: what.kind, state: 'queued' });
      this.pump();
    }
    return handle;
  }

  private burst(): number {
    // Half the node's burst: the rest is left for typing, read and ping frames.
    return Math.max(1, Math.floor((this.limitsValue?.rate_burst ?? 2) / 2));
  }

  /** Sends queued messages in the order they were written, paced by a token bucket at the node's rate. */
  private pump(): void {
    clearTimeout(this.timers.pump);
    if (!this.ws || this.ws.readyState !== OPEN || !this.welcomed) return;
    const now = Date.now();
    const rate = this.limitsValue?.rate_per_sec ?? 20;
    this.tokens = Math.min(this.burst(), this.tokens + ((now - this.tokensAt) / 1000) * rate);
    this.tokensAt = now;
    if (now < this.pausedUntil) {
      this.timers.pump = setTimeout(() => this.pump(), this.pausedUntil - now);
      return;
    }
    for (const p of this.pending.values()) {
      if (p.state !== 'queued') continue;
      if (p.kind === 'room' && !this.rooms.get(p.room ?? '')?.joined) continue;
      if (p.notBefore > now) {
        this.timers.pump = setTimeout(() => this.pump(), p.notBefore - now);
        return;
      }
      if (this.tokens < 1) {
        this.timers.pump = setTimeout(() => this.pump(), Math.ceil(((1 - this.tokens) / rate) * 1000));
        return;
      }
      this.tokens -= 1;
      p.state = 'sent';
      const frame: Record<string, unknown> =
        p.kind === 'room' ? { type: 'send', room: p.room, body: p.body, client_id: p.clientId } : { type: 'dm', to: p.to, body: p.body, client_id: p.clientId };
      if (p.job) frame.attachments = p.job.declared;
      this.sendFrame({ ...frame, req: p.clientId });
      this.emit('sendState', { clientId: p.clientId, kind: p.kind, state: 'sent' });
    }
  }

  // ------------------------------------------------------------------ files

  /** The current state of attachment `id`, as far as this client knows (null when never seen). */
  attachment(id: string): Attachment | null {
    return this.attachmentStates.get(id) ?? null;
  }

  /**
   * Resolves `url` (an attachment's `url`, `thumbnail_url` or `upload_url`) against the HTTP base of
   * the node this client is connected to: the WebSocket URL with ws→http, wss→https, no path.
   */
  resolveUrl(url: string): string {
    const ws = new URL(this.wsUrl ?? this.opts.registry);
    if (ws.protocol === 'ws:') ws.protocol = 'http:';
    if (ws.protocol === 'wss:') ws.protocol = 'https:';
    return new URL(url, ws.origin).toString();
  }

  /**
   * Fetches room message `seq` again (a one-message history page) to get fresh attachment URLs, for
   * when a download or thumbnail URL answered 410 (expired). Resolves with the message, or null when
   * the room no longer keeps it.
   */
  async refreshMessage(room: string, seq: number): Promise<Message | null> {
    const page = await this.history(room, { before: seq + 1, limit: 1 });
    return page.messages.find((m) => m.seq === seq) ?? null;
  }

  /** Records `a`; returns the state to show and whether it is news (a final state is never undone). */
  private applyAttachment(a: Attachment): { state: Attachment; changed: boolean; known: boolean } {
    const known = this.attachmentStates.get(a.id);
    if (known && known.state !== 'pending' && a.state === 'pending') return { state: known, changed: false, known: true };
    const changed = !known || known.state !== a.state;
    if (a.state !== 'pending') this.pendingRoomAttachments.delete(a.id);
    this.attachmentStates.delete(a.id);
    this.attachmentStates.set(a.id, a);
    if (this.attachmentStates.size > ATTACHMENTS_KEPT) {
      const oldest = this.attachmentStates.keys().next().value;
      if (oldest !== undefined) this.attachmentStates.delete(oldest);
    }
    return { state: a, changed, known: known !== undefined };
  }

  /**
   * Brings a message's attachments to the newest state known (an update may come before it). From a
   * history page (`emit`), a newer state of an attachment already known is reported as an update.
   */
  private applyAttachments(m: { attachments?: Attachment[]; room?: string; seq?: number; id?: string }, emit = false): void {
    if (!Array.isArray(m.attachments)) return;
    m.attachments = m.attachments.map((a) => {
      if (!a || typeof a.id !== 'string') return a;
      const { state, changed, known } = this.applyAttachment(a);
      if (state.state === 'pending' && typeof m.room === 'string' && typeof m.seq === 'number') {
        this.pendingRoomAttachments.set(a.id, { room: m.room, seq: m.seq });
        if (this.pendingRoomAttachments.size > ATTACHMENTS_KEPT) {
          const oldest = this.pendingRoomAttachments.keys().next().value;
          if (oldest !== undefined) this.pendingRoomAttachments.delete(oldest);
        }
      }
      if (emit && known && changed && typeof m.id === 'string') {
        this.emit('attachment', { messageId: m.id, room: m.room, seq: m.seq, attachment: state });
      }
      return state;
    });
  }

  /** After a re-join: asks history for the messages whose files were pending (updates sent meanwhile are not replayed). */
  private async refreshPendingAttachments(room: string): Promise<void> {
    const seqs = [...this.pendingRoomAttachments.values()].filter((p) => p.room === room).map((p) => p.seq);
    if (!seqs.length) return;
    const top = Math.max(...seqs);
    const low = Math.max(Math.min(...seqs), top - HISTORY_MAX + 1);
    try {
      // The `history` frame handler applies the page and reports what changed.
      await this.request<HistoryPage>({ type: 'history', room, before: top + 1, limit: top - low + 1 }, 'hist');
    } catch {
      // disconnected again: the next re-join asks again
    }
  }

  private onAttachment(f: AttachmentUpdate): void {
    if (!f.attachment || typeof f.attachment.id !== 'string') return;
    const { state, changed } = this.applyAttachment(f.attachment);
    if (!changed) return;
    const e: AttachmentEvent = { messageId: f.message_id, attachment: state };
    if (f.room !== undefined) e.room = f.room;
    if (f.seq !== undefined) e.seq = f.seq;
    if (f.from !== undefined) e.from = f.from;
    if (f.to !== undefined) e.to = f.to;
    this.emit('attachment', e);
  }

  /** The pending attachments of an acknowledged send with files, as the node will show them. */
  private ownAttachments(p: Pending, tickets: UploadTicket[] | undefined): Attachment[] | undefined {
    if (!p.job) return undefined;
    return p.job.declared.map((d, i) => {
      const id = tickets?.[i]?.id ?? `${p.clientId}.${i}`;
      return this.attachmentStates.get(id) ?? { id, name: safeFileName(d.name), size: d.size, type: d.type, state: 'pending' };
    });
  }

  /** Uploads every file of an acknowledged send, all at once; resolves the job when all have ended. */
  private startUploads(job: UploadJob, tickets: UploadTicket[], duplicate: boolean, where: Omit<AttachmentEvent, 'attachment'>): void {
    if (job.started) return;
    // Cancelled before the ack came: the message is stored; its files are given up at once, so the
    // other members see them failed (cancelled) instead of pending until they expire.
    if (job.abort.signal.aborted) {
      for (const t of tickets) if (t && typeof t.upload_url === 'string') this.giveUp(t.upload_url);
      return;
    }
    job.started = true;
    const chunkBytes = this.limitsValue?.upload_chunk_bytes || DEFAULT_CHUNK_BYTES;
    const each = job.files.map(async (file, index): Promise<UploadResult> => {
      const name = job.declared[index].name;
      const ticket = tickets[index];
      const base = { clientId: job.clientId, index, id: ticket?.id ?? null, name };
      if (!ticket || typeof ticket.upload_url !== 'string') {
        return { ...base, state: 'failed', code: 'no_upload_url', message: 'the node sent no upload URL for this file' };
      }
      let uploadUrl = ticket.upload_url;
      const progress = (sent: number, total: number) => {
        const p: UploadProgress = { ...base, sent, total };
        job.onProgress?.(p);
        this.emit('uploadProgress', p);
      };
      progress(0, file.size);
      const outcome = await uploadAttachment({
        source: file,
        url: () => this.resolveUrl(uploadUrl),
        chunkBytes,
        request: this.http,
        signal: job.abort.signal,
        onProgress: progress,
        maxRetries: this.opts.maxUploadRetries,
        backoff: this.opts.backoff,
        // A duplicate ack (the send was resent) may follow bytes already stored: ask the node first.
        startAt: duplicate ? undefined : 0,
        refreshUrl: async () => {
          const fresh = await this.freshTickets(job);
          const t = fresh?.find((x) => x.id === ticket.id);
          if (!t) return null;
          uploadUrl = t.upload_url;
          return this.resolveUrl(uploadUrl);
        },
      });
      if (outcome.state === 'cancelled') this.giveUp(uploadUrl);
      const result: UploadResult = { ...base, state: outcome.state };
      if (outcome.state === 'failed') {
        result.code = outcome.code;
        result.message = outcome.message;
      }
      if (outcome.state !== 'cancelled' && outcome.attachment && typeof outcome.attachment.id === 'string') {
        result.attachment = outcome.attachment;
        const { state, changed } = this.applyAttachment(outcome.attachment);
        if (changed) this.emit('attachment', { ...where, attachment: state });
      }
      this.emit('uploadDone', result);
      return result;
    });
    void Promise.all(each).then((results) => {
      this.jobs.delete(job.clientId);
      job.resolve(results);
    });
  }

  /** Tells the node an upload is given up (`DELETE`): the members see the file failed, cancelled. Best effort. */
  private giveUp(uploadUrl: string): void {
    void this.http({ method: 'DELETE', url: this.resolveUrl(uploadUrl), headers: {}, signal: new AbortController().signal }).catch(() => undefined);
  }

  /** Ends a job's uploads (or, before they started, resolves them as cancelled). */
  private cancelJob(job: UploadJob): void {
    job.abort.abort();
    if (job.started) return;
    this.jobs.delete(job.clientId);
    job.resolve(job.declared.map((d, index) => ({ clientId: job.clientId, index, id: null, name: d.name, state: 'cancelled' })));
  }

  private cancelSend(clientId: string, job: UploadJob | undefined): void {
    const p = this.pending.get(clientId);
    if (p && p.state === 'queued') {
      this.pending.delete(clientId);
      p.resolve({ ok: false, clientId, code: 'cancelled', message: 'cancelled before it was sent' });
    }
    if (job) this.cancelJob(job);
  }

  /** Sends a job's frame again with its `client_id`: the duplicate ack carries fresh upload URLs. */
  private freshTickets(job: UploadJob): Promise<UploadTicket[] | null> {
    return new Promise((resolve) => {
      if (this.ticketWaiters.has(job.clientId) || !this.sendFrame({ ...job.frame })) return resolve(null);
      const timer = setTimeout(() => done(null), this.opts.connectTimeoutMs ?? 8000);
      const done = (t: UploadTicket[] | null) => {
        clearTimeout(timer);
        this.ticketWaiters.delete(job.clientId);
        resolve(t);
      };
      this.ticketWaiters.set(job.clientId, done);
    });
  }

  /** An ack asked for by `freshTickets`: true when it was one. */
  private answerTickets(clientId: string | null, tickets: UploadTicket[] | undefined): boolean {
    const w = clientId ? this.ticketWaiters.get(clientId) : undefined;
    if (!w || this.pending.has(clientId as string)) return false;
    w(tickets ?? null);
    return true;
  }

  // ------------------------------------------------------------------ the rest of the protocol

  /** Tells `room` this user is typing; throttled to one frame per 2 s (the node's relay rate). */
  typing(room: string): boolean {
    const r = this.rooms.get(room);
    const now = Date.now();
    if (!r?.joined || now - r.lastTyping < TYPING_EVERY_MS) return false;
    r.lastTyping = now;
    return this.sendFrame({ type: 'typing', room });
  }

  /** Moves this user's read marker in `room` to `seq` (only forward). */
  markRead(room: string, seq: number): boolean {
    const r = this.rooms.get(room);
    if (!r?.joined || !(seq > r.myRead)) return false;
    r.myRead = seq;
    return this.sendFrame({ type: 'read', room, seq });
  }

  /** This user's read marker in `room`, as far as this client knows. */
  readMarker(room: string): number {
    return this.rooms.get(room)?.myRead ?? 0;
  }

  /**
   * One page of `room`'s history: messages older than `before` (default: the newest), oldest first,
   * at most `limit` (1–200, default 50). Page on with `before` = the oldest `seq` received.
   */
  history(room: string, options: { before?: number; limit?: number } = {}): Promise<HistoryPage> {
    const frame: Record<string, unknown> = { type: 'history', room, limit: Math.max(1, Math.min(HISTORY_MAX, Math.floor(options.limit ?? 50))) };
    if (options.before !== undefined) frame.before = options.before;
    return this.request<HistoryPage>(frame, 'hist');
  }

  /** Online state and last-seen times of up to 100 users (those this user may see; others in `hidden`). */
  lastSeen(users: string[]): Promise<LastSeen> {
    if (users.length > LAST_SEEN_MAX) return Promise.reject(new SwitchboardError('invalid', `at most ${LAST_SEEN_MAX} users per call`));
    return this.request<LastSeen>({ type: 'last_seen', users }, 'seen');
  }
}
