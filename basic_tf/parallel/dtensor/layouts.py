"""Layout rules: which mesh axis splits which dimension of every weight, as one readable table.

A rule maps a regular expression, searched in a Keras variable's `path` (e.g.
"dual_encoder/text_tower/block0/attention/qkv/kernel"), to a spec: one entry per dimension,
"model" to split that dimension over the mesh's model axis or None to keep it whole, or
REPLICATED for a full copy on every device. The first matching rule wins; a variable that no
rule matches is an error naming it. Weights are never split over "batch" (that axis is data
parallel: every batch row of devices holds the same weight shards).

The default table ("megatron") splits a Transformer block's weights like Megatron-LM: the first
matmul of attention (fused qkv) and of the MLP is column-parallel (output features split), the
second is row-parallel (input features split), so each block needs one all-reduce per branch.
MBConv blocks follow the same pattern around their depthwise convolution (channels split; the
depthwise op must be `models.mesh_ops.depthwise`, as DTensor cannot differentiate the native one).
Embedding tables are split on width (any vocabulary size works). Dense convolution filters (conv
stems) stay replicated: DTensor's Conv2D rejects any other filter layout. The small ViT patch
embedding stays replicated too (on a mesh it is a matmul over patches, `mesh_ops.patch_embedding`).
Norms, small tables and scalars are replicated. Every layout gives the same numbers
(DTensor inserts the collectives a layout needs); the table only decides memory and traffic.
"""
import dataclasses
import re
from typing import Iterable, Optional, Sequence, Union

import gin
from tensorflow.experimental import dtensor

from basic_tf.parallel.dtensor.mesh import MESH_AXES, MODEL_AXIS

REPLICATED = "replicated"
Spec = Union[str, tuple]  # REPLICATED or a tuple of mesh-axis names / None, one per dimension
_M = MODEL_AXIS


@dataclasses.dataclass(frozen=True)
class Rule:
    """Variables whose path matches `pattern` (re.search) get `spec`; `why` is for the table."""
    pattern: str
    spec: Spec
    why: str = ""

    def __post_init__(self):
        re.compile(self.pattern)
        if self.spec != REPLICATED:
            if not isinstance(self.spec, tuple) or any(a is not None and a not in MESH_AXES
                                                       for a in self.spec):
                raise ValueError(f"layout rule {self.pattern!r}: spec {self.spec!r} must be "
                                 f"{REPLICATED!r} or a tuple of {MESH_AXES} / None per dimension")


MEGATRON_RULES = (
    # Transformer blocks (text tower, ViT, CoAtNet 'T' stages).
    Rule(r"attention/qkv/kernel$", (None, _M), "column-parallel: q,k,v features split"),
    Rule(r"attention/qkv/bias$", (_M,), "follows its kernel's columns"),
    Rule(r"attention/out/kernel$", (_M, None), "row-parallel: output all-reduced"),
    Rule(r"attention/out/bias$", REPLICATED, "added after the all-reduce"),
    Rule(r"mlp/fc1/kernel$", (None, _M), "column-parallel"),
    Rule(r"mlp/fc1/bias$", (_M,), "follows its kernel's columns"),
    Rule(r"mlp/fc2/kernel$", (_M, None), "row-parallel"),
    Rule(r"mlp/fc2/bias$", REPLICATED, "added after the all-reduce"),
    # MBConv blocks (CoAtNet 'C' stages): expand -> depthwise -> SE -> project.
    Rule(r"/expand/kernel$", (None, _M), "column-parallel: expanded channels split"),
    Rule(r"/depthwise/kernel$", (None, None, _M, None), "conv: channels split"),
    Rule(r"/se_reduce/kernel$", (_M, None), "row-parallel over expanded channels"),
    Rule(r"/se_reduce/bias$", REPLICATED, "squeezed width is small"),
    Rule(r"/se_expand/kernel$", (None, _M), "column-parallel back to expanded channels"),
    Rule(r"/se_expand/bias$", (_M,), "follows its kernel's columns"),
    Rule(r"/project/kernel$", (_M, None), "row-parallel"),
    Rule(r"/project/bias$", REPLICATED, "added after the all-reduce"),
    Rule(r"/shortcut/kernel$", (None, _M), "width-changing shortcut: output channels split"),
    Rule(r"/shortcut/bias$", (_M,), "follows its kernel's columns"),
    # Dense convolutions (stems, ViT patches): DTensor's Conv2D requires a replicated filter
    # ("Filter for convolution must have fully replicated layout"); they are small.
    Rule(r"conv\d*/(kernel|bias)$", REPLICATED, "DTensor Conv2D needs a replicated filter"),
    Rule(r"patch_embedding/(kernel|bias)$", REPLICATED,
         "small; a matmul over patches on a mesh (mesh_ops.patch_embedding)"),
    # Embeddings: width-split tables (works for any vocabulary size).
    Rule(r"token_embedding/embeddings$", (None, _M), "width-sharded vocabulary table"),
    Rule(r"position_embedding$", (None, _M), "width-sharded"),
    # Projections into the joint embedding space.
    Rule(r"projection/kernel$", (_M, None), "row-parallel: tower width split"),
    Rule(r"projection/bias$", REPLICATED, "added after the all-reduce"),
    # Small tensors: replicated.
    Rule(r"(norm|bn)\d*/(gamma|beta|moving_mean|moving_variance)$", REPLICATED, "norms"),
    Rule(r"relative_bias_table$", REPLICATED, "small: (2H-1)(2W-1) x heads"),
    Rule(r"(cls_token|class_token)$", REPLICATED, "one vector"),
    Rule(r"logit_(scale|bias)$", REPLICATED, "scalars"),
    # Stage (a) classifier head (models/classifier.py): pre-logits then logits.
    Rule(r"pre_logits/kernel$", (None, _M), "column-parallel: pre-logit features split"),
    Rule(r"pre_logits/bias$", (_M,), "follows its kernel's columns"),
    Rule(r"logits/kernel$", (_M, None), "row-parallel: classes summed over the split features"),
    Rule(r"logits/bias$", REPLICATED, "added after the all-reduce"),
)

