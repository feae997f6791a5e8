"""Where the local Triton lives inside its own virtualenv (`make triton-env`: `.venv-triton/`).

The nvidia-pytriton wheel ships a CPU `tritonserver` (2.51, python backend only)
under `site-packages/pytriton/tritonserver/`:

```
bin/tritonserver
backends/python/libtriton_python.so
python_backend_stubs/<3.X>/triton_python_backend_stub
```

The python backend looks for its stub at `backends/python/triton_python_backend_stub`,
where the wheel has none (pytriton copies it there at run time, into a temporary
copy of the whole tree). `install_stub` does that copy once, at install time, for
the virtualenv's own Python version; the stub's RPATH points four levels up to
`nvidia_pytriton.libs`, which is the same from both directories.

The Makefile runs this module with the Triton virtualenv's Python
(`python -m local_triton.environment .venv-triton`), where kbrec's own
dependencies are not installed: standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_ENV: Final = Path(".venv-triton")
STUB_NAME: Final = "triton_python_backend_stub"
INSTALL_HINT: Final = "run `make triton-env`"


class TritonEnvError(Exception):
    """The Triton virtualenv is missing or incomplete; the message says how to fix it."""


@dataclass(frozen=True)
class TritonEnvironment:
    venv: Path
    root: Path  # site-packages/pytriton/tritonserver
    python_version: str  # "3.11": picks the backend stub

    @classmethod
    def locate(cls, venv: Path = DEFAULT_ENV) -> TritonEnvironment:
        """Find pytriton's tritonserver tree in `venv` (does not check the stub: see `check`)."""
        venv = venv.absolute()
        roots = sorted(venv.glob("lib/python3.*/site-packages/pytriton/tritonserver"))
        if not roots:
            raise TritonEnvError(f"no nvidia-pytriton in {venv}: {INSTALL_HINT}")
        if len(roots) > 1:
            raise TritonEnvError(f"{venv} has pytriton for several Pythons: {roots}")
        root = roots[0]
        python_version = root.parents[2].name.removeprefix("python")
        return cls(venv=venv, root=root, python_version=python_version)

    @property
    def bin_dir(self) -> Path:
        """First on the server's PATH: the stub embeds `python3` from there (numpy<2, ORT)."""
        return self.venv / "bin"

    @property
    def tritonserver(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backend_directory(self) -> Path:
        return self.root / "backends"

    @property
    def stub(self) -> Path:
        return self.backend_directory / "python" / STUB_NAME

    @property
    def bundled_stub(self) -> Path:
        return self.root / "python_backend_stubs" / self.python_version / STUB_NAME

    def check(self) -> None:
        """Everything a launch needs is in place, or TritonEnvError says what is not."""
        for path in (self.tritonserver, self.stub):
            if not os.access(path, os.X_OK):
                raise TritonEnvError(f"{path} is missing or not executable: {INSTALL_HINT}")
        if not (self.bin_dir / "python3").exists():
            raise TritonEnvError(f"{self.bin_dir / 'python3'} is missing: {INSTALL_HINT}")


def install_stub(environment: TritonEnvironment) -> Path:
    """Copy the stub of the virtualenv's Python into `backends/python/` (atomically)."""
    source = environment.bundled_stub
    if not source.is_file():
        raise TritonEnvError(
            f"nvidia-pytriton has no backend stub for Python {environment.python_version} "
            f"({source})"
        )
    target = environment.stub
    partial = target.with_name(f".{target.name}.partial")
    shutil.copy2(source, partial)
    partial.chmod(0o755)
    os.replace(partial, target)  # a launch never sees half a binary
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Put the python-backend stub in place.")
    parser.add_argument("venv", type=Path, nargs="?", default=DEFAULT_ENV)
    args = parser.parse_args(argv)
    try:
        environment = TritonEnvironment.locate(args.venv)
        stub = install_stub(environment)
        environment.check()
    except TritonEnvError as exc:
        print(f"triton-env: error: {exc}", file=sys.stderr)
        return 2
    print(f"triton-env: {environment.tritonserver}, stub for Python {environment.python_version}")
    print(f"triton-env: stub at {stub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
