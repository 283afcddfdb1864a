"""A fitted HistGradientBoosting model's trees as a LightGBM booster.

scikit-learn predicts a HistGB model one tree at a time (a call into its compiled predictor per
tree: 43 calls for the champion's), and gives no per-feature contributions. The same trees
written in LightGBM's model format are evaluated by one LightGBM call, and LightGBM's TreeSHAP
(``pred_contrib``) then explains them exactly, with the trees' training counts as covers.

The booster reads the rows scikit-learn's predictors read (the HistGB preprocessor's column
order), with one change, made by the caller: every category value the predictors would send
the missing way (NaN, a negative code, a category unknown to the fitted model) is given as
:data:`MISSING_CODE`, which each categorical split sends where the fitted split sends missing
values. LightGBM sends a NaN category right whatever the split learnt, so this is needed.

Sums are in scikit-learn's order: LightGBM starts at 0 and adds each tree's leaf in turn, and
the baseline is added into the first tree's leaves, so the first sum is ``baseline + leaf`` as
scikit-learn computes it.

LightGBM reads a dense value with ``|x| <= 1e-35`` as 0 (``kZeroThreshold``), and HistGB
models do split there: the champion's trees split first-passage probabilities at thresholds
down to 1e-267. So a feature with a threshold within 1e-35 of 0 is read scaled by
:data:`SCALE` (2^959), thresholds and values alike: a power of two scales every double exactly
(the smallest subnormal becomes 2.4e-35, outside LightGBM's band) and keeps every comparison,
as long as nothing overflows, which :func:`scales` and the caller check.
"""

import lightgbm as lgb
import numpy as np

MISSING_CODE = 255  # above every category code a HistGB model holds (at most 255 bins, one for missing)
_BITSET_WORDS = 8  # scikit-learn's category bitsets: 256 bits in uint32 words
_NUMERICAL_NAN = 8  # LightGBM decision_type: missing type NaN (bits 2-3)
_DEFAULT_LEFT = 2
_CATEGORICAL = 1
ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold
SCALE = 2.0**959  # 2^-1074 (the smallest subnormal) x 2^959 = 2^-115 > 1e-35


def scales(predictors: tuple, n_features: int) -> np.ndarray | None:
    """Per input column, what its values and thresholds are multiplied by: :data:`SCALE` where a
    numerical threshold lies within 1e-35 of 0, else 1; None if a scaled threshold would overflow."""
    out = np.ones(n_features)
    if not predictors:
        return out
    nodes = np.concatenate([predictor.nodes for predictor in predictors])
    split = nodes[(nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 0)]
    feature, threshold = split["feature_idx"], split["num_threshold"]
    out[feature[np.abs(threshold) <= ZERO_THRESHOLD]] = SCALE
    scaled = threshold * out[feature]
    return out if np.isfinite(scaled[np.isfinite(threshold)]).all() else None


def booster_of(predictors: tuple, baseline: float, scale: np.ndarray) -> lgb.Booster:
    """The booster whose raw score is ``baseline`` plus the sum of the ``predictors``' values
    (scikit-learn ``TreePredictor`` objects, one per iteration of a binary model), on rows of
    ``len(scale)`` columns, each multiplied by its ``scale`` (:func:`scales`)."""
    n_features = len(scale)
    trees = [_tree(i, p, baseline if i == 0 else 0.0, scale) for i, p in enumerate(predictors)]
    names = " ".join(f"f{j}" for j in range(n_features))
    header = [
        "tree",
        "version=v4",
        "num_class=1",
        "num_tree_per_iteration=1",
        "label_index=0",
        f"max_feature_idx={n_features - 1}",
        "objective=regression",
        f"feature_names={names}",
        "feature_infos=" + " ".join(["none"] * n_features),
        "",
    ]
    text = "\n".join(header + trees + ["end of trees", "", "pandas_categorical:null", ""])
    return lgb.Booster(model_str=text)


def _tree(index: int, predictor: object, add: float, scale: np.ndarray) -> str:
    nodes = predictor.nodes
    bitsets = predictor.raw_left_cat_bitsets
    internal: list[int] = []  # HistGB node ids, in LightGBM's internal order (depth first)
    leaves: list[int] = []
    order = [0]
    while order:  # root first; LightGBM numbers internal nodes and leaves separately
        node = order.pop()
        if nodes["is_leaf"][node]:
            leaves.append(node)
        else:
            internal.append(node)
            order += [int(nodes["right"][node]), int(nodes["left"][node])]
    inner = {node: k for k, node in enumerate(internal)}
    leaf = {node: k for k, node in enumerate(leaves)}

    def child(node: int) -> int:
        return inner[node] if node in inner else ~leaf[node]

    values = [float(nodes["value"][n]) + add for n in leaves]
    lines = [f"Tree={index}", f"num_leaves={len(leaves)}"]
    if not internal:
        lines += [
            "num_cat=0",
            f"leaf_value={_floats(values)}",
            f"leaf_count={int(nodes['count'][leaves[0]])}",
            "is_linear=0",
            "shrinkage=1",
            "",
            "",
        ]
        return "\n".join(lines)
    thresholds, kinds, words = [], [], []
    for node in internal:
        if nodes["is_categorical"][node]:
            bits = np.array(bitsets[nodes["bitset_idx"][node]], dtype=np.uint64)
            if nodes["missing_go_to_left"][node]:
                bits[MISSING_CODE // 32] |= np.uint64(1 << (MISSING_CODE % 32))
            thresholds.append(str(len(words) // _BITSET_WORDS))
            words += [int(w) for w in bits]
            kinds.append(_CATEGORICAL)
        else:
            feature = int(nodes["feature_idx"][node])
            thresholds.append(repr(float(nodes["num_threshold"][node]) * float(scale[feature])))
            kinds.append(_NUMERICAL_NAN | (_DEFAULT_LEFT if nodes["missing_go_to_left"][node] else 0))
    n_cat = len(words) // _BITSET_WORDS
    lines += [
        f"num_cat={n_cat}",
        "split_feature=" + " ".join(str(int(nodes["feature_idx"][n])) for n in internal),
        "split_gain=" + " ".join("0" for _ in internal),
        "threshold=" + " ".join(thresholds),
        "decision_type=" + " ".join(map(str, kinds)),
        "left_child=" + " ".join(str(child(int(nodes["left"][n]))) for n in internal),
        "right_child=" + " ".join(str(child(int(nodes["right"][n]))) for n in internal),
        f"leaf_value={_floats(values)}",
        "leaf_weight=" + " ".join(str(int(nodes["count"][n])) for n in leaves),
        "leaf_count=" + " ".join(str(int(nodes["count"][n])) for n in leaves),
        "internal_value=" + _floats([float(nodes["value"][n]) + add for n in internal]),
        "internal_weight=" + " ".join(str(int(nodes["count"][n])) for n in internal),
        "internal_count=" + " ".join(str(int(nodes["count"][n])) for n in internal),
    ]
    if n_cat:
        lines += [
            "cat_boundaries=" + " ".join(str(k * _BITSET_WORDS) for k in range(n_cat + 1)),
            "cat_threshold=" + " ".join(map(str, words)),
        ]
    lines += ["is_linear=0", "shrinkage=1", "", ""]
    return "\n".join(lines)


def _floats(values: list[float]) -> str:
    return " ".join(repr(v) for v in values)  # repr: the shortest text that reads back the same double
