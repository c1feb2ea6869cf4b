"""The one typed configuration of a run: YAML in, validated pydantic objects out.

Every default is written once, here.  Unknown keys and invalid values fail with a
:class:`~rabusseg.errors.ConfigError` that names the key (``train.lr: must be > 0``).
Presets live in ``rabusseg/configs/*.yaml`` (also reachable as ``configs/`` in the source tree)
and may be named without their folder or suffix (``busi_1-2``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rabusseg.constants import CRA_COSINE_TEMPERATURE, DEFAULT_INFERENCE_SIZE
from rabusseg.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent / "configs"
METHOD_SETTINGS_KEY = "method_settings"

EncoderName = Literal["resnet50_deepstem", "resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2",
                      "mobilenet_v2_320", "efficientnet_lite0"]
MethodName = Literal["supervised", "mean_teacher", "fixmatch", "ra_busseg"]
ImageStream = Literal["labeled", "unlabeled", "both"]
CraSimilarity = Literal["dot", "cosine"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Network: encoder, output stride, decoder widths, ARP projection."""

    encoder: EncoderName = "resnet50_deepstem"
    output_stride: Literal[8, 16] = 8
    num_classes: int = Field(2, ge=2)
    encoder_weights: str | None = None
    """A torchvision-layout state-dict path, ``imagenet`` (MobileNetV2 or EfficientNet-Lite0 from their
    optional weights packages), or ``None`` for random initialisation."""
    aspp_channels: int = Field(256, gt=0)
    decoder_channels: int = Field(256, gt=0)
    low_level_channels: int = Field(256, gt=0)
    proj_channels: int = Field(256, gt=0)
    decoder_separable: bool = False
    """The decoder's two 3x3 convolutions depthwise-separable instead of METHOD's dense ones: the
    largest dense convolutions, at H/4.  Measured for cpu_small: a 1.07-1.10x faster step and
    -0.026 Dice on held-out images (docs/choices.md), so every preset keeps it off."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    dilated_rewrites: bool = True
    """Exact, faster forms of dilated convolutions on small maps (:mod:`rabusseg.models.conv`);
    ``false`` runs oneDNN's own, for speed comparisons only (the numbers are the same)."""
    classifier_init_std: float = Field(0.01, gt=0)
    """Std of the normal init of the final 1x1 classifier.  [choice] (docs/choices.md): 0.01 starts
    near chance and trained best on BUSI; 1.0 (= He init for two classes) learns the demo's
    small phantom lesions faster, so ``demo.yaml`` sets it."""


class DataConfig(_Strict):
    """Where the images are and how they are sampled and augmented."""

    root: str = "busi"
    """A dataset folder, or its name inside ``$RABUSSEG_DATASETS`` (see :mod:`rabusseg.paths`)."""
    labeled: str = "1_2/labeled"
    """Split list names are paths under ``splits/`` without ``.txt``."""
    unlabeled: str | None = "1_2/unlabeled"
    val: str | None = None
    test: str | None = "test"
    crop_size: int = Field(512, gt=0)
    scale_range: tuple[float, float] = (0.5, 2.0)
    resize_to: int | None = None
    """Resize images (longer side) before augmentation; ``None`` keeps the original size."""
    appearance_p: float = Field(0.0, ge=0, le=1)
    """Probability of each scanner-appearance change (gain/contrast, gamma, blur, speckle) on
    labelled crops; 0 = none.  [choice] (docs/choices.md)."""
    pad_label: Literal["ignore", "background"] = "ignore"
    """Label of the crop padding of labelled images (black pixels outside the scaled image): ``ignore``
    (255, METHOD's) leaves the network's answer on black margins unconstrained; ``background``
    teaches it that they hold no lesion, as the black margins around many scanners' images do not.
    [choice] (docs/choices.md)."""
    eval_size: int | None = DEFAULT_INFERENCE_SIZE
    """Inference size for validation/test; ``None`` evaluates the full image.  Checkpoints carry it:
    ``evaluate``/``predict``/``export`` default to it."""
    eval_resize: Literal["square", "longest"] = "square"
    """How an image becomes an ``eval_size`` input: stretched to a square, or its longer side scaled
    to ``eval_size`` (the aspect ratio training saw) and zero-padded."""
    num_workers: int = Field(2, ge=0)
    cache: bool = True
    """Decode (and resize) every training image once, before the first step, into memory shared
    by the loader workers; ``false`` decodes each sample from its file (same samples, slower)."""
    cache_max_mib: int = Field(4096, gt=0)
    """Refuse to cache more than this (or half the available memory): a clear error, not a swap storm."""

    @field_validator("scale_range")
    @classmethod
    def _scale_order(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1]):
            raise ValueError("must be two positive numbers, low <= high")
        return v


