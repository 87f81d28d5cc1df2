"""Fuse on a Triton Inference Server that serves a dig2dig repository (``dig2dig serve``, docs/SERVING.md).

Speaks Triton's HTTP/REST protocol (KServe v2 with the binary tensor extension) with the standard library
alone, so the client needs nothing beyond the runtime; gRPC clients use ``tritonclient`` with the same
inputs and outputs (docs/SERVING.md).

    from dig2dig.runtime.client import TritonClient
    with TritonClient("http://127.0.0.1:8000") as client:
        fused = client.fuse(ir_frame, vis_frame, task="ivf")   # frames as Fuser takes them, BGR out
    image = fuse_files("http://127.0.0.1:8000", "ir.png", "vis.png", task="ivf")   # RGB, as FusionResult.image
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import urllib.parse
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import io
from .errors import Dig2DigError, InputError
from .options import OPTION_FIELDS
from .settings import MAX_PIXELS, TILE_OVERLAP, check_task

# The fuse model's name and I/O, declared here once for the client and the repository writer
# (``dig2dig export triton``): each role's 8-bit and 16-bit input, [H, W, C] with C 1 (grey) or 3 (BGR), one
# of the two given; the task, [1] string; the fused frame, uint8 [H, W, C].
FUSE_MODEL = "dig2dig_fuse"
SOURCE_INPUTS = (("A", "A16"), ("B", "B16"))
SOURCE_TYPES = ((np.dtype(np.uint8), "UINT8"), (np.dtype(np.uint16), "UINT16"))  # as each role's names
TASK_INPUT, FUSED_OUTPUT = "TASK", "FUSED"
HEADER_LENGTH = "Inference-Header-Content-Length"
DEFAULT_TIMEOUT = 300.0  # seconds a fusion may take on the server, queueing included


class ServerError(Dig2DigError):
    """The server could not be reached, or answered a request with an error (its message included)."""


def _tensor(name: str, datatype: str, array: np.ndarray) -> Dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": list(array.shape),
            "parameters": {"binary_data_size": array.nbytes}}


def request_body(a: np.ndarray, b: np.ndarray, task: str) -> Tuple[bytes, int]:
    """The infer request for frames ``a`` and ``b`` (uint8 or uint16, (H, W) or (H, W, 3) BGR) and ``task``:
    the body and the length of its JSON header."""
    inputs, blobs = [], []
    for role, frame, names in zip("ab", (a, b), SOURCE_INPUTS):
        kinds = [(name, datatype) for name, (dtype, datatype) in zip(names, SOURCE_TYPES)
                 if isinstance(frame, np.ndarray) and frame.dtype == dtype and frame.ndim in (2, 3)]
        if not kinds:
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise InputError(f"{role}: unsupported frame {got} (use uint8, or uint16 for raw thermal, (H, W) grey "
                             "or (H, W, 3) BGR)")
        pixels = np.ascontiguousarray(frame if frame.ndim == 3 else frame[..., None])
        inputs.append(_tensor(*kinds[0], pixels))
        blobs.append(pixels.tobytes())
    inputs.append({"name": TASK_INPUT, "datatype": "BYTES", "shape": [1], "data": [task]})
    header = json.dumps({"inputs": inputs, "outputs": [{"name": FUSED_OUTPUT, "parameters": {"binary_data": True}}]})
    head = header.encode("utf-8")
    return head + b"".join(blobs), len(head)


def parse_reply(status: int, headers: Dict[str, str], body: bytes) -> np.ndarray:
    """The FUSED output of an infer reply, (H, W, C) uint8; a ``ServerError`` with the server's message."""
    length = int(headers.get(HEADER_LENGTH.lower(), len(body)))
    try:
        reply = json.loads(body[:length].decode("utf-8"))
    except ValueError:
        reply = {"error": body[:200].decode("utf-8", errors="replace")}
    if status != 200 or "error" in reply:
        raise ServerError(f"the server refused the request (HTTP {status}): {reply.get('error', reply)}")
    offset = length
    for output in reply.get("outputs", []):
        size = int(output.get("parameters", {}).get("binary_data_size", 0))
        if output["name"] == FUSED_OUTPUT:
            if output["datatype"] != "UINT8" or len(output["shape"]) != 3 or size != int(np.prod(output["shape"])) \
                    or size == 0:
                raise ServerError(f"unexpected {FUSED_OUTPUT} from the server: {output}")
            return np.frombuffer(body[offset:offset + size], np.uint8).reshape(output["shape"]).copy()
        offset += size
    raise ServerError(f"the server's reply has no {FUSED_OUTPUT} output (outputs: {reply.get('outputs')})")


