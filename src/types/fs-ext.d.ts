// fs-ext ships no types; only the calls strata uses are declared.
declare module 'fs-ext' {
  type FlockMode = 'sh' | 'ex' | 'shnb' | 'exnb' | 'un';
  export function flock(fd: number, mode: FlockMode, callback: (err: NodeJS.ErrnoException | null) => void): void;
  export function flockSync(fd: number, mode: FlockMode): void;
}