RULE_SETS = {
    "megatron": MEGATRON_RULES,
    "replicated": (Rule(r".*", REPLICATED, "pure data parallel"),),
}


@gin.configurable
def layout_rules(name: str = "megatron", overrides: Sequence = ()) -> tuple:
    """The named rule table, with `overrides` ((pattern, spec) pairs or Rules) tried first.

    gin: `layout_rules.overrides = [("token_embedding/embeddings$", ("model", None))]`.
    """
    if name not in RULE_SETS:
        raise ValueError(f"layout_rules.name={name!r} is not one of {sorted(RULE_SETS)}")
    extra = []
    for item in overrides:
        if isinstance(item, Rule):
            extra.append(item)
        else:
            pattern, spec = item
            extra.append(Rule(pattern, tuple(spec) if isinstance(spec, list) else spec,
                              "override"))
    return tuple(extra) + RULE_SETS[name]


@dataclasses.dataclass(frozen=True)
class VariableLayout:
    """One row of a layout plan: a variable, its spec and the rule that chose it."""
    path: str
    shape: tuple
    dtype: str
    spec: tuple  # one mesh-axis name or None per dimension (REPLICATED resolved)
    rule: str


def match_rule(path: str, rules: Iterable[Rule]) -> Optional[Rule]:
    for rule in rules:
        if re.search(rule.pattern, path):
            return rule
    return None


def plan_layouts(variables: Iterable, rules: Sequence[Rule], mesh_sizes: dict) -> list:
    """[VariableLayout] for `variables` (anything with .path, .shape, .dtype) on a mesh of
    `mesh_sizes` ({'batch': n, 'model': m}; no devices needed, so any mesh can be planned).

    Raises ValueError listing every unmatched variable, or naming a variable whose rule has the
    wrong rank or splits a dimension the mesh axis does not divide.
    """
    plan, unmatched = [], []
    for v in variables:
        path, shape = v.path, tuple(int(d) for d in v.shape)
        rule = match_rule(path, rules)
        if rule is None:
            unmatched.append(f"{path} {list(shape)}")
            continue
        spec = (None,) * len(shape) if rule.spec == REPLICATED else rule.spec
        if len(spec) != len(shape):
            raise ValueError(f"layout rule {rule.pattern!r} gives {len(spec)}-D spec {spec} to "
                             f"variable {path} of shape {list(shape)}; write a rule of rank "
                             f"{len(shape)} (or {REPLICATED!r}) that matches it first")
        for dim, axis in zip(shape, spec):
            if axis is not None and dim % mesh_sizes[axis]:
                raise ValueError(f"variable {path} of shape {list(shape)}: rule "
                                 f"{rule.pattern!r} splits a dimension of {dim} over mesh axis "
                                 f"{axis!r} of size {mesh_sizes[axis]}, which does not divide "
                                 f"it; pick a mesh whose {axis} axis divides {dim}, or override "
                                 f"the rule (layout_rules.overrides)")
        plan.append(VariableLayout(path, shape, str(getattr(v.dtype, "name", v.dtype)), spec,
                                   rule.pattern))
    if unmatched:
        raise ValueError("no layout rule matches these variables (add rules or "
                         "layout_rules.overrides):\n  " + "\n  ".join(unmatched))
    return plan


def to_dtensor_layout(spec: tuple, mesh: dtensor.Mesh) -> dtensor.Layout:
    return dtensor.Layout([dtensor.UNSHARDED if a is None else a for a in spec], mesh)


def format_plan(plan: Sequence[VariableLayout]) -> str:
    """The plan as an aligned text table: path, shape, spec, rule."""
    rows = [(p.path, "x".join(map(str, p.shape)) or "scalar",
             ",".join(a or "-" for a in p.spec) or "-", p.rule) for p in plan]
    widths = [max(len(r[i]) for r in rows + [("path", "shape", "spec", "rule")])
              for i in range(4)]
    lines = [("path", "shape", "spec", "rule")] + rows
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)
