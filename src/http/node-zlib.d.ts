// The two functions of node:zlib the Worker uses (src/http/body.ts), declared here
// because src/ is type-checked without Node's types. They exist in workerd with the
// nodejs_compat flag (wrangler.toml) and decode natively: brotli and zstd request bodies.
declare module "node:zlib" {
  interface DecodeOptions {
    /** Stop with a RangeError instead of producing more than this many bytes. */
    maxOutputLength?: number;
  }
  export function brotliDecompressSync(buf: Uint8Array, options?: DecodeOptions): Uint8Array;
  export function zstdDecompressSync(buf: Uint8Array, options?: DecodeOptions): Uint8Array;
}
