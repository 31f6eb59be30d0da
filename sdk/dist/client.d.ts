import { type BackoffOptions } from './backoff.js';
import { Emitter } from './emitter.js';
import { type HttpRequest, type UploadSource } from './upload.js';
import type { Attachment, DirectMessage, ErrorFrame, HistoryPage, Joined, LastSeen, Left, Limits, Message, Presence, Read, ReconnectNotice, Typing, Welcome } from './types.js';
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
export type FetchLike = (url: string, init?: {
    method?: string;
    headers?: Record<string, string>;
    body?: string | Blob;
    cache?: 'no-store';
    signal?: AbortSignal;
}) => Promise<{
    ok: boolean;
    status: number;
    headers: {
        get(name: string): string | null;
    };
    json(): Promise<any>;
    text(): Promise<string>;
}>;
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
export type Sent = {
    kind: 'room';
    clientId: string;
    room: string;
    body: string;
    seq: number;
    id: string;
    ts: number;
    duplicate: boolean;
    attachments?: Attachment[];
} | {
    kind: 'dm';
    clientId: string;
    to: string;
    body: string;
    id: string;
    ts: number;
    duplicate: boolean;
    attachments?: Attachment[];
};
/** The outcome of `send`/`dm`: acknowledged, or failed for good with the node's (or the client's) code. */
export type SendResult = ({
    ok: true;
} & Sent) | {
    ok: false;
    clientId: string;
    code: string;
    message: string;
};
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
    state: {
        state: ConnectionState;
        node: string | null;
    };
    welcome: Welcome & {
        previousNode: string | null;
        url: string;
    };
    disconnected: DisconnectedEvent;
    joined: {
        room: string;
        joined: Joined;
        rejoin: boolean;
    };
    left: Left;
    message: MessageEvent;
    recovered: RecoveredEvent;
    sent: Sent;
    sendState: SendStateEvent;
    sendFailed: {
        clientId: string;
        kind: 'room' | 'dm';
        body: string;
        room?: string;
        to?: string;
        code: string;
        message: string;
    };
    dm: DirectMessage;
    /** An attachment became ready or failed (once per change, whatever repeats it). */
    attachment: AttachmentEvent;
    uploadProgress: UploadProgress;
    uploadDone: UploadResult;
    presence: Presence;
    typing: Typing;
    read: Read;
    reconnectNotice: ReconnectNotice;
    refreshed: {
        expiresAt: number;
    };
    /** An `error` frame not answered through a promise or a send (e.g. a dropped typing frame). */
    error: ErrorFrame;
    /** The client stopped for good: `close()` was called, or the node refused the identity (4001). */
    closed: {
        code: number;
        reason: string;
    };
}
/** A refusal: an `error` frame's code, `disconnected`, `closed`, or a client-side check. */
export declare class SwitchboardError extends Error {
    /** The protocol's error code (PROTOCOL.md section 7) or `disconnected` / `closed` / `invalid`. */
    readonly code: string;
    /** When the node said when to try again. */
    readonly retryAfterMs: number | undefined;
    constructor(code: string, message: string, retryAfterMs?: number);
}
/** User names (PROTOCOL.md section 2). */
export declare const USER_NAME: RegExp;
/** Room names (PROTOCOL.md section 2). */
export declare const ROOM_NAME: RegExp;
/**
 * The name the node will show (chat-node/PROTOCOL.md section 10): the last path segment, control
 * characters, quotes, backquotes and `<>` made `_`, at most 255 characters, no leading dots.
 */
export declare function safeFileName(name: string): string;
/**
 * A Switchboard chat client. Create it, subscribe to events with `on`, call `connect()`, then `join`
 * rooms and `send`. It reconnects by itself (through the registry) until `close()`.
 */
