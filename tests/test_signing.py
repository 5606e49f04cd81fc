"""Signed bundles (issue 12 item 3): Ed25519 over every file of the bundle; `models install` and the
daemon's start refuse unsigned, unknown-key and changed-after-signing bundles, naming the check and
the file; `allow_unsigned` lets them load and the status page says so in red."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from make_tiny_bundle import TEST_PUB
from webkit import login, make_app

from device.cli import main
from device.config import load_config
from device.errors import BundleError, ConfigError, SmearscopeError
from device.models import modelstore
from device.models.signing import (
    PROJECT_KEY,
    SIGNATURE_FILE,
    SignaturePolicy,
    generate_keypair,
    load_trusted_keys,
    project_keys,
    sign_bundle,
    verify_bundle,
)
from device.paths import REPO_ROOT
from device.services import Services

NAME = "tiny-mobilenetv2-int8"


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture
def clinic(tmp_path: Path) -> tuple[Path, Path]:
    """A clinic's own key pair (private, public)."""
    priv, pub, _ = generate_keypair(tmp_path / "keys" / "clinic.key")
    return priv, pub


@pytest.fixture
def signed(tiny_bundle: Path, clinic) -> Path:
    sign_bundle(tiny_bundle, clinic[0])
    return tiny_bundle


def _policy(pub: Path, allow_unsigned: bool = False) -> SignaturePolicy:
    return SignaturePolicy(load_trusted_keys([str(pub)], env={}), allow_unsigned)


def _raise_temperature(bundle: Path) -> None:
    """A plausible forgery: a valid manifest with another value (the model file untouched)."""
    path = bundle / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "temperature": 0.2}))


