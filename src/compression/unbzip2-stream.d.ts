// unbzip2-stream 1.4 ships no types. It returns a classic `through` stream (not a Transform):
// write() decodes synchronously and emits 'data'; end() flushes and emits 'end' or 'error'.
declare module 'unbzip2-stream' {
  import type { EventEmitter } from 'node:events';

  interface ThroughStream extends EventEmitter {
    write(chunk: Buffer): boolean;
    end(): void;
    destroy(): void;
  }

  function unbzip2Stream(): ThroughStream;
  export = unbzip2Stream;
}
