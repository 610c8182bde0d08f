"""The reporting code of bench/ (tables, JSON, plots, targets) on synthetic
numbers, so that it cannot rot between benchmark runs."""

import json
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench")
sys.path.insert(0, os.path.abspath(BENCH))

import admission  # noqa: E402
import benchlib as bl  # noqa: E402
import floor  # noqa: E402
import job_overhead  # noqa: E402
import memory  # noqa: E402
import run  # noqa: E402
import scale  # noqa: E402
import session  # noqa: E402


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(bl, "RESULTS", str(tmp_path))
    return tmp_path


def summ(median, p95, n=10):
    return {"n": n, "median": median, "p95": p95, "min": median, "max": p95}


# ------------------------------------------------------------------ benchlib


def test_summary_gives_median_and_nearest_rank_p95():
    s = bl.summary([float(x) for x in range(1, 101)])
    assert s["n"] == 100
    assert s["median"] == 50.5
    assert s["p95"] == 95.0
    assert (s["min"], s["max"]) == (1.0, 100.0)
    assert bl.summary([]) == {"n": 0}


def test_ratio_is_none_without_a_base():
    assert bl.ratio(3.0, 2.0) == 1.5
    assert bl.ratio(3.0, 0) is None
    assert bl.ratio(None, 2.0) is None


def test_format_table_aligns_columns_and_shows_missing_as_dash():
    text = bl.format_table("t", ["a", "bb"], [["x", 1.234], ["yy", None]])
    lines = text.splitlines()
    assert lines[0] == "t"
    assert lines[1].split() == ["a", "bb"]
    assert lines[3].split() == ["x", "1.23"]
    assert lines[4].split() == ["yy", "-"]
    assert len({len(line) for line in lines[1:4]}) == 1


def test_write_json_keeps_a_latest_copy(results):
    path = bl.write_json("kind", {"x": 1}, when="T1")
    assert os.path.basename(path) == "kind-T1.json"
    with open(results / "kind-latest.json") as f:
        assert json.load(f) == {"x": 1}


# ------------------------------------------------------------------ job_overhead


def raw_jobs():
    def ev(alloc, start, pf=None):
        e = {
            "submit": alloc - 0.01,
            "alloc": alloc,
            "start": start,
            "clean": start + 0.1,
        }
        if pf is not None:
            e["prolog-start"] = alloc + 0.001
            e["prolog-finish"] = pf
        return e

    return {
        "jobs": {
            "1": {
                "uid": 1000,
                "events": ev(10.0, 10.002),
                "probe": {"t": 10.004, "result": "applied"},
            },
            "2": {
                "uid": 1000,
                "events": ev(10.5, 10.503),
                "probe": {"t": 10.508, "result": "applied"},
            },
            "3": {
                "uid": 1001,
                "events": ev(11.0, 11.002),
                "probe": {"t": 11.5, "result": "skipped"},
            },
        }
    }


def test_job_overhead_per_job_latencies_from_journal_times():
    r = job_overhead._per_job(raw_jobs(), "service")
    assert r["n"] == 3
    assert r["alloc_to_start_ms"]["median"] == pytest.approx(2.0)
    # the skipped probe is not a measurement
    assert r["alloc_to_constrained_ms"]["n"] == 2
    assert r["alloc_to_constrained_ms"]["max"] == pytest.approx(8.0)
    assert r["unmeasured"] == 1
    assert r["span_s"] == pytest.approx(11.102 - 9.99)


def job_data():
    def run(mode, tput, start_med, cons=None, forks=0):
        r = {
            "n": 100,
            "users": 1,
            "jobs_per_s": tput,
            "alloc_to_start_ms": summ(start_med, start_med * 2),
            "alloc_to_constrained_ms": summ(*cons) if cons else {"n": 0},
            "forks_per_job": 2.0,
        }
        if mode == "service":
            r["module"] = {"forks": forks, "operations": {"apply": 50}, "cpu_s": 0.5}
        return {"runs": [r]}

    return {
        "modes": {
            "off": run("off", 20.0, 5.0),
            "service": run("service", 19.0, 5.5, (2.5, 4.0)),
            "fallback": run("fallback", 2.0, 900.0, (890.0, 1200.0)),
        }
    }


def test_job_overhead_rows_compare_with_management_off():
    rows = {r["mode"]: r for r in job_overhead.rows(job_data())}
    assert rows["service"]["vs_off"] == pytest.approx(0.95)
    assert rows["service"]["start_added_med"] == pytest.approx(0.5)
    assert rows["service"]["slice_ops_per_job"] == pytest.approx(0.5)
    assert rows["service"]["module_cpu_ms_per_job"] == pytest.approx(5.0)
    assert rows["fallback"]["vs_off"] == pytest.approx(0.1)
    assert rows["off"]["constrained_med"] is None
    text = job_overhead.report(job_data())
    assert "service" in text and "0.95" in text


