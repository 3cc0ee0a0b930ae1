// native/: the system calls strata needs and Node lacks.
declare module 'strata-native' {
  /** syncfs(2) of the file system holding `fd`, on libuv's thread pool. Rejects with an errno error. */
  export function syncfs(fd: number): Promise<void>;
}