export declare class SwitchboardClient extends Emitter<ClientEvents> {
    private readonly opts;
    private readonly WS;
    private readonly fetchFn;
    private ws;
    private welcomed;
    private stateValue;
    private nodeValue;
    /** The node the current (or last) socket was opened to, as the registry named it. */
    private dialedNode;
    /** The node lost or not opened last: the next assignment asks the registry to avoid it. */
    private avoidNode;
    private previousNode;
    private userValue;
    private limitsValue;
    private attempt;
    private dialEpoch;
    private minDelayMs;
    private tokenReason;
    private token;
    private expiresAt;
    private dmSeqValue;
    private readonly dmIds;
    /** Recently acknowledged room `client_id`s (to tell own messages that arrive after their ack). */
    private readonly sentIds;
    private readonly rooms;
    private readonly pending;
    private readonly requests;
    /** `req` of each `join` in flight → its room (a refusal names only the `req`). */
    private readonly joinReqs;
    /** The current state of every attachment seen, by id (the newest `ATTACHMENTS_KEPT`). */
    private readonly attachmentStates;
    /** Room attachments last known as pending (looked up again after a reconnect: updates sent while
     * this client was away are not replayed). */
    private readonly pendingRoomAttachments;
    /** Uploads that have not ended, by `client_id`. */
    private readonly jobs;
    /** Acks asked for again (fresh upload URLs), by `client_id`. */
    private readonly ticketWaiters;
    private readonly http;
    private wsUrl;
    private reqN;
    private clientN;
    private readonly clientTag;
    private tokens;
    private tokensAt;
    private pausedUntil;
    private timers;
    constructor(options: ClientOptions);
    /** Where the connection is. */
    get state(): ConnectionState;
    /** The node this client is connected to (from `welcome`), or null. */
    get node(): string | null;
    /** The user name (from `welcome` in token mode). */
    get user(): string | null;
    /** The node's limits (from `welcome`). */
    get limits(): Limits | null;
    /** The highest direct-message sequence seen (pass it as `dmSince` to a later client). */
    get dmSeq(): number;
    /** The sequence up to which every message of `room` was seen (0 before the first `joined`). */
    lastSeq(room: string): number;
    /** The oldest sequence the room still keeps, as of the last `joined`. */
    firstSeq(room: string): number;
    /** Whether `room` is joined on the current connection. */
    isJoined(room: string): boolean;
    /** Sends not yet acknowledged, in the order they were written. */
    get pendingCount(): number;
    /** Starts connecting (through the registry); the client keeps reconnecting until `close()`. */
    connect(): void;
    /** Reconnects now instead of waiting out the backoff (e.g. a "retry now" button). */
    reconnectNow(): void;
    /** Leaves every room and closes for good: pending sends fail with `closed`. */
    close(): void;
    private setState;
    private dial;
    /** A registry may advertise a wildcard listen address: dial the registry's host then. */
    private dialUrl;
    private open;
    /** Gives up on the current socket at once (its late events are ignored) and reconnects. */
    private drop;
    private onClosed;
    /** The connection is gone (or never came): forget per-connection state and schedule a reconnect. */
    private lost;
    private connectionGone;
    /** Stops for good. */
    private stop;
    private sendFrame;
    private nextReq;
    private request;
    private onFrame;
    private answer;
    private onWelcome;
    private sendJoin;
    private onJoined;
    private startRecovery;
    private finishRecovery;
    /** Records `seq` as seen; false when it was seen before. */
    private markSeen;
    /** Moves `lastSeq` to at least `seq`, then over every contiguous sequence seen above it. */
    private advanceTo;
    private deliver;
    private onMessage;
    /** A hole in a live stream (the node dropped something): fetch exactly the missing range. */
    private fillGap;
    private onAck;
    private onDm;
    private onDmAck;
    private onLeft;
    private onReconnectNotice;
    private onError;
    private onSendError;
    private fail;
    private startPing;
    private scheduleRefresh;
    /**
     * Joins `room` (now, and again after every reconnect, with `since` so nothing is missed). Resolves
     * with the first `joined`; rejects with the node's refusal (`forbidden`, `invalid_name`,
     * `too_many_rooms`). `since`: the last sequence already seen, to get every later message as
     * `message` events.
     */
    join(room: string, options?: {
        since?: number;
    }): Promise<Joined>;
    /** A refused `join` (its `req` names the room): transient refusals are retried, others end the join. */
    private onJoinError;
    /** Leaves `room`; its unacknowledged sends fail with `not_joined`. */
    leave(room: string): Promise<void>;
    /**
     * Sends `body` to `room` with a `client_id`. It goes out when the room is joined, paced below the
     * node's rate limit, and is resent with the same `client_id` after every reconnect until acknowledged
     * (so it is stored once). The result resolves when acknowledged or failed for good.
     */
    send(room: string, body: string, options?: SendOptions): SendHandle;
    /** Sends a direct message to `to`, like `send`. */
    dm(to: string, body: string, options?: SendOptions): SendHandle;
    /** The declaration of `files`, or why the node would refuse them (checked against its limits). */
    private declare;
    private enqueue;
    private burst;
    /** Sends queued messages in the order they were written, paced by a token bucket at the node's rate. */
    private pump;
    /** The current state of attachment `id`, as far as this client knows (null when never seen). */
    attachment(id: string): Attachment | null;
    /**
     * Resolves `url` (an attachment's `url`, `thumbnail_url` or `upload_url`) against the HTTP base of
     * the node this client is connected to: the WebSocket URL with ws→http, wss→https, no path.
     */
    resolveUrl(url: string): string;
    /**
     * Fetches room message `seq` again (a one-message history page) to get fresh attachment URLs, for
     * when a download or thumbnail URL answered 410 (expired). Resolves with the message, or null when
     * the room no longer keeps it.
     */
    refreshMessage(room: string, seq: number): Promise<Message | null>;
    /** Records `a`; returns the state to show and whether it is news (a final state is never undone). */
    private applyAttachment;
    /**
     * Brings a message's attachments to the newest state known (an update may come before it). From a
     * history page (`emit`), a newer state of an attachment already known is reported as an update.
     */
    private applyAttachments;
    /** After a re-join: asks history for the messages whose files were pending (updates sent meanwhile are not replayed). */
    private refreshPendingAttachments;
    private onAttachment;
    /** The pending attachments of an acknowledged send with files, as the node will show them. */
    private ownAttachments;
    /** Uploads every file of an acknowledged send, all at once; resolves the job when all have ended. */
    private startUploads;
    /** Tells the node an upload is given up (`DELETE`): the members see the file failed, cancelled. Best effort. */
    private giveUp;
    /** Ends a job's uploads (or, before they started, resolves them as cancelled). */
    private cancelJob;
    private cancelSend;
    /** Sends a job's frame again with its `client_id`: the duplicate ack carries fresh upload URLs. */
    private freshTickets;
    /** An ack asked for by `freshTickets`: true when it was one. */
    private answerTickets;
    /** Tells `room` this user is typing; throttled to one frame per 2 s (the node's relay rate). */
    typing(room: string): boolean;
    /** Moves this user's read marker in `room` to `seq` (only forward). */
    markRead(room: string, seq: number): boolean;
    /** This user's read marker in `room`, as far as this client knows. */
    readMarker(room: string): number;
    /**
     * One page of `room`'s history: messages older than `before` (default: the newest), oldest first,
     * at most `limit` (1–200, default 50). Page on with `before` = the oldest `seq` received.
     */
    history(room: string, options?: {
        before?: number;
        limit?: number;
    }): Promise<HistoryPage>;
    /** Online state and last-seen times of up to 100 users (those this user may see; others in `hidden`). */
    lastSeen(users: string[]): Promise<LastSeen>;
}