# ------------------------------------------------------------------ admission


def adm_data():
    def step(k, permit50, flux50, flux95, rpc95, place="node", python=False):
        pt = {
            "permit": summ(permit50, permit50 + 1.0),
            "pam_flux": summ(flux50, flux95),
        }
        if python:
            pt["pam_python"] = summ(40.0, 60.0)
            pt["pam_flux.py"] = summ(50.0, 66.0)
        return {
            "k": k,
            "place": place,
            "rpc": "pam.check",
            "rpc_ms": summ(rpc95 / 2, rpc95),
            "jobs_seen": k,
            "pamtester_ms": pt,
            "failures": {"permit": 0, "pam_flux": 1},
            "instructions": (
                {"permit": 2_000_000, "pam_flux": 2_900_000}
                if place == "host"
                else None
            ),
        }

    return {
        "uid": 1000,
        "places": ["node", "host"],
        "python_checkout": "cef586b 2026-11-22 the last Python module",
        "modes": {
            "service": {
                "steps": [
                    step(1, 3.0, 3.5, 5.0, 0.5),
                    step(1, 3.0, 3.9, 5.5, 0.5, "host", python=True),
                    step(1000, 3.0, 3.6, 5.8, 0.9),
                ]
            },
            "fallback": {"steps": [step(1000, 3.0, 5.0, 9.0, 3.0)]},
        },
    }


def test_admission_rows_subtract_pam_permit_per_place():
    rows = admission.rows(adm_data())
    assert [r["place"] for r in rows] == ["node", "host", "node", "node"]
    assert [r["flux_p50_above"] for r in rows] == pytest.approx([0.5, 0.9, 0.6, 2.0])
    assert [r["flux_p95_above"] for r in rows] == pytest.approx([1.0, 1.5, 1.8, 5.0])
    assert [r["py_p50_above"] for r in rows] == [None, 47.0, None, None]
    assert rows[0]["failures"] == 1
    text = admission.report(adm_data())
    assert "uid 1000" in text
    assert "the Python module of cef586b" in text
    assert "user-space instructions per pamtester run (service, host, 1 jobs" in text
    assert "900000" in text  # pam_flux above pam_permit


# ------------------------------------------------------------------ session


def session_data():
    def run(sshd, nosession):
        return {
            "sshd": summ(sshd, sshd + 10),
            "flux-pam-bench-nosession": summ(nosession, nosession + 4),
        }

    return {"runs": {"account": run(50.0, 45.0), "session": run(110.0, 65.0)}}


def test_session_share_is_the_difference_of_differences():
    data = session_data()
    # (110 - 50) - (65 - 45) = 40 at the median; the p95s add 10 and 4
    assert session.share(data, "median") == pytest.approx(40.0)
    assert session.share(data, "p95") == pytest.approx(40.0)
    assert "pam_flux session step: 40.0 ms median" in session.report(data)


def test_session_stack_drops_only_pam_flux_session_and_widens_its_account():
    sshd = (
        "@include common-account\n"
        "account required pam_flux.so debug\n"
        "session required pam_limits.so\n"
        "session requisite pam_flux.so\n"
    )
    out = session.no_session_stack(sshd).splitlines()
    assert out == [
        "@include common-account",
        "account required pam_flux.so debug service=*",
        "session required pam_limits.so",
    ]


# ------------------------------------------------------------------ floor


def floor_data():
    return {
        "rows": {
            "SetUnitProperties": summ(1.5, 3.0),
            "UserSlice.apply": summ(2.0, 4.0),
            "StartTransientUnit": {"skipped": "no"},
            "module apply": summ(3.0, 6.0),
            "slice update without read-back": summ(2.0, 4.0),
            "slice update with read-back": summ(2.5, 5.0),
        },
        "worker_ms_per_op": {"apply": 2.5},
    }


def test_floor_ratios_of_medians():
    rat = floor.ratios(floor_data())
    assert rat["module_apply_over_SetUnitProperties"] == pytest.approx(2.0)
    assert rat["module_apply_over_UserSlice_apply"] == pytest.approx(1.5)
    assert rat["update_with_over_without_read_back"] == pytest.approx(1.25)
    assert rat["read_back_ms"] == pytest.approx(0.5)
    text = floor.report(floor_data())
    assert "skipped" in text and "2.00" in text
    assert "with / without read-back" in text and "1.25" in text


def test_floor_reads_dbus_floor_rows_in_ms():
    row = {"n": 5, "median_ms": 1.0, "p95_ms": 2.0, "min_ms": 0.5, "client_cpu_us": 9}
    assert floor.to_ms(row)["median"] == 1.0
    assert floor.to_ms({"skipped": "x"}) == {"skipped": "x"}


