"""Fork servers: checks that need a release's modules run in processes forked from an interpreter that has already
imported the heavy third-party libraries, instead of in interpreters started from nothing.

Why: a fresh interpreter that imports one of sglang's engine modules spends about 7 s of CPU in imports, and about
six of them in third-party libraries (torch alone about 2.3 s, transformers 1.3 s, openai, huggingface_hub, sympy:
``python -X importtime``), sglang's own modules under one. The suite starts a few hundred such interpreters, which on
the two cores of CI was most of its time. So each pytest process starts one base server, which imports the
libraries of ``.venv`` that every release shares (``PRELOAD``: torch and the rest), and forks from it one server per
release, which adds that release's own pinned ones (``RELEASE_PRELOAD``: transformers, huggingface_hub) from its
environment; a check is a child forked from its release's server. No server ever imports sglang, this package or a
stand-in that a check may replace (``sgl_kernel``): each is refused at start.

What a child is, and why it is still the real thing for the checks that use it:
- its own process: nothing of one check reaches another (every child starts from its server's state, which no
  check changes);
- the environment, the working directory and ``sys.path`` a fresh ``python -c`` would have with the same
  environment (``PYTHONPATH`` first, then the standard library and site-packages), ``sys.argv == ["-c"]``, a new
  ``__main__`` (``if __name__ == "__main__"`` guards run, multiprocessing forks from it);
- the package's installed ``.pth`` line, run as ``site`` runs it at start-up (``site.addpackage``), now that the
  check's environment is in place: the bootstrap arms exactly when it would have;
- stdout and stderr into files the caller reads, the exit status as the interpreter's (an uncaught exception
  prints its traceback and exits 1; atexit handlers and non-daemon threads are waited for as at any exit).
What differs, and which checks therefore must not use it (conftest ``run_python(fresh=True)``, the default): the
libraries above are imported before the check's first line. A check about the order of imports at start-up (the
``.pth`` bootstrap, "nothing imported when off", NCCL opened only after torch), about a command that must work
without the engine (it would find torch imported), about what one interpreter start costs, or about state a new
interpreter draws afresh (random ids between launches) needs a fresh interpreter. The plugin itself reads NCCL only
once the first module of the register is imported, which imports torch: for a check that imports the engine, torch
imported earlier changes nothing the plugin decides.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile

#: What the base server imports before it forks the release servers: libraries of ``.venv``, the same for every
#: release (one that fails to import is left out, and then imported by the child as before). The second group is
#: what a check's first ``import sglang.srt.server_args`` or ``io_struct`` still imported from ``.venv`` with only
#: the first group preloaded (``sys.modules`` before and after, 0.5.21: torch's inductor and functorch, which import
#: networkx; IPython, from ``sglang.utils``; gguf, loguru, msgspec, starlette, ...): about 1 s of CPU in every such
#: check (3.0 s -> 1.9 s a check on 0.5.21), for 2 s once in each pytest process.
PRELOAD = ("torch", "torch.distributed", "numpy", "sympy", "openai", "aiohttp", "pydantic", "zmq", "requests",
           "psutil", "triton",
           "functorch.compile", "torch._inductor.compile_fx", "networkx", "IPython", "gguf", "loguru", "msgspec",
           "orjson", "pybase64", "partial_json_parser", "starlette.routing", "starlette.responses",
           "starlette.middleware", "zmq.asyncio", "anyio.abc", "multiprocessing.shared_memory")
#: What a release's server imports from the release's environment (its pinned transformers and huggingface_hub, and
#: what imports them: compressed_tensors, from sglang's quantization modules; the processing and auto modules
#: ``model_config`` reaches). A name a release's transformers lacks is left out.
RELEASE_PRELOAD = ("huggingface_hub", "transformers", "transformers.configuration_utils", "transformers.modeling_utils",
                   "transformers.tokenization_utils_base", "transformers.masking_utils", "fastapi", "uvicorn",
                   "compressed_tensors", "compressed_tensors.quantization", "transformers.processing_utils",
                   "transformers.modeling_layers", "transformers.feature_extraction_utils",
                   "transformers.models.auto.processing_auto", "transformers.models.auto.tokenization_auto",
                   "transformers.models.auto.image_processing_auto")

SERVER_BODY = r'''
def set_path(pythonpath):
    sys.path[:] = [""] + [p for p in pythonpath.split(os.pathsep) if p] + BASE_PATH
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()

def preload(names):
    loaded = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception:
                pass
    forbidden = [m for m in sys.modules if m.split(".")[0] in ("sglang", "sglang_cp_symm", "sgl_kernel")]
    gc.freeze()  # what the server holds stays out of the children's collections (and their copies of its pages)
    return {"ready": loaded, "forbidden": forbidden, "top": sorted({m.split(".")[0] for m in sys.modules})}

def child(sock, request):
    os.setpgid(0, 0)
    sock.close()
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    set_path(request["env"].get("PYTHONPATH", ""))
    sys.argv[:] = ["-c"]
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    for sitedir in site.getsitepackages():
        if os.path.isfile(os.path.join(sitedir, request["pth"])):
            site.addpackage(sitedir, request["pth"], set(sys.path))
    try:
        exec(compile(request["code"], "<string>", "exec"), main.__dict__)
        status = 0
    except SystemExit as exc:  # as the interpreter handles it at the top level
        status = exc.code
        if status is None:
            status = 0
        elif not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    # the interpreter's own exit, less the teardown of every module (which in a fork touches, so copies, every page
    # the server holds): non-daemon threads joined, atexit handlers run, the standard streams flushed
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status & 0xFF)

def serve(sock):
    while True:
        request = receive(sock)
        if request is None:
            return
        while True:  # release servers this one forked and that have ended
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        sys.stdout.flush()
        sys.stderr.flush()
        if request.get("kind") == "server":  # a release's server, forked from this base one, on the socket passed
            _, fds, _, _ = socket.recv_fds(sock, 1, 1)
            pid = os.fork()
            if pid == 0:
                sock.close()
                theirs = socket.socket(fileno=fds[0])
                os.environ.clear()
                os.environ.update(request["env"])
                set_path(request["env"].get("PYTHONPATH", ""))
                send(theirs, preload(request["preload"]))
                serve(theirs)
                os._exit(0)
            os.close(fds[0])
            send(sock, {"pid": pid})
            continue
        pid = os.fork()
        if pid == 0:
            child(sock, request)
        send(sock, {"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        send(sock, {"rc": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime})

OWN_PATH = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
BASE_PATH = [p for p in sys.path[1:] if p not in OWN_PATH]  # sys.path[0] is '' for -c
base = socket.socket(fileno=int(sys.argv[1]))
send(base, preload(json.loads(sys.argv[2])))
serve(base)
'''

def send(sock: socket.socket, obj) -> None:
    """One message: its length (4 bytes, network order), then its JSON."""
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def receive(sock: socket.socket):
    """The next message, or None where the other end has closed."""
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (size,) = struct.unpack("!I", head)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


#: The servers' script: the framing above (one text for both ends), then the body.
SERVER = ("import atexit, gc, importlib, os, site, socket, struct, sys, json, threading, types, builtins, warnings\n\n"
          + inspect.getsource(send) + "\n" + inspect.getsource(receive) + "\n" + SERVER_BODY)

PTH = "sglang_cp_symm_bootstrap.pth"


class ServerFailed(RuntimeError):
    pass


class _Channel:
    """The client's end of one server's socket (length-prefixed JSON)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, obj) -> None:
        send(self.sock, obj)

    def receive(self, timeout: float | None):
        self.sock.settimeout(timeout)
        return receive(self.sock)

    def ready(self, what: str) -> dict:
        ready = self.receive(timeout=300)
        if ready is None:
            raise ServerFailed(f"the {what} did not start")
        if ready["forbidden"]:
            raise ServerFailed(f"the {what}'s preloads imported {ready['forbidden'][:5]}")
        return ready


