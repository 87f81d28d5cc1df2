"""Standard image-fusion metrics, with the conventions of the CDDFuse ``Evaluator``.

The values match ``Zhaozixiang1228/MMIF-CDDFuse:utils/Evaluator.py``, quirks included, so that
numbers are comparable with tables computed with that evaluator. All metrics take 2-D arrays of
grey values 0..255 (any float or int dtype) and compute in float64. ``a`` is the infrared and ``b``
the visible source (argument order F, A, B).

Library routines do the heavy lifting where they compute the same thing: SSIM is scikit-image's
``structural_similarity``, the VIF windows are ``scipy.ndimage.correlate1d`` passes, the Qabf
gradients are ``scipy.ndimage.sobel``, AG's differences are ``np.gradient``. Written here by hand,
because no library has them with these conventions: EN, SF, MI (numpy contingency table, nats),
CC/SCD (Pearson), PSNR (peak = max of F), pixel-domain VIF (Sheikh & Bovik 2006, four scales) and
Qabf (Xydeas & Petrovic 2000), each following the formula in the reference README.

Quirks kept on purpose (every table computed with that evaluator has them):
SSIM uses ``data_range=2`` (what scikit-image 0.19.2 silently used for float input), PSNR's peak
is ``max(F)`` instead of 255, Qabf's edge-strength preservation is ``gF`` (not 1) where gA == gF,
MI treats every distinct grey value as a label and is in nats, EN is in bits.

Degenerate inputs never give a silent NaN:

* CC, SCD: a Pearson correlation with a constant operand (reference: 0/0 = NaN) counts as 0,
  "no shared variation"; so F == A gives a finite SCD and a constant F a CC of 0.
* VIFF: a constant reference image (reference: 0/0) gives 1.0, as the reference does.
* PSNR raises ``ValueError`` when F equals both sources (MSE = 0) or F is all zero (peak 0).
* Qabf raises ``ValueError`` when both sources are all zero (no edge strength to weight by).
* EN raises ``ValueError`` for grey values outside 0..255; every metric raises ``ValueError`` for
  non-finite values, non-2-D or mismatched arrays, or images too small for its windows (VIFF needs
  41x41 pixels, SSIM 7x7).

scipy and scikit-image come with the ``eval`` extra; they are imported on first use.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Tuple, Union

import numpy as np

from .errors import InputError

METRIC_NAMES: Tuple[str, ...] = ("EN", "SD", "SF", "AG", "MI", "MSE", "CC", "PSNR", "SCD", "VIFF", "Qabf", "SSIM")

# VIF (pixel domain): noise variance of the HVS model and the variance floor, as in the reference.
VIF_NOISE_VAR = 2.0
VIF_EPS = 1e-10
# SSIM data range that scikit-image 0.19.2 inferred for float images (dtype range -1..1).
SSIM_DATA_RANGE = 2.0
# Qabf sigmoid constants (Xydeas & Petrovic 2000): strength Tg, kg, Dg and orientation Ta, ka, Da.
QABF_STRENGTH = (0.9994, -15.0, 0.5)
QABF_ORIENTATION = (0.9879, -22.0, 0.8)

ArrayLike = Any


def _scipy_ndimage() -> Any:
    """``scipy.ndimage``, or an ImportError that names the extra to install."""
    try:
        from scipy import ndimage
    except ImportError as exc:
        raise ImportError('fusion metrics need scipy: pip install "dig2dig[eval]"') from exc
    return ndimage


def _skimage_ssim() -> Callable[..., float]:
    """scikit-image's ``structural_similarity``, or an ImportError that names the extra to install."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError as exc:
        raise ImportError('fusion metrics need scikit-image: pip install "dig2dig[eval]"') from exc
    return structural_similarity


