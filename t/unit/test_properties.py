"""properties.to_dbus: sdexec-mapper properties to systemd's D-Bus types."""

import pytest

from flux_pam_service.systemd import properties
from flux_pam_service.systemd.properties import REVERT, UINT64_MAX, to_dbus


def as_dict(dbus_props):
    out = {}
    for name, value in dbus_props:
        out.setdefault(name, []).append(value)
    return out


def test_allowed_cpus_bitmap_sets_bit_i_of_byte_i_div_8():
    (entry,) = to_dbus({"AllowedCPUs": "0-1,9,17"})
    assert entry == ("AllowedCPUs", ("ay", bytes([0b11, 0b10, 0b10])))


def test_allowed_cpus_bitmap_single_high_cpu_has_leading_zero_bytes():
    (entry,) = to_dbus({"AllowedCPUs": "63"})
    assert entry[1] == ("ay", b"\0" * 7 + b"\x80")


def test_bitmap_round_trips_through_bitmap_to_ids():
    ids = {0, 3, 8, 15, 16, 100, 1023}
    assert properties.bitmap_to_ids(properties.bitmap(ids)) == ids


def test_bitmap_to_ids_ignores_systemd_zero_padding():
    assert properties.bitmap_to_ids(b"\x03\x02\0\0\0\0\0\0") == {0, 1, 9}


def test_allowed_memory_nodes_is_a_bitmap_too():
    assert to_dbus({"AllowedMemoryNodes": "0,2"}) == [
        ("AllowedMemoryNodes", ("ay", b"\x05"))
    ]


def test_empty_idset_gives_empty_bitmap_which_resets():
    assert to_dbus({"AllowedCPUs": ""}) == [("AllowedCPUs", ("ay", b""))]


def test_bitmap_accepts_bracketed_idset_and_int_iterables():
    assert properties.bitmap("[0-2]") == properties.bitmap([0, 1, 2]) == b"\x07"


def test_bad_idset_names_the_property():
    with pytest.raises(ValueError, match="AllowedCPUs.*x"):
        to_dbus({"AllowedCPUs": "0-x"})


def test_cpu_beyond_systemd_limit_is_refused():
    with pytest.raises(ValueError, match="AllowedCPUs.*larger"):
        to_dbus({"AllowedCPUs": str(properties.MAX_CPU + 1)})


def test_bitmap_refuses_negative_and_bool_ids():
    with pytest.raises(ValueError, match="AllowedMemoryNodes"):
        properties.bitmap([-1], "AllowedMemoryNodes")
    with pytest.raises(ValueError):
        properties.bitmap([True])


def test_device_allow_comma_string_gives_one_entry_per_device_after_a_reset():
    d = as_dict(to_dbus({"DeviceAllow": "/dev/nvidia0 rw,/dev/nvidiactl rw"}))
    assert d["DeviceAllow"] == [
        ("a(ss)", []),
        ("a(ss)", [("/dev/nvidia0", "rw"), ("/dev/nvidiactl", "rw")]),
    ]


def test_device_allow_accepts_list_of_strings_and_pairs():
    assert properties.device_allow(["/dev/dri/renderD128 rw", ("/dev/kfd", "r")]) == [
        ("/dev/dri/renderD128", "rw"),
        ("/dev/kfd", "r"),
    ]


def test_device_allow_merges_duplicate_paths_and_defaults_to_rwm():
    assert properties.device_allow("/dev/a r,/dev/a w,/dev/b") == [
        ("/dev/a", "rw"),
        ("/dev/b", "rwm"),
    ]


def test_device_allow_skips_empty_elements_and_whitespace():
    assert properties.device_allow(" /dev/a  r , ,") == [("/dev/a", "r")]


def test_device_allow_accepts_char_and_block_classes():
    assert properties.device_allow("char-nvidia rw,block-loop r") == [
        ("char-nvidia", "rw"),
        ("block-loop", "r"),
    ]


def test_empty_device_allow_only_resets():
    assert to_dbus({"DeviceAllow": ""}) == [("DeviceAllow", ("a(ss)", []))]


@pytest.mark.parametrize(
    "value, match",
    [
        ("/dev/a rx", "permissions"),
        ("/tmp/x rw", "/tmp/x"),
        ("nvidia0 rw", "nvidia0"),
        ("/dev/a rw extra", "PATH"),
        ("/dev/../etc/passwd r", r"/dev/\.\./etc/passwd"),
    ],
)
def test_bad_device_allow_entry_is_refused_by_name(value, match):
    with pytest.raises(ValueError, match=f"DeviceAllow.*{match}"):
        to_dbus({"DeviceAllow": value})


def test_device_policy_is_a_string_and_checked():
    assert to_dbus({"DevicePolicy": "closed"}) == [("DevicePolicy", ("s", "closed"))]
    with pytest.raises(ValueError, match="DevicePolicy.*open"):
        to_dbus({"DevicePolicy": "open"})


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1073741824", 1073741824),
        (4096, 4096),
        ("2K", 2048),
        ("1G", 1024**3),
        ("infinity", UINT64_MAX),
    ],
)
def test_memory_max_is_uint64_bytes(value, expected):
    assert to_dbus({"MemoryMax": value}) == [("MemoryMax", ("t", expected))]


