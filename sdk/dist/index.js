// @switchboard/client: the TypeScript client of Switchboard chat clusters (chat-node/PROTOCOL.md).
export { SwitchboardClient, SwitchboardError, USER_NAME, ROOM_NAME } from './client.js';
export { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export { Emitter } from './emitter.js';
