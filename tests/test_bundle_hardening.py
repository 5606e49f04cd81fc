"""Bundles that cannot be bent: plain file names, no silent downgrades, an install history that survives
a kill at any step, and archives checked before they are unpacked."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from make_tiny_bundle import sign_test

from device.cli import main
from device.errors import BundleError
from device.models import modelstore
from device.models.bundle import load_bundle, read_manifest
from device.models.bundle_archive import extract_archive
from device.models.signing import load_trusted_keys, verify_bundle

NAME = "tiny-mobilenetv2-int8"
V1, V2, V3 = "2026-12-01T00:00:01Z", "2026-12-01T00:00:02Z", "2026-12-01T00:00:03Z"


def _quiet(_msg: str) -> None:
    pass


def _light_check(path: Path, *, others=None):
    """Manifest + hash only: these tests are about the files on disk, not the interpreter."""
    return load_bundle(path)


def _variant(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))
    return sign_test(dst)


def _temperature(root: Path) -> float:
    return load_bundle(root / NAME).manifest.temperature


# ------------------------------------------------------------------------------------ plain names


@pytest.mark.parametrize("model_file", ["/etc/passwd", "../model.tflite", "sub/model.tflite", "..", ".", ""])
def test_model_file_must_be_a_plain_name(tiny_bundle: Path, model_file: str, capsys, monkeypatch) -> None:
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    data["model_file"] = model_file
    (tiny_bundle / "manifest.json").write_text(json.dumps(data))
    with monkeypatch.context() as m:  # a signed manifest is no excuse (signing itself parses it)
        m.setattr("device.models.bundle.read_manifest", lambda _d: SimpleNamespace(name=NAME))
        sign_test(tiny_bundle)
    with pytest.raises(BundleError, match="not a plain file name"):
        load_bundle(tiny_bundle)
    root = tiny_bundle.parent / "models"
    assert main(["models", "--models-dir", str(root), "install", str(tiny_bundle)]) == 2
    assert "not a plain file name" in capsys.readouterr().err
    assert not (root / NAME).exists()


def test_model_file_symlink_out_of_the_bundle_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.tflite"
    shutil.move(tiny_bundle / "model.tflite", outside)
    os.symlink(outside, tiny_bundle / "model.tflite")
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(tiny_bundle)


def test_a_signed_listing_with_an_unsafe_path_is_refused(tiny_bundle: Path) -> None:
    from device.models.signing import canonical

    sign_test(tiny_bundle)
    sig = json.loads((tiny_bundle / "signature.json").read_text())
    payload = json.loads(sig["payload"])
    payload["files"].append({"path": "../escape.txt", "sha256": "0" * 64, "size": 1})
    sig["payload"] = canonical(payload)
    (tiny_bundle / "signature.json").write_text(json.dumps(sig))
    v = verify_bundle(tiny_bundle, load_trusted_keys([]))
    assert not v.ok and "unsafe path" in v.problem()


# --------------------------------------------------------------------------------------- downgrades


def test_an_older_release_is_refused_unless_asked(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "models"
    new = _variant(tiny_bundle, tmp_path / "new", version=V2, temperature=1.2)
    old = _variant(tiny_bundle, tmp_path / "old", version=V1, temperature=1.1)
    modelstore.install(new, root, check=_light_check, log=_quiet)
    with pytest.raises(modelstore.DowngradeRefused, match="older release"):
        modelstore.install(old, root, check=_light_check, log=_quiet)
    assert _temperature(root) == 1.2
    assert main(["models", "--models-dir", str(root), "install", str(old)]) == 2
    assert "--allow-downgrade" in capsys.readouterr().err
    assert main(["models", "--models-dir", str(root), "install", str(old), "--allow-downgrade"]) == 0
    assert _temperature(root) == 1.1
    # a rollback is the admin's own explicit step back: never refused for its order
    modelstore.rollback(NAME, root, check=_light_check)
    assert _temperature(root) == 1.2


def test_an_unversioned_bundle_cannot_replace_a_versioned_one(tiny_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    modelstore.install(
        _variant(tiny_bundle, tmp_path / "v", version=V1), root, check=_light_check, log=_quiet
    )
    with pytest.raises(modelstore.DowngradeRefused, match="no release version"):
        modelstore.install(tiny_bundle, root, check=_light_check, log=_quiet)
    newer = _variant(tiny_bundle, tmp_path / "v2", version=V2, temperature=1.3)
    assert modelstore.install(newer, root, check=_light_check, log=_quiet)["changed"]


def test_bundles_without_version_order_by_conversion_time(tiny_bundle: Path, tmp_path: Path) -> None:
    """Bundles made before `version` existed (the shipped ones) are ordered by provenance.converted_at,
    which their signature covers too."""
    root = tmp_path / "models"
    later = _variant(tiny_bundle, tmp_path / "a", provenance={"converted_at": "2026-12-01T13:37:38Z"})
    earlier = _variant(
        tiny_bundle, tmp_path / "b", provenance={"converted_at": "2026-11-30T14:41:33Z"}, temperature=1.4
    )
    modelstore.install(later, root, check=_light_check, log=_quiet)
    with pytest.raises(modelstore.DowngradeRefused, match="2026-11-30T14:41:33Z"):
        modelstore.install(earlier, root, check=_light_check, log=_quiet)
    shipped = read_manifest(Path(__file__).resolve().parents[1] / "models" / "mobilenetv2-all4-int8")
    assert shipped.version is None and shipped.release_label == "2026-12-01T13:37:38Z"


def test_a_malformed_version_is_refused(tiny_bundle: Path) -> None:
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    (tiny_bundle / "manifest.json").write_text(json.dumps({**data, "version": "next week"}))
    with pytest.raises(BundleError, match="version 'next week'"):
        read_manifest(tiny_bundle)


# ---------------------------------------------------------------------- a kill at every step


class _Recorder:
    def __init__(self) -> None:
        self.steps: list[str] = []

    def __call__(self, step: str) -> None:
        self.steps.append(step)


def _killed_at(step_index: int, action) -> int:
    """Run `action` in a child process that dies (os._exit, no cleanup of any kind) right after its
    `step_index`-th durable step; returns the child's exit status (9 = killed there)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        seen = 0

        def die(_step: str) -> None:
            nonlocal seen
            seen += 1
            if seen == step_index:
                os._exit(9)

        modelstore._after_step = die
        try:
            action()
        except BaseException:  # noqa: BLE001
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _steps_of(action, monkeypatch) -> list[str]:
    rec = _Recorder()
    monkeypatch.setattr(modelstore, "_after_step", rec)
    action()
    monkeypatch.setattr(modelstore, "_after_step", lambda _s: None)
    return rec.steps


