// An unbounded single-consumer async channel: a producer pushes items (or an error) from callbacks, one
// consumer iterates. Used where events arrive as messages (the engine worker's) and leave as an iterator.

export class Channel<T> {
  #items: T[] = [];
  #wake?: () => void;
  #closed = false;
  #error: unknown = undefined;
  #failed = false;

  push(item: T): void {
    if (this.#closed) return;
    this.#items.push(item);
    this.#wake?.();
  }

  /** Ends the iteration once the pushed items are consumed. */
  close(): void {
    this.#closed = true;
    this.#wake?.();
  }

  /** Ends the iteration with `error` thrown once the pushed items are consumed. */
  fail(error: unknown): void {
    if (this.#closed) return;
    this.#error = error;
    this.#failed = true;
    this.close();
  }

  get closed(): boolean {
    return this.#closed;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    while (true) {
      if (this.#items.length) {
        yield this.#items.shift()!;
        continue;
      }
      if (this.#closed) {
        if (this.#failed) throw this.#error;
        return;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
  }
}
