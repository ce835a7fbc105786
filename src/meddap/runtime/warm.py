"""Warm start of local rule jobs: torch, diffusers, transformers and the rest imported once per run.

A rule job is a fresh Python process, and a short job spends most of its time importing: a shard
of 15 images takes about 11 s on a 2-core CPU, about 8 s of it imports. So a local job's
``rulescript.start`` hands the job to a *warm server*: a process of the same interpreter that
imported the libraries once (``PRELOAD``, never CUDA). The server forks, and the fork runs the very
script Snakemake wrote for the job (its preamble included) with the job's standard streams (passed
over the socket), working folder, command line and environment; the job's process waits and exits
with the fork's status. Each job is still its own Snakemake job, with its own log, outputs and
rerun; only the import is shared.

Which jobs run warm, when a server stops, and what benchmarks then measure: docs/usage.md,
"Warm start of local jobs".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import resource
import runpy
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

DISABLE_VARIABLE = "MEDDAP_WARM"  # "0": every job in a fresh interpreter
CHILD_VARIABLE = "MEDDAP_WARM_CHILD"  # set in a server's fork: its start runs the job
DIR_VARIABLE = "MEDDAP_WARM_DIR"  # the servers' sockets, locks and logs (default /tmp/meddap-warm-<uid>)
IDLE_SECONDS = 120.0
START_TIMEOUT_SECONDS = 300.0

# What the server imports: every rule's heavy imports (module, or module:attribute for diffusers'
# lazily loaded classes). A name that fails to import is skipped.
PRELOAD = (
    "numpy",
    "pandas",
    "PIL.Image",
    "scipy.stats",
    "sklearn.metrics",
    "sklearn.model_selection",
    "yaml",
    "tqdm",
    "safetensors.torch",
    "torch",
    "torchvision",
    "torchvision.models",
    "torchvision.transforms",
    "transformers:CLIPTextModel",
    "transformers:CLIPTokenizer",
    "peft",
    "diffusers:StableDiffusionPipeline",
    "diffusers:StableDiffusionImg2ImgPipeline",
    "diffusers:UNet2DConditionModel",
    "diffusers:AutoencoderKL",
    "diffusers:DDPMScheduler",
)

# Set by Snakemake per job (its thread count, its tmpdir resource): the fork gets the job's values,
# and they do not change what the server imported.
PER_JOB_VARIABLES = frozenset(
    {
        "OMP_NUM_THREADS",
        "GOTO_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "TMPDIR",
        "TMP",
        "TEMP",
        "TEMPDIR",
        "CUDA_VISIBLE_DEVICES",
        CHILD_VARIABLE,
    }
)
# A job inside one of these schedulers' allocations runs cold: a server would live in (and die
# with) the allocation of whichever job started it.
CLUSTER_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID")

_HEADER = struct.Struct("!I")


def folder(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(DIR_VARIABLE) or f"/tmp/meddap-warm-{os.getuid()}")


def in_cluster_job(environ: Mapping[str, str]) -> bool:
    sge = bool(environ.get("JOB_ID") and environ.get("SGE_ROOT"))
    return sge or any(environ.get(name) for name in CLUSTER_VARIABLES)


def in_server_fork(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(CHILD_VARIABLE) == "1"


def eligible(environ: Mapping[str, str], takes_gpu: bool, script: str) -> str | None:
    """None where a job (running ``script``, its ``sys.argv[0]``) may run warm, else why not (for its log)."""
    if in_server_fork(environ):
        return "already in a warm server's fork"
    if not os.path.isfile(script):
        return "not started from a script file (a fork runs the job's script again)"
    if environ.get(DISABLE_VARIABLE, "1") == "0":
        return f"{DISABLE_VARIABLE}=0"
    if in_cluster_job(environ):
        return "inside a cluster allocation"
    if takes_gpu:
        return "the job takes a GPU device"
    if not hasattr(os, "fork") or not hasattr(socket, "AF_UNIX") or not hasattr(socket, "send_fds"):
        return "no fork or Unix sockets on this platform"
    return None


def _library_stamps() -> list[tuple[str, str | None, int | None]]:
    """Where each preloaded library is installed and when: a reinstall changes the key."""
    stamps = []
    for name in sorted({entry.split(":")[0].split(".")[0] for entry in PRELOAD}):
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        mtime = None
        if origin and os.path.exists(origin):
            mtime = os.stat(origin).st_mtime_ns
        stamps.append((name, origin, mtime))
    stamps.append(("meddap.runtime.warm", __file__, os.stat(__file__).st_mtime_ns))
    return stamps


def server_key(environ: Mapping[str, str], cwd: str) -> str:
    """The server a job may use: same user, folder, interpreter, import path, environment, libraries."""
    env = sorted((k, v) for k, v in environ.items() if k not in PER_JOB_VARIABLES)
    identity = {
        "uid": os.getuid(),
        "cwd": os.path.realpath(cwd),
        "python": os.path.realpath(sys.executable),
        "path": sys.path[1:],  # [0] is the job's script folder
        "env": env,
        "libraries": _library_stamps(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------------------- client


def _private(path: Path) -> bool:
    """A folder owned by this user that no one else may write to or read."""
    info = os.lstat(path)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def _connect(path: Path) -> socket.socket | None:
    """A connection to the server at ``path``, if one of this user's answers there."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        conn.close()
        return None
    if uid != os.getuid():
        conn.close()
        return None
    return conn


