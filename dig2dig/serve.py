"""``dig2dig serve``: Triton Inference Server from the ``nvidia-pytriton`` wheel on a dig2dig model repository.

The wheel ships a real ``tritonserver`` (2.51, no GPU needed) with the Python backend only, so the repository's
UNet runs as the ``python`` variant (``dig2dig export triton``). The Python backend's models run in a stub
process that embeds the Python of the environment first on ``PATH``; that environment must have numpy < 2
(with numpy 2, Triton 2.51's Python backend returns empty outputs without an error). When the running
environment has nvidia-pytriton and numpy < 2 (``pip install 'dig2dig[serve]'`` in an environment of its own)
it serves; otherwise a virtual environment is made once and reused: ``$DIG2DIG_SERVE_ENV``, or
``~/.cache/dig2dig/serve/pyX.Y-HASH``, holding nvidia-pytriton and numpy < 2 and seeing this environment's
packages after its own (so dig2dig, onnxruntime and OpenCV come from here). The stub links libpython; it is
pointed at the serving interpreter's own library (``LD_LIBRARY_PATH``), as another build of the same Python
version fails to load a model.

    from dig2dig.serve import TritonServer, serving_python
    with TritonServer("repo", http_port=8000) as server:   # started, and ready
        print(server.http_url)
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Union

from .export.triton import FUSE, UNET
from .runtime.errors import Dig2DigError

# What the serving environment installs: the server and a numpy its Python backend works with; onnxruntime
# and OpenCV where this environment lacks them.
SERVE_REQUIREMENTS = ("nvidia-pytriton~=0.7.0", "numpy<2", "onnxruntime>=1.15", "opencv-python-headless>=4.5")
ENV_VARIABLE = "DIG2DIG_SERVE_ENV"
READY_TIMEOUT = 180.0  # seconds for the server to load every model instance
STOP_TIMEOUT = 30.0  # seconds for an orderly shutdown (requests in flight finish) before the server is killed
# The Python backend's shared memory per model instance: a 640x480 DIG refresh sends 5 float32 images (6 MB).
SHM_DEFAULT_BYTES = 64 << 20
SHM_GROWTH_BYTES = 16 << 20
BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
PR_SET_PDEATHSIG = 1  # prctl(2)

PathLike = Union[str, Path]


class ServeError(Dig2DigError):
    """The server could not be set up, started or reached."""


# Run by the Python to probe: what it offers a server.
PROBE = """
import json, os, sys, sysconfig
def locate(name):
    try:
        return __import__(name)
    except ImportError:
        return None
numpy, pytriton = locate("numpy"), locate("pytriton")
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "libdir": sysconfig.get_config_var("LIBDIR"),
                  "shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")),
                  "numpy": numpy and numpy.__version__, "pytriton": pytriton and os.path.dirname(pytriton.__file__)}))
"""


def _probe(python: str) -> Dict[str, Any]:
    """What ``python`` offers a server: its version, library folder, numpy's version and nvidia-pytriton's folder
    (None where missing)."""
    done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True)
    if done.returncode != 0:
        raise ServeError(f"{python} does not run: {done.stderr.strip()}")
    return dict(json.loads(done.stdout))


def serves(probe: Dict[str, Any]) -> bool:
    """Whether a probed environment can run the server's models: nvidia-pytriton and numpy < 2."""
    numpy = probe.get("numpy")
    return bool(probe.get("pytriton")) and isinstance(numpy, str) and numpy.split(".")[0].isdigit() \
        and int(numpy.split(".")[0]) < 2


