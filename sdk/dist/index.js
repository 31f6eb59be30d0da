// @switchboard/client: the TypeScript client of Switchboard chat clusters (chat-node/PROTOCOL.md).
export { SwitchboardClient, SwitchboardError, USER_NAME, ROOM_NAME, safeFileName } from './client.js';
export { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export { fetchRequest, uploadAttachment, xhrRequest } from './upload.js';
export { Emitter } from './emitter.js';
