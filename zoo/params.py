"""Training hyperparameters (``TrainParams``), apart from the training code: the CLI builds
its options from these fields, and importing them must not cost ``zoo ls`` the training
module (10 ms of a 0.2 s start)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from zoo.domain import DEVICES, HEAD_INITS, TRAIN_METHODS, check_choice, check_seed
from zoo.errors import ZooValueError


def _param(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A training parameter; its help and choices become the CLI option's (``zoo.cli``)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainParams:
    """Hyperparameters of a run (recorded in ``runs.params``); the CLI's training options are these fields."""

    method: str = _param("full", "full: every weight; bitfit: biases and the head only; lora: a LoRA adapter (peft), "
                         "registered as an adapter of the start's family.", TRAIN_METHODS)
    epochs: float = _param(3.0, "Passes over the training data.")
    lr: float | None = _param(None, "Learning rate (default 5e-5 full, 1e-3 bitfit, 5e-4 lora).")
    batch_size: int = _param(16, "Examples per step.")
    max_length: int = _param(128, "Tokens per example (longer ones are cut).")
    seed: int = _param(0, "Seed of the data order, dropout and (with --head-init random) the head.")
    device: str = _param("auto", "auto: CUDA when present, else CPU.", DEVICES)
    warmup_ratio: float = _param(0.1, "Share of steps with a rising learning rate.")
    weight_decay: float = _param(0.01, "AdamW weight decay.")
    head_init: str = _param("probe", "probe: a logistic-regression probe fitted on the start's frozen features first "
                            "(linear probe, then fine-tune: the model carries its data, not its seed); random: a "
                            "seeded random head.", HEAD_INITS)
    lora_rank: int = _param(8, "LoRA rank (--method lora).")
    lora_alpha: float = _param(16.0, "LoRA alpha: the update is scaled by alpha / rank (--method lora).")
    lora_targets: str | None = _param(None, "Comma-separated module names LoRA adapts (--method lora; default: "
                                      "PEFT's choice for the architecture, e.g. query,value for BERT).")

    def __post_init__(self) -> None:
        check_choice(self.method, TRAIN_METHODS, "--method")
        check_choice(self.head_init, HEAD_INITS, "--head-init")
        if self.lr is None:
            self.lr = {"full": 5e-5, "bitfit": 1e-3, "lora": 5e-4}[self.method]
        if not (isinstance(self.lora_rank, int) and not isinstance(self.lora_rank, bool) and self.lora_rank >= 1):
            raise ZooValueError(f"--lora-rank must be a whole number >= 1, got {self.lora_rank!r}")
        if self.lora_targets is not None and not [t for t in str(self.lora_targets).split(",") if t.strip()]:
            raise ZooValueError(f"--lora-targets {self.lora_targets!r} names no module; give e.g. query,value")
        for name in ("epochs", "lr", "batch_size", "max_length", "lora_alpha"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ZooValueError(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")
        check_choice(self.device, DEVICES, "--device")
        check_seed(self.seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