def default_env_dir() -> Path:
    """``$DIG2DIG_SERVE_ENV``, or a folder under ``~/.cache/dig2dig/serve`` named by this Python and environment."""
    if os.environ.get(ENV_VARIABLE):
        return Path(os.environ[ENV_VARIABLE])
    key = hashlib.sha256("\n".join((sys.prefix, sys.version) + SERVE_REQUIREMENTS).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "dig2dig" / "serve" / f"py{sys.version_info[0]}.{sys.version_info[1]}-{key}"


def _site_dirs() -> List[str]:
    """This environment's site folders, which the serving environment sees after its own."""
    dirs = list(site.getsitepackages()) + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    return [d for d in dirs if os.path.isdir(d)]


def remove_orphans(folder: Path) -> None:
    """Remove the serving environments in ``folder`` whose parent environment is gone (a deleted virtual
    environment's): they see its packages and are of no use without them."""
    for done in folder.glob("*/.complete"):
        if not Path(done.read_text().strip()).is_dir():
            shutil.rmtree(done.parent, ignore_errors=True)


def make_environment(directory: Path, log: Callable[[str], None] = print) -> str:
    """Make the serving virtual environment in ``directory`` (once; a half-made one is made again) and return
    its Python. Its ``.complete`` names the parent environment; a lock keeps two processes from making it at
    once."""
    python = directory / "bin" / "python"
    done = directory / ".complete"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return str(python)
        log(f"dig2dig serve: making the serving environment {directory} (once: nvidia-pytriton, numpy<2)")
        remove_orphans(directory.parent)
        shutil.rmtree(directory, ignore_errors=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(directory)], capture_output=True, text=True)
        if made.returncode != 0:
            raise ServeError(f"cannot make a virtual environment in {directory}: {made.stderr.strip()}")
        packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                       capture_output=True, text=True, check=True).stdout.strip())
        lines = [f"import site; site.addsitedir({d!r})" for d in _site_dirs()]
        (packages / "dig2dig-parent-environment.pth").write_text("\n".join(lines) + "\n")
        install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                  *SERVE_REQUIREMENTS], capture_output=True, text=True)
        if install.returncode != 0:
            tail = "\n".join(install.stderr.strip().splitlines()[-5:])
            raise ServeError(f"cannot install {', '.join(SERVE_REQUIREMENTS)} into {directory}:\n{tail}")
        done.write_text(sys.prefix + "\n")
    return str(python)


def serving_python(log: Callable[[str], None] = print) -> str:
    """The Python whose environment runs the server's models: this one if it serves (:func:`serves`), else the
    serving virtual environment's, made on first use (:func:`make_environment`)."""
    if serves(_probe(sys.executable)):
        return sys.executable
    python = make_environment(default_env_dir(), log)
    if not serves(_probe(python)):
        raise ServeError(f"{python}: the serving environment lacks nvidia-pytriton or has numpy >= 2; "
                         f"remove {default_env_dir()} to make it again")
    return python