class BaseServer:
    """The process's base server (``SERVER``): ``.venv``'s libraries of ``PRELOAD``, imported once; each release's
    server is forked from it (``release_server``)."""

    def __init__(self, env: dict, cwd: str):
        ours, theirs = socket.socketpair()
        env = {k: v for k, v in env.items() if not k.startswith("SGLANG_") and k != "NCCL_STUB_VERSION"}
        env["PYTHONPATH"] = ""
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(theirs.fileno()), json.dumps(PRELOAD)], env=env, cwd=cwd,
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        theirs.close()
        self.channel = _Channel(ours)
        self.channel.ready("base fork server")

    def alive(self) -> bool:
        return self.process.poll() is None

    def release_server(self, env: dict) -> "ForkServer":
        ours, theirs = socket.socketpair()
        env = {k: v for k, v in env.items() if k != "SGLANG_CP_SYMM" and not k.startswith("SGLANG_CP_SYMM_")}
        self.channel.send({"kind": "server", "env": env, "preload": RELEASE_PRELOAD})
        socket.send_fds(self.channel.sock, [b"F"], [theirs.fileno()])
        theirs.close()
        if self.channel.receive(timeout=60) is None:
            raise ServerFailed("the base fork server went away")
        return ForkServer(_Channel(ours), env.get("PYTHONPATH", ""))

    def close(self) -> None:
        try:
            self.channel.sock.close()
        finally:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.log.close()


