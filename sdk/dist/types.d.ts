/** The node's limits, sent in `welcome` (PROTOCOL.md section 2). */
export interface Limits {
    max_frame_bytes: number;
    max_body_chars: number;
    rate_per_sec: number;
    rate_burst: number;
    history_page_max: number;
    max_rooms: number;
    idle_timeout_ms: number;
    /** Whether the node has an attachment store (PROTOCOL.md section 10); absent on older nodes. */
    attachments?: boolean;
    /** The largest file a message may carry, in bytes. */
    max_attachment_bytes?: number;
    /** How many files one message may carry (10). */
    max_attachments?: number;
    /** Bytes a user may upload in 24 hours. */
    attachment_quota_bytes?: number;
    /** Upload chunk size: every chunk but the last is a multiple of this (8 MiB). */
    upload_chunk_bytes?: number;
    /** The MIME types the node accepts. */
    attachment_types?: string[];
}
/** What a client declares for each file of a `send` or `dm` (the node checks it against the bytes). */
export interface AttachmentDeclaration {
    name: string;
    size: number;
    type: string;
}
/** Where an attachment is: waiting for its bytes, stored and checked, or given up. */
export type AttachmentStateName = 'pending' | 'ready' | 'failed';
/** Why an attachment failed (PROTOCOL.md section 10). */
export type AttachmentErrorCode = 'wrong_type' | 'size_mismatch' | 'expired' | 'store_failed';
/**
 * The current state of one file of a message (message frames, history, recovery and `attachment`
 * updates). `url` and `thumbnail_url` are relative to the node's HTTP base and expire (HTTP 410):
 * fetch the message again with `history` for fresh ones.
 */
export interface Attachment {
    /** `<message id>.<index>`. */
    id: string;
    /** The file name, made safe by the node. */
    name: string;
    size: number;
    /** The declared type while pending; the type found from the bytes once ready. */
    type: string;
    state: AttachmentStateName;
    /** Download URL (ready only). */
    url?: string;
    /** JPEG thumbnail, at most 320×320 (ready images only). */
    thumbnail_url?: string;
    width?: number;
    height?: number;
    /** Failed only. */
    error?: AttachmentErrorCode | string;
    reason?: string;
}
/** An upload URL for one attachment, in the sender's `ack` / `dm_ack`. */
export interface UploadTicket {
    id: string;
    upload_url: string;
}
/** `attachment`: an upload completed or failed; every member gets it once. */
export interface AttachmentUpdate {
    type: 'attachment';
    /** Room messages. */
    room?: string;
    seq?: number;
    /** Direct messages. */
    from?: string;
    to?: string;
    message_id: string;
    attachment: Attachment;
}
/** `welcome`: the session is identified. */
export interface Welcome {
    type: 'welcome';
    user: string;
    node: string;
    session: string;
    server_time: number;
    dm_seq: number;
    auth: 'jwt' | 'open';
    /** When the session's token expires (ms since the epoch; token mode only). */
    expires_at?: number;
    limits: Limits;
}
/** `joined`: the reply to `join`. */
export interface Joined {
    type: 'joined';
    room: string;
    members: string[];
    members_total: number;
    last_seq: number;
    first_seq: number;
    read: Record<string, number>;
    req?: string | number;
}
/** A room message (`message` frame, and the entries of a `history` page). */
export interface Message {
    type?: 'message';
    room: string;
    seq: number;
    id: string;
    from: string;
    ts: number;
    body: string;
    client_id: string | null;
    /** The message's files with their current state. */
    attachments?: Attachment[];
}
/** `ack`: the reply to `send`. */
export interface Ack {
    type: 'ack';
    room: string;
    seq: number;
    id: string;
    ts: number;
    client_id: string | null;
    duplicate: boolean;
    /** Upload URLs of the message's files (only the sender gets them). */
    attachments?: UploadTicket[];
    req?: string | number;
}
/** `presence`: a user's first connection joined or last connection left a room. */
export interface Presence {
    type: 'presence';
    room: string;
    user: string;
    event: 'join' | 'leave';
    ts: number;
}
/** `typing`: someone is typing in a room. */
export interface Typing {
    type: 'typing';
    room: string;
    user: string;
}
/** `read`: someone's read marker moved. */
export interface Read {
    type: 'read';
    room: string;
    user: string;
    seq: number;
}
/** `dm`: a direct message to this user. */
export interface DirectMessage {
    type?: 'dm';
    seq: number;
    id: string;
    from: string;
    to: string;
    ts: number;
    body: string;
    client_id: string | null;
    /** The message's files with their current state. */
    attachments?: Attachment[];
}
/** `dm_ack`: the reply to `dm`. */
export interface DmAck {
    type: 'dm_ack';
    to: string;
    id: string;
    ts: number;
    client_id: string | null;
    duplicate: boolean;
    /** Upload URLs of the message's files. */
    attachments?: UploadTicket[];
    req?: string | number;
}
/** `history`: one page of a room's stored messages, oldest first. */
export interface HistoryPage {
    type: 'history';
    room: string;
    messages: Message[];
    has_more: boolean;
    req?: string | number;
}
/** One user's entry in a `last_seen` answer. */
export interface LastSeenEntry {
    online: boolean;
    /** ms since the epoch, or null when never seen (or forgotten). */
    last_seen: number | null;
}
/** `last_seen`: the reply to `last_seen`. */
export interface LastSeen {
    type: 'last_seen';
    users: Record<string, LastSeenEntry>;
    /** Asked-for users this session may not see (PROTOCOL.md section 2a). */
    hidden?: string[];
    req?: string | number;
}
/** `reconnect`: the node is draining; move to another one. */
export interface ReconnectNotice {
    type: 'reconnect';
    reason: string;
    retry_after_ms: number;
}
/** The `error` codes of PROTOCOL.md section 7. */
export type ErrorCode = 'bad_frame' | 'unknown_type' | 'invalid_name' | 'invalid_body' | 'too_large' | 'rate_limited' | 'not_joined' | 'too_many_rooms' | 'already_identified' | 'auth_failed' | 'forbidden' | 'unavailable' | 'internal' | 'attachments_disabled' | 'invalid_attachment' | 'unsupported_type' | 'quota_exceeded';
/** `error`: a frame was refused; the connection stays usable. */
export interface ErrorFrame {
    type: 'error';
    code: ErrorCode | string;
    message: string;
    req?: string | number;
    retry_after_ms?: number;
}
/** `refreshed`: the reply to `refresh`. */
export interface Refreshed {
    type: 'refreshed';
    expires_at: number;
    req?: string | number;
}
/** `left`: the reply to `leave`, or an ACL revocation (then without `req`). */
export interface Left {
    type: 'left';
    room: string;
    req?: string | number;
}
/** `pong`: the reply to `ping`. */
export interface Pong {
    type: 'pong';
    ts: number;
    req?: string | number;
}
/** Every frame a node sends. */
export type ServerFrame = Welcome | Refreshed | Joined | Left | (Message & {
    type: 'message';
}) | Ack | Presence | Typing | Read | (DirectMessage & {
    type: 'dm';
}) | DmAck | HistoryPage | LastSeen | Pong | ReconnectNotice | AttachmentUpdate | ErrorFrame;
/** The registry's answer to `GET /v1/assign` (PROTOCOL.md section 1). */
export interface Assignment {
    node: string;
    url: string;
    connections?: number;
    capacity?: number;
}