def _flip(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------ keys


def test_keygen_private_key_is_0600_and_never_overwritten(tmp_path: Path, capsys) -> None:
    out = tmp_path / "k" / "release.key"
    assert main(["models", "keygen", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pub = out.with_suffix(".pub").read_text()
    assert pub.startswith("smearscope-ed25519 ") and "PRIVATE" not in pub
    assert "key id" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(["models", "keygen", "--out", str(out)]) == 2  # refuses: a key is never overwritten
    assert out.read_bytes() == before


def test_trusted_keys_entries(clinic, tmp_path: Path) -> None:
    inline = clinic[1].read_text().split()[1]
    t = load_trusted_keys(["project", inline, str(clinic[1])], env={})
    # the project keys (every device/models/keys/*.pub) plus the clinic key, inline and by path counted once
    assert len(t.keys) == len(project_keys()) + 1
    slashy = "uGtx3c6iu+kQspf1MwWl+fGp5KyqaIQrdr+xTc0/Rzc="  # an inline key with "/" is not a path
    assert len(load_trusted_keys([slashy, f"smearscope-ed25519 {slashy} someone"], env={}).keys) == 1
    with pytest.raises(SmearscopeError, match="cannot read"):
        load_trusted_keys([str(tmp_path / "missing.pub")], env={})
    with pytest.raises(SmearscopeError, match="base64"):
        load_trusted_keys(["smearscope-ed25519 not-a-key!"], env={})
    with pytest.raises(SmearscopeError, match="cannot read"):
        load_trusted_keys(["neither a key nor a file"], env={})
    with pytest.raises(ConfigError, match=r"\[models\] update_policy"):
        load_config(system_config=None, env={}, overrides={"models": {"update_policy": "sometimes"}})


def test_project_means_every_shipped_key_so_a_rotation_keeps_older_bundles_valid(tmp_path, monkeypatch):
    import device.models.signing as signing

    keys = tmp_path / "keys"
    keys.mkdir()
    _, old_pub, old_id = generate_keypair(keys / "smearscope-project.key")
    _, new_pub, new_id = generate_keypair(keys / "smearscope-project-2026-12.key")
    for k in keys.glob("*.key"):
        k.unlink()  # only public halves ship
    monkeypatch.setattr(signing, "PROJECT_KEYS_DIR", keys)
    trust = load_trusted_keys(["project"], env={})
    assert set(trust.keys) == {old_id, new_id}
    assert [p.name for p in signing.project_keys()] == [new_pub.name, old_pub.name]  # sorted by name


def test_shipped_bundles_are_signed_by_the_project_key() -> None:
    trust = load_trusted_keys(["project"], env={})
    assert PROJECT_KEY.is_file()
    bundles = sorted(p.parent for p in (REPO_ROOT / "models").glob("*/manifest.json"))
    assert bundles
    for b in bundles:
        v = verify_bundle(b, trust)
        assert v.ok, v.problem()


# ---------------------------------------------------------------------------------------- verify


def test_a_signed_bundle_verifies(signed: Path, clinic) -> None:
    v = verify_bundle(signed, load_trusted_keys([str(clinic[1])], env={}))
    assert v.ok, v.problem()
    listed = {
        f["path"] for f in json.loads(json.loads((signed / SIGNATURE_FILE).read_text())["payload"])["files"]
    }
    assert listed == {"manifest.json", "model.tflite", "MODEL.md"}  # everything but the signature


@pytest.mark.parametrize(
    ("tamper", "check", "message"),
    [
        (lambda b: _flip(b / "model.tflite"), "file model.tflite", "model.tflite changed after signing"),
        (
            lambda b: _flip(b / "manifest.json", 20),
            "file manifest.json",
            "manifest.json changed after signing",
        ),
        (lambda b: (b / "extra.py").write_text("print('hi')"), "file extra.py", "added after signing"),
        (lambda b: (b / "MODEL.md").unlink(), "file MODEL.md", "signed but is missing"),
        (lambda b: (b / SIGNATURE_FILE).unlink(), "signed", "unsigned"),
    ],
)
def test_any_change_after_signing_is_named(signed: Path, clinic, tamper, check: str, message: str) -> None:
    tamper(signed)
    v = verify_bundle(signed, load_trusted_keys([str(clinic[1])], env={}))
    assert not v.ok
    assert v.failures[0].name == check and message in v.failures[0].detail
    with pytest.raises(BundleError, match=message):
        v.raise_for_failure()


def test_edited_file_list_breaks_the_signature(signed: Path, clinic) -> None:
    """Re-hashing a changed model into signature.json's list is caught: the list is what was signed."""
    from device.models.bundle import sha256_file

    _flip(signed / "model.tflite")
    sig = json.loads((signed / SIGNATURE_FILE).read_text())
    payload = json.loads(sig["payload"])
    for f in payload["files"]:
        if f["path"] == "model.tflite":
            f["sha256"] = sha256_file(signed / "model.tflite")
    sig["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    (signed / SIGNATURE_FILE).write_text(json.dumps(sig))
    v = verify_bundle(signed, load_trusted_keys([str(clinic[1])], env={}))
    assert [c.name for c in v.failures] == ["signature"]


def test_another_key_is_not_trusted(signed: Path, tmp_path: Path) -> None:
    _, other_pub, _ = generate_keypair(tmp_path / "other.key")
    v = verify_bundle(signed, load_trusted_keys([str(other_pub)], env={}))
    assert [c.name for c in v.failures] == ["trusted key"]
    assert "not in [models] trusted_keys" in v.failures[0].detail


def test_cli_verify_prints_every_check_and_exits_1(signed: Path, clinic, capsys) -> None:
    assert main(["models", "verify", str(signed), "--trusted-key", str(clinic[1])]) == 0
    out = capsys.readouterr().out
    assert "[ok] signature" in out and "[ok] file model.tflite" in out and "OK" in out
    _flip(signed / "model.tflite")
    assert main(["models", "verify", str(signed), "--trusted-key", str(clinic[1])]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] file model.tflite" in out and "FAILED" in out
    # default trust (the project key + this suite's test key): the clinic key is unknown
    assert main(["models", "verify", str(signed)]) == 1
    assert "[FAIL] trusted key" in capsys.readouterr().out


def test_sign_refuses_a_key_inside_the_bundle(tiny_bundle: Path, capsys) -> None:
    generate_keypair(tiny_bundle / "oops.key")
    assert main(["models", "sign", str(tiny_bundle), "--key", str(tiny_bundle / "oops.key")]) == 2
    assert "never goes into a bundle" in capsys.readouterr().err
    # any private key lying in the folder is refused, not signed into the bundle
    priv, _, _ = generate_keypair(tiny_bundle.parent / "outside.key")
    assert main(["models", "sign", str(tiny_bundle), "--key", str(priv)]) == 2
    assert "oops.key is a private key" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- install


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda b: _flip(b / "model.tflite"), "model.tflite changed after signing"),
        (_raise_temperature, "manifest.json changed after signing"),
        (lambda b: (b / "notes.txt").write_text("x"), "notes.txt was added after signing"),
        (lambda b: (b / SIGNATURE_FILE).unlink(), "unsigned"),
    ],
)
def test_install_refuses_and_keeps_the_active_version(
    signed: Path, clinic, tmp_path: Path, tamper, message: str
) -> None:
    root = tmp_path / "models"
    modelstore.install(signed, root, log=_quiet, policy=_policy(clinic[1]))
    before = os.readlink(root / NAME)
    bad = tmp_path / "bad"
    shutil.copytree(signed, bad)
    sign_bundle(bad, clinic[0])
    (bad / "MODEL.md").write_text("a new version\n")
    sign_bundle(bad, clinic[0])
    tamper(bad)
    with pytest.raises(BundleError, match=message):
        modelstore.install(bad, root, log=_quiet, policy=_policy(clinic[1]))
    assert os.readlink(root / NAME) == before


def test_install_refuses_another_key_then_allow_unsigned_lets_it_in(signed: Path, tmp_path: Path) -> None:
    _, stranger, _ = generate_keypair(tmp_path / "stranger.key")
    root = tmp_path / "models"
    with pytest.raises(BundleError, match="trusted key"):
        modelstore.install(signed, root, log=_quiet, policy=_policy(stranger))
    assert not (root / NAME).exists()
    said: list[str] = []
    modelstore.install(signed, root, log=said.append, policy=_policy(stranger, allow_unsigned=True))
    assert (root / NAME).is_symlink()
    assert any("allow_unsigned" in m for m in said)


def test_cli_install_uses_the_config_trust(signed: Path, clinic, tmp_path: Path, capsys) -> None:
    root = tmp_path / "models"
    assert main(["models", "--models-dir", str(root), "install", str(signed)]) == 2
    assert "not in [models] trusted_keys" in capsys.readouterr().err
    config = tmp_path / "config.toml"
    config.write_text(f'[models]\ntrusted_keys = ["{clinic[1]}"]\n')
    assert main(["models", "--config", str(config), "--models-dir", str(root), "install", str(signed)]) == 0


# ---------------------------------------------------------------------------------------- daemon


def _services_config(tmp_path: Path, bundle: Path, **models) -> object:
    over = {
        "classifier": {"models": [str(bundle)], "threads": 1},
        "store": {"reserve_mb": 0},
        "models": models,
    }
    return load_config(data_dir=tmp_path / "data", overrides=over, system_config=None, env={})


def test_daemon_start_refuses_an_unsigned_or_changed_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    (tiny_bundle / SIGNATURE_FILE).unlink()
    with pytest.raises(BundleError, match="unsigned"):
        Services(_services_config(tmp_path, tiny_bundle), pace=False, sync=False)


def test_daemon_start_refuses_a_changed_manifest(tiny_bundle: Path, tmp_path: Path) -> None:
    _flip(tiny_bundle / "manifest.json", 30)
    with pytest.raises(BundleError, match="manifest.json changed after signing"):
        Services(_services_config(tmp_path, tiny_bundle), pace=False, sync=False)


def test_allow_unsigned_loads_and_status_says_so(tiny_bundle: Path, tmp_path: Path) -> None:
    (tiny_bundle / SIGNATURE_FILE).unlink()
    s = Services(_services_config(tmp_path, tiny_bundle, allow_unsigned=True), pace=False, sync=False)
    try:
        sig = s.status()["model_signatures"]
        assert sig["ok"] is False and sig["allow_unsigned"] is True
        assert "unsigned" in sig["problems"][0]
    finally:
        s.stop()


def test_status_page_shows_unverified_models_in_red(tmp_path: Path) -> None:
    app, services = make_app(tmp_path)
    problem = "/m/x: signature check 'signed' failed: no signature.json: the bundle is unsigned"
    base = services.status

    def status():
        return {**base(), "model_signatures": {"ok": False, "allow_unsigned": True, "problems": [problem]}}

    services.status = status
    client = app.test_client()
    login(client)
    html = client.get("/status").get_data(as_text=True)
    assert 'class="card state-bad" id="unsigned-models"' in html and "UNVERIFIED MODELS" in html
    assert "no signature.json: the bundle is unsigned" in html
    services.status = lambda: {
        **base(),
        "model_signatures": {"ok": True, "allow_unsigned": False, "problems": []},
    }
    assert "UNVERIFIED MODELS" not in client.get("/status").get_data(as_text=True)


def test_the_test_key_is_only_trusted_through_the_environment() -> None:
    """The suite's fixture key is not in any default: only conftest's $SMEARSCOPE_TRUSTED_KEYS adds it."""
    default = load_config(system_config=None, env={}).models.trusted_keys
    assert default == ["project"]
    assert (
        load_trusted_keys(default, env={})
        .keys.keys()
        .isdisjoint(load_trusted_keys([str(TEST_PUB)], env={}).keys)
    )


def test_doctor_reports_signatures(tiny_bundle: Path, tmp_path: Path) -> None:
    from device.commands.doctor import FAIL, OK, WARN, check_signatures

    cfg = _services_config(tmp_path, tiny_bundle)
    assert [c.status for c in check_signatures(cfg, [tiny_bundle])] == [OK]
    (tiny_bundle / SIGNATURE_FILE).unlink()
    (bad,) = check_signatures(cfg, [tiny_bundle])
    assert bad.status == FAIL and "unsigned" in bad.message and "refuses to start" in bad.fix
    lenient = _services_config(tmp_path, tiny_bundle, allow_unsigned=True)
    assert [c.status for c in check_signatures(lenient, [tiny_bundle])] == [WARN]


def test_models_page_accept_button_for_admins(tmp_path: Path, tiny_bundle: Path, monkeypatch) -> None:
    from webkit import csrf_of

    models = tmp_path / "models"  # the page lists what runs: this station's own models, not the repo's
    models.mkdir()
    tiny_bundle.rename(models / "tiny")
    (models / "DEFAULT").write_text("tiny\n")
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(models))
    app, services = make_app(tmp_path)
    staged = {
        "set_id": 7,
        "name": "spring",
        "bundles": [{"name": NAME, "dir": "/x", "signature_sha256": "0"}],
    }
    services.model_update_status = lambda: {
        "policy": "manual",
        "staged": staged,
        "last_result": None,
        "last_check": None,
        "last_error": None,
    }
    accepted: list[dict] = []
    services.accept_model_update = lambda **kw: (
        accepted.append(kw) or {"state": "installed", "bundles": [NAME]}
    )
    tech = app.test_client()
    login(tech)
    html = tech.get("/models").get_data(as_text=True)
    assert "spring" in html and "Install these models now" not in html
    assert "tiny-mobilenetv2-int8" in html and "all4" not in html  # this station's models
    assert tech.post("/admin/models/accept-update", data={"csrf_token": csrf_of(tech)}).status_code in (
        302,
        403,
    )
    assert not accepted  # a technician cannot install models
    admin = app.test_client()
    login(admin, "admin")
    assert "Install these models now" in admin.get("/models").get_data(as_text=True)
    r = admin.post("/admin/models/accept-update", data={"csrf_token": csrf_of(admin)}, follow_redirects=True)
    assert accepted == [{"allow_downgrade": False}] and "Model update installed" in r.get_data(as_text=True)
    # a set older than what runs: the page says so, and only the ticked box asks for the downgrade
    staged["downgrade"] = [f"{NAME}: this bundle (2026-11-01T00:00:00Z) is an older release"]
    html = admin.get("/models").get_data(as_text=True)
    assert "Older than the models this station runs" in html and "Install these models now" not in html
    admin.post("/admin/models/accept-update", data={"csrf_token": csrf_of(admin), "allow_downgrade": "1"})
    assert accepted[-1] == {"allow_downgrade": True}