class ForkServer:
    """A release's server, forked from the base server with the release's environment and ``RELEASE_PRELOAD``
    imported from its ``PYTHONPATH``; ``run`` forks a child per call."""

    def __init__(self, channel: _Channel, pythonpath: str):
        self.channel = channel
        ready = channel.ready("release's fork server")
        self.preloaded = ready["ready"]
        self.top_level = set(ready["top"])  # every top-level module the server holds
        self.pythonpath = pythonpath

    def run(self, code: str, env: dict, cwd: str, timeout: float) -> subprocess.CompletedProcess:
        """As ``subprocess.run([python, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout)`` would return, in a forked child (the module docstring says what differs)."""
        self._refuse_shadowed(env)
        with tempfile.TemporaryDirectory(prefix="cp-symm-fork-") as folder:
            out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
            self.channel.send({"code": code, "env": env, "cwd": cwd, "stdout": out, "stderr": err, "pth": PTH})
            started = self.channel.receive(timeout=60)
            if started is None:
                raise ServerFailed("the fork server went away")
            try:
                done = self.channel.receive(timeout=timeout)
            except socket.timeout:
                try:
                    os.killpg(started["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.channel.receive(timeout=60)
                raise subprocess.TimeoutExpired(["python", "-c", code], timeout, output=_read(out),
                                                stderr=_read(err)) from None
            if done is None:
                raise ServerFailed("the fork server went away")
            if os.environ.get("CP_SYMM_FORK_LOG"):  # CPU seconds of each child (and of what it waited for)
                with open(os.environ["CP_SYMM_FORK_LOG"], "a") as log:
                    log.write(json.dumps({"pythonpath": self.pythonpath, "cpu": done["cpu"], "code": code[:300]}) + "\n")
            return subprocess.CompletedProcess(["python", "-c", code], done["rc"], _read(out), _read(err))

    def _refuse_shadowed(self, env: dict) -> None:
        """A path the check puts before the server's that holds a module the server has already imported would be
        ignored in a child (the module is imported); such a check needs a fresh interpreter."""
        ours = set(self.pythonpath.split(os.pathsep))
        for entry in env.get("PYTHONPATH", "").split(os.pathsep):
            if not entry or entry in ours or not os.path.isdir(entry):
                continue
            names = {name.split(".")[0] for name in os.listdir(entry)}
            shadowed = sorted(names & self.top_level)
            if shadowed:
                raise ValueError(f"{entry} holds {shadowed[:3]}, which the fork server has imported already: "
                                 "run this check in a fresh interpreter (run_python(fresh=True))")

    def close(self) -> None:
        self.channel.sock.close()  # the server ends at the end of its socket


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


#: This process's (an xdist worker's) base server, and its release servers by key, the least recently used first.
_BASE: list = []
_SERVERS: dict = {}
KEEP = int(os.environ.get("CP_SYMM_FORK_SERVERS", "2"))


def run(key: str, server_env: dict, code: str, env: dict, cwd: str, timeout: float) -> subprocess.CompletedProcess:
    """``code`` in a child of this process's server for ``key`` (forked, with ``server_env``, the first time)."""
    if _BASE and not _BASE[0].alive():
        _close_all()
    if not _BASE:
        _BASE.append(BaseServer(server_env, cwd))
    server = _SERVERS.pop(key, None)
    if server is None:
        while len(_SERVERS) >= KEEP:
            _SERVERS.pop(next(iter(_SERVERS))).close()
        server = _BASE[0].release_server(server_env)
    _SERVERS[key] = server  # now the most recently used
    return server.run(code, env, cwd, timeout)


@atexit.register
def _close_all() -> None:
    while _SERVERS:
        _SERVERS.popitem()[1].close()
    while _BASE:
        _BASE.pop().close()
