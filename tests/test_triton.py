"""Serving on Triton Inference Server: the repository ``dig2dig export triton`` writes, and ``dig2dig serve``
running the server from the nvidia-pytriton wheel on 127.0.0.1 (ephemeral ports): pairs fused over HTTP
(``runtime.client`` and ``dig2dig fuse --server``) and gRPC (``tritonclient``) equal local fusion with the
same settings, bad requests are errors to their client while the server keeps serving, Ctrl-C stops it.

The server's tests need the serving environment (nvidia-pytriton, numpy < 2; ``dig2dig.serve``), made once
under ~/.cache/dig2dig/serve (about 30 s); where it cannot be installed they skip, saying why."""
from __future__ import annotations

import json
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import cv2
import numpy as np
import pytest

from conftest import pair
from dig2dig.cli import main as dig2dig_main
from dig2dig.export.triton import FUSE, UNET, tensor_dims, write_repository
from dig2dig.runtime import api
from dig2dig.runtime.backends.base import INPUT_T, INPUT_X, OUTPUT_Y
from dig2dig.runtime.backends.plan_file import PlanHeader, Profile, pack
from dig2dig.runtime.client import HEADER_LENGTH, ServerError, TritonClient, fuse_files, request_body
from dig2dig.runtime.errors import InputError
from dig2dig.runtime.fuser import Fuser
from dig2dig.runtime.settings import resolve

STEPS = 2  # DDIM steps of every fusion here, on the server (its repository) and locally
# Pairs fused over HTTP: colour and grey, every task, and one 16-bit source.
CASES = [("ivf", "FLIR_00977"), ("ivf", "10"), ("mif", "12"), ("mef", "Chair"), ("mff", "lytro_01")]
# Most grey levels a server's fused pixel may differ from local fusion's (the server's numpy is < 2); equal here.
TOLERANCE = 1


def frames(task: str, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """A vendored pair as OpenCV frames: uint8 (H, W) grey or (H, W, 3) BGR."""
    a, b = pair(task, name)
    return cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED)


