// The GEMM ops of a model builder (models/builder.ts): conv, linear and GEGLU. Each records how a norm or an
// attention right before it may write its x operand, and linears recorded `joint` share one GEMM
// (models/graph.ts: JointGemm).

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { bytesPerElement, numel, Tensor } from "../gpu/tensor.ts";
import {
  conv2d,
  type Conv2dParams,
  type ConvInput,
  convInputOperand,
  convOutSize,
  convPadding,
  convTakesPackedInput,
} from "../ops/conv.ts";
import { type Activation, geglu, linear } from "../ops/linear.ts";
import { linearInputOperand, linearTakesPackedInput, type PackedActivations } from "../ops/operand.ts";
import type { OpShape } from "../ops/tuning.ts";
import { BuilderBase } from "./builder_base.ts";
import { JointGemm, type RecordContext, Storage, Value } from "./graph.ts";

export abstract class GemmBuilder extends BuilderBase {
  /**
   * Conv2d `name` (`name.weight` [Cout, Cin, k, k], `name.bias`), NHWC [B, H, W, Cin] → [B, Ho, Wo, Cout],
   * with the fused epilogue relu?((conv + bias + timeBias + residual) / outputScaleFactor + outputShift).
   */
  conv(
    name: string,
    x: Value,
    o: {
      stride?: 1 | 2;
      padding?: Conv2dParams["padding"];
      timeBias?: Value;
      residual?: Value;
      outputScaleFactor?: number;
      outputShift?: number;
      relu?: boolean;
    } = {},
  ): Value {
    const w = this.weight(`${name}.weight`, "conv");
    const [cout, cin, kh, kw] = this.weights.shape(w);
    const stride = o.stride ?? 1;
    const padding = o.padding ?? "same";
    const pad = convPadding(padding, kh, kw);
    const [B, H, W] = x.shape;
    const ho = convOutSize(H, kh, stride, pad.top, pad.bottom);
    const wo = convOutSize(W, kw, stride, pad.left, pad.right);
    const out = this.value(this.prefix + name, [B, ho, wo, cout]);
    const bias = this.optionalBias(name);
    const run = (c: RecordContext, input: Tensor | PackedActivations) =>
      conv2d(c.gpu, {
        x: input,
        weight: c.weights.conv(w),
        bias: bias ? c.weights.get(bias) : undefined,
        timeBias: o.timeBias && c.columns(o.timeBias),
        residual: o.residual && c.tensor(o.residual),
        out: c.tensor(out),
        stride,
        padding,
        outputScaleFactor: o.outputScaleFactor,
        outputShift: o.outputShift,
        relu: o.relu,
        act: c.act,
      });
    const op: OpShape = {
      kind: "conv",
      b: B,
      h: H,
      w: W,
      cin,
      cout,
      kh,
      kw,
      stride,
      padding,
      act: this.act,
      bias: !!bias,
      timeBias: !!o.timeBias,
      residual: !!o.residual,
      relu: !!o.relu,
    };
    const input = (act: ActDType): ConvInput => ({
      x: x.shape,
      weight: [cout, cin, kh, kw],
      stride,
      padding,
      residual: !!o.residual,
      act,
    });
    return this.node(
      [x, o.timeBias, o.residual],
      out,
      2 * numel(out.shape) * cin * kh * kw,
      (c) => run(c, c.tensor(x)),
      {
        op,
        gemmInput: {
          x,
          accepts: (gpu, act) => convTakesPackedInput(gpu, input(act)),
          operand: (c) => convInputOperand(c.gpu, input(c.act)),
          record: run,
        },
      },
    );
  }

  /**
   * Linear `name` over the last axis: [..., K] → [..., N], with `name.bias` when the module has one, an
   * optional fused activation and residual. A 1×1 conv weight [N, K, 1, 1] works as one (proj_in of SD 1.x).
   * `joint`: every joint linear over the same input value is one GEMM over their weights packed side by side
   * (q/k/v of a self-attention; k/v of every cross-attention over the context; every resnet's
   * time_emb_proj), recorded where the first one is; each result is its column range of that GEMM's output,
   * the same values as on its own. Plain linears only (no activation or residual), N % 4 == 0.
   */
  linear(
    name: string,
    x: Value,
    o: { activation?: Activation; residual?: Value; joint?: boolean } = {},
  ): Value {
    const w = this.weight(`${name}.weight`, "linear");
    const [n, k] = this.weights.shape(w);
    const rows = numel(x.shape) / k;
    const bias = this.optionalBias(name);
    if (o.joint && this.graph.fuse && n % 4 === 0 && !o.activation && !o.residual) {
      return this.jointLinear(name, w, x, [n, k]);
    }
    const out = this.value(this.prefix + name, [...x.shape.slice(0, -1), n]);
    const run = (c: RecordContext, input: Tensor | PackedActivations) =>
      linear(c.gpu, {
        x: input,
        weight: c.weights.linear(w),
        bias: bias ? c.weights.get(bias) : undefined,
        residual: o.residual && c.tensor(o.residual.rows()),
        activation: o.activation,
        out: c.tensor(out.rows()),
        act: c.act,
      });
    const op: OpShape = {
      kind: "linear",
      m: rows,
      k,
      n,
      act: this.act,
      geglu: false,
      bias: !!bias,
      residual: !!o.residual,
      activation: o.activation ?? "none",
    };
    return this.node([x, o.residual], out, 2 * rows * k * n, (c) => run(c, c.tensor(x.rows())), {
      op,
      gemmInput: this.linearInput(x, run),
    });
  }

