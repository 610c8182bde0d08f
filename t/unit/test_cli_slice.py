"""`flux pam slice`: who may use it and when reset refuses.

What reset does to a real slice is tested against systemd in the systemd
tier (t/systemd/test_cli_slice.py); here the refusals, which happen before
systemd is touched.
"""

import os

import pytest

from flux_pam_service.cli import main, slice_cmd


@pytest.fixture
def no_broker(monkeypatch, tmp_path):
    monkeypatch.setenv("FLUX_URI", f"local://{tmp_path}/nobroker")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/nobus")


@pytest.mark.parametrize("verb", ["show", "reset"])
def test_slice_refuses_non_root(monkeypatch, capsys, verb):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["slice", verb, "1000"]) == 1
    assert f"flux-pam slice {verb}: flux pam slice is for root only" in (
        capsys.readouterr().err
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the command is root only")
def test_slice_reset_refuses_unknown_user(capsys):
    assert main(["slice", "reset", "no-such-user-x"]) == 1
    assert "unknown user 'no-such-user-x'" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="the command is root only")
def test_slice_reset_refuses_root_slice(no_broker, capsys):
    assert main(["slice", "reset", "root"]) == 1
    assert "uid 0 is root or the instance owner" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="the command is root only")
def test_slice_reset_refuses_user_with_marker_without_module(
    no_broker, tmp_path, capsys
):
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    (locks / "uid.4242.active").write_text("")
    assert main(["slice", "reset", "--lock-dir", str(locks), "4242"]) == 1
    err = capsys.readouterr().err
    assert "uid.4242.active says user 4242 has an active job here" in err
    assert "--force" in err
    assert (locks / "uid.4242.active").exists()  # nothing changed


def test_slice_grace_refuses_infinity_and_garbage(capsys):
    for bad in ("inf", "1.5x"):
        with pytest.raises(SystemExit):
            main(["slice", "reset", "--grace", bad, "1000"])


def test_slice_module_view_without_broker_gives_reason(no_broker):
    view = slice_cmd.module_view(1000)
    assert view["loaded"] is False and view["reason"]
