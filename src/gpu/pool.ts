// Buffer pool: storage buffers are reused by exact (16-byte rounded) size, so per-shape plans that are
// rebuilt for a new image size do not leak GPU memory, and repeated runs allocate nothing.

export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  /** Bytes currently handed out. */
  inUse = 0;
  /** Bytes held by the pool (in use + free). */
  held = 0;

  constructor(private readonly device: GPUDevice) {}

  acquire(byteLength: number, label?: string): GPUBuffer {
    const size = Math.max(16, Math.ceil(byteLength / 16) * 16);
    const list = this.free.get(size);
    const reused = list?.pop();
    this.inUse += size;
    if (reused) return reused;
    this.held += size;
    return this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      label,
    });
  }

  release(buffer: GPUBuffer): void {
    this.inUse -= buffer.size;
    const list = this.free.get(buffer.size) ?? [];
    list.push(buffer);
    this.free.set(buffer.size, list);
  }

  /** Destroys the free buffers (e.g. after a size change). */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.held -= b.size;
        b.destroy();
      }
    }
    this.free.clear();
  }

  clear(): void {
    this.trim();
  }
}