class TritonClient:
    """A connection to a Triton server's HTTP endpoint (``http://HOST:PORT``; ``HOST:PORT`` means http), kept
    open across requests. One client per thread: a connection carries one request at a time."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, model: str = FUSE_MODEL):
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InputError(f"--server {url}: expected http://HOST:PORT (Triton's HTTP endpoint)")
        self.url, self.model, self.timeout = url, model, timeout
        self._address = (parsed.scheme, parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))
        self._prefix = parsed.path.rstrip("/")
        self._connection: Optional[http.client.HTTPConnection] = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            scheme, host, port = self._address
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            self._connection = kind(host, port, timeout=self.timeout)
        return self._connection

    def _exchange(self, method: str, path: str, body: Optional[bytes],
                  headers: Optional[Dict[str, str]]) -> Tuple[int, Dict[str, str], bytes]:
        connection = self._connect()
        connection.request(method, self._prefix + path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        """One HTTP exchange: the status, the headers (lower-case names) and the body. A kept connection that
        the server has closed meanwhile is opened again, once; any other failure is a ``ServerError``."""
        while True:
            kept = self._connection is not None  # False on the retry: the failed connection was closed
            try:
                return self._exchange(method, path, body, headers)
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                closed = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if not (kept and closed):
                    raise ServerError(f"{self.url}: no reply from the server ({exc})") from exc

    def fuse(self, a: np.ndarray, b: np.ndarray, task: str = "ivf") -> np.ndarray:
        """The fused frame of ``a`` and ``b`` as :class:`~dig2dig.runtime.fuser.Fuser` returns it: uint8 (H, W, 3)
        BGR if a source is colour, else (H, W) grey. The settings are the server's (its model config)."""
        check_task(task)
        body, length = request_body(a, b, task)
        headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(length)}
        fused = parse_reply(*self.request("POST", f"/v2/models/{self.model}/infer", body, headers))
        return fused[..., 0] if fused.shape[2] == 1 else fused

    def get_json(self, path: str) -> Any:
        """A GET of the server's JSON API, e.g. ``/v2/models/dig2dig_unet/stats``."""
        status, _, body = self.request("GET", path)
        if status != 200:
            raise ServerError(f"{self.url}{path}: HTTP {status}: {body[:200].decode('utf-8', errors='replace')}")
        return json.loads(body)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_pixels(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file's samples as a frame to send: uint8 or uint16, (H, W) grey or (H, W, 3) BGR (alpha
    dropped), of at most ``max_pixels``; a float image is an ``InputError`` (the server takes 8- and 16-bit
    samples)."""
    rgb = io.read_pixels(path, max_pixels)
    if rgb.dtype not in (dtype for dtype, _ in SOURCE_TYPES):
        raise InputError(f"{path}: {rgb.dtype} samples; a server fuses 8- or 16-bit images")
    return rgb if rgb.ndim == 2 else np.ascontiguousarray(rgb[..., ::-1])


def fuse_files(server: str, a: str, b: str, task: str = "ivf", timeout: float = DEFAULT_TIMEOUT,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Fuse image files ``a`` and ``b`` (each of at most ``max_pixels``, checked here before sending) on
    ``server``: the fused image as ``FusionResult.image`` holds it, uint8 (H, W) grey or (H, W, 3) RGB, for
    ``io.write_image``. Equals local fusion with the server's settings."""
    frame_a, frame_b = read_pixels(a, max_pixels), read_pixels(b, max_pixels)
    with TritonClient(server, timeout) as client:
        fused = client.fuse(frame_a, frame_b, task)
    return fused if fused.ndim == 2 else np.ascontiguousarray(fused[..., ::-1])


# ``dig2dig fuse`` options that act on the local fusion: with --server the server's config decides them.
LOCAL_ONLY = {"model": None, "backend": "ort", "precision": "fp32", "init_noise": None, "save_raw": None,
              "save_dig_maps": None, "stretch": False, "resize": False, "max_side": None, "tile": None,
              "tile_overlap": TILE_OVERLAP, "max_memory": None, "config": None}


def run_fuse_command(args: argparse.Namespace) -> int:
    """``dig2dig fuse A B -o OUT --server URL``: options that only a local fusion has are refused."""
    given = [name for name, default in LOCAL_ONLY.items() if getattr(args, name, default) != default]
    given += [name for name in OPTION_FIELDS if getattr(args, name, None) is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise InputError(f"{flags}: not with --server (the server's repository holds its settings and model; "
                         f"'dig2dig export triton' writes them)")
    from . import preflight

    preflight.output_image(args.output)
    image = fuse_files(args.server, os.fspath(args.a), os.fspath(args.b), args.task, max_pixels=args.max_pixels)
    io.write_image(args.output, image)
    if not args.quiet:
        print(f"wrote {args.output} (fused on {args.server}; {args.task}, the server's settings)")
    return 0