def test_memory_percentage_becomes_scale_property_like_systemd():
    # systemd: UINT32_SCALE_FROM_PERMYRIAD(5000) for "50%"
    assert to_dbus({"MemoryHigh": "50%"}) == [
        ("MemoryHighScale", ("u", 5000 * (2**32 - 1) // 10000))
    ]


@pytest.mark.parametrize("value", ["-1", "1.5G", "lots", "150%", True, 2**64, [1]])
def test_bad_memory_value_is_refused_by_name(value):
    with pytest.raises(ValueError, match="MemoryMax"):
        to_dbus({"MemoryMax": value})


def test_unknown_property_is_refused_by_name_and_nothing_converted():
    with pytest.raises(ValueError, match="CPUWeight"):
        to_dbus({"AllowedCPUs": "0", "CPUWeight": "100"})


def test_non_dict_is_refused():
    with pytest.raises(ValueError, match="not a dict"):
        to_dbus([("AllowedCPUs", "0")])


def test_mapper_result_converts_in_full():
    d = as_dict(
        to_dbus(
            {
                "AllowedCPUs": "0-3",
                "AllowedMemoryNodes": "0",
                "DeviceAllow": "/dev/nvidia0 rw,/dev/nvidiactl rw",
                "DevicePolicy": "closed",
                "MemoryMax": "1073741824",
            }
        )
    )
    assert d["AllowedCPUs"] == [("ay", b"\x0f")]
    assert d["AllowedMemoryNodes"] == [("ay", b"\x01")]
    assert d["DevicePolicy"] == [("s", "closed")]
    assert d["MemoryMax"] == [("t", 1073741824)]
    assert d["DeviceAllow"][-1][1] == [("/dev/nvidia0", "rw"), ("/dev/nvidiactl", "rw")]


def test_revert_resets_every_property_apply_can_set():
    d = as_dict(REVERT)
    assert d["AllowedCPUs"] == [("ay", b"")]
    assert d["AllowedMemoryNodes"] == [("ay", b"")]
    assert d["DevicePolicy"] == [("s", "auto")]
    assert d["DeviceAllow"] == [("a(ss)", [])]
    for name in properties.MEMORY_PROPERTIES:
        assert d[name] == [("t", UINT64_MAX)]
    assert set(d) == properties.PROPERTY_NAMES


def test_confines_only_with_cpus_memory_nodes_or_devices():
    assert properties.confines({"AllowedCPUs": "0-1", "MemoryMax": "1G"})
    assert properties.confines({"DeviceAllow": "/dev/nvidia0 rw"})
    assert not properties.confines({"MemoryMax": "1G", "MemoryHigh": "1G"})
    assert not properties.confines({"AllowedCPUs": ""})


def test_unset_reverted_covers_what_props_leave_out():
    given = properties.to_dbus({"AllowedCPUs": "0", "MemoryMax": "50%"})
    rest = dict(properties.unset_reverted(given))
    assert "AllowedCPUs" not in rest and "MemoryMax" not in rest
    assert rest["AllowedMemoryNodes"] == ("ay", b"")
    assert rest["DevicePolicy"] == ("s", "auto")
    assert rest["MemoryHigh"] == ("t", UINT64_MAX)


def test_has_constraints():
    assert properties.has_constraints({"AllowedCPUs": "0"})
    assert not properties.has_constraints({"AllowedCPUs": "", "DeviceAllow": ""})
    assert not properties.has_constraints({})


def test_an_idle_slice_keeps_one_cpu_its_memory_and_no_device():
    had = {
        "AllowedCPUs": "3-5,9",
        "AllowedMemoryNodes": "0-1",
        "DeviceAllow": "/dev/nvidia0 rw",
        "MemoryMax": "1G",
    }
    idle = properties.idle(had)
    assert idle == {
        "AllowedCPUs": "3",
        "AllowedMemoryNodes": "0-1",
        "DeviceAllow": "",
        "MemoryMax": "1G",
    }
    # the same names: only what shrank is sent
    assert properties.changed(had, idle) == {"AllowedCPUs": "3", "DeviceAllow": ""}
    assert ("DeviceAllow", ("a(ss)", [])) in to_dbus(idle)


@pytest.mark.parametrize("had", [None, {}, {"AllowedCPUs": ""}])
def test_an_unconstrained_slice_has_nothing_to_shrink(had):
    assert properties.idle(had) is None


def test_a_gpu_only_slice_shrinks_to_no_device_with_a_closed_policy():
    assert properties.idle({"DeviceAllow": "/dev/nvidia0 rw"}) == {
        "DeviceAllow": "",
        "DevicePolicy": "closed",
    }
    assert properties.idle({"DevicePolicy": "auto", "AllowedCPUs": "1-2"}) == {
        "DevicePolicy": "closed",
        "AllowedCPUs": "1",
    }


def test_only_the_properties_that_changed_are_sent_again():
    was = {"AllowedCPUs": "0-1", "AllowedMemoryNodes": "0", "DeviceAllow": "/dev/a r"}
    now = dict(was, AllowedCPUs="0-2")
    assert properties.changed(was, now) == {"AllowedCPUs": "0-2"}
    assert properties.changed(now, now) == {}


@pytest.mark.parametrize(
    "was, now",
    [
        (None, {"AllowedCPUs": "0"}),
        ({"AllowedCPUs": "0"}, {"AllowedCPUs": "0", "DeviceAllow": "/dev/a r"}),
        ({"AllowedCPUs": "0", "MemoryMax": "1G"}, {"AllowedCPUs": "0"}),
        ({"AllowedCPUs": ""}, {"AllowedCPUs": "0"}),
        ({"AllowedCPUs": "0"}, {"AllowedCPUs": ""}),
    ],
)
def test_a_change_of_names_or_of_constraining_is_a_full_apply(was, now):
    assert properties.changed(was, now) is None
