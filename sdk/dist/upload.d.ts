import { type BackoffOptions } from './backoff.js';
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
export type UploadFetch = (url: string, init: {
    method: string;
    headers: Record<string, string>;
    body?: Blob;
    signal: AbortSignal;
}) => Promise<{
    status: number;
    headers: {
        get(name: string): string | null;
    };
    text(): Promise<string>;
}>;
/** The part of `XMLHttpRequest` an upload uses (browsers: progress inside a chunk). */
export interface XhrLike {
    open(method: string, url: string): void;
    setRequestHeader(name: string, value: string): void;
    getResponseHeader(name: string): string | null;
    send(body?: Blob | null): void;
    abort(): void;
    readonly status: number;
    readonly responseText: string;
    readonly upload?: {
        onprogress: ((e: {
            loaded: number;
        }) => void) | null;
    };
    onload: (() => void) | null;
    onerror: (() => void) | null;
    onabort: (() => void) | null;
    ontimeout: (() => void) | null;
}
/** How an upload ended. `attachment` is the node's state object when it sent one. */
export type UploadOutcome = {
    state: 'ready';
    attachment?: Attachment;
} | {
    state: 'failed';
    code: string;
    message: string;
    attachment?: Attachment;
} | {
    state: 'cancelled';
};
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
/**
 * Uploads `source` to its upload URL in chunks, resuming after errors from the offset the node
 * reports, until the node says the attachment is ready (or failed), the retries run out, or `signal`
 * aborts. Never rejects.
 */
export declare function uploadAttachment(o: UploadOptions): Promise<UploadOutcome>;
/** An [`HttpRequest`] over `fetch`: progress per chunk (Node, or browsers without XMLHttpRequest). */
export declare function fetchRequest(fetchFn: UploadFetch): HttpRequest;
/** An [`HttpRequest`] over `XMLHttpRequest`: progress inside a chunk, as the browser sends it. */
export declare function xhrRequest(XHR: new () => XhrLike): HttpRequest;
