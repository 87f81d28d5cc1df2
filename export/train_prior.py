"""Train dig2dig's small default prior: an ADM UNet with epsilon output on luminance crops.

DDPM training as in ADM (Ho et al. 2020; Dhariwal & Nichol 2021): linear beta schedule over 1000
steps, t uniform, loss = MSE between the true and predicted noise. Data: every image under
``--data`` (recursively), as luminance in [-1, 1], random crops with random rescale, flips and
90-degree rotations. AdamW, an EMA of the weights (the EMA is what we ship), resumable from
``OUT/train_state.pt``.

With ``"parameterization": "v"`` in the config (see ``unet.py``) the loss is the plain
v-prediction MSE, |v_hat - v|^2 = |eps_hat - eps|^2 / abar (Salimans & Ho 2022): the network's own
output is v, the model's output stays epsilon.

Two options fine-tune an epsilon network for high noise, where an epsilon model's x0 estimate
x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) amplifies any error in eps by sqrt(1/SNR) (about 58x at
t = 900): ``--high-t T`` draws half of each batch's t from [T, 999], and ``--weight-cap W`` weights
the loss by min(1 + 1/SNR, W). Uncapped, 1 + 1/SNR is the weighting that v-prediction implies
(Salimans & Ho 2022, "Progressive distillation", eq. 9 and its discussion); W = 1 is plain DDPM.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..runtime.schedule import ADM_LINEAR, alphas_cumprod
from .checkpoint import load_model, save_state_dict
from .unet import create_model, resolve_config

# The shipped edge prior (models/default): full resolution, 16 channels, attention only in the middle
# block, v body with epsilon output.
DEFAULT_CONFIG: Dict[str, Any] = {
    "image_size": 256, "num_channels": 16, "num_res_blocks": 1, "channel_mult": "1,2,4,4",
    "learn_sigma": False, "attention_resolutions": "", "num_head_channels": 32,
    "use_scale_shift_norm": True, "resblock_updown": True, "in_channels": 1, "norm_groups": 8,
    "patch_size": 1, "parameterization": "v",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def load_luminance_images(data_dir: Path) -> List[np.ndarray]:
    """Every image under ``data_dir`` as float32 luminance in [-1, 1] (BT.601 weights for RGB)."""
    images = []
    for path in sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{path}: not a readable image")
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        img = img.astype(np.float32) / scale
        if img.ndim == 3:
            img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
        images.append(img * 2.0 - 1.0)
    if not images:
        raise ValueError(f"{data_dir}: no images found")
    return images


class CropSampler:
    """Random training crops: rescale by 2**U(log2 lo, log2 hi), crop, flip, rotate by k*90 degrees,
    and with ``gamma`` > 0 a random tone curve ((x + 1) / 2) ** 2**U(-gamma, gamma).

    The tone curve widens the intensity statistics beyond infrared and visible frames (large dark
    backgrounds as in MRI/CT, bright washed-out regions as in over-exposed shots): the fusion tasks
    that the prior serves but its training images do not show.
    """

    def __init__(self, images: Sequence[np.ndarray], crop: int, scale_range: Sequence[float], seed: int,
                 gamma: float = 0.0):
        self.images = images
        self.crop = crop
        self.log_scale = (math.log2(scale_range[0]), math.log2(scale_range[1]))
        self.gamma = gamma
        self.rng = np.random.default_rng(seed)

    def sample(self) -> np.ndarray:
        img = self.images[self.rng.integers(len(self.images))]
        min_scale = self.crop / min(img.shape)
        scale = max(2.0 ** self.rng.uniform(*self.log_scale), min_scale)
        h, w = max(self.crop, round(img.shape[0] * scale)), max(self.crop, round(img.shape[1] * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        img = np.clip(cv2.resize(img, (w, h), interpolation=interp), -1.0, 1.0)
        y, x = self.rng.integers(h - self.crop + 1), self.rng.integers(w - self.crop + 1)
        patch = img[y:y + self.crop, x:x + self.crop]
        if self.rng.random() < 0.5:
            patch = patch[:, ::-1]
        if self.gamma > 0:
            patch = ((patch + 1.0) / 2.0) ** 2.0 ** self.rng.uniform(-self.gamma, self.gamma) * 2.0 - 1.0
        return np.rot90(patch, self.rng.integers(4))

    def batch(self, n: int) -> np.ndarray:
        return np.stack([self.sample() for _ in range(n)])[:, None].astype(np.float32)


class CropBatches(torch.utils.data.IterableDataset):
    """Endless crop batches; each DataLoader worker draws from its own seed."""

    def __init__(self, images: Sequence[np.ndarray], crop: int, batch: int, seed: int, gamma: float):
        super().__init__()
        self.images, self.crop, self.batch, self.seed, self.gamma = images, crop, batch, seed, gamma

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        sampler = CropSampler(self.images, self.crop, (0.6, 1.6), self.seed * 1000 + (info.id if info else 0),
                              self.gamma)
        while True:
            yield torch.from_numpy(sampler.batch(self.batch))


def train(data_dir: Path, out_dir: Path, config: Dict[str, Any], steps: int, batch: int, crop: int,
          lr: float, ema_decay: float, device: str, seed: int, minutes: Optional[float],
          save_every: int, init: Optional[Path] = None, high_t: int = 0,
          weight_cap: float = 1.0, gamma: float = 0.0) -> Dict[str, Any]:
    """Train (or resume) a prior into ``out_dir``; returns the summary written to ``train_log.json``.

    ``high_t`` > 0 draws half of each batch's t from [high_t, 999]; ``weight_cap`` > 1 weights the
    epsilon loss by min(1 + 1/SNR(t), weight_cap) (see the module docstring); v models train on the
    v loss and take no ``weight_cap``. ``gamma`` > 0 adds ``CropSampler``'s random tone curve.
    """
    config = resolve_config(config)
    v_model = config["parameterization"] == "v"
    if v_model and weight_cap != 1.0:
        raise ValueError("--weight-cap weights an epsilon loss; a v model trains on the plain v loss")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = create_model(**config).to(device)
    if init is not None:
        model.load_state_dict(load_model(init, config).state_dict())
    ema = create_model(**config).to(device).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    abar = torch.tensor(alphas_cumprod(ADM_LINEAR), dtype=torch.float32, device=device)
    # 1/abar = 1 + 1/SNR; for a v model it turns the epsilon error into the v error (module docstring).
    loss_weight = 1.0 / abar if v_model else torch.clamp(1.0 / abar, max=weight_cap)
    state_path = out_dir / "train_state.pt"
    step, elapsed = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
    images = load_luminance_images(data_dir)
    workers = min(8, os.cpu_count() or 1) if device.startswith("cuda") else 0
    batches = iter(torch.utils.data.DataLoader(CropBatches(images, crop, batch, seed + step, gamma), batch_size=None,
                                               num_workers=workers, pin_memory=device.startswith("cuda")))
    gen = torch.Generator(device=device).manual_seed(seed + step)
    warmup = min(500, steps // 10)
    start = time.time() - elapsed
    losses: List[float] = []
    bar = tqdm(total=steps, initial=step, desc="train-prior", unit="step")
    model.train()
    while step < steps and (minutes is None or time.time() - start < minutes * 60):
        x0 = next(batches).to(device, non_blocking=True)
        t = torch.randint(0, len(abar), (batch,), device=device, generator=gen)
        if high_t > 0:
            t[: batch // 2] = torch.randint(high_t, len(abar), (batch // 2,), device=device, generator=gen)
        noise = torch.randn(x0.shape, device=device, generator=gen)
        a = abar[t][:, None, None, None]
        error = (model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t.float()) - noise) ** 2
        loss = torch.mean(loss_weight[t][:, None, None, None] * error)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(1, warmup))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1.0 - ema_decay)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
        if step % save_every == 0:
            _save_state(state_path, model, ema, opt, step, time.time() - start)
    bar.close()
    _save_state(state_path, model, ema, opt, step, time.time() - start)
    save_state_dict({k: v.detach().cpu() for k, v in ema.state_dict().items()}, out_dir / "weights.safetensors")
    (out_dir / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    summary = {"steps": step, "batch": batch, "crop": crop, "lr": lr, "ema_decay": ema_decay,
               "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
               "wall_time_s": round(time.time() - start, 1),
               "final_loss_mean_last_500": float(np.mean(losses[-500:])) if losses else None,
               "parameters": sum(p.numel() for p in model.parameters()), "data": str(data_dir),
               "images": len(images), "seed": seed, "init": str(init) if init else None, "schedule": ADM_LINEAR,
               "high_t": high_t, "weight_cap": weight_cap, "gamma": gamma,
               "parameterization": config["parameterization"]}
    (out_dir / "train_log.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _save_state(path: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
                step: int, elapsed: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                "step": step, "elapsed": elapsed}, tmp)
    os.replace(tmp, path)


def add_parser(subparsers: Any) -> None:
    """Register ``dig2dig train-prior``."""
    p = subparsers.add_parser("train-prior", help="train the small default prior on a folder of images")
    p.add_argument("--data", required=True, type=Path, help="folder of training images (searched recursively)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (resumes if it holds train_state.pt)")
    p.add_argument("--config", type=Path, help="create_model JSON (default: the shipped edge config)")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, help="stop after this wall time (resume later)")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--init", type=Path, help="start from these weights (a checkpoint of the same config)")
    p.add_argument("--high-t", type=int, default=0, metavar="T",
                   help="draw half of each batch's t from [T, 999] (fine-tuning for high noise; 0: off)")
    p.add_argument("--weight-cap", type=float, default=1.0, metavar="W",
                   help="weight the epsilon loss by min(1 + 1/SNR, W) (1: plain DDPM loss)")
    p.add_argument("--gamma", type=float, default=0.0, metavar="G",
                   help="random tone curve ((x+1)/2)**2**U(-G, G) on each crop (0: off)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = json.loads(args.config.read_text()) if args.config else DEFAULT_CONFIG
    config = config.get("create_model_kwargs", config)
    summary = train(args.data, args.out, config, args.steps, args.batch, args.crop, args.lr, args.ema,
                    args.device, args.seed, args.minutes, args.save_every, args.init,
                    args.high_t, args.weight_cap, args.gamma)
    print(json.dumps(summary, indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m dig2dig.export.train_prior ...`` (same arguments as ``dig2dig train-prior``)."""
    parser = argparse.ArgumentParser(prog="dig2dig")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train-prior", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
