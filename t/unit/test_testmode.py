"""The test-only job user mapping (flux_pam_service.testmode)."""

import pytest

from flux_pam_service import testmode


def spec(value):
    return {"attributes": {"system": {"flux-pam": {"test-userid": value}}}}


def test_job_userid_uses_attribute_only_in_test_instance():
    assert testmode.job_userid(spec(1000), 0, True) == 1000
    assert testmode.job_userid(spec(1000), 0, False) == 0


def test_job_userid_accepts_decimal_string():
    assert testmode.job_userid(spec("1001"), 0, True) == 1001


def test_job_userid_without_attribute_is_submitter():
    assert testmode.job_userid({"attributes": {"system": {}}}, 42, True) == 42
    assert testmode.job_userid({}, 42, True) == 42
    assert testmode.job_userid(None, 42, True) == 42


@pytest.mark.parametrize("bad", [-1, "alice", 1.5, True, {"x": 1}])
def test_job_userid_refuses_non_uid_naming_attribute(bad):
    with pytest.raises(ValueError, match="system.flux-pam.test-userid"):
        testmode.job_userid(spec(bad), 0, True)


def test_bad_attribute_is_ignored_outside_test_instance():
    assert testmode.job_userid(spec("alice"), 7, False) == 7


@pytest.mark.parametrize(
    "boot,level,expected",
    [
        ("simple", "0", True),
        ("simple", "1", False),
        ("config", "0", False),
        ("single", "0", False),
        ("singleton", "0", False),
        (None, "0", False),
    ],
)
def test_is_test_attrs(boot, level, expected):
    assert testmode.is_test_attrs(boot, level) is expected


class FakeHandle:
    def __init__(self, attrs):
        self.attrs = attrs

    def attr_get(self, name):
        try:
            return self.attrs[name]
        except KeyError:
            raise OSError(2, name) from None


def test_is_test_instance_reads_broker_attributes():
    h = FakeHandle({"broker.boot-method": "simple", "instance-level": "0"})
    assert testmode.is_test_instance(h)
    assert not testmode.is_test_instance(FakeHandle({"instance-level": "0"}))
