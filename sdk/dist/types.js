// The frames of the Switchboard wire protocol (chat-node/PROTOCOL.md, section 3) as TypeScript types.
// Field names are the wire's own (snake_case), so a frame is typed without being copied.
export {};