def _start_server(base: Path, key: str, cwd: str) -> socket.socket | None:
    """Connect to the key's server, starting it if none answers (one starter at a time, by lock)."""
    socket_path = base / f"{key}.sock"
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(socket_path)
        if conn is not None:
            return conn
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()  # a dead server's
        with open(base / f"{key}.log", "ab") as server_log:
            server = subprocess.Popen(
                [sys.executable, "-m", "meddap.runtime.warm", "serve", str(socket_path), "--cwd", cwd],
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=server_log,
                start_new_session=True,  # outlives this job; not in Snakemake's process group
                close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            conn = _connect(socket_path)
            if conn is not None:
                return conn
            if server.poll() is not None:
                return None
            time.sleep(0.05)
        server.kill()
        return None


def _receive_line(conn: socket.socket) -> str | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:
            return None
        data += chunk
    return data.decode().strip()


def run_in_server(argv: list[str], environ: Mapping[str, str], cwd: str) -> int | None:
    """Run this job's script (``argv``) in a fork of the warm server; its exit status, or None where
    no server took the job (the caller then runs it itself)."""
    base = folder(environ)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _private(base):
        # Its name is predictable: another user's folder (or socket) there must not get this job's
        # environment and streams.
        sys.stderr.write(f"meddap: warm start off: {base} is not a folder of this user alone (see {DIR_VARIABLE})\n")
        return None
    key = server_key(environ, cwd)
    request = json.dumps({"argv": argv, "cwd": cwd, "env": dict(environ)}).encode()
    for _attempt in range(3):  # a server that was just stopping closes the connection unanswered
        conn = _connect(base / f"{key}.sock") or _start_server(base, key, cwd)
        if conn is None:
            return None
        with conn:
            try:
                socket.send_fds(conn, [_HEADER.pack(len(request))], [0, 1, 2])
                conn.sendall(request)
                child = _receive_line(conn)
            except OSError:
                child = None
            if child is None:
                continue
            return _wait_for(conn, int(child))
    return None


def _wait_for(conn: socket.socket, child: int) -> int:
    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    status = _receive_line(conn)
    if status is None:
        sys.stderr.write(f"meddap: the job's warm process {child} ended without a status (killed?)\n")
        return 1
    return int(status)


# ---------------------------------------------------------------------------------------- server


def preload() -> list[str]:
    """Import ``PRELOAD``; the names that failed."""
    failed = []
    for entry in PRELOAD:
        module, _, attribute = entry.partition(":")
        try:
            imported = importlib.import_module(module)
            if attribute:
                getattr(imported, attribute)
        except Exception:  # a missing optional library only makes its jobs import it themselves
            failed.append(entry)
    return failed


def _record_path(socket_path: Path) -> Path:
    return socket_path.with_suffix(".json")


def serve(socket_path: Path, cwd: str, idle_seconds: float = IDLE_SECONDS) -> None:
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # never initialise CUDA before a fork
    started = time.monotonic()
    failed = preload()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise SystemExit("meddap warm server: CUDA was initialised while importing; forks could not use it")
    seconds = time.monotonic() - started
    print(f"warm server {os.getpid()}: imported in {seconds:.1f} s; not imported: {failed}", flush=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(16)
    listener.settimeout(1.0)
    inode = os.stat(socket_path).st_ino
    record = _record_path(socket_path)
    record.write_text(json.dumps({"pid": os.getpid(), "cwd": os.path.realpath(cwd), "socket": str(socket_path)}))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    children: set[int] = set()
    last_activity = time.monotonic()
    try:
        while not stopping:
            children -= _reaped(children)
            if children:
                last_activity = time.monotonic()
            try:
                if os.stat(socket_path).st_ino != inode:
                    break  # replaced: another server owns the name now
            except FileNotFoundError:
                break  # removed: stop
            if time.monotonic() - last_activity > idle_seconds:
                break
            try:
                conn, _ = listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            last_activity = time.monotonic()
            with conn:
                child = _fork_job(conn, listener)
            if child:
                children.add(child)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(socket_path).st_ino == inode:
                socket_path.unlink()
                record.unlink(missing_ok=True)
    # Stopped as planned: nothing of it is left (a server that failed keeps its log for the reader).
    for leftover in (socket_path.with_suffix(".log"), socket_path.with_suffix(".lock")):
        leftover.unlink(missing_ok=True)


def _reaped(children: set[int]) -> set[int]:
    done = set()
    for child in children:
        with contextlib.suppress(ChildProcessError):
            pid, _ = os.waitpid(child, os.WNOHANG)
            if pid == 0:
                continue
        done.add(child)
    return done


def _receive_request(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(30)
    data, fds, _flags, _address = socket.recv_fds(conn, _HEADER.size, 3)
    if len(data) < _HEADER.size:
        data += conn.recv(_HEADER.size - len(data), socket.MSG_WAITALL)
    (length,) = _HEADER.unpack(data)
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ConnectionError("request cut short")
        body += chunk
    return json.loads(body), fds


def _fork_job(conn: socket.socket, listener: socket.socket) -> int | None:
    try:
        client_pid, client_uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        request, fds = _receive_request(conn)
    except (OSError, ValueError, struct.error) as error:
        print(f"warm server: dropped a request: {error}", flush=True)
        return None
    if client_uid != os.getuid() or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    status = 1
    try:
        listener.close()
        conn.settimeout(None)
        status = _run_job(request, fds, client_pid, conn)
    except BaseException:  # noqa: BLE001 - the fork must always exit here, never return to the loop
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(f"{status}\n".encode())
        os._exit(status)


def _run_job(request: dict, fds: list[int], client_pid: int, conn: socket.socket) -> int:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[CHILD_VARIABLE] = "1"
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    conn.sendall(f"{os.getpid()}\n".encode())
    threading.Thread(target=_exit_with_client, args=(client_pid,), daemon=True).start()
    try:
        runpy.run_path(script, run_name="__main__")
        status = 0
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except BaseException:  # noqa: BLE001 - as the interpreter would: the script's excepthook, status 1
        sys.excepthook(*sys.exc_info())
        status = 1
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the pages shared with the server too
    logging.getLogger("meddap.runtime.warm").info(
        "warm start: peak resident memory of the job's fork %.0f MiB", peak_mib
    )
    return status


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def _exit_with_client(client_pid: int) -> None:
    """A job whose waiting process is gone (killed by Snakemake) must not go on writing its outputs."""
    try:
        watched = os.pidfd_open(client_pid)
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3): poll
        while True:
            time.sleep(0.2)
            try:
                os.kill(client_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
    select.select([watched], [], [])  # readable when the process has exited
    os._exit(1)


def stop_servers(cwd: str | None = None, environ: Mapping[str, str] = os.environ) -> list[int]:
    """Stop the servers of this workflow folder (all of this user's where ``cwd`` is None); their pids."""
    base = folder(environ)
    target = os.path.realpath(cwd) if cwd is not None else None
    stopped = []
    for record in sorted(base.glob("*.json")) if base.is_dir() else []:
        try:
            info = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if target is not None and info.get("cwd") != target:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(info["pid"]), signal.SIGTERM)
            stopped.append(int(info["pid"]))
    return stopped


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m meddap.runtime.warm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run a server on SOCKET (jobs start it themselves)")
    serve_parser.add_argument("socket", type=Path)
    serve_parser.add_argument("--cwd", default=os.getcwd())
    serve_parser.add_argument("--idle", type=float, default=IDLE_SECONDS)
    stop_parser = commands.add_parser("stop", help="stop this folder's servers (--all: every one of this user's)")
    stop_parser.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.socket, args.cwd, args.idle)
    else:
        print(" ".join(map(str, stop_servers(None if args.all else os.getcwd()))))


if __name__ == "__main__":
    main()
