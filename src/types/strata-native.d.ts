// native/: the system calls strata needs and Node lacks.
declare module 'strata-native' {
  /** syncfs(2) of the file system holding `fd`, on libuv's thread pool. Rejects with an errno error. */
  export function syncfs(fd: number): Promise<void>;

  /** A tree writer (native/tree_writer.c): file system operations run in order on the thread pool. */
  export interface TreeWriterHandle {
    readonly __treeWriter: unique symbol;
  }
  export function treeWriter(): TreeWriterHandle;
  /** Queues a buffer of encoded operations (kept alive by the addon); the caller must not change it until `treeWriterDone` passes it. */
  export function treeWriterPush(writer: TreeWriterHandle, ops: Buffer): void;
  /** Bytes of pushed buffers finished (run, or dropped after a failure). */
  export function treeWriterDone(writer: TreeWriterHandle): number;
  /** Whether a call has failed (its error comes with `treeWriterIdle`). */
  export function treeWriterFailed(writer: TreeWriterHandle): boolean;
  /** Settles once every pushed buffer is done; rejects with the first failing call's errno error. */
  export function treeWriterIdle(writer: TreeWriterHandle): Promise<void>;
  /** Closes files left open by a stopped restore; throws while buffers are still running. */
  export function treeWriterClose(writer: TreeWriterHandle): void;
  /** The lock descriptors LOCK operations took, by index (-1: not taken), now the caller's; throws while buffers are still running. */
  export function treeWriterTakeLocks(writer: TreeWriterHandle): number[];
}