# ------------------------------------------------------------------ memory


def mem_data():
    jobs = [0, 1000, 2000, 3000]
    return {
        "jobs": 3000,
        "users": 10,
        "module": {
            "jobs": jobs,
            "rss": [20_000_000 + 1024 * j for j in jobs],
            "rss_after_end": 21_000_000,
        },
        "core": {
            "UserTable": {"jobs": jobs, "bytes": [512 * j for j in jobs]},
            "Dispatcher": {"jobs": jobs, "bytes": [3000 * j for j in jobs]},
        },
    }


def test_memory_fit_recovers_a_linear_slope():
    res = memory.results(mem_data())
    assert res["module RSS"]["bytes_per_job"] == pytest.approx(1024)
    assert res["module RSS"]["max_residual_frac"] == pytest.approx(0, abs=1e-9)
    assert res["UserTable (tracemalloc)"]["bytes_per_job"] == pytest.approx(512)
    assert "1.00" in memory.report(mem_data())


# ------------------------------------------------------------------ scale


def scale_data():
    def run_(size, nodes, cpu):
        return {
            "instance": size,
            "nodes": nodes,
            "jobs": 10,
            "messages_per_job": 3.0 * nodes,
            "ranks_told_per_job": nodes,
            "journal_events_per_job": 6.0,
            "rank0_cpu_ms_per_job": cpu,
            "message_errors": 0,
        }

    return {
        "core": [{"nodes": 1, "jobs": 5, "us_per_job": 50.0, "messages": 3.0}],
        "instances": [
            {"size": 4, "runs": [run_(4, 1, 1.5), run_(4, 4, 2.0)]},
            {
                "size": 16,
                "runs": [run_(16, 1, 1.0), run_(16, 4, 2.5), run_(16, 16, 8.5)],
            },
        ],
    }


def test_scale_estimate_extrapolates_the_largest_instance_linearly():
    data = scale_data()
    est = scale.estimate(data)
    assert est["from_instance"] == 16
    assert est["messages_per_job"]["b_per_node"] == pytest.approx(3.0)
    assert est["cpu_ms_per_job"]["b_per_node"] == pytest.approx(0.5)
    one = est["by_job_size"][0]
    assert one["nodes_per_job"] == 1
    assert one["messages_per_s"] == pytest.approx(300.0)
    assert one["rank0_cpu_fraction"] == pytest.approx(0.1)
    assert one["dispatcher_alone_fraction"] == pytest.approx(0.005)
    data["estimate"] = est
    assert "4000 nodes" in scale.report(data)


# ------------------------------------------------------------------ run.py


def test_targets_report_met_and_unmet_with_their_figures():
    res = {
        "floor": floor_data(),
        "job_overhead": job_data(),
        "admission": adm_data(),
        "memory": {"results": memory.results(mem_data())},
        "session": session_data(),
    }
    met = [t["met"] for t in run.targets(res)]
    # module apply 3.0 = 1.5x UserSlice.apply: met; alloc->ready
    # 2.5 ms <= 2 x 2.0: met; no forks; throughput 95%; admission with the
    # module (service mode, node): +0.5/+1.0 and +0.6/+1.8 ms over pam_permit:
    # met (the host row and the fallback mode are not the target's);
    # session 40 ms: not met; memory 1 KiB/job: met
    assert met == [True, True, True, True, True, False, True]
    text = run.format_targets(run.targets(res))
    assert "1 jobs: +0.50/+1.00 ms; 1000 jobs: +0.60/+1.80 ms" in text
    assert "(p50/p95, node; p50 spread 0.10 ms)" in text
    assert "40.0 ms median, 40.0 ms p95" in text
    # the floor of an apply is SetUnitProperties with the job's properties
    assert "1.50x SetUnitProperties with the job's properties (2.00 ms)" in text
    assert "2.0x the AllowedCPUs-only call (1.50 ms)" in text


def test_targets_without_results_are_not_measured():
    assert {t["met"] for t in run.targets({})} == {None}
    assert "not measured" in run.markdown_targets(run.targets({}))


# ------------------------------------------------------------------ plots


@pytest.mark.parametrize(
    "mod,data",
    [
        (job_overhead, job_data),
        (admission, adm_data),
        (floor, floor_data),
        (memory, mem_data),
        (scale, scale_data),
        (session, session_data),
    ],
)
def test_each_benchmark_draws_its_plot(results, mod, data):
    pytest.importorskip("matplotlib")
    path = mod.plot(data(), when="T0")
    assert os.path.getsize(path) > 1000
    assert os.path.exists(results / f"{mod.KIND}-latest.png")