  /** How a linear or GEGLU over x reads x written as its operand by the producer before it. */
  private linearInput(x: Value, record: (c: RecordContext, input: PackedActivations) => Dispatch[]) {
    return {
      x,
      accepts: (gpu: Gpu) => linearTakesPackedInput(gpu, x.rows().shape),
      operand: (c: RecordContext) => linearInputOperand(c.gpu, x.rows().shape, c.act),
      record,
    };
  }

  private jointLinear(
    name: string,
    w: string,
    x: Value,
    [n, k]: readonly number[],
  ): Value {
    const rows = numel(x.shape) / k;
    const bpe = bytesPerElement(this.act);
    const same = this.graph.joint.get(x.storage) ?? [];
    this.graph.joint.set(x.storage, same);
    // Only the latest joint GEMM over x takes more columns, while its output fits one storage binding; then a
    // new one starts. Each keeps consecutive members of the weight group (Weights.linearGroup).
    let g: JointGemm | undefined = same.findLast((j) => j.x.shape.join() === x.shape.join());
    if (g && rows * (g.width + n) * bpe > this.graph.maxBindingBytes) g = undefined;
    if (!g) {
      const gemm = g = new JointGemm(x, new Storage(0, `${this.prefix}${name} (joint)`));
      same.push(gemm);
      const run = (c: RecordContext, input: Tensor | PackedActivations) =>
        linear(c.gpu, {
          x: input,
          weight: c.weights.linearGroup(gemm.names),
          bias: c.weights.groupBias(gemm.names),
          out: new Tensor(c.buffer(gemm.out), [rows, gemm.width], c.act, gemm.out.label),
          act: c.act,
        });
      // The autotuner tunes the joint GEMM's shape: n grows with the members below.
      gemm.op = {
        kind: "linear",
        m: rows,
        k,
        n: 0,
        act: this.act,
        geglu: false,
        bias: false,
        residual: false,
        activation: "none",
      };
      this.node(
        [x],
        new Value(gemm.out, [rows, n], this.act, gemm.out.label),
        0,
        (c) => run(c, c.tensor(x.rows())),
        {
          op: gemm.op,
          gemmInput: this.linearInput(x, run),
        },
      );
      gemm.node = this.graph.nodes[this.graph.nodes.length - 1];
    }
    const offset = g.width;
    g.names.push(w);
    g.width += n;
    g.out.bytes = rows * g.width * bytesPerElement(this.act);
    g.node!.flops += 2 * rows * k * n;
    g.op!.n = g.width;
    g.op!.bias ||= this.has(`${name}.bias`);
    return new Value(g.out, [...x.shape.slice(0, -1), n], this.act, this.prefix + name, { offset, of: g });
  }

  /** GEGLU projection `name` ([2D, K] weight: value and gate halves) in one kernel: [..., K] → [..., D]. */
  geglu(name: string, x: Value): Value {
    const w = this.weight(`${name}.weight`, "linear");
    const bias = this.weight(`${name}.bias`);
    const [n2, k] = this.weights.shape(w);
    const rows = numel(x.shape) / k;
    const out = this.value(this.prefix + name, [...x.shape.slice(0, -1), n2 / 2]);
    const run = (c: RecordContext, input: Tensor | PackedActivations) =>
      geglu(c.gpu, {
        x: input,
        weight: c.weights.linear(w),
        bias: c.weights.get(bias),
        out: c.tensor(out.rows()),
        act: c.act,
      });
    const op: OpShape = {
      kind: "linear",
      m: rows,
      k,
      n: n2 / 2,
      act: this.act,
      geglu: true,
      bias: true,
      residual: false,
      activation: "none",
    };
    return this.node([x], out, 2 * rows * k * n2, (c) => run(c, c.tensor(x.rows())), {
      op,
      gemmInput: this.linearInput(x, run),
    });
  }
}
