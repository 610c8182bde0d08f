"""Where `flux pam` finds the node's configuration (flux_pam_service.cli.instance)."""

import os
import sys

import pytest

from flux_pam_service.cli import instance


@pytest.mark.parametrize(
    "imp, confdir",
    [
        ("/usr/libexec/flux/flux-imp", "/etc/flux/imp/conf.d"),
        ("/opt/flux/libexec/flux/flux-imp", "/opt/flux/etc/flux/imp/conf.d"),
        ("/libexec/flux/flux-imp", "/etc/flux/imp/conf.d"),
        ("/usr/local/libexec/flux/flux-imp", "/usr/local/etc/flux/imp/conf.d"),
        ("/opt/imp", None),
        ("", None),
    ],
)
def test_imp_config_dir_is_flux_securitys_sysconfdir_for_the_imp(imp, confdir):
    assert instance.imp_confdir(imp) == confdir


FAKE_FLUX = """\
#!/bin/sh
test "$1 $2" = "config builtin" || exit 1
case $3 in
confdir) echo /opt/zflux/etc/flux;;
libexecdir) echo /opt/zflux/libexec/flux;;
*) exit 1;;
esac
"""


@pytest.fixture
def no_broker(monkeypatch, tmp_path):
    """No bindings, no broker: flux is a script on PATH, or absent."""
    monkeypatch.setitem(sys.modules, "flux", None)
    monkeypatch.setitem(sys.modules, "flux.conf_builtin", None)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "bin").mkdir()
    return tmp_path / "bin"


def test_without_bindings_the_flux_on_path_says_where_its_config_is(no_broker):
    flux = no_broker / "flux"
    flux.write_text(FAKE_FLUX)
    flux.chmod(0o755)
    where = instance.locate()
    assert where.config_path == "/opt/zflux/etc/flux/system/conf.d"
    assert where.imp_config == "/opt/zflux/etc/flux/imp/conf.d"
    assert where.libexecdir == "/opt/zflux/libexec/flux"
    assert where.source.startswith("flux-core's built-in confdir + /system/conf.d;")
    assert "bindings do not import" in where.source


def test_without_any_flux_the_paths_are_a_usr_flux_cores(no_broker):
    assert not os.path.exists(no_broker / "flux")
    where = instance.locate()
    assert where.config_path == "/etc/flux/system/conf.d"
    assert where.source.startswith("a /usr flux-core's confdir + /system/conf.d;")
    assert where.broker_config is None
