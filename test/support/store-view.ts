/** Test doubles that are real stores with a few members changed. */

/**
 * A view of `store` in which the members named in `overrides` are replaced (an override of
 * `undefined` hides the member, as a backend without it); every other member is the store's own,
 * methods bound to it.
 *
 * @example storeView(store, { queryPathInfo: (p) => (reads++, store.queryPathInfo(p)) })
 */
export function storeView<S extends object>(store: S, overrides: { [K in keyof S]?: S[K] | undefined }): S {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof S];
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