def local(task: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The same frames fused in this process with the server's settings."""
    with Fuser(task, settings=resolve(task, steps=STEPS)) as fuser:
        return fuser(a, b)


def assert_close(served: np.ndarray, expected: np.ndarray) -> None:
    assert served.dtype == np.uint8 and served.size > 0  # Triton 2.51 with numpy 2 would answer empty outputs
    assert served.shape == expected.shape
    assert int(np.abs(served.astype(np.int16) - expected).max()) <= TOLERANCE


def test_export_triton_writes_the_repository(tmp_path: Path) -> None:
    """Both models, their configs with the UNet's I/O from ``runtime.backends.base``, and the settings."""
    out = tmp_path / "repo"
    assert dig2dig_main(["export", "triton", "-o", str(out), "--steps", "3", "--max-batch", "6"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        f"{FUSE}/1/model.py", f"{FUSE}/config.pbtxt", f"{UNET}/1/model.onnx", f"{UNET}/1/model.py",
        f"{UNET}/config.pbtxt"]
    unet = (out / UNET / "config.pbtxt").read_text()
    with api.open_runner() as runner:
        dims = tensor_dims(runner.info)
    assert 'backend: "python"' in unet and "max_batch_size: 6" in unet and "dynamic_batching" in unet
    assert f'name: "{INPUT_X}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, dims[INPUT_X]))} ]' in unet
    assert f'name: "{INPUT_T}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }}' in unet
    assert f'name: "{OUTPUT_Y}"' in unet
    fuse = (out / FUSE / "config.pbtxt").read_text()
    assert '{ key: "steps" value: { string_value: "3" } }' in fuse
    assert dig2dig_main(["export", "triton", "-o", str(out)]) == 2  # exists: refused without --force
    assert dig2dig_main(["export", "triton", "-o", str(out), "--force", "--steps", "0"]) == 2  # a bad setting
    assert (out / FUSE / "config.pbtxt").read_text() == fuse  # left as it was
    assert dig2dig_main(["export", "triton", "-o", str(out), "--force", "--unet-backend", "onnxruntime"]) == 0
    assert 'platform: "onnxruntime_onnx"' in (out / UNET / "config.pbtxt").read_text()
    assert not (out / UNET / "1" / "model.py").exists()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"")
    assert dig2dig_main(["export", "triton", "-o", str(tmp_path / "photos"), "--force"]) == 2  # not a repository
    assert (tmp_path / "photos" / "a.png").exists()


def test_repository_of_a_tensorrt_plan(tmp_path: Path) -> None:
    """``--unet-backend tensorrt`` writes the plan's engine as model.plan and reads the metadata from its header."""
    with api.open_runner() as runner:
        info = runner.info
    plan = tmp_path / "model.plan"
    header = PlanHeader("10.3.0", (Profile((1, 64, 64), (1, 256, 256), (8, 512, 512)),), info.to_metadata(), "fp16")
    plan.write_bytes(pack(header, b"engine bytes"))
    out = write_repository(tmp_path / "repo", plan, "tensorrt", max_batch=8).path
    assert (out / UNET / "1" / "model.plan").read_bytes() == b"engine bytes"
    assert 'platform: "tensorrt_plan"' in (out / UNET / "config.pbtxt").read_text()
    with pytest.raises(InputError, match="needs --model PLAN"):
        write_repository(tmp_path / "other", None, "tensorrt")
    with pytest.raises(InputError, match="takes at most 8 images"):
        write_repository(tmp_path / "other", plan, "tensorrt", max_batch=16)


@pytest.fixture(scope="module")
def serving() -> str:
    """The serving environment's Python (made once); skips where nvidia-pytriton cannot be installed."""
    from dig2dig.serve import ServeError, serving_python

    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip(f"nvidia-pytriton has wheels for x86_64 Linux (glibc 2.35+) only, not {sys.platform} "
                    f"{platform.machine()}")
    try:
        return serving_python(log=lambda line: None)
    except (ServeError, subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"the serving environment (nvidia-pytriton, numpy<2) cannot be installed here: {exc}")


@pytest.fixture(scope="module")
def server(serving: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, object]]:
    """``dig2dig serve`` on ephemeral loopback ports, serving a repository of STEPS steps it writes itself."""
    from dig2dig.serve import free_ports

    http, grpc, metrics = free_ports(3)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "dig2dig.cli", "serve", "--steps", str(STEPS),
                                    "--fuse-instances", "3", "--http-port", str(http), "--grpc-port", str(grpc),
                                    "--metrics-port", str(metrics)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while "ready:" not in log.read_text(errors="replace"):
        assert process.poll() is None, f"dig2dig serve exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"dig2dig serve not ready in 180 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    yield {"http": f"http://127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}", "process": process, "log": log,
           "python": serving}
    if process.poll() is None:  # a test failed before Ctrl-C: stop it in order all the same
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


VALIDATE_CONFIGS = """
import sys
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

for path in sys.argv[1:]:
    config = text_format.Parse(open(path).read(), model_config_pb2.ModelConfig())
    print(path, config.name, config.platform or config.backend, len(config.input), len(config.output))
"""


@pytest.mark.slow
def test_configs_pass_tritonclients_validation(serving: str, tmp_path: Path) -> None:
    """Every variant's config.pbtxt parses as tritonclient's ModelConfig (field names, types and enums)."""
    with api.open_runner() as runner:
        metadata = runner.info.to_metadata()
    plan = tmp_path / "model.plan"
    plan.write_bytes(pack(PlanHeader("10.3.0", (Profile((1, 64, 64), (1, 256, 256), (8, 512, 512)),), metadata,
                                     "fp16"), b"engine"))
    configs = []
    for backend, model in (("python", None), ("onnxruntime", None), ("tensorrt", plan)):
        repo = write_repository(tmp_path / backend, model, backend, settings={"steps": 4, "timesteps": None}).path
        configs += [str(repo / UNET / "config.pbtxt"), str(repo / FUSE / "config.pbtxt")]
    done = subprocess.run([serving, "-c", VALIDATE_CONFIGS, *configs], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split()[2] for line in lines] == ["python", "python", "onnxruntime_onnx", "python",
                                                   "tensorrt_plan", "python"]
    assert all(line.split()[1:] in ([UNET, line.split()[2], "2", "1"], [FUSE, "python", "5", "1"]) for line in lines)