def _serves_and_rolls_back(root: Path, allowed: set[float]) -> None:
    """What a kill may leave: a loadable active bundle from `allowed`, and a rollback that works."""
    before = _temperature(root)
    assert before in allowed
    back = modelstore.rollback(NAME, root, check=_light_check)
    assert back["previous"] != back["version"]
    assert _temperature(root) < before  # every scenario activates ever higher temperatures
    assert load_bundle(root / NAME)


def _three_versions(tiny_bundle: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    srcs = [
        _variant(tiny_bundle, tmp_path / f"v{i}", version=v, temperature=t)
        for i, (v, t) in enumerate(((V1, 1.1), (V2, 1.2), (V3, 1.3)))
    ]
    return tmp_path / "models", srcs


def test_install_killed_at_every_step_leaves_a_working_store(
    tiny_bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    root, (v1, v2, v3) = _three_versions(tiny_bundle, tmp_path)

    def prepare(dest: Path) -> None:
        shutil.rmtree(dest, ignore_errors=True)
        modelstore.install(v1, dest, check=_light_check, log=_quiet)
        modelstore.install(v2, dest, check=_light_check, log=_quiet)

    probe = tmp_path / "probe"
    prepare(probe)
    steps = _steps_of(lambda: modelstore.install(v3, probe, check=_light_check, log=_quiet), monkeypatch)
    assert steps == ["copied", "history written", "switched", "default listed", "pruned"]
    for i, step in enumerate(steps, start=1):
        prepare(root)
        assert _killed_at(i, lambda: modelstore.install(v3, root, check=_light_check, log=_quiet)) == 9, step
        _serves_and_rolls_back(root, {1.2, 1.3})
        # and the next install goes through
        modelstore.install(v3, root, check=_light_check, log=_quiet, keep=5)
        assert _temperature(root) == 1.3, step


def test_rollback_killed_at_every_step_leaves_a_working_store(
    tiny_bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    root, srcs = _three_versions(tiny_bundle, tmp_path)

    def prepare(dest: Path) -> None:
        shutil.rmtree(dest, ignore_errors=True)
        for src in srcs:
            modelstore.install(src, dest, check=_light_check, log=_quiet)

    probe = tmp_path / "probe"
    prepare(probe)
    steps = _steps_of(lambda: modelstore.rollback(NAME, probe, check=_light_check), monkeypatch)
    assert steps == ["history written", "switched"]
    for i, step in enumerate(steps, start=1):
        prepare(root)
        assert _killed_at(i, lambda: modelstore.rollback(NAME, root, check=_light_check)) == 9, step
        _serves_and_rolls_back(root, {1.2, 1.3})


def test_adoption_killed_at_every_step_is_finished_by_the_next_command(
    tiny_bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    root = tmp_path / "models"
    newer = _variant(tiny_bundle, tmp_path / "newer", version=V2, temperature=1.5)

    def prepare(dest: Path) -> None:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(tiny_bundle, dest / NAME)  # copied in by hand: no versions yet

    probe = tmp_path / "probe"
    prepare(probe)
    steps = _steps_of(lambda: modelstore.install(newer, probe, check=_light_check, log=_quiet), monkeypatch)
    assert steps[:3] == ["adoption marked", "adopted folder moved", "adopted folder linked"]
    for i, step in enumerate(steps, start=1):
        prepare(root)
        assert _killed_at(i, lambda: modelstore.install(newer, root, check=_light_check, log=_quiet)) == 9, (
            step
        )
        rows = modelstore.list_bundles(root, verify=False)  # an admin's `models list` finishes the adoption
        assert [r["name"] for r in rows] == [NAME] and rows[0]["ok"], step
        assert _temperature(root) in {1.0, 1.5}, step
        modelstore.install(newer, root, check=_light_check, log=_quiet)
        assert _temperature(root) == 1.5, step
        modelstore.rollback(NAME, root, check=_light_check)
        assert _temperature(root) == 1.0, step


def test_a_store_left_by_the_old_installer_after_a_kill_can_roll_back(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """The single history.json an older installer wrote after the switch: a kill in between left the
    active version out of it, and rollback said "nothing to roll back"."""
    root, (v1, v2, _) = _three_versions(tiny_bundle, tmp_path)
    modelstore.install(v1, root, check=_light_check, log=_quiet)
    modelstore.install(v2, root, check=_light_check, log=_quiet)
    vdir = root / ".versions" / NAME
    versions = sorted(p.name for p in vdir.iterdir() if p.is_dir())
    for p in vdir.glob("*.history.json"):
        p.unlink()
    (vdir / "history.json").write_text(json.dumps({"activated": versions[:1]}))  # v2 missing
    assert modelstore.ModelStore(root).history(NAME) == versions
    modelstore.rollback(NAME, root, check=_light_check)
    assert _temperature(root) == 1.1


# ------------------------------------------------------------------------------------------ archives


def _tar_of(path: Path, entries: list[tuple[str, bytes | None]], mode: str = "w:gz") -> Path:
    """A tar with exactly these entries in this order (None = a folder)."""
    with tarfile.open(path, mode) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _bundle_entries(bundle: Path) -> list[tuple[str, bytes | None]]:
    return [
        (p.relative_to(bundle).as_posix(), p.read_bytes()) for p in sorted(bundle.rglob("*")) if p.is_file()
    ]


@pytest.fixture
def signed(tiny_bundle: Path) -> Path:
    return sign_test(tiny_bundle)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([("report", b"x"), ("report", None)], "both a file and a folder"),
        ([("report", None), ("report", b"x")], "both a folder and a file"),
        ([("MODEL.md", b"again")], "appears twice"),
        ([("notes", b"x"), ("notes/inner.txt", b"y")], "also the folder of"),
    ],
)
def test_malformed_member_lists_are_refused(
    signed: Path, tmp_path: Path, extra, message: str, capsys
) -> None:
    archive = _tar_of(tmp_path / "bad.tar.gz", [*_bundle_entries(signed), *extra])
    root = tmp_path / "models"
    with pytest.raises(BundleError, match=message):
        modelstore.install(archive, root, check=_light_check, log=_quiet)
    assert main(["models", "--models-dir", str(root), "install", str(archive)]) == 2
    assert "refusing the archive" in capsys.readouterr().err
    assert not (root / NAME).exists()


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_a_truncated_archive_is_one_clear_error(signed: Path, tmp_path: Path, mode: str, capsys) -> None:
    whole = _tar_of(tmp_path / ("b.tar.gz" if mode == "w:gz" else "b.tar"), _bundle_entries(signed), mode)
    data = whole.read_bytes()
    for cut in (700, len(data) // 2):  # inside the first member, inside the model
        cut_archive = tmp_path / f"cut-{cut}{''.join(whole.suffixes)}"
        cut_archive.write_bytes(data[:cut])
        root = tmp_path / f"models-{cut}"
        assert main(["models", "--models-dir", str(root), "install", str(cut_archive)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert "truncated" in err or "corrupt" in err, err
        assert not (root / NAME).exists()


def test_a_corrupt_zip_is_one_clear_error(signed: Path, tmp_path: Path, capsys) -> None:
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in _bundle_entries(signed):
            zf.writestr(name, data)
    raw = bytearray(z.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside the model's compressed bytes: a CRC or inflate error
    z.write_bytes(bytes(raw))
    assert main(["models", "--models-dir", str(tmp_path / "models"), "install", str(z)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(z) in err


def test_an_oversized_archive_is_refused_before_reading(signed: Path, tmp_path: Path, monkeypatch) -> None:
    archive = _tar_of(tmp_path / "b.tar.gz", _bundle_entries(signed))
    monkeypatch.setattr("device.models.bundle_archive.MAX_ARCHIVE_BYTES", archive.stat().st_size - 1)
    opened = []
    monkeypatch.setattr("device.models.bundle_archive._TarReader.__init__", lambda *a: opened.append(a))
    with pytest.raises(BundleError, match="more than a model bundle archive may be"):
        extract_archive(archive, tmp_path / "out")
    assert not opened


def test_the_signature_is_checked_before_anything_is_unpacked(
    signed: Path, tmp_path: Path, monkeypatch
) -> None:
    trusted = load_trusted_keys([])
    written: list[str] = []
    real = __import__("device.models.bundle_archive", fromlist=["_write_member"])._write_member

    def spy(reader, m, target, archive):
        written.append(m.path.as_posix())
        return real(reader, m, target, archive)

    monkeypatch.setattr("device.models.bundle_archive._write_member", spy)
    entries = _bundle_entries(signed)
    # unsigned
    unsigned = [(n, d) for n, d in entries if n != "signature.json"]
    with pytest.raises(BundleError, match="unsigned"):
        extract_archive(_tar_of(tmp_path / "u.tar.gz", unsigned), tmp_path / "o1", trusted=trusted)
    # a file of another size than signed (e.g. a 900 MB payload under a stolen signature)
    swapped = [(n, d + b"padding" if n == "model.tflite" else d) for n, d in entries]
    with pytest.raises(BundleError, match="signed as"):
        extract_archive(_tar_of(tmp_path / "s.tar.gz", swapped), tmp_path / "o2", trusted=trusted)
    # a file added after signing
    added = [*entries, ("extra.bin", b"x")]
    with pytest.raises(BundleError, match="added after signing"):
        extract_archive(_tar_of(tmp_path / "a.tar.gz", added), tmp_path / "o3", trusted=trusted)
    assert written == []
    # same size, other bytes: unpacking stops at that file
    flipped = [(n, bytes([d[0] ^ 1]) + d[1:] if n == "model.tflite" else d) for n, d in entries]
    with pytest.raises(BundleError, match="changed after signing"):
        extract_archive(_tar_of(tmp_path / "f.tar.gz", flipped), tmp_path / "o4", trusted=trusted)
    assert written[-1] == "model.tflite" and len(written) < len(entries)
    # the good archive unpacks
    out = extract_archive(_tar_of(tmp_path / "g.tar.gz", entries), tmp_path / "o5", trusted=trusted)
    assert verify_bundle(out, trusted).ok


def test_a_gzip_bomb_stops_at_the_size_limit(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("device.models.bundle_archive.MAX_ARCHIVE_BYTES", 1 << 20)
    path = tmp_path / "bomb.tar.gz"
    with gzip.open(path, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        for i in range(3):
            info = tarfile.TarInfo(f"zeros{i}")
            info.size = 1 << 19
            tf.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(BundleError, match="unpacks to more than"):
        extract_archive(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
