import gzip
import io
import tarfile

import pytest

from neocompile import archive
from neocompile.archive import ArchiveLimits
from neocompile.errors import InputConfigurationError
from tests.models import small_onnx_archive, tar_with


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def test_extracts_a_plain_model_archive(tmp_path):
    arc = small_onnx_archive(tmp_path)
    root = archive.extract(arc, tmp_path / "x")
    assert (root / "model.onnx").stat().st_size > 1000


def test_refuses_a_file_that_is_not_gzip(tmp_path):
    bad = tmp_path / "model.tar.gz"
    bad.write_text("just text")
    with pytest.raises(InputConfigurationError, match="Unable to untar input model.*not gzip-compressed"):
        archive.extract(bad, tmp_path / "x")


def test_refuses_an_uncompressed_tar(tmp_path):
    plain = tar_with(tmp_path / "model.tar.gz", [_file("model.onnx")], {"model.onnx": b"x"}, mode="w")
    with pytest.raises(InputConfigurationError, match="not gzip-compressed; expected a .tar.gz"):
        archive.extract(plain, tmp_path / "x")


def test_refuses_gzip_that_is_not_a_tar(tmp_path):
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(gzip.compress(b"not a tar at all" * 100))
    with pytest.raises(InputConfigurationError, match="Unable to untar input model"):
        archive.extract(bad, tmp_path / "x")


@pytest.mark.parametrize("name", ["../evil.onnx", "a/../../evil.onnx", "/etc/evil.onnx"])
def test_refuses_paths_escaping_the_archive(tmp_path, name):
    arc = tar_with(tmp_path / "m.tar.gz", [_file(name)], {name: b"x"})
    with pytest.raises(InputConfigurationError, match="absolute path|contains '..'"):
        archive.extract(arc, tmp_path / "x")
    assert not (tmp_path / "evil.onnx").exists()


def test_refuses_a_symlink_pointing_outside(tmp_path):
    link = _file("model.onnx")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
    arc = tar_with(tmp_path / "m.tar.gz", [link])
    with pytest.raises(InputConfigurationError, match="links to '../../../etc/passwd', outside the archive"):
        archive.extract(arc, tmp_path / "x")


def test_refuses_an_absolute_hardlink(tmp_path):
    link = _file("model.onnx")
    link.type, link.linkname = tarfile.LNKTYPE, "/etc/passwd"
    arc = tar_with(tmp_path / "m.tar.gz", [link])
    with pytest.raises(InputConfigurationError, match="outside the archive"):
        archive.extract(arc, tmp_path / "x")


def test_accepts_a_symlink_inside_the_archive(tmp_path):
    link = _file("alias.onnx")
    link.type, link.linkname = tarfile.SYMTYPE, "model.onnx"
    arc = tar_with(tmp_path / "m.tar.gz", [_file("model.onnx"), link], {"model.onnx": b"onnx"})
    root = archive.extract(arc, tmp_path / "x")
    assert (root / "alias.onnx").read_bytes() == b"onnx"


def test_refuses_device_files(tmp_path):
    dev = _file("dev.onnx")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    arc = tar_with(tmp_path / "m.tar.gz", [dev])
    with pytest.raises(InputConfigurationError, match="device or FIFO"):
        archive.extract(arc, tmp_path / "x")


def test_refuses_a_tar_bomb_by_size_before_writing_it(tmp_path):
    # 64 MiB of zeros compresses to ~64 KiB; the limit is 1 MiB.
    arc = tmp_path / "bomb.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        info = _file("model.onnx")
        info.size = 64 * 1024 * 1024
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert arc.stat().st_size < 1024 * 1024
    with pytest.raises(InputConfigurationError, match="unpacks to more than 1048576 bytes"):
        archive.extract(arc, tmp_path / "x", ArchiveLimits(max_unpacked_bytes=1024 * 1024))
    assert not (tmp_path / "x" / "model.onnx").exists()


def test_refuses_too_many_members(tmp_path):
    arc = tar_with(tmp_path / "m.tar.gz", [_file(f"f{i}.txt") for i in range(20)], {f"f{i}.txt": b"" for i in range(20)})
    with pytest.raises(InputConfigurationError, match="more than 10 members"):
        archive.extract(arc, tmp_path / "x", ArchiveLimits(max_members=10))


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("NEOCOMPILE_MAX_MEMBERS", "7")
    assert ArchiveLimits.from_env().max_members == 7


def test_find_exactly_one_ignores_hidden_files(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / ".model.onnx").write_bytes(b"x")
    (tmp_path / "._model.onnx").write_bytes(b"x")  # macOS resource forks
    assert archive.find_exactly_one(tmp_path, (".onnx",), "ONNX").name == "model.onnx"


def test_find_exactly_one_reports_none_found(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(InputConfigurationError, match=r"InputConfiguration: Exactly one .onnx file is allowed for ONNX models. Found 0: none"):
        archive.find_exactly_one(tmp_path, (".onnx",), "ONNX")


def test_find_exactly_one_reports_two_found_by_name(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.onnx").write_bytes(b"x")
    with pytest.raises(InputConfigurationError, match=r"Found 2: a.onnx, sub/b.onnx"):
        archive.find_exactly_one(tmp_path, (".onnx",), "ONNX")


def test_extraction_without_tarfile_filters_still_drops_setuid_and_keeps_links(tmp_path, monkeypatch):
    # Debian 12's Python 3.11.2 has no tarfile extraction filters: the hand-written path must be as safe.
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    exe = _file("bin/tool")
    exe.mode = 0o4755  # setuid
    folder = _file("bin")
    folder.type = tarfile.DIRTYPE
    link = _file("alias")
    link.type, link.linkname = tarfile.SYMTYPE, "bin/tool"
    hard = _file("copy")
    hard.type, hard.linkname = tarfile.LNKTYPE, "bin/tool"
    arc = tar_with(tmp_path / "m.tar.gz", [folder, exe, link, hard], {"bin/tool": b"#!/bin/sh\n"})
    root = archive.extract(arc, tmp_path / "x")
    assert (root / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert not (root / "bin" / "tool").stat().st_mode & 0o4000
    assert (root / "alias").is_symlink() and (root / "copy").read_bytes() == b"#!/bin/sh\n"