@pytest.mark.slow
def test_http_fusion_equals_local(server: Dict[str, object]) -> None:
    """Every task, grey and colour, and a 16-bit source; the pairs sent at once, so the server batches."""
    cases: List[Tuple[str, np.ndarray, np.ndarray]] = [(task, *frames(task, name)) for task, name in CASES]
    task, a, b = cases[0]
    cases.append((task, (a.astype(np.uint16) * 257 + 40).astype(np.uint16), b))  # raw thermal: A16
    results: List[np.ndarray] = [np.empty(0)] * len(cases)

    def send(i: int) -> None:
        with TritonClient(str(server["http"])) as client:
            results[i] = client.fuse(cases[i][1], cases[i][2], cases[i][0])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for (task, a, b), served in zip(cases, results):
        assert_close(served, local(task, a, b))
    with TritonClient(str(server["http"])) as client:
        stats = client.get_json(f"/v2/models/{UNET}/stats")["model_stats"][0]
    assert int(stats["inference_count"]) >= int(stats["execution_count"]) > 0


@pytest.mark.slow
def test_fuse_command_with_server(server: Dict[str, object], tmp_path: Path) -> None:
    """``dig2dig fuse A B -o OUT --server URL`` writes what a local ``dig2dig fuse --steps 2`` writes."""
    a, b = pair("ivf", "FLIR_00977")
    served, here = tmp_path / "served.png", tmp_path / "local.png"
    assert dig2dig_main(["fuse", str(a), str(b), "-o", str(served), "--server", str(server["http"]), "-q"]) == 0
    assert dig2dig_main(["fuse", str(a), str(b), "-o", str(here), "--steps", str(STEPS), "-q"]) == 0
    assert_close(cv2.imread(str(served), cv2.IMREAD_UNCHANGED), cv2.imread(str(here), cv2.IMREAD_UNCHANGED))
    assert dig2dig_main(["fuse", str(a), str(b), "-o", str(served), "--server", str(server["http"]),
                         "--steps", "3"]) == 2  # the server's settings decide