def _gray(x: ArrayLike, name: str = "image", min_side: int = 2) -> np.ndarray:
    """``x`` as a finite 2-D float64 array of at least ``min_side`` pixels a side."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grey image, got shape {arr.shape}")
    if min(arr.shape) < min_side:
        raise ValueError(f"{name} must be at least {min_side}x{min_side} pixels, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def _triple(f: ArrayLike, a: ArrayLike, b: ArrayLike,
            min_side: int = 2) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused and sources as float64 arrays of one shape."""
    f64, a64, b64 = _gray(f, "fused", min_side), _gray(a, "source A", min_side), _gray(b, "source B", min_side)
    if not f64.shape == a64.shape == b64.shape:
        raise ValueError(f"fused {f64.shape}, source A {a64.shape} and source B {b64.shape} differ in shape")
    return f64, a64, b64


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 where either array is constant (the plain formula gives 0/0)."""
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    return float(np.sum(dx * dy)) / denom if denom > 0 else 0.0


def en(f: ArrayLike) -> float:
    """Entropy (bits) of the 256-bin histogram of the rounded grey values."""
    levels = np.round(_gray(f, "fused", 1))
    if levels.min() < 0 or levels.max() > 255:
        raise ValueError("EN needs grey values in 0..255")
    p = np.bincount(levels.astype(np.uint8).ravel(), minlength=256) / levels.size
    p = p[p > 0]
    return abs(float(np.sum(p * np.log2(p))))


def sd(f: ArrayLike) -> float:
    """Standard deviation (population) of the grey values: global contrast."""
    return float(np.std(_gray(f, "fused", 1)))


def sf(f: ArrayLike) -> float:
    """Spatial frequency: root of the mean squared horizontal plus vertical neighbour differences."""
    x = _gray(f, "fused")
    return math.sqrt(float(np.mean(np.diff(x, axis=1) ** 2)) + float(np.mean(np.diff(x, axis=0) ** 2)))


def ag(f: ArrayLike) -> float:
    """Average gradient: mean of sqrt((Gx^2 + Gy^2) / 2), central differences, one-sided on borders."""
    gy, gx = np.gradient(_gray(f, "fused"))
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2)))


def _labels(x: np.ndarray) -> Tuple[np.ndarray, int]:
    """Each pixel's label and the label count: the grey level itself for integers 0..255, else its
    index among the distinct values (the same partition, so the same MI)."""
    flat = x.ravel()
    if flat.min() >= 0 and flat.max() <= 255 and np.array_equal(flat, np.round(flat)):
        return flat.astype(np.int64), 256
    values, inverse = np.unique(flat, return_inverse=True)
    return inverse.ravel().astype(np.int64), values.size


def _mutual_information(x: Tuple[np.ndarray, int], y: Tuple[np.ndarray, int]) -> float:
    """Mutual information (nats) of two labelings, from the non-zero cells of their contingency table."""
    (lx, nx), (ly, ny) = x, y
    codes = lx * ny + ly
    if nx * ny <= 1 << 20:
        n_ij = np.bincount(codes, minlength=nx * ny)
        joint = np.flatnonzero(n_ij)
        n_ij = n_ij[joint]
    else:
        joint, n_ij = np.unique(codes, return_counts=True)
    n = lx.size
    n_i = np.bincount(lx)[joint // ny]
    n_j = np.bincount(ly)[joint % ny]
    mi = np.sum(n_ij / n * (np.log(n_ij) + math.log(n) - np.log(n_i) - np.log(n_j)))
    return max(float(mi), 0.0)


def mi(f: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """MI(F, A) + MI(F, B) in nats, every distinct grey value a label (sklearn ``mutual_info_score``)."""
    f64, a64, b64 = _triple(f, a, b, 1)
    lf = _labels(f64)
    return _mutual_information(lf, _labels(a64)) + _mutual_information(lf, _labels(b64))


def mse(f: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """Mean of the two mean squared errors (A - F) and (B - F)."""
    f64, a64, b64 = _triple(f, a, b, 1)
    return (float(np.mean((a64 - f64) ** 2)) + float(np.mean((b64 - f64) ** 2))) / 2


def psnr(f: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """10 log10(max(F)^2 / MSE) in dB; the peak is the fused image's maximum (reference quirk)."""
    f64, a64, b64 = _triple(f, a, b, 1)
    error = mse(f64, a64, b64)
    peak = float(np.max(f64))
    if error == 0:
        raise ValueError("PSNR is infinite: the fused image equals both sources (MSE = 0)")
    if peak <= 0:
        raise ValueError("PSNR is undefined: the fused image has no positive grey value (peak 0)")
    return 10 * math.log10(peak * peak / error)