class OptimConfig(_Strict):
    """The optimiser (METHOD section 3: SGD) with poly decay per iteration."""

    name: Literal["sgd", "adamw"] = "sgd"
    """``sgd`` (METHOD's: momentum, L2 weight decay) or ``adamw`` (Adam with decoupled weight decay;
    ``momentum`` is then Adam's beta1 and ``beta2`` its second-moment decay)."""
    lr: float = Field(0.003, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, gt=0, lt=1)
    """AdamW's second-moment decay (unused by SGD)."""
    weight_decay: float = Field(5e-4, ge=0)
    poly_power: float = Field(0.9, ge=0)
    head_lr_multiplier: float = Field(1.0, gt=0)
    """Learning-rate factor for decoder/head parameters relative to the encoder."""


class LossConfig(_Strict):
    """Loss terms and their weights: L_sup + w_d L_dice + w_u L_unsup + w_arp L_arp + w_cra L_cra."""

    ohem: bool = True
    ohem_threshold: float = Field(0.7, gt=0, le=1)
    ohem_min_kept: int = Field(100_000, ge=0)
    dice_weight: float = Field(0.0, ge=0)
    """Weight of a soft Dice term on the labelled images beside the supervised cross-entropy
    (nnU-Net's CE + Dice); 0 = METHOD's loss alone (measured, not adopted: docs/choices.md)."""
    unsup_weight: float = Field(1.0, ge=0)
    """Weight of the unsupervised term.  [choice] the peers' 1; 2 measured on RA-BUSSeg 1/8, 3 seeds:
    -0.009 [-0.027, +0.011] on validation (docs/choices.md)."""
    unsup_rampup_epochs: int = Field(0, ge=0)
    """Ramp the unsupervised weight up over this many epochs after warm-up (sigmoid shape); 0 = none."""
    arp_weight: float = Field(0.5, ge=0)
    cra_weight: float = Field(0.5, ge=0)
    relation_rampup: bool = False
    """Ramp the ARP and CRA weights with the unsupervised one (``unsup_rampup_epochs``), so that the
    relation terms, like the pseudo-labels they are computed from, start small after warm-up."""


class MethodConfig(_Strict):
    """Which semi-supervised method and its switches."""

    name: MethodName = "ra_busseg"
    arp: bool = True
    cra: bool = True
    arp_images: ImageStream = "both"
    cra_images: ImageStream = "both"
    num_landmarks: int = Field(64, ge=2)
    cra_similarity: CraSimilarity = "dot"
    """CRA's pixel-to-landmark logits: METHOD's raw dot product, or cosine / ``cra_temperature``
    (every layer on one scale; measured 3 points worse on cpu_small, docs/choices.md)."""
    cra_temperature: float = Field(CRA_COSINE_TEMPERATURE, gt=0)
    """Temperature of ``cra_similarity: cosine`` (unused with ``dot``)."""
    landmark_affinity: Literal["auto", "full", "rows"] = "auto"
    """``full`` builds the hw x hw affinity; ``rows`` builds only the rows the greedy rule reads."""
    strong_view: bool = True
    """Train the student on a strong view of unlabelled images (intensity jitter, blur, CutMix).
    [choice] on by default (docs/choices.md); the paper's presets set it off (weak view)."""
    drop_percent: float = Field(80.0, ge=0, le=100)
    """Entropy filtering drops (100 - drop_percent) * (1 - epoch/epochs) percent of pixels.  [choice]
    METHOD's 80; 60 measured on RA-BUSSeg 1/8, 3 seeds: -0.006 [-0.033, +0.022] (docs/choices.md)."""
    filter_per_image: bool = False
    """Rank pixel entropies per image instead of over the whole unlabelled batch (U2PL: batch)."""
    filter_per_class: bool = False
    """Rank entropies within each pseudo-label class, so that the drop keeps the classes' shares
    (a whole uncertain lesion is otherwise dropped first, docs/choices.md); METHOD: ``false``."""
    separate_forward: bool = False
    """Forward the labelled and the unlabelled (student) batch in two passes, so BatchNorm
    statistics are not mixed across the streams (UniMatch); ``false``: one pass on both."""
    fixmatch_threshold: float = Field(0.95, gt=0, le=1)
    cutmix_prob: float = Field(0.5, ge=0, le=1)

    @property
    def semi_supervised(self) -> bool:
        """Every method but the supervised baseline trains on unlabelled images after warm-up."""
        return self.name != "supervised"

    @property
    def uses_teacher(self) -> bool:
        """Mean-teacher methods keep an EMA teacher; FixMatch labels with the student itself."""
        return self.name in ("mean_teacher", "ra_busseg")

    @property
    def uses_strong_view(self) -> bool:
        """Whether the student trains on the strong view of unlabelled images (always for FixMatch)."""
        return self.name == "fixmatch" or (self.uses_teacher and self.strong_view)

    @property
    def confidence_filter(self) -> bool:
        """FixMatch keeps confident pixels (``fixmatch_threshold``); the others drop by entropy."""
        return self.name == "fixmatch"

    @property
    def arp_loss(self) -> bool:
        return self.name == "ra_busseg" and self.arp

    @property
    def cra_loss(self) -> bool:
        return self.name == "ra_busseg" and self.cra

    @property
    def relations(self) -> bool:
        """Whether the student's training forward computes the ARP/CRA outputs."""
        return self.arp_loss or self.cra_loss


