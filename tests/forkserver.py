"""A fork server per release: checks that need the release's modules run in processes forked from an interpreter
that has already imported the heavy third-party libraries, instead of in interpreters started from nothing.

Why: a fresh interpreter that imports one of sglang's engine modules spends about 7 s of CPU in imports, and about
six of them in third-party libraries (torch alone about 2.3 s, transformers 1.3 s, openai, huggingface_hub, sympy:
``python -X importtime``), sglang's own modules under one. The suite starts a few hundred such interpreters, which on
the two cores of CI was most of its time. A server per release imports those libraries once (``PRELOAD``, never
sglang, never this package, never a stand-in of tests/stubs), then forks one child per check.

What a child is, and why it is still the real thing for the checks that use it:
- its own process: nothing of one check reaches another (the server itself never imports sglang or the package,
  and every child starts from that same state);
- the environment, the working directory and ``sys.path`` a fresh ``python -c`` would have with the same
  environment (``PYTHONPATH`` first, then the standard library and site-packages), ``sys.argv == ["-c"]``, a new
  ``__main__`` (``if __name__ == "__main__"`` guards run, multiprocessing forks from it);
- the package's installed ``.pth`` line, run as ``site`` runs it at start-up (``site.addpackage``), now that the
  check's environment is in place: the bootstrap arms exactly when it would have;
- stdout and stderr into files the caller reads, the exit status as the interpreter's (an uncaught exception
  prints its traceback and exits 1; atexit handlers and non-daemon threads are waited for as at any exit).
What differs, and which checks therefore must not use it (conftest ``run_python(fresh=True)``, the default): the
libraries of ``PRELOAD`` are imported before the check's first line. A check about the order of imports at start-up
(the ``.pth`` bootstrap, "nothing imported when off", NCCL opened only after torch), about what one interpreter start
costs, or about state a new interpreter draws afresh (random ids between launches: numpy and torch generators are
inherited by a fork) needs a fresh interpreter.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile

#: Third-party modules the server imports before it forks (each is imported by every release's engine modules;
#: one that fails to import is left out, and then imported by the child as before).
PRELOAD = ("torch", "torch.distributed", "numpy", "sympy", "transformers", "transformers.configuration_utils",
           "transformers.modeling_utils", "transformers.tokenization_utils_base", "transformers.masking_utils",
           "huggingface_hub", "openai", "aiohttp", "pydantic", "fastapi", "uvicorn", "zmq", "requests", "psutil",
           "triton")

SERVER = r'''
import atexit, gc, importlib, os, site, socket, struct, sys, json, threading, types, builtins, signal
sock = socket.socket(fileno=int(sys.argv[1]))

def send(obj):
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)

def receive():
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

import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    loaded = []
    for name in json.loads(sys.argv[2]):
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:
            pass
FORBIDDEN = [m for m in sys.modules if m.split(".")[0] in ("sglang", "sglang_cp_symm", "sgl_kernel")]
OWN_PATH = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
BASE_PATH = [p for p in sys.path[1:] if p not in OWN_PATH]  # sys.path[0] is '' for -c
gc.freeze()  # what the server holds stays out of the children's collections (and their copies of its pages)
send({"ready": loaded, "forbidden": FORBIDDEN, "top": sorted({m.split(".")[0] for m in sys.modules})})

def child(request):
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
    pythonpath = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [""] + pythonpath + BASE_PATH
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
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

while True:
    request = receive()
    if request is None:
        break
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child(request)
    send({"pid": pid})
    _, status, usage = os.wait4(pid, 0)
    send({"rc": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime})
'''

PTH = "sglang_cp_symm_bootstrap.pth"


class ServerFailed(RuntimeError):
    pass


class ForkServer:
    """One server process (``SERVER``), started with ``env`` (that of a fresh interpreter of the release, with the
    plugin's switches unset); ``run`` forks a child per call."""

    def __init__(self, env: dict, cwd: str):
        ours, theirs = socket.socketpair()
        env = {k: v for k, v in env.items() if k != "SGLANG_CP_SYMM" and not k.startswith("SGLANG_CP_SYMM_")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(theirs.fileno()), json.dumps(PRELOAD)], env=env, cwd=cwd,
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        theirs.close()
        self.sock = ours
        ready = self._receive(timeout=300)
        if ready is None:
            raise ServerFailed(f"the fork server did not start: {self.process.stderr.read().decode()[-3000:]}")
        if ready["forbidden"]:
            self.close()
            raise ServerFailed(f"the fork server's preloads imported {ready['forbidden'][:5]}")
        self.preloaded = ready["ready"]
        self.top_level = set(ready["top"])  # every top-level module the server holds
        self.pythonpath = env.get("PYTHONPATH", "")

    def _send(self, obj) -> None:
        data = json.dumps(obj).encode()
        self.sock.sendall(struct.pack("!I", len(data)) + data)

    def _receive(self, timeout: float | None):
        self.sock.settimeout(timeout)
        head = b""
        while len(head) < 4:
            chunk = self.sock.recv(4 - len(head))
            if not chunk:
                return None
            head += chunk
        (size,) = struct.unpack("!I", head)
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return json.loads(data)

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, code: str, env: dict, cwd: str, timeout: float) -> subprocess.CompletedProcess:
        """As ``subprocess.run([python, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout)`` would return, in a forked child (the module docstring says what differs)."""
        self._refuse_shadowed(env)
        with tempfile.TemporaryDirectory(prefix="cp-symm-fork-") as folder:
            out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
            self._send({"code": code, "env": env, "cwd": cwd, "stdout": out, "stderr": err, "pth": PTH})
            started = self._receive(timeout=60)
            if started is None:
                raise ServerFailed("the fork server went away")
            try:
                done = self._receive(timeout=timeout)
            except socket.timeout:
                try:
                    os.killpg(started["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._receive(timeout=60)
                raise subprocess.TimeoutExpired(["python", "-c", code], timeout, output=_read(out),
                                                stderr=_read(err)) from None
            if done is None:
                raise ServerFailed("the fork server went away")
            if os.environ.get("CP_SYMM_FORK_LOG"):  # CPU seconds of each child (its own, not its children's)
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
        try:
            self.sock.close()
        finally:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


#: The servers of this process (an xdist worker), by key; the least recently used goes when a new one comes.
_SERVERS: dict = {}
KEEP = int(os.environ.get("CP_SYMM_FORK_SERVERS", "2"))


def run(key: str, server_env: dict, code: str, env: dict, cwd: str, timeout: float) -> subprocess.CompletedProcess:
    """``code`` in a child of this process's server for ``key`` (started with ``server_env`` the first time)."""
    server = _SERVERS.pop(key, None)
    if server is not None and not server.alive():
        server.close()
        server = None
    if server is None:
        while len(_SERVERS) >= KEEP:
            _SERVERS.pop(next(iter(_SERVERS))).close()
        server = ForkServer(server_env, cwd)
    _SERVERS[key] = server  # now the most recently used
    return server.run(code, env, cwd, timeout)


@atexit.register
def _close_all() -> None:
    while _SERVERS:
        _SERVERS.popitem()[1].close()