def cc(f: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """Mean of the Pearson correlations (A, F) and (B, F); a constant operand counts as 0."""
    f64, a64, b64 = _triple(f, a, b)
    return (_pearson(a64, f64) + _pearson(b64, f64)) / 2


def scd(f: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """Sum of the correlations of differences: corr(A, F - B) + corr(B, F - A) (Aslantas & Bendes 2015)."""
    f64, a64, b64 = _triple(f, a, b)
    return _pearson(a64, f64 - b64) + _pearson(b64, f64 - a64)


def _vif_taps(size: int) -> np.ndarray:
    """1-D factor of MATLAB's ``fspecial('gaussian', size, size / 5)``, normalised.

    The 2-D window is the outer product of these taps: MATLAB's cut of values below eps * max never
    bites for sizes 3..17 with sd = size / 5 (the smallest corner value is exp(-6.25) * max).
    """
    r = (size - 1) / 2
    x = np.arange(-r, r + 1)
    taps = np.exp(-x * x / (2 * (size / 5) ** 2))
    return taps / taps.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable window filter of ``x``, 'valid' part only (output shrinks by len(taps) - 1)."""
    ndimage = _scipy_ndimage()
    r = taps.size // 2
    y = ndimage.correlate1d(ndimage.correlate1d(x, taps, axis=0), taps, axis=1)
    return y[r:-r, r:-r]


def vif(ref: ArrayLike, dist: ArrayLike) -> float:
    """Pixel-domain VIF of ``dist`` against ``ref`` (Sheikh & Bovik 2006), four scales.

    Windows of 17, 9, 5, 3 pixels; from the second scale on both images are filtered and decimated
    by 2 first. 1.0 when ``ref`` has no variance anywhere (the reference maps its 0/0 to 1.0).
    """
    ref, dist = _gray(ref, "reference"), _gray(dist, "distorted")
    num = den = 0.0
    for scale in range(4):
        taps = _vif_taps(2 ** (4 - scale) + 1)
        if scale > 0:
            ref, dist = _filter_valid(ref, taps)[::2, ::2], _filter_valid(dist, taps)[::2, ::2]
        if min(ref.shape) < taps.size:
            raise ValueError(f"VIFF: image too small for its scale-{scale + 1} window ({taps.size} pixels)")
        mu1, mu2 = _filter_valid(ref, taps), _filter_valid(dist, taps)
        s1 = np.maximum(_filter_valid(ref * ref, taps) - mu1 * mu1, 0)
        s2 = np.maximum(_filter_valid(dist * dist, taps) - mu2 * mu2, 0)
        s12 = _filter_valid(ref * dist, taps) - mu1 * mu2
        g = s12 / (s1 + VIF_EPS)
        sv = s2 - g * s12
        flat_ref, flat_dist = s1 < VIF_EPS, s2 < VIF_EPS
        g = np.where(flat_ref | flat_dist, 0.0, g)
        sv = np.where(flat_ref, s2, sv)
        sv = np.where(flat_dist, 0.0, sv)
        s1 = np.where(flat_ref, 0.0, s1)
        sv = np.where(g < 0, s2, sv)
        g = np.maximum(g, 0)
        sv = np.maximum(sv, VIF_EPS)
        num += float(np.sum(np.log10(1 + g * g * s1 / (sv + VIF_NOISE_VAR))))
        den += float(np.sum(np.log10(1 + s1 / VIF_NOISE_VAR)))
    return num / den if den > 0 else 1.0


def viff(f: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """VIF(A -> F) + VIF(B -> F): visual information fidelity summed over both sources."""
    f64, a64, b64 = _triple(f, a, b)
    return vif(a64, f64) + vif(b64, f64)


def _edges(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength and orientation arctan(Sy / Sx) (pi/2 where Sx = 0), zero padding.

    Sx, Sy are the reference's true convolutions with [[-1,0,1],[-2,0,2],[-1,0,1]] and
    [[1,2,1],[0,0,0],[-1,-2,-1]]; as correlations that is -sobel(axis=1) and sobel(axis=0).
    """
    ndimage = _scipy_ndimage()
    sx = -ndimage.sobel(x, axis=1, mode="constant")
    sy = ndimage.sobel(x, axis=0, mode="constant")
    vertical = sx == 0
    angle = np.where(vertical, math.pi / 2, np.arctan(sy / np.where(vertical, 1.0, sx)))
    return np.sqrt(sx * sx + sy * sy), angle


def _sigmoid(x: np.ndarray, params: Tuple[float, float, float]) -> np.ndarray:
    """Xydeas-Petrovic sigmoid T / (1 + exp(k (x - D)))."""
    t, k, d = params
    return t / (1 + np.exp(k * (x - d)))


def _edge_preservation(g_src: np.ndarray, a_src: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Per-pixel edge preservation Q^{SF} of the fused image with respect to one source."""
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = np.where(g_src > g_f, g_f / g_src, np.where(g_src < g_f, g_src / g_f, g_f))
    orientation = 1 - np.abs(a_src - a_f) / (math.pi / 2)
    return _sigmoid(strength, QABF_STRENGTH) * _sigmoid(orientation, QABF_ORIENTATION)


def qabf(f: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """Qabf (Xydeas & Petrovic 2000): source-edge-strength weighted edge preservation in F."""
    f64, a64, b64 = _triple(f, a, b)
    (ga, aa), (gb, ab), (gf, af) = _edges(a64), _edges(b64), _edges(f64)
    weight = float(np.sum(ga + gb))
    if weight == 0:
        raise ValueError("Qabf is undefined: both sources are all zero (no edges)")
    preserved = _edge_preservation(ga, aa, gf, af) * ga + _edge_preservation(gb, ab, gf, af) * gb
    return float(np.sum(preserved)) / weight


def ssim(f: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """SSIM(F, A) + SSIM(F, B): 7x7 uniform window, sample covariance, data_range 2 (reference quirk)."""
    f64, a64, b64 = _triple(f, a, b, 7)
    structural_similarity = _skimage_ssim()
    return float(structural_similarity(f64, a64, data_range=SSIM_DATA_RANGE)
                 + structural_similarity(f64, b64, data_range=SSIM_DATA_RANGE))


SINGLE: Dict[str, Callable[[ArrayLike], float]] = {"EN": en, "SD": sd, "SF": sf, "AG": ag}
TRIPLE: Dict[str, Callable[[ArrayLike, ArrayLike, ArrayLike], float]] = {
    "MI": mi, "MSE": mse, "CC": cc, "PSNR": psnr, "SCD": scd, "VIFF": viff, "Qabf": qabf, "SSIM": ssim,
}


def compute_all(fused: ArrayLike, a: ArrayLike, b: ArrayLike) -> Dict[str, float]:
    """Every metric in ``METRIC_NAMES`` order for fused image F and sources A (infrared), B (visible)."""
    f64, a64, b64 = _triple(fused, a, b)
    return {name: SINGLE[name](f64) if name in SINGLE else TRIPLE[name](f64, a64, b64) for name in METRIC_NAMES}


def read_gray(path: Union[str, Path]) -> np.ndarray:
    """Grey image as float32 with integer values 0..255, read exactly as the reference evaluator does.

    ``cv2.imread`` (colour, so grey files come back as three equal channels) -> float32 ->
    BGR2GRAY -> ``np.round``. Raises ``InputError`` naming the file if it is missing or unreadable.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{path}: cannot be read as an image")
    return np.round(cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2GRAY))


def format_table(values: Mapping[str, float]) -> str:
    """Metric values as a two-column text table, one metric a line, in the given order."""
    width = max((len(name) for name in values), default=0)
    return "\n".join(f"{name:<{width}}  {value:12.4f}" for name, value in values.items())