class TrainConfig(_Strict):
    """Schedule, devices and run bookkeeping."""

    epochs: int = Field(200, gt=0)
    warmup_epochs: int = Field(10, ge=0)
    batch_size: int = Field(2, gt=0)
    """Labelled images per step per device; as many unlabelled ones unless ``unlabeled_batch_size``."""
    unlabeled_batch_size: int | None = Field(None, gt=0)
    """Unlabelled images per step per device for the semi-supervised methods; ``None``: ``batch_size``
    (METHOD and UniMatch take as many of each).  Fewer make a semi-supervised step cheaper and give
    more of it to the labelled images.  Measured for cpu_small RA-BUSSeg at 1/2: 6 + 2 instead of
    4 + 4 at the same cost, +0.009 [-0.010, +0.029] validation Dice, one seed (docs/choices.md)."""
    ema_decay: float = Field(0.99, ge=0, le=1)
    """Teacher decay (METHOD and the peers: 0.99).  [choice] 0.996 measured level on RA-BUSSeg 1/8,
    3 seeds: -0.001 [-0.017, +0.018] (docs/choices.md)."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimiser steps (smoke runs); ``None`` runs all epochs."""
    eval_every_epochs: int = Field(1, gt=0)
    monitor_unlabeled: int = Field(0, ge=0)
    """Score the pseudo-labels of this many fixed unlabelled images against their masks at every
    validation (datasets that have masks for them, e.g. BUSI); the masks never reach a loss."""
    checkpoint_every_steps: int = Field(500, gt=0)
    log_every_steps: int = Field(10, gt=0)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    """bf16 autocast of the forward passes on CUDA and on CPUs with native bf16 (AVX512-BF16 or
    AMX); elsewhere float32, and the log says so."""
    compile: bool = False
    channels_last: bool = False
    flush_denormal: bool = True
    """On CPU, flush denormal floats to zero while training (CRA's gradients produce them, and
    x86 arithmetic on them is very slow); no effect on CUDA."""
    max_nonfinite_steps: int = Field(5, gt=0)
    """Stop with an error after this many consecutive steps with a non-finite loss (each is skipped)."""
    steps_per_epoch: int | None = Field(None, gt=0)
    """Optimiser steps per epoch; ``None``: unlabelled images // batch (labelled ones for
    ``supervised`` without an unlabelled list), summed over devices."""
    progress: bool = True
    """Show a progress bar (rank 0, interactive terminals)."""
    eval_tta: bool = False
    """Flip/multi-scale test-time augmentation for the final test evaluation, and the checkpoint's
    default for ``evaluate``, ``predict``, ``Segmenter.from_checkpoint`` and ONNX export
    (validations during training run without it)."""
    eval_weights: Literal["student", "teacher"] = "student"
    """Which network the reported evaluation and inference use."""
    precise_bn: bool | Literal["supervised"] = False
    """At the end of the last epoch (before its validation and the test evaluation), re-estimate the
    running statistics of every BatchNorm layer of the evaluated network (``eval_weights``) on the
    training images at the inference geometry (``eval_size``, ``eval_resize``): the labelled list, plus
    the unlabelled one for the semi-supervised methods; never validation or test images.
    ``supervised``: only for the supervised method (+0.016 and +0.049 Dice for it on held-out images,
    none for RA-BUSSeg: -0.012 over four runs).  [choice] (docs/choices.md)."""
    frozen_encoder_levels: int = Field(0, ge=0, le=3)
    """Keep the encoder layers that compute x1..xN (N = 1, 2 or 3) at their loaded weights: no
    gradient reaches them, so every step skips their backward.  Their BatchNorm layers still
    normalise with batch statistics and track running ones.  0 trains every layer.  Measured for
    cpu_small RA-BUSSeg (docs/choices.md): through x2 1.12x and through x3 1.38x the images/s,
    but -0.023 and -0.044 validation Dice, so every preset keeps 0."""
    precise_bn_images: int | None = Field(128, gt=0)
    """At most this many of those images (a seeded random subset); ``None``: all of them.  32, 128 and
    all 259 labelled BUSI images gave the same Dice within 0.006 (docs/choices.md); fewer cost less."""

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> TrainConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})")
        return self


