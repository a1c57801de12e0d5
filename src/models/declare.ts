// Weight declarations: each block lists the tensors it owns (diffusers / transformers names, shapes, roles)
// beside its forward. The expected-tensor list of a checkpoint, the single-file name map, synthetic weights
// and FLOP counts all derive from these lists. Tensors are declared in the order PyTorch's state_dict()
// lists them (module registration order), so a list compares with a real checkpoint's as it is.

/** weight: conv/linear weight (init N(0,1)/√fanIn); norm_*: GroupNorm/LayerNorm affine. */
export type ParamRole =
  | "weight"
  | "bias"
  | "norm_weight"
  | "norm_bias"
  | "token_embedding"
  | "position_embedding";

export interface TensorSpec {
  name: string;
  shape: number[];
  role: ParamRole;
  /** Inputs per output element (in × kh × kw for convs, in for linears); 1 for the others. */
  fanIn: number;
}

/** A module scope that declares tensors under its prefix (`down_blocks.0.resnets.1.` …). */
export class WeightDecl {
  private constructor(readonly specs: TensorSpec[], readonly prefix: string) {}

  static root(): WeightDecl {
    return new WeightDecl([], "");
  }

  /** The child module `name` (`d.at("resnets", 0)` → `…resnets.0.`). */
  at(...path: (string | number)[]): WeightDecl {
    return new WeightDecl(this.specs, `${this.prefix}${path.join(".")}.`);
  }

  add(name: string, shape: number[], role: ParamRole, fanIn = 1): void {
    this.specs.push({ name: this.prefix + name, shape, role, fanIn });
  }

  /** Conv2d [out, in, k, k] (+ bias [out]). */
  conv(name: string, out: number, inp: number, k: number, bias = true): void {
    this.add(`${name}.weight`, [out, inp, k, k], "weight", inp * k * k);
    if (bias) this.add(`${name}.bias`, [out], "bias");
  }

  /** Linear [out, in] (+ bias [out]). */
  linear(name: string, out: number, inp: number, bias = true): void {
    this.add(`${name}.weight`, [out, inp], "weight", inp);
    if (bias) this.add(`${name}.bias`, [out], "bias");
  }

  /** GroupNorm / LayerNorm affine parameters. */
  norm(name: string, channels: number): void {
    this.add(`${name}.weight`, [channels], "norm_weight");
    this.add(`${name}.bias`, [channels], "norm_bias");
  }
}

/** The tensors a model's top-level declaration lists for one config (`declarationOf(declareUNet, config)`). */
export function declarationOf<C>(declare: (d: WeightDecl, config: C) => void, config: C): TensorSpec[] {
  const d = WeightDecl.root();
  declare(d, config);
  return d.specs;
}

/** Weight shapes by name: the loaded weights, or a declaration (for FLOP counts without a GPU). */
export interface WeightShapes {
  has(name: string): boolean;
  shape(name: string): readonly number[];
}

export function declaredShapes(specs: readonly TensorSpec[]): WeightShapes {
  const byName = new Map(specs.map((s) => [s.name, s.shape]));
  return {
    has: (name) => byName.has(name),
    shape: (name) => {
      const s = byName.get(name);
      if (!s) throw new Error(`weight "${name}" is not declared`);
      return s;
    },
  };
}