def test_fuse_with_server_reads_within_the_limits_before_sending(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """With --server, --max-pixels still refuses a source before anything is sent (no server listens here),
    and --tile-overlap, which only a local fusion has, is refused."""
    a, b = pair("ivf", "22")
    out = str(tmp_path / "fused.png")
    with pytest.raises(InputError, match=f"{a}: .*limit of 100 pixels"):
        fuse_files("http://127.0.0.1:9", str(a), str(b), max_pixels=100)
    for extra, message in ((["--max-pixels", "100"], "limit of 100 pixels"), (["--tile-overlap", "32"],
                                                                            "--tile-overlap: not with --server")):
        assert dig2dig_main(["fuse", str(a), str(b), "-o", out, "--server", "http://127.0.0.1:9", *extra]) == 2
        assert message in capsys.readouterr().err
    assert not Path(out).exists()


GRPC_CLIENT = """
import sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url, a_path, b_path, out = sys.argv[1:]
client = grpcclient.InferenceServerClient(url)

def infer(task):
    inputs = []
    for name, path in (("A", a_path), ("B", b_path)):
        frame = np.load(path)
        tensor = grpcclient.InferInput(name, list(frame.shape), "UINT8")
        tensor.set_data_from_numpy(frame)
        inputs.append(tensor)
    tensor = grpcclient.InferInput("TASK", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([task.encode()], dtype=object))
    inputs.append(tensor)
    return client.infer("dig2dig_fuse", inputs, outputs=[grpcclient.InferRequestedOutput("FUSED")])

np.save(out, infer("ivf").as_numpy("FUSED"))
try:
    infer("fusion")
    print("no error")
except InferenceServerException as exc:
    print("error:", exc.message())
"""


@pytest.mark.slow
def test_grpc_fusion_equals_local(server: Dict[str, object], tmp_path: Path) -> None:
    """tritonclient's gRPC client (in the serving environment, which has it) gets the local fusion."""
    a, b = frames("ivf", "FLIR_00977")
    np.save(tmp_path / "a.npy", a[..., None])
    np.save(tmp_path / "b.npy", b)
    done = subprocess.run([str(server["python"]), "-c", GRPC_CLIENT, str(server["grpc"]), str(tmp_path / "a.npy"),
                           str(tmp_path / "b.npy"), str(tmp_path / "fused.npy")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unknown task 'fusion'" in done.stdout
    assert_close(np.load(tmp_path / "fused.npy"), local("ivf", a, b))


def raw_post(url: str, header: Dict[str, object], blobs: List[bytes]) -> Tuple[int, str]:
    """An infer request built by hand: the status and the server's error message."""
    head = json.dumps(header).encode()
    with TritonClient(url) as client:
        status, _, body = client.request("POST", f"/v2/models/{FUSE}/infer", head + b"".join(blobs),
                                         {HEADER_LENGTH: str(len(head))})
    return status, json.loads(body).get("error", "")


def disconnect(url: str, body: bytes, length: int, sent: int) -> None:
    """Send an infer request's first ``sent`` bytes of body and hang up without reading a reply."""
    host, port = url.split("//")[1].split(":")
    head = (f"POST /v2/models/{FUSE}/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
            f"{HEADER_LENGTH}: {length}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body[:sent])


@pytest.mark.slow
def test_bad_requests_are_errors_and_the_server_keeps_serving(server: Dict[str, object]) -> None:
    """Mismatched sizes, a wrong dtype, an unknown task, a missing source and two hang-ups, while another
    client's fusions run: each bad request gets its error, the good ones their fusion."""
    url = str(server["http"])
    a, b = frames("ivf", "FLIR_00977")
    expected = local("ivf", a, b)
    good: List[np.ndarray] = []

    def fuse_twice() -> None:
        with TritonClient(url) as client:
            good.extend(client.fuse(a, b, "ivf") for _ in range(2))

    other = threading.Thread(target=fuse_twice)
    other.start()
    with TritonClient(url) as client:
        with pytest.raises(ServerError, match="same size"):
            client.fuse(a, b[:40], "ivf")
    status, error = raw_post(url, {"inputs": [
        {"name": "A", "datatype": "FP32", "shape": [2, 2, 1], "parameters": {"binary_data_size": 16}},
        {"name": "B", "datatype": "UINT8", "shape": [2, 2, 1], "parameters": {"binary_data_size": 4}},
        {"name": "TASK", "datatype": "BYTES", "shape": [1], "data": ["ivf"]}]}, [bytes(16), bytes(4)])
    assert status == 400 and "FP32" in error and "UINT8" in error
    body, length = request_body(a, b, "fusion")
    with TritonClient(url) as client:
        status, _, reply = client.request("POST", f"/v2/models/{FUSE}/infer", body, {HEADER_LENGTH: str(length)})
    assert status == 400 and "unknown task 'fusion'" in json.loads(reply)["error"]
    status, error = raw_post(url, {"inputs": [
        {"name": "B", "datatype": "UINT8", "shape": [2, 2, 1], "parameters": {"binary_data_size": 4}},
        {"name": "TASK", "datatype": "BYTES", "shape": [1], "data": ["ivf"]}]}, [bytes(4)])
    assert status == 400 and "A or A16" in error
    body, length = request_body(a, b, "ivf")
    disconnect(url, body, length, len(body) // 2)  # gone in the middle of the body
    disconnect(url, body, length, len(body))  # gone before the reply
    other.join()
    with TritonClient(url) as client:
        good.append(client.fuse(a, b, "ivf"))
    assert len(good) == 3
    for served in good:
        assert_close(served, expected)


@pytest.mark.slow
def test_ctrl_c_stops_the_server(server: Dict[str, object]) -> None:
    """SIGINT (Ctrl-C) stops ``dig2dig serve``: Triton shuts down in order and the command exits 0."""
    process = server["process"]
    assert isinstance(process, subprocess.Popen)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    log = Path(str(server["log"])).read_text(errors="replace")
    assert "dig2dig serve: stopped (tritonserver exit status 0)" in log