def _stop_with_parent() -> None:
    """In the server's process before it runs: have Linux send it SIGTERM when the process that started it dies,
    killed or not, so no server outlives its launcher."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """``count`` distinct TCP ports that are free on ``host`` now (the system's ephemeral choice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class TritonServer:
    """One ``tritonserver`` process on a model repository, from the nvidia-pytriton wheel of ``python``'s
    environment (default :func:`serving_python`). ``log``: a file for the server's output (default: this
    process's). Use as a context manager: started and ready on entry, stopped on exit. The server stops when
    the thread that started it ends (so that a killed launcher leaves no server behind): start it from the
    thread that outlives it."""

    def __init__(self, repo: PathLike, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, python: Optional[str] = None, log: Optional[PathLike] = None,
                 verbose: bool = False):
        self.repo, self.host, self.log = Path(repo), host, log
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.python, self.verbose = python, verbose
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self._backends: Optional[Path] = None
        self._log_file: Optional[IO[bytes]] = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self, tritonserver: Path, backends: Path) -> List[str]:
        """The server's command line."""
        prefix = f"dig2dig_{os.getpid()}_{self.http_port}_"  # shared memory names of this server alone
        return [str(tritonserver), f"--model-repository={self.repo}", f"--backend-directory={backends}",
                f"--http-address={self.host}", f"--http-port={self.http_port}",
                f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
                f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
                f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
                f"--backend-config=python,shm-region-prefix-name={prefix}",
                f"--exit-timeout-secs={int(STOP_TIMEOUT)}", f"--log-verbose={1 if self.verbose else 0}"]

    def start(self) -> None:
        """Start the server (returns at once; :meth:`wait_ready` waits for it)."""
        unet = self.repo / UNET / "config.pbtxt"
        if not (unet.is_file() and (self.repo / FUSE / "config.pbtxt").is_file()):
            raise ServeError(f"{self.repo}: not a dig2dig model repository (write one with 'dig2dig export triton')")
        if 'backend: "python"' not in unet.read_text():
            raise ServeError(f"{self.repo}: its UNet needs Triton's onnxruntime or TensorRT backend, which the server "
                             "from PyPI lacks: write the repository with --unet-backend python, or serve it on "
                             "NVIDIA's Triton images (docs/SERVING.md)")
        python = self.python or serving_python()
        probe = _probe(python)
        wheel = Path(probe["pytriton"])
        stub = wheel / "tritonserver" / "python_backend_stubs" / probe["version"] / "triton_python_backend_stub"
        if not stub.is_file():
            raise ServeError(f"nvidia-pytriton has no Python backend stub for Python {probe['version']} ({stub})")
        self._backends = Path(tempfile.mkdtemp(prefix="dig2dig-triton-backends-"))
        (self._backends / "python").mkdir()
        for name in BACKEND_FILES:
            shutil.copy2(wheel / "tritonserver" / "backends" / "python" / name, self._backends / "python" / name)
        shutil.copy2(stub, self._backends / "python" / stub.name)
        env = dict(os.environ)
        libraries = [str(wheel.parent / "nvidia_pytriton.libs")] + ([probe["libdir"]] if probe["shared"] else [])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
        env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
        if self.log is not None:
            self._log_file = open(self.log, "ab")
        self.process = subprocess.Popen(self.command(wheel / "tritonserver" / "bin" / "tritonserver", self._backends),
                                        env=env, stdout=self._log_file, stderr=subprocess.STDOUT if self.log else None,
                                        stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_stop_with_parent)

    def ready(self) -> bool:
        """Whether the server answers that it is ready (every model loaded)."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the server is ready; a ``ServeError`` (with the end of its log) if it exits or times out."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process is None or self.process.poll() is not None:
                self.stop()
                raise ServeError(f"tritonserver exited before it was ready{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServeError(f"tritonserver was not ready after {timeout:.0f} s{self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self, lines: int = 20) -> str:
        if self.log is None:
            return " (its output is above)"
        text = Path(self.log).read_text(errors="replace").strip().splitlines()
        return ":\n" + "\n".join(text[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """Stop the server in order (requests in flight finish), killing it and its stubs after ``timeout``
        seconds; returns its exit status (None if it never started)."""
        status = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            status = self.process.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._backends is not None:
            shutil.rmtree(self._backends, ignore_errors=True)
            self._backends = None
        return status

    def __enter__(self) -> "TritonServer":
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    """``dig2dig serve``'s options: where to listen, and the repository to serve or write."""
    from .export.triton import add_repository_options

    parser = argparse.ArgumentParser(prog="dig2dig serve",
                                     description="Serve dig2dig with Triton Inference Server (from the "
                                                 "nvidia-pytriton wheel) until Ctrl-C; docs/SERVING.md.")
    parser.add_argument("--repo", metavar="REPO", help="a repository from 'dig2dig export triton --unet-backend "
                                                       "python' (default: one written now, from the options below)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8000, metavar="P", help="HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=8001, metavar="P", help="gRPC port (default 8001)")
    parser.add_argument("--metrics-port", type=int, default=8002, metavar="P", help="metrics port (default 8002)")
    parser.add_argument("--verbose", action="store_true", help="the server's verbose log")
    add_repository_options(parser.add_argument_group("repository", "the repository written when --repo is not given"))
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``dig2dig serve ARGS``: write a repository unless ``--repo``, start the server, wait for it to be
    ready, serve until Ctrl-C (or SIGTERM), then stop it in order."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    from .export.triton import add_repository_options, repository_from_args

    defaults = argparse.ArgumentParser()
    add_repository_options(defaults)
    given = sorted("--" + key.replace("_", "-") for key, value in vars(defaults.parse_args([])).items()
                   if getattr(args, key) != value)
    if args.repo and given:
        raise ServeError(f"{', '.join(given)} shape the repository written when --repo is not given; "
                         f"write {args.repo} with them instead ('dig2dig export triton')")
    python = serving_python()
    scratch = Path(tempfile.mkdtemp(prefix="dig2dig-triton-repo-"))
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job starts with it ignored
        signal.signal(signum, _interrupt)
    server = None
    try:
        repo = Path(args.repo) if args.repo else repository_from_args(args, scratch / "repo").path
        server = TritonServer(repo, args.host, args.http_port, args.grpc_port, args.metrics_port, python,
                              verbose=args.verbose)
        server.start()
        server.wait_ready()
        print(f"dig2dig serve: ready: {repo} on HTTP {server.http_url}, gRPC {server.grpc_url}, metrics "
              f"http://{args.host}:{args.metrics_port}/metrics; Ctrl-C stops", flush=True)
        status = server.process.wait() if server.process else 1
        raise ServeError(f"tritonserver exited by itself (status {status})")
    except KeyboardInterrupt:
        status = server.stop() if server else 0
        print(f"dig2dig serve: stopped (tritonserver exit status {status})", flush=True)
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
