// Typed access to config.json fields, with the Python constructors' defaults and errors naming the file
// and the field.

export class ConfigError extends Error {
  constructor(readonly source: string, readonly field: string | null, message: string) {
    super(`${source}${field ? `: ${field}` : ""}: ${message}`);
    this.name = "ConfigError";
  }
}

export class Reader {
  private readonly obj: Record<string, unknown>;

  constructor(json: unknown, private readonly source: string) {
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new ConfigError(source, null, "config is not a JSON object");
    }
    this.obj = json as Record<string, unknown>;
  }

  has(key: string): boolean {
    return Object.hasOwn(this.obj, key);
  }

  raw(key: string): unknown {
    return this.obj[key];
  }

  private fail(key: string, msg: string): never {
    throw new ConfigError(this.source, key, msg);
  }

  private get<T>(key: string, fallback: T, check: (v: unknown) => boolean, what: string): T {
    if (!this.has(key)) return fallback;
    const v = this.obj[key];
    if (!check(v)) this.fail(key, `expected ${what}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  bool(key: string, fallback: boolean): boolean {
    return this.get(key, fallback, (v) => typeof v === "boolean", "true or false");
  }

  number(key: string, fallback: number): number {
    return this.get(key, fallback, (v) => typeof v === "number" && Number.isFinite(v), "a number");
  }

  positiveNumber(key: string, fallback: number): number {
    return this.get(
      key,
      fallback,
      (v) => typeof v === "number" && v > 0 && Number.isFinite(v),
      "a positive number",
    );
  }

  int(key: string, fallback: number): number {
    return this.get(key, fallback, (v) => Number.isSafeInteger(v), "an integer");
  }

  positiveInt(key: string, fallback: number): number {
    return this.get(key, fallback, isPositiveInt, "a positive integer");
  }

  intOrNull(key: string, fallback: number | null): number | null {
    return this.get(key, fallback, (v) => v === null || isPositiveInt(v), "a positive integer or null");
  }

  intList(key: string, fallback: number[]): number[] {
    const v = this.get(
      key,
      fallback,
      (v) => Array.isArray(v) && v.length > 0 && v.every(isPositiveInt),
      "a list of positive integers",
    );
    return [...v];
  }

  intOrIntList(key: string, fallback: number | number[]): number | number[] {
    const v = this.get<number | number[]>(
      key,
      fallback,
      (v) => isPositiveInt(v) || (Array.isArray(v) && v.length > 0 && v.every(isPositiveInt)),
      "a positive integer or a list of them",
    );
    return Array.isArray(v) ? [...v] : v;
  }

  /** A value that must be one of `allowed`; anything else is an unsupported feature. */
  literal<T>(key: string, allowed: readonly T[], fallback: T): T {
    if (!this.has(key)) return fallback;
    const v = this.obj[key];
    if (!allowed.some((a) => a === v)) {
      this.fail(
        key,
        `${JSON.stringify(v)} is not supported (supported: ${
          allowed.map((a) => JSON.stringify(a)).join(", ")
        })`,
      );
    }
    return v as T;
  }

  enumList<T extends string>(key: string, allowed: readonly T[], fallback: T[]): T[] {
    if (!this.has(key)) return [...fallback];
    const v = this.obj[key];
    if (!Array.isArray(v) || v.length === 0) {
      this.fail(key, `expected a non-empty list, got ${JSON.stringify(v)}`);
    }
    for (const [i, item] of v.entries()) {
      if (!allowed.includes(item as T)) {
        this.fail(
          `${key}[${i}]`,
          `block type ${JSON.stringify(item)} is not supported (supported: ${allowed.join(", ")})`,
        );
      }
    }
    return [...v] as T[];
  }
}

export function isPositiveInt(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) > 0;
}