class Config(_Strict):
    """A whole run."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    method: MethodConfig = MethodConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _method_needs_data(self) -> Config:
        if self.method.name != "supervised" and not self.data.unlabeled:
            raise ValueError(f"data.unlabeled: method '{self.method.name}' needs an unlabelled split list")
        if self.precise_bn_enabled and self.data.eval_size is None:
            raise ValueError("train.precise_bn: needs a fixed inference size (data.eval_size), not whole images")
        if self.data.val is not None and self.data.test is not None and self.data.val == self.data.test:
            raise ValueError("data.val: the validation list must not be the test list (best.pt is chosen on it)")
        return self

    @property
    def precise_bn_enabled(self) -> bool:
        """Whether this run re-estimates its BatchNorm statistics at the end (``train.precise_bn``
        is ``true``, or ``supervised`` and the method is the supervised baseline)."""
        setting = self.train.precise_bn
        return setting is True or (setting == "supervised" and not self.method.semi_supervised)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (safe to store in a ``weights_only`` checkpoint or YAML)."""
        return self.model_dump(mode="json")


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        # Cross-section validators name their key at the start of the message themselves.
        lines.append(f"  {key}: {msg}" if key else f"  {msg}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a nested dict into a :class:`Config`."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or a preset name such as ``busi_1-2`` / ``demo``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{Path(str(name_or_path)).stem}.yaml"
    if preset.is_file() and path.suffix in ("", ".yaml", ".yml"):
        return preset
    names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
    raise ConfigError(f"config '{name_or_path}' is neither a file nor a preset (presets: {names})")


def _key_parts(key: str, origin: str) -> list[str]:
    """``a.b`` -> ``["a", "b"]`` (empty parts dropped); ``origin`` names the setting in the error."""
    parts = [p for p in key.split(".") if p]
    if not parts:
        raise ConfigError(f"{origin} has an empty key")
    return parts


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is parsed as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    parts = _key_parts(key.strip(), f"override '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML ({err})") from None
    return parts, value


def _set_key(data: dict[str, Any], parts: list[str], value: Any, origin: str) -> None:
    """Set ``data[parts[0]][parts[1]]... = value``, creating sections; ``origin`` names the setting in errors."""
    node = data
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a nested dict (returns a new dict)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        _set_key(out, parts, value, f"override '{text}'")
    return out


def _method_table(table: Any, source: str) -> dict[str, dict[str, Any]]:
    """A ``method_settings`` section checked: known method names, each with a mapping of settings."""
    table = table or {}
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"{source}: {METHOD_SETTINGS_KEY} must map method names to {{key.sub: value}} mappings")
    methods = get_args(MethodName)
    for name in table:
        if name not in methods:
            raise ConfigError(f"{source}: {METHOD_SETTINGS_KEY}.{name}: unknown method (one of {', '.join(methods)})")
    return table


def apply_method_settings(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Resolve a config file's ``method_settings`` section for the run's method (returns a new dict).

    A preset may set values that depend on the method::

        method_settings:
          supervised: {train.epochs: 40}   # a supervised step costs half a semi-supervised one

    The method is the one the run ends up with (``--set method.name=...`` included); its settings
    apply on top of the file and under the ``--set`` overrides, which always win.  Why: a CPU budget
    is wall time, and the methods' steps differ in cost, so one step count cannot suit them all.
    """
    import copy

    out = copy.deepcopy(data)
    table = _method_table(out.pop(METHOD_SETTINGS_KEY, None), source)
    resolved = apply_overrides(out, overrides)
    section = resolved.get("method")  # not a mapping: validation names it below
    method = section.get("name", MethodConfig().name) if isinstance(section, dict) else MethodConfig().name
    for key, value in (table.get(method) or {}).items():
        parts = _key_parts(str(key), f"{source}: {METHOD_SETTINGS_KEY}.{method}")
        _set_key(out, parts, value, f"{source}: {METHOD_SETTINGS_KEY}.{method}.{key}")
    return apply_overrides(out, overrides)


def _read_yaml(name_or_path: str | Path) -> tuple[Path, dict[str, Any]]:
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return path, data


def method_settings(name_or_path: str | Path) -> dict[str, dict[str, Any]]:
    """A preset's or file's ``method_settings`` section (``{}`` without one): which settings differ by method."""
    path, data = _read_yaml(name_or_path)
    return _method_table(data.get(METHOD_SETTINGS_KEY), str(path))


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML preset or file, apply its ``method_settings`` and the ``--set`` overrides, validate."""
    path, data = _read_yaml(name_or_path)
    data = apply_method_settings(data, overrides or [], str(path))
    return config_from_dict(data, source=str(path))


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML (what a run actually used)."""
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
