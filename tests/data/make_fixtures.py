"""Cut the test fixtures of this folder out of ``../shared`` (run by hand, never by the tests).

    python tests/data/make_fixtures.py [--shared PATH]

Writes ``reference/`` (subsets of the reference implementations' outputs), ``pairs/`` (real pairs, cropped
or downscaled with INTER_AREA, and their manifest), ``train/`` (two training images, downscaled) and
``SHA256SUMS``. What is kept and how it is cut is described in README.md.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict, Iterable, NamedTuple, Optional, Tuple

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
LONG_SIDE = 128
EM_ITERATIONS = 3
MANIFEST_COLUMNS = ("task", "dataset", "name", "a_path", "b_path", "height", "width")


class PairCut(NamedTuple):
    """One development pair and its cut: a (top, left, height, width) crop, else a downscale to LONG_SIDE."""

    task: str
    dataset: str
    name: str
    crop: Optional[Tuple[int, int, int, int]] = None


PAIRS = (
    PairCut("ivf", "TNO", "10", (200, 300, 96, 128)),
    PairCut("ivf", "TNO", "22", (352, 0, 128, 192)),
    PairCut("ivf", "MSRS", "00055D"),
    PairCut("ivf", "RoadScene", "FLIR_00977"),
    PairCut("mif", "MRI_CT", "11"),
    PairCut("mif", "MRI_PET", "12"),
    PairCut("mef", "MEFB", "AirBellowsGap"),
    PairCut("mef", "MEFB", "Chair"),
    PairCut("mff", "Lytro", "lytro_01"),
    PairCut("mff", "MFIFB", "stand_01"),
)
TRAIN = (("infrared", "LLVIP_010001"), ("visible", "LLVIP_010001"))

ADM_IO_KEYS = ("x", "t", "out_f32", "x_nonsquare", "out_nonsquare_f32")
EM_KEYS = ("I", "V", "f_pre", "init_fft_k1", "init_fft_k2", "init_fft_k1sq", "init_fft_k2sq")
EM_ITERATION_KEYS = ("F_f64", "F_f32", "H_f64", "F1_f64", "F2_f64")
EM_TAU_KEYS = ("tau_a_f64", "tau_b_f64", "tau_a_f32", "tau_b_f32")
SAMPLER_KEYS = ("I", "V", "x_start", "r10_x_t", "r10_pred_xstart_clipped", "r10_em_f_pre", "r10_em_F",
                "r10_pred_xstart_final", "r10_tau_a", "r10_tau_b", "r10_final_sample", "r25_final_sample")
SAMPLER_SCHEDULE_KEYS = ("timesteps_model", "timestep_map", "alphas_cumprod_respaced",
                         "alphas_cumprod_prev_respaced")
METRICS_PAIR = "TNO/20.png"


def save_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """np.savez_compressed, keys in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def cut_adm(shared: Path, out: Path) -> None:
    """The small UNet whole (config, weights) and its I/O without the float64 outputs; the 256 model's layout."""
    source, target = shared / "reference" / "adm", out / "reference" / "adm"
    for name in ("small_unet_config.json", "unet_256_uncond_keys.json"):
        copy(source / name, target / name)
    with np.load(source / "small_unet_weights.npz") as weights:
        save_npz(target / "small_unet_weights.npz", {key: weights[key] for key in weights.files})
    with np.load(source / "small_unet_io.npz") as io:
        save_npz(target / "small_unet_io.npz", {key: io[key] for key in ADM_IO_KEYS})


def cut_em(shared: Path, out: Path) -> None:
    """Inputs, OTFs, and the first EM_ITERATIONS iterations' F, H, F1, F2 and taus."""
    with np.load(shared / "reference" / "ddfm_em" / "em_reference.npz") as ref:
        arrays = {key: ref[key] for key in EM_KEYS}
        arrays.update({f"{key}_iter{k}": ref[f"{key}_iter{k}"] for k in range(EM_ITERATIONS)
                       for key in EM_ITERATION_KEYS})
        arrays.update({key: ref[key][:EM_ITERATIONS] for key in EM_TAU_KEYS})
    save_npz(out / "reference" / "ddfm_em" / "em_reference.npz", arrays)


