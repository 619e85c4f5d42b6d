import json
import shutil

import pytest

from neocompile import targets
from neocompile.errors import TargetError

SEED_DEVICES = "lambda ml_m4 ml_m5 ml_c4 ml_c5 ml_p2 ml_p3 jetson_tx1 jetson_tx2 jetson_nano rasp3b deeplens rk3399 rk3288 sbe_c".split()


def test_registry_has_one_file_per_seed_device():
    assert sorted(targets.all_targets()) == sorted(SEED_DEVICES)
    assert sorted(p.stem for p in targets.targets_dir().glob("*.json")) == sorted(SEED_DEVICES)


@pytest.mark.parametrize("name", SEED_DEVICES)
def test_every_device_is_consistent(name):
    t = targets.get_target(name)
    assert t.host["kind"] == "llvm" and t.host["mtriple"] == t.triple
    assert (t.target == t.host) == (t.accelerator is None)
    if t.accelerator is not None:
        assert t.target["host"] == t.host and t.target["kind"] == t.accelerator["kind"]
    if t.arch == "armv7":
        assert t.host.get("mfloat-abi") == "hard" and t.float_abi == "hard"  # VFP argument mismatch otherwise
    assert t.toolchain["zig_target"] and t.toolchain["baseline_cpu"] and t.emulator["command"].startswith("qemu-")
    # The reference OS and its floors are data: glibc x.y, GLIBCXX 3.4.z.
    assert t.os["reference"] and t.glibc_floor.startswith("2.") and t.glibcxx_floor.startswith("3.4.")


@pytest.mark.parametrize("name", SEED_DEVICES)
def test_every_device_target_is_accepted_by_tvm(name):
    t = targets.get_target(name).tvm_target()
    assert t.kind.name in ("llvm", "cuda", "opencl")


def test_armv7_devices_do_not_share_an_armv8_cpu():
    # A cortex-a53 tuned armv7 build SIGILLs on ARMv7 cores (rk3288).
    assert targets.get_target("rk3288").cpu["mcpu"] == "cortex-a17"


def test_lookup_is_case_insensitive():
    assert targets.get_target("ML_C5").name == "ml_c5"


def test_unknown_device_names_the_value_and_the_choices():
    with pytest.raises(TargetError, match=r"TargetDevice: 'ml_c99' is not a supported target device. Expected one of: .*ml_c5"):
        targets.get_target("ml_c99")


def test_compiler_options_override_mcpu_mattr_and_gpu_code():
    t = targets.get_target("jetson_nano")
    d = t.target_dict({"mcpu": "cortex-a72", "mattr": ["+neon", "+crc"], "gpu-code": "sm_72"})
    assert d["arch"] == "sm_72" and d["host"]["mcpu"] == "cortex-a72" and d["host"]["mattr"] == ["+neon", "+crc"]


@pytest.mark.parametrize(
    "platform,template,label",
    [
        ({"Os": "LINUX", "Arch": "X86_64"}, "lambda", "LINUX_X86_64"),
        ({"Os": "LINUX", "Arch": "ARM64"}, "rk3399", "LINUX_ARM64"),
        ({"Os": "LINUX", "Arch": "ARM_EABIHF"}, "rk3288", "LINUX_ARM_EABIHF"),
        ({"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}, "jetson_nano", "LINUX_ARM64_NVIDIA"),
        ({"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"}, "ml_p3", "LINUX_X86_64_NVIDIA"),
    ],
)
def test_target_platform_resolves_through_the_registry(platform, template, label):
    t = targets.resolve_platform(platform)
    assert t.name == label and t.target == targets.get_target(template).target


@pytest.mark.parametrize(
    "platform,match",
    [
        ({"Os": "WINDOWS", "Arch": "X86_64"}, "Os: 'WINDOWS' is not valid; expected one of LINUX, ANDROID"),
        ({"Os": "LINUX", "Arch": "MIPS"}, "Arch: 'MIPS' is not valid"),
        ({"Os": "LINUX", "Arch": "ARM64", "Accelerator": "TPU"}, "Accelerator: 'TPU' is not valid"),
        ({"Os": "ANDROID", "Arch": "ARM64"}, "no registered device provides ANDROID_ARM64"),
        ({"Os": "LINUX", "Arch": "ARM64", "Color": "red"}, "unknown fields \\['Color'\\]"),
    ],
)
def test_bad_target_platform_is_named(platform, match):
    with pytest.raises(TargetError, match=match):
        targets.resolve_platform(platform)


def test_a_new_device_is_just_a_data_file(tmp_path, monkeypatch):
    for p in targets.targets_dir().glob("*.json"):
        shutil.copy(p, tmp_path)
    data = json.loads((tmp_path / "rk3399.json").read_text())
    data.update(name="rasp4b64", description="Raspberry Pi 4 (64-bit OS)")
    (tmp_path / "rasp4b64.json").write_text(json.dumps(data))
    monkeypatch.setenv("NEOCOMPILE_TARGETS_DIR", str(tmp_path))
    assert targets.get_target("rasp4b64").triple == "aarch64-linux-gnu"


def test_a_file_whose_name_disagrees_is_refused(tmp_path, monkeypatch):
    (tmp_path / "dev.json").write_text(json.dumps({"name": "other"}))
    monkeypatch.setenv("NEOCOMPILE_TARGETS_DIR", str(tmp_path))
    with pytest.raises(TargetError, match="lacks fields|declares name"):
        targets.all_targets()
