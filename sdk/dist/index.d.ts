export { SwitchboardClient, SwitchboardError, USER_NAME, ROOM_NAME } from './client.js';
export type { ClientOptions, ClientEvents, ConnectionState, DisconnectedEvent, FetchLike, MessageEvent, RecoveredEvent, SendHandle, SendResult, SendStateEvent, Sent, TokenReason, TokenSource, WebSocketConstructor, WebSocketLike, } from './client.js';
export { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { Emitter } from './emitter.js';
export type { Listener } from './emitter.js';
export type * from './types.js';
