/**
 * A context manager that does not follow awaits: a context entered with
 * `with` is active while its function runs synchronously and no longer. The
 * worker uses it when no span of the process can be recorded (telemetry.ts):
 * then a context only carries ids to the worker's log lines, and its code
 * enters a job's context where it logs (job-traces.ts). The SDK's default,
 * AsyncLocalStorage, makes Node 20 run async hooks for every promise and
 * native async resource of the process (about 16 KB of garbage and a few %
 * of the worker's CPU per job), whether or not anything reads them.
 */
import { type Context, type ContextManager, ROOT_CONTEXT } from "@opentelemetry/api";

/** The active context, set for the synchronous extent of `with`. */
export class SyncContextManager implements ContextManager {
  private current: Context = ROOT_CONTEXT;

  active(): Context {
    return this.current;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    const saved = this.current;
    this.current = ctx;
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.current = saved;
    }
  }

  /** A function bound to `ctx` runs in it (synchronously); anything else is returned as it is. */
  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== "function") return target;
    const fn = target as unknown as (...args: unknown[]) => unknown;
    const manager = this;
    return function (this: unknown, ...args: unknown[]) {
      return manager.with(ctx, () => fn.apply(this, args));
    } as unknown as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.current = ROOT_CONTEXT;
    return this;
  }
}
