"""The target registry: one JSON data file per TargetDevice in ``targets/``.

Code never branches on device names; everything a device needs (TVM target, host target, cross
toolchain, emulator, accelerator) is read from its data file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import TargetError

OS_VALUES = ("LINUX", "ANDROID")
ARCH_VALUES = ("X86_64", "X86", "ARM64", "ARM_EABI", "ARM_EABIHF")
ACCELERATOR_VALUES = ("INTEL_GRAPHICS", "MALI", "NVIDIA", "NNA")


def targets_dir() -> Path:
    """Where the device data files live: $NEOCOMPILE_TARGETS_DIR, the source tree, or the installed share dir."""
    env = os.environ.get("NEOCOMPILE_TARGETS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent / "targets"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "neocompile" / "targets"


@dataclasses.dataclass(frozen=True)
class Target:
    """One compilation target: a TargetDevice from the registry, or a resolved TargetPlatform."""

    name: str
    description: str
    platform: dict[str, Any]
    #: The device's reference OS and its floors: {"reference", "glibc", "glibcxx", "test_image"}.
    os: dict[str, Any]
    device_type: str  # cpu | gpu | opencl, as in DLR's compiled.meta
    triple: str
    arch: str  # x86_64 | aarch64 | armv7: the runtime architecture
    float_abi: str | None
    #: zig target and baseline CPU for the runtime, the runner and the model library's link (device/toolchain.py).
    toolchain: dict[str, Any]
    emulator: dict[str, Any]
    cpu: dict[str, Any]
    target: dict[str, Any]
    host: dict[str, Any]
    accelerator: dict[str, Any] | None
    notes: str = ""
    #: The device a TargetPlatform with the same Os/Arch/Accelerator compiles like.
    platform_default: bool = False

    def tvm_target(self, options: dict[str, Any] | None = None):
        """The ``tvm.target.Target`` for this device, with CompilerOptions (mcpu, mattr, gpu-code) applied."""
        import tvm  # heavy; only when compiling

        return tvm.target.Target(self.target_dict(options))

    def target_dict(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """The TVM target in dict form, with CompilerOptions applied."""
        options = options or {}
        host = dict(self.host)
        if "mcpu" in options:
            host["mcpu"] = options["mcpu"]
        if "mattr" in options:
            host["mattr"] = list(options["mattr"])
        if self.accelerator is None:
            return host
        accel = {k: v for k, v in self.target.items() if k != "host"}
        gpu_code = options.get("gpu-code")
        if gpu_code and accel.get("kind") == "cuda":
            accel["arch"] = gpu_code
        accel["host"] = host
        return accel

    @property
    def glibc_floor(self) -> str:
        """The oldest glibc the device's reference OS has, e.g. ``"2.28"``: no file in its package may need more."""
        return str(self.os["glibc"])

    @property
    def glibcxx_floor(self) -> str:
        """The newest GLIBCXX version the device's libstdc++ provides, e.g. ``"3.4.25"``."""
        return str(self.os["glibcxx"])

    @property
    def zig_triple(self) -> str:
        """What zig builds this device's code for: its target with the glibc floor, e.g. ``arm-linux-gnueabihf.2.28``."""
        return f"{self.toolchain['zig_target']}.{self.glibc_floor}"

    def host_is_native(self) -> bool:
        """Whether code for this target's host CPU can run on this machine without emulation."""
        from .device.tvm_runtime import host_arch

        if host_arch() != self.arch:
            return False
        wanted = self.cpu.get("host_features") or []
        return set(wanted) <= cpu_flags()

    def summary(self) -> dict[str, Any]:
        """A flat row for `neocompile targets` and the package manifest."""
        return {
            "TargetDevice": self.name,
            "Os": self.platform.get("Os"),
            "Arch": self.platform.get("Arch"),
            "Accelerator": self.platform.get("Accelerator"),
            "DeviceType": self.device_type,
            "Triple": self.triple,
            "Mcpu": self.cpu.get("mcpu"),
            "FloatAbi": self.float_abi,
            "ReferenceOS": self.os.get("reference"),
            "MinGlibc": self.glibc_floor,
            "MinGlibcxx": self.glibcxx_floor,
            "Toolchain": f"zig {self.zig_triple}",
        }


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags as /proc/cpuinfo names them (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


_REQUIRED = {f.name for f in dataclasses.fields(Target) if f.default is dataclasses.MISSING}


def _load(path: Path) -> Target:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TargetError(f"Target registry file {path} is unreadable: {exc}") from exc
    missing = _REQUIRED - data.keys()
    if missing:
        raise TargetError(f"Target registry file {path} lacks fields {sorted(missing)}")
    if data["name"] != path.stem:
        raise TargetError(f"Target registry file {path} declares name {data['name']!r}; expected {path.stem!r}")
    for field, keys in (("os", ("reference", "glibc", "glibcxx")), ("toolchain", ("zig_target", "baseline_cpu"))):
        value = data[field]
        if not isinstance(value, dict) or any(not value.get(k) for k in keys):
            raise TargetError(f"Target registry file {path}: '{field}' must be an object with {', '.join(keys)}; got {value!r}")
    cpu = data.get("cpu")
    # The CPU kernels are shaped by these (neocompile/cpu): vector width in bits and vector register count.
    if not isinstance(cpu, dict) or any(not isinstance(cpu.get(k), int) or cpu[k] <= 0 for k in ("vector_bits", "vector_registers")):
        raise TargetError(f"Target registry file {path}: 'cpu' must give positive integers vector_bits and vector_registers; got {cpu!r}")
    known = {f.name for f in dataclasses.fields(Target)}
    return Target(**{k: v for k, v in data.items() if k in known})


@lru_cache(maxsize=None)
def _registry(directory: str) -> dict[str, Target]:
    root = Path(directory)
    if not root.is_dir():
        raise TargetError(f"Target registry folder {root} does not exist (set NEOCOMPILE_TARGETS_DIR)")
    return {p.stem: _load(p) for p in sorted(root.glob("*.json"))}


def all_targets() -> dict[str, Target]:
    """Every registered TargetDevice, by name."""
    return dict(_registry(str(targets_dir())))


def get_target(name: str) -> Target:
    """Look a TargetDevice up by name (case-insensitive, as the API enum is lower-case)."""
    registry = all_targets()
    target = registry.get(name) or registry.get(str(name).lower())
    if target is None:
        raise TargetError(
            f"OutputConfig.TargetDevice: '{name}' is not a supported target device. "
            f"Expected one of: {', '.join(sorted(registry))}"
        )
    return target


def resolve_platform(platform: dict[str, Any]) -> Target:
    """Resolve a TargetPlatform {Os, Arch, Accelerator} through the registry.

    The first registry device (in name order) whose platform matches is taken as the template; the
    package is named ``OS_ARCH[_ACCEL]`` as Neo does.
    """
    if not isinstance(platform, dict):
        raise TargetError(f"OutputConfig.TargetPlatform: expected a structure with Os and Arch, got {platform!r}")
    unknown = set(platform) - {"Os", "Arch", "Accelerator"}
    if unknown:
        raise TargetError(f"OutputConfig.TargetPlatform: unknown fields {sorted(unknown)}; expected Os, Arch, Accelerator")
    os_, arch, accel = platform.get("Os"), platform.get("Arch"), platform.get("Accelerator")
    if os_ not in OS_VALUES:
        raise TargetError(f"OutputConfig.TargetPlatform.Os: '{os_}' is not valid; expected one of {', '.join(OS_VALUES)}")
    if arch not in ARCH_VALUES:
        raise TargetError(f"OutputConfig.TargetPlatform.Arch: '{arch}' is not valid; expected one of {', '.join(ARCH_VALUES)}")
    if accel is not None and accel not in ACCELERATOR_VALUES:
        raise TargetError(
            f"OutputConfig.TargetPlatform.Accelerator: '{accel}' is not valid; expected one of {', '.join(ACCELERATOR_VALUES)}"
        )
    label = "_".join(p for p in (os_, arch, accel) if p)
    registry = all_targets()
    same_arch = [t for t in registry.values() if (t.platform.get("Os"), t.platform.get("Arch")) == (os_, arch)]
    # A CPU-only platform may borrow a device whose accelerator TVM does not target (Mali boards).
    matches = [t for t in same_arch if t.platform.get("Accelerator") == accel or (accel is None and t.accelerator is None)]
    if not matches:
        supported = sorted({"_".join(p for p in (t.platform["Os"], t.platform["Arch"], t.platform.get("Accelerator")) if p) for t in registry.values()})
        raise TargetError(f"OutputConfig.TargetPlatform: no registered device provides {label}. Supported platforms: {', '.join(supported)}")
    template = sorted(matches, key=lambda t: (not t.platform_default, t.name))[0]
    return dataclasses.replace(
        template,
        name=label,
        description=f"TargetPlatform {label} (compiled like registry device {template.name})",
        platform={"Os": os_, "Arch": arch, "Accelerator": accel},
    )
