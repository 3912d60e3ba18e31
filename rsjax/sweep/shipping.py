"""What a remote machine installs to run rsjax: this checkout's wheel and its lock file.

A TPU VM gets exactly the environment the tests passed in: `pip install -r LOCK
'jax[tpu]==<locked jax>' ./WHEEL[train]` (the lock is CPU's, `jax[tpu]` at the same jax version
adds libtpu). The wheel is built from the source checkout rsjax runs from, unless one is given.
"""

import dataclasses
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

from rsjax.errors import UsageError

LOCK_IN_CHECKOUT = pathlib.Path("requirements") / "lock.txt"


@dataclasses.dataclass(frozen=True)
class Payload:
    """The files shipped to each worker, and the pip command that installs them there."""

    wheel: pathlib.Path
    lock: pathlib.Path

    @property
    def files(self) -> list[str]:
        return [str(self.wheel), str(self.lock)]

    def install_command(self, extra: str = "train") -> str:
        """The setup command, run in the home directory the files were copied to."""
        jax_version = locked_version(self.lock, "jax")
        return shlex.join(
            [
                "pip", "install", "-r", self.lock.name, f"jax[tpu]=={jax_version}",
                f"./{self.wheel.name}[{extra}]",
            ]
        )  # fmt: skip


def checkout() -> pathlib.Path | None:
    """The source tree this rsjax is imported from (it has pyproject.toml and the lock), if any."""
    root = pathlib.Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / LOCK_IN_CHECKOUT).is_file():
        return root
    return None


def locked_version(lock: pathlib.Path, name: str) -> str:
    """The version `lock` pins `name` to; UsageError if it pins none."""
    pattern = re.compile(rf"{re.escape(name)}==(\S+)", re.IGNORECASE)
    for line in lock.read_text().splitlines():
        if match := pattern.fullmatch(line.strip()):
            return match[1]
    raise UsageError(f"{lock} pins no {name} version")


def build_wheel(source: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """`pip wheel --no-deps` of `source` into `out_dir`; the wheel's path."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), str(source)],
        capture_output=True,
        text=True,
    )
    wheels = sorted(out_dir.glob("rsjax-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise UsageError(f"could not build the rsjax wheel from {source}: {last}")
    return wheels[-1]


def payload(wheel: str | None = None, lock: str | None = None) -> Payload:
    """The given wheel and lock, or this checkout's (the wheel built into a temporary directory).
    UsageError, before anything is launched, when a file is missing or there is no checkout."""
    source = checkout()
    if lock is None:
        if source is None:
            raise UsageError("rsjax is not running from a source checkout: pass --lock FILE")
        lock_path = source / LOCK_IN_CHECKOUT
    else:
        lock_path = pathlib.Path(lock)
    if not lock_path.is_file():
        raise UsageError(f"lock file {lock_path} does not exist")
    locked_version(lock_path, "jax")
    if wheel is None:
        if source is None:
            raise UsageError("rsjax is not running from a source checkout: pass --wheel FILE")
        wheel_path = build_wheel(source, pathlib.Path(tempfile.mkdtemp(prefix="rsjax-wheel-")))
    else:
        wheel_path = pathlib.Path(wheel)
        if not (wheel_path.is_file() and wheel_path.suffix == ".whl"):
            raise UsageError(f"--wheel {wheel} is not a wheel file")
    return Payload(wheel=wheel_path, lock=lock_path)
