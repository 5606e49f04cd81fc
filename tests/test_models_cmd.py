"""`smearscope models install|list|rollback`: verified, versioned installs with an atomic switch, and
a broken bundle never replaces the working one."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from make_tiny_bundle import sign_test

from device.cli import main
from device.errors import BundleError
from device.models import modelstore
from device.models.bundle import load_bundle, sha256_file
from device.models.ensemble import Ensemble

NAME = "tiny-mobilenetv2-int8"


def _edit_manifest(bundle: Path, **changes) -> None:
    """Edit the manifest and re-sign with the test key: these tests are about what lies past the
    signature (tests/test_signing.py is about the signature)."""
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))
    sign_test(bundle)


def _variant(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    _edit_manifest(dst, **changes)
    return dst


def _active(root: Path, name: str = NAME) -> str:
    return Path(os.readlink(root / name)).name


def _quiet(msg: str) -> None:
    pass


@pytest.fixture
def installed(tiny_bundle: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    modelstore.install(tiny_bundle, root, log=_quiet)
    return root


def test_install_makes_a_versioned_active_link(installed: Path, tiny_bundle: Path) -> None:
    link = installed / NAME
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # relative: survives a move
    bundle = load_bundle(link)
    assert bundle.manifest.sha256 == sha256_file(tiny_bundle / "model.tflite")
    assert modelstore.ModelStore(installed).history(NAME) == [_active(installed)]
    # the daemon's default discovery (device.paths) sees exactly the active bundle
    ens = Ensemble.from_dirs([str(p) for p in sorted(installed.iterdir()) if (p / "manifest.json").is_file()])
    assert ens.names == [NAME]


def test_install_same_bundle_twice_changes_nothing(installed: Path, tiny_bundle: Path) -> None:
    before = _active(installed)
    result = modelstore.install(tiny_bundle, installed, log=_quiet)
    assert result["changed"] is False
    assert _active(installed) == before
    assert len(list((installed / ".versions" / NAME).iterdir())) == 2  # one version + its history file


def test_new_version_keeps_previous_and_rollback_returns(installed: Path, tiny_bundle: Path, tmp_path: Path):
    v1 = _active(installed)
    v2_src = _variant(tiny_bundle, tmp_path / "v2", temperature=1.5)  # a recalibrated bundle
    result = modelstore.install(v2_src, installed, log=_quiet)
    v2 = _active(installed)
    assert result["changed"] and result["previous"] == v1 and v2 != v1
    assert load_bundle(installed / NAME).manifest.temperature == 1.5
    assert (installed / ".versions" / NAME / v1).is_dir()  # kept for rollback

    back = modelstore.rollback(NAME, installed)
    assert back == {"name": NAME, "version": v1, "previous": v2}
    assert _active(installed) == v1
    assert load_bundle(installed / NAME).manifest.temperature == 1.0
    with pytest.raises(Exception, match="no earlier version"):
        modelstore.rollback(NAME, installed)


def test_keep_prunes_old_versions(installed: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    for i, t in enumerate((1.1, 1.2, 1.3)):
        modelstore.install(
            _variant(tiny_bundle, tmp_path / f"v{i}", temperature=t), installed, keep=2, log=_quiet
        )
    versions = [p for p in (installed / ".versions" / NAME).iterdir() if p.is_dir()]
    assert len(versions) == 2
    assert _active(installed) in {p.name for p in versions}


def _corrupt_tflite(src: Path, dst: Path) -> Path:
    """Model file damaged, manifest hash updated to match: only loading it can tell."""
    shutil.copytree(src, dst)
    model = dst / "model.tflite"
    data = bytearray(model.read_bytes())
    model.write_bytes(bytes(data[: len(data) // 3]))
    _edit_manifest(dst, sha256=sha256_file(model))
    return dst


def _wrong_label_count(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / "manifest.json").read_text())
    data["labels"] = data["labels"][:3]
    (dst / "manifest.json").write_text(json.dumps(data))
    return sign_test(dst)


def _bad_hash(src: Path, dst: Path) -> Path:
    return _variant(src, dst, sha256="0" * 64)


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_bad_hash, "sha256"),
        (_wrong_label_count, "3 labels"),
        (_corrupt_tflite, "cannot load"),
    ],
)
def test_broken_bundle_is_refused_and_previous_stays_active(
    installed: Path, tiny_bundle: Path, tmp_path: Path, breaker, message: str
) -> None:
    before = _active(installed)
    history = modelstore.ModelStore(installed).history(NAME)
    broken = breaker(tiny_bundle, tmp_path / "broken")
    with pytest.raises(BundleError, match=message):
        modelstore.install(broken, installed, log=_quiet)
    assert _active(installed) == before
    assert modelstore.ModelStore(installed).history(NAME) == history
    assert [p.name for p in (installed / ".versions" / NAME).iterdir() if p.is_dir()] == [before]
    Ensemble.from_dirs([str(installed / NAME)])  # the previous bundle still serves


def test_failure_after_the_switch_rolls_back(installed: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    """The new version passes its checks in the staging and version folders, then fails through the
    active link (e.g. the disk returns garbage): the link goes back to the previous version."""
    before = _active(installed)
    calls = []

    def flaky_check(path: Path, *, others=None):
        calls.append(Path(path))
        if len(calls) == 3:
            raise BundleError(f"{path}: simulated failure after the switch")
        return modelstore.check_loads(path, others=others)

    v2 = _variant(tiny_bundle, tmp_path / "v2", temperature=2.0)
    with pytest.raises(BundleError, match="rolled back"):
        modelstore.install(v2, installed, check=flaky_check, log=_quiet)
    assert calls[2] == installed / NAME
    assert _active(installed) == before
    assert load_bundle(installed / NAME).manifest.temperature == 1.0


def test_first_install_that_fails_after_switch_leaves_nothing(tiny_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    calls = []

    def flaky_check(path: Path, *, others=None):
        calls.append(path)
        if len(calls) == 3:
            raise BundleError("simulated")
        return modelstore.check_loads(path, others=others)

    with pytest.raises(BundleError, match="not installed"):
        modelstore.install(tiny_bundle, root, check=flaky_check, log=_quiet)
    assert not (root / NAME).exists() and not (root / NAME).is_symlink()


def test_labels_must_match_the_ensemble(installed: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    (installed / "DEFAULT").write_text(f"{NAME}\n")
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    labels = [{**lb, "id": lb["id"] + "X"} for lb in data["labels"]]
    other = _variant(tiny_bundle, tmp_path / "other", name="other-labels", labels=labels)
    with pytest.raises(BundleError, match="labels"):
        modelstore.install(other, installed, log=_quiet)
    assert not (installed / "other-labels").exists()
    # outside the ensemble it may be installed
    modelstore.install(other, installed, add_to_default=False, log=_quiet)
    assert (installed / "DEFAULT").read_text().split() == [NAME]


def test_new_name_joins_default(installed: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    (installed / "DEFAULT").write_text(f"{NAME}\n")
    modelstore.install(_variant(tiny_bundle, tmp_path / "b", name="second"), installed, log=_quiet)
    assert (installed / "DEFAULT").read_text().split() == [NAME, "second"]


def test_a_hand_copied_bundle_folder_is_adopted(tiny_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(tiny_bundle, root / NAME)
    modelstore.install(_variant(tiny_bundle, tmp_path / "v2", temperature=1.7), root, log=_quiet)
    assert (root / NAME).is_symlink()
    modelstore.rollback(NAME, root)
    assert load_bundle(root / NAME).manifest.temperature == 1.0


# ------------------------------------------------------------------------------------- archives


def test_install_from_tar_gz_and_zip(tiny_bundle: Path, tmp_path: Path) -> None:
    tgz = tmp_path / "bundle.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(tiny_bundle, arcname="tiny")  # one top-level folder
    root = tmp_path / "models"
    assert modelstore.install(tgz, root, log=_quiet)["changed"]

    z = tmp_path / "bundle.zip"
    recal = _variant(tiny_bundle, tmp_path / "recal", temperature=1.3)
    with zipfile.ZipFile(z, "w") as zf:  # files at the top level, recalibrated manifest
        for p in recal.rglob("*"):
            if p.is_file():
                zf.writestr(str(p.relative_to(recal)), p.read_bytes())
    assert modelstore.install(z, root, log=_quiet)["changed"]
    assert load_bundle(root / NAME).manifest.temperature == 1.3


def _tar_with(tmp_path: Path, tiny_bundle: Path, extra: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for p in tiny_bundle.iterdir():
            if p.is_file():
                tf.add(p, arcname=p.name)
        tf.addfile(extra, io.BytesIO(data) if extra.isfile() else None)
    return path


@pytest.mark.parametrize("member", ["../escaped.txt", "/tmp/absolute-escape.txt", "a/../../escaped.txt"])
def test_archive_path_traversal_is_refused(tiny_bundle: Path, tmp_path: Path, member: str) -> None:
    info = tarfile.TarInfo(member)
    info.size = 1
    archive = _tar_with(tmp_path, tiny_bundle, info)
    root = tmp_path / "deep" / "models"
    with pytest.raises(BundleError, match="refusing"):
        modelstore.install(archive, root, log=_quiet)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not Path("/tmp/absolute-escape.txt").exists()
    assert not (root / NAME).exists()


def test_archive_links_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    info = tarfile.TarInfo("model-link")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    archive = _tar_with(tmp_path, tiny_bundle, info)
    with pytest.raises(BundleError, match="link"):
        modelstore.install(archive, tmp_path / "models", log=_quiet)


def test_zip_traversal_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(tiny_bundle / "manifest.json", "manifest.json")
        zf.writestr("../escaped.txt", b"x")
    with pytest.raises(BundleError, match="refusing"):
        modelstore.install(z, tmp_path / "models", log=_quiet)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_not_an_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "bundle.tar.gz"
    bogus.write_bytes(b"not a tar at all")
    with pytest.raises(BundleError, match="not a readable tar"):
        modelstore.install(bogus, tmp_path / "models", log=_quiet)
    other = tmp_path / "bundle.rar"
    other.write_bytes(b"x")
    with pytest.raises(BundleError, match="neither"):
        modelstore.install(other, tmp_path / "models", log=_quiet)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_install_list_rollback(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "models"
    assert main(["models", "--models-dir", str(root), "install", str(tiny_bundle)]) == 0
    v2 = _variant(tiny_bundle, tmp_path / "v2", temperature=1.4)
    assert main(["models", "--models-dir", str(root), "install", str(v2)]) == 0
    capsys.readouterr()
    assert main(["models", "--models-dir", str(root), "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [NAME] and rows[0]["ok"] and len(rows[0]["versions"]) == 2
    assert main(["models", "--models-dir", str(root), "rollback", NAME]) == 0
    assert "back at" in capsys.readouterr().out


def test_cli_broken_bundle_exit_2_names_the_problem(
    installed: Path, tiny_bundle: Path, tmp_path: Path, capsys
):
    broken = _bad_hash(tiny_bundle, tmp_path / "broken")
    assert main(["models", "--models-dir", str(installed), "install", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "error" in err


def test_cli_list_reports_a_tampered_bundle(installed: Path, capsys) -> None:
    model = installed / NAME / "model.tflite"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    assert main(["models", "--models-dir", str(installed), "list"]) == 1
    assert "BROKEN" in capsys.readouterr().out


def test_zip_symlink_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    import stat

    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(tiny_bundle / "manifest.json", "manifest.json")
        info = zipfile.ZipInfo("model.tflite")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(BundleError, match="link"):
        modelstore.install(z, tmp_path / "models", log=_quiet)


def test_leftovers_of_a_killed_install_are_cleared(
    installed: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    (installed / ".versions" / ".incoming-dead").mkdir()
    os.symlink(f".versions/{NAME}/{_active(installed)}", installed / ".tmp-link-x-1")
    modelstore.install(_variant(tiny_bundle, tmp_path / "v2", temperature=1.9), installed, log=_quiet)
    assert not (installed / ".versions" / ".incoming-dead").exists()
    assert not (installed / ".tmp-link-x-1").is_symlink()
