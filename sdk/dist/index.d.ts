export { SwitchboardClient, SwitchboardError, USER_NAME, ROOM_NAME, safeFileName } from './client.js';
export type { AttachmentEvent, ClientOptions, ClientEvents, ConnectionState, DisconnectedEvent, FetchLike, MessageEvent, RecoveredEvent, SendHandle, SendOptions, SendResult, SendStateEvent, Sent, TokenReason, TokenSource, UploadProgress, UploadResult, WebSocketConstructor, WebSocketLike, } from './client.js';
export { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export { fetchRequest, uploadAttachment, xhrRequest } from './upload.js';
export type { HttpAnswer, HttpRequest, HttpRequestInit, UploadFetch, UploadOptions, UploadOutcome, UploadSource, XhrLike } from './upload.js';
export type { BackoffOptions } from './backoff.js';
export { Emitter } from './emitter.js';
export type { Listener } from './emitter.js';
export type * from './types.js';