def test_summary_markdown_has_each_table_and_plot():
    res = {"floor": floor_data(), "memory": mem_data()}
    res["memory"]["results"] = memory.results(mem_data())
    text = run.summary_markdown(run.targets(res), res)
    assert "### floor" in text and "### memory" in text
    assert "![memory](results/memory-latest.png)" in text
    assert "### scale" not in text


def job_data17():
    """job_overhead with both module modes, 1 and 8 users."""

    def run_(n, users, tput, cons=None, cpu_s=None, ended=0):
        r = {
            "n": n,
            "users": users,
            "jobs_per_s": tput,
            "alloc_to_start_ms": summ(5.0, 10.0),
            "alloc_to_constrained_ms": summ(*cons) if cons else {"n": 0},
            "forks_per_job": 0.0,
            "unmeasured": ended,
        }
        if cpu_s is not None:
            r["module"] = {"forks": 0, "operations": {"apply": n}, "cpu_s": cpu_s}
        return r

    profile = {"n": 100, "users": 1, "seconds": {"journal": 0.1, "total": 0.3}}
    profile["cpu_ms_per_job"] = 3.1
    return {
        "modes": {
            "off": {"runs": [run_(100, 1, 50.0), run_(100, 8, 40.0)]},
            "service": {
                "runs": [
                    run_(100, 1, 46.0, (3.0, 9.0), 0.12),
                    run_(100, 8, 30.0, (400.0, 900.0), 0.2, ended=40),
                ],
                "profiles": [profile],
            },
            "delay": {
                "runs": [
                    run_(100, 1, 47.0, (3.5, 9.0), 0.14),
                    run_(100, 8, 38.0, (4.0, 20.0), 0.14, ended=2),
                ]
            },
        }
    }


def test_issue_17_targets_for_each_configuration_of_the_module():
    floor = floor_data()
    floor["rows"]["UserSlice.prepare (+user@ start)"] = summ(100.0, 150.0)
    scale_ = scale_data()
    scale_["estimate"] = scale.estimate(scale_)
    res = {"floor": floor, "job_overhead": job_data17(), "scale": scale_}
    ts = run.targets17(res)
    got = {t["target"]: t["met"] for t in ts}
    # stop at once: 92% and 75% of off; 1.2 and 2.0 ms of CPU per job;
    # 3.0 ms <= 2 x 2.0 ms apply; 400 ms > prepare 100 + apply 2 ms
    assert got["[stop at once] throughput >= 90% of management off, every row"] is False
    assert got["[stop at once] module CPU per job <= 1.5 ms"] is False
    name1 = "alloc -> slice ready, user with a job already here: <= 2 x UserSlice.apply"
    name8 = "alloc -> slice ready, 8 users, sparse jobs: <= user@ start + 2 x apply"
    assert got[f"[stop at once] {name1}"] is True
    assert got[f"[stop at once] {name8}"] is False
    # with the delay: 94% and 95%; 1.4 ms; 3.5 ms; 4.0 ms
    assert got["[user-stop-delay] throughput >= 90% of management off, every row"]
    assert got["[user-stop-delay] module CPU per job <= 1.5 ms"] is True
    assert got[f"[user-stop-delay] {name1}"] is True
    assert got[f"[user-stop-delay] {name8}"] is True
    # the scale fit: 0.5 ms per node
    assert got["rank-0 CPU per job per node of the job <= 0.1 ms"] is False
    text = run.format_targets(ts)
    assert "N=100: median 400.0 ms (40 of 100 ended first)" in text
    assert "prepare 100.00 + apply 2.00 ms (floor)" in text


def test_issue_17_targets_without_results_are_not_measured():
    assert {t["met"] for t in run.targets17({})} == {None}


def test_the_profile_is_reported_next_to_the_one_before(tmp_path):
    data = job_data17()
    before = {"profiles": [dict(data["modes"]["service"]["profiles"][0])]}
    cols = job_overhead.profile_columns(data, before)
    assert [label for label, _ in cols] == ["before U=1", "service U=1"]
    text = job_overhead.profile_report(cols)
    assert "before U=1 N=100" in text and "service U=1 N=100" in text
    # 0.1 s over 100 jobs: 1 ms per job
    journal = next(line for line in text.splitlines() if line.startswith("journal"))
    assert journal.split()[1:] == ["1.00", "1.00"]


def test_the_summary_says_each_benchmarks_time_and_load():
    status = {"floor": {"wall_s": 9.0, "rc": 0, "load": [6.7, 6.4]}}
    res = {"floor": floor_data()}
    text = run.summary_markdown(run.targets(res), res, None, status)
    assert text.startswith("Run: floor 9.0 s (exit 0, load 6.7 -> 6.4)")