def cut_sampler(shared: Path, out: Path) -> None:
    """The arrays the sampler tests read; the UNet output as its epsilon channels only (``r10_eps``).

    ``r10_samples`` is left out: step i's output is step i+1's input, so it is ``r10_x_t[1:]`` followed by
    ``r10_final_sample`` (checked here)."""
    with np.load(shared / "reference" / "ddfm_sampler" / "sampler_reference.npz") as ref:
        following = np.concatenate([ref["r10_x_t"][1:], ref["r10_final_sample"][None]])
        if not np.array_equal(following, ref["r10_samples"]):
            raise SystemExit("r10_samples is not r10_x_t[1:] + r10_final_sample; keep it")
        arrays = {key: ref[key] for key in SAMPLER_KEYS}
        arrays["r10_eps"] = ref["r10_model_output"][:, :, :3]
        arrays.update({f"r{n}_{key}": ref[f"r{n}_{key}"] for n in (10, 25) for key in SAMPLER_SCHEDULE_KEYS})
    save_npz(out / "reference" / "ddfm_sampler" / "sampler_reference.npz", arrays)


def cut_metrics(shared: Path, out: Path) -> None:
    """The CDDFuse Evaluator's values for one TNO pair (both fusions), and its four PNGs."""
    source, target = shared / "reference" / "metrics", out / "reference" / "metrics"
    ref = json.loads((source / "metrics_reference.json").read_text())
    ref["results"] = [result for result in ref["results"] if result["pair"] == METRICS_PAIR]
    (result,) = ref["results"]
    for name in (result["ir_png"], result["vi_png"], *(fused["png"] for fused in result["fused"].values())):
        copy(source / name, target / name)
    target.mkdir(parents=True, exist_ok=True)
    (target / "metrics_reference.json").write_text(json.dumps(ref, indent=1) + "\n")


def cut_image(image: np.ndarray, crop: Optional[Tuple[int, int, int, int]]) -> np.ndarray:
    """The crop if given, else the image downscaled (INTER_AREA) to a long side of LONG_SIDE."""
    if crop is not None:
        top, left, height, width = crop
        return image[top:top + height, left:left + width]
    scale = LONG_SIDE / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def write_png(image: np.ndarray, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), image):
        raise SystemExit(f"cannot write {target}")


def cut_pairs(shared: Path, out: Path) -> None:
    """PAIRS as pairs/TASK/{a,b}/NAME.png with a manifest in the development set's format."""
    rows = []
    for pair in PAIRS:
        shapes = set()
        for role in ("a", "b"):
            image = cv2.imread(str(shared / "data" / pair.task / pair.dataset / role / f"{pair.name}.png"),
                               cv2.IMREAD_UNCHANGED)
            cut = cut_image(image, pair.crop)
            write_png(cut, out / "pairs" / pair.task / role / f"{pair.name}.png")
            shapes.add(cut.shape[:2])
        ((height, width),) = shapes
        rows.append({"task": pair.task, "dataset": pair.dataset, "name": pair.name,
                     "a_path": f"{pair.task}/a/{pair.name}.png", "b_path": f"{pair.task}/b/{pair.name}.png",
                     "height": height, "width": width})
    with open(out / "pairs" / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def cut_train(shared: Path, out: Path) -> None:
    """TRAIN as train/MODALITY/NAME.png, downscaled to LONG_SIDE."""
    for modality, name in TRAIN:
        image = cv2.imread(str(shared / "data" / "train" / modality / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        write_png(cut_image(image, None), out / "train" / modality / f"{name}.png")


def fixture_files(out: Path) -> Iterable[Path]:
    """Every file the cut writes, sorted (this script, README.md and SHA256SUMS excluded)."""
    return sorted(path for folder in ("reference", "pairs", "train") for path in (out / folder).rglob("*")
                  if path.is_file())


def write_sums(out: Path) -> None:
    lines = [f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(out).as_posix()}\n"
             for path in fixture_files(out)]
    (out / "SHA256SUMS").write_text("".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[2] / "shared",
                        help="the shared folder (default: ../shared beside the repository)")
    args = parser.parse_args()
    for folder in ("reference", "pairs", "train"):
        shutil.rmtree(HERE / folder, ignore_errors=True)
    for cut in (cut_adm, cut_em, cut_sampler, cut_metrics, cut_pairs, cut_train):
        cut(args.shared, HERE)
    write_sums(HERE)


if __name__ == "__main__":
    main()
