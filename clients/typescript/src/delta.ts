// Fossil deltas (CONTRACT section 12), the same format the hub creates and applies (the
// npm `fossil-delta` package, checked against the hub's Rust implementation on the shared
// corpus protocol/testdata/fossil). On the wire a delta is base64 of the delta's bytes.
import { applyDelta, createDelta } from "fossil-delta";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The delta from `base` to `target` as base64, only when it is smaller than half the
 * target (what the hub requires of its own deltas too); undefined otherwise. */
export function deltaWorthSending(base: string, target: string): string | undefined {
  const targetBytes = encoder.encode(target);
  const delta = new Uint8Array(createDelta(encoder.encode(base), targetBytes));
  // base64 is 4 bytes per 3: decide before encoding a large delta.
  if (Math.ceil(delta.length / 3) * 4 * 2 >= targetBytes.length) return undefined;
  return toBase64(delta);
}

/** Applies a base64 delta to `base`; throws when it does not apply or gives no UTF-8 text. */
export function applyDeltaText(base: string, delta: string): string {
  return decoder.decode(new Uint8Array(applyDelta(encoder.encode(base), fromBase64(delta))));
}

/** sha256 hex of `text` (the hub's `content_hash`); undefined where WebCrypto is not
 * available (an insecure origin): the caller then trusts nothing it cannot check. */
export async function sha256Hex(text: string): Promise<string | undefined> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return undefined;
  const digest = new Uint8Array(await subtle.digest("SHA-256", encoder.encode(text)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The content a delta event stands for, checked against its `content_hash`; undefined
 * when it does not apply or does not check out (the caller reads the file instead). */
export async function applyVerified(base: string, delta: string, contentHash: string): Promise<string | undefined> {
  let content: string;
  try {
    content = applyDeltaText(base, delta);
  } catch {
    return undefined;
  }
  return (await sha256Hex(content)) === contentHash ? content : undefined;
}
