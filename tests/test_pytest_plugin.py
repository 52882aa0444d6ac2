"""The pytest plugin, tested the way pytest tests its plugins: real inner suites via ``pytester``."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k not in ("warnings", "warning")}


MIXED = """
    import pytest

    def test_pass():
        assert True

    def test_fail():
        assert 1 + 1 == 3

    @pytest.mark.skip(reason="nope")
    def test_skip():
        pass

    @pytest.mark.xfail(reason="known")
    def test_xfail():
        assert False

    @pytest.mark.xfail(reason="known")
    def test_xpass():
        pass

    def test_pytest_fail():
        pytest.fail("explicit failure")

    @pytest.fixture
    def broken():
        raise RuntimeError("fixture broke")

    def test_setup_error(broken):
        pass

    @pytest.fixture
    def broken_teardown():
        yield
        raise RuntimeError("teardown broke")

    def test_teardown_error(broken_teardown):
        pass
"""


def test_outcomes_match_a_bare_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MIXED)
    bare = pytester.runpytest("-p", "no:cacheprovider")
    sandboxed = pytester.runpytest("-p", "no:cacheprovider", "--sandbox-all")
    assert outcomes(sandboxed) == outcomes(bare) == {
        "passed": 2, "failed": 2, "skipped": 1, "xfailed": 1, "xpassed": 1, "errors": 2}
    text = sandboxed.stdout.str()
    assert "assert (1 + 1) == 3" in text           # assertion rewriting
    assert "explicit failure" in text
    assert "fixture broke" in text and "teardown broke" in text
    assert ">       assert 1 + 1 == 3" in text     # source lines in the traceback


def test_marked_test_is_isolated_and_its_writes_vanish(pytester: pytest.Pytester) -> None:
    marker = f"sbx-plugin-{os.getpid()}"
    import pwd

    home = pwd.getpwuid(os.getuid()).pw_dir  # pytester points HOME at its temporary directory
    pytester.makepyfile(f"""
        import os, pytest

        @pytest.mark.sandbox
        def test_writes():
            with open("/etc/passwd", "a") as f:
                f.write("{marker}:x:0:0::/:/bin/sh\\n")
            with open("{home}/{marker}", "w") as f:
                f.write("x")
            os.mkdir("/usr/{marker}")
            assert os.getpid() != 1 and os.readlink("/proc/self/ns/pid") != "{os.readlink('/proc/self/ns/pid')}"
            assert os.listdir("/sys/class/net") == ["lo"]

        @pytest.mark.sandbox
        def test_next_sandbox_sees_nothing():
            assert "{marker}" not in open("/etc/passwd").read()
            assert not os.path.exists("/usr/{marker}")

        def test_host_sees_nothing():
            assert "{marker}" not in open("/etc/passwd").read()
            assert not os.path.exists("{home}/{marker}")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert outcomes(result) == {"passed": 3}, result.stdout.str()
    assert not os.path.exists(os.path.expanduser(f"~/{marker}"))


def test_private_tmp_but_tmp_path_works(pytester: pytest.Pytester) -> None:
    host_file = f"/tmp/sbx-plugin-visible-{os.getpid()}"
    with open(host_file, "w") as f:
        f.write("host")
    try:
        pytester.makepyfile(f"""
            import os, pytest

            @pytest.mark.sandbox
            def test_tmp(tmp_path):
                assert not os.path.exists("{host_file}")
                (tmp_path / "kept").write_text("from inside")
                open("/tmp/scratch", "w").write("x")

            def test_after(tmp_path_factory):
                base = tmp_path_factory.getbasetemp()
                assert (base / "test_tmp0" / "kept").read_text() == "from inside"
        """)
        result = pytester.runpytest("-p", "no:cacheprovider")
        assert outcomes(result) == {"passed": 2}, result.stdout.str()
    finally:
        os.unlink(host_file)


def test_wide_fixtures_are_set_up_once_outside(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import os, pytest

        CALLS = []

        @pytest.fixture(scope="session")
        def session_pid():
            CALLS.append(1)
            yield os.getpid()
            CALLS.append("torn down")

        @pytest.fixture(scope="module")
        def module_value(session_pid):
            return {"made_in": os.getpid()}

        @pytest.fixture
        def function_pid():
            return os.getpid()

        @pytest.mark.sandbox
        def test_one(session_pid, module_value, function_pid):
            assert module_value["made_in"] == session_pid      # made in pytest's process
            assert function_pid != session_pid                 # made in the sandbox
            assert CALLS == [1]

        @pytest.mark.sandbox
        def test_two(session_pid, module_value):
            assert CALLS == [1]

        def test_bare(session_pid):
            assert CALLS == [1] and session_pid == os.getpid()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert outcomes(result) == {"passed": 3}, result.stdout.str()


def test_custom_items_run_in_the_sandbox(pytester: pytest.Pytester) -> None:
    """A conftest's own pytest.Item (no fixtures) runs its whole protocol sandboxed, never bare on the host."""
    pytester.makeconftest("""
        import os, pytest

        HOST_PID_NS = os.readlink("/proc/self/ns/pid")

        class CheckItem(pytest.Item):
            def runtest(self):
                assert os.readlink("/proc/self/ns/pid") != HOST_PID_NS, "ran on the host"

        class CheckFile(pytest.File):
            def collect(self):
                yield CheckItem.from_parent(self, name="inside")

        def pytest_collect_file(parent, file_path):
            if file_path.suffix == ".check":
                return CheckFile.from_parent(parent, path=file_path)
    """)
    pytester.makefile(".check", "")
    result = pytester.runpytest("-p", "no:cacheprovider", "--sandbox-all")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()


def test_skip_and_fail_in_wide_set_up_match_a_bare_run(pytester: pytest.Pytester) -> None:
    """pytest.skip/fail/importorskip in setup_module or a wide fixture: reported as bare, the session goes on."""
    pytester.makepyfile(
        test_setup_module="""
            import pytest

            def setup_module():
                pytest.skip("module skipped")

            def test_a(): pass
            def test_b(): pass
        """,
        test_fixtures="""
            import pytest

            @pytest.fixture(scope="module")
            def module_fails():
                pytest.fail("module fixture failed")

            @pytest.fixture(scope="class")
            def class_needs():
                pytest.importorskip("no_such_module_for_sandboxer")

            @pytest.fixture(scope="session")
            def session_skips():
                pytest.skip("session skipped")

            def test_fails(module_fails): pass

            class TestClass:
                def test_needs(self, class_needs): pass

            def test_session(session_skips): pass

            def test_after(): pass
        """)
    bare = pytester.runpytest("-p", "no:cacheprovider", "-ra")
    sandboxed = pytester.runpytest("-p", "no:cacheprovider", "-ra", "--sandbox-all")
    assert sandboxed.ret == bare.ret == pytest.ExitCode.TESTS_FAILED, sandboxed.stdout.str()
    assert outcomes(sandboxed) == outcomes(bare) == {"passed": 1, "skipped": 4, "errors": 1}
    assert _summary(sandboxed, "short test summary info") == _summary(bare, "short test summary info")


def test_crash_in_a_function_fixture_is_an_error_at_setup(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import os, time, pytest

        @pytest.fixture
        def exits():
            os._exit(3)

        @pytest.fixture
        def hangs():
            time.sleep(60)

        @pytest.mark.sandbox
        def test_exits(exits): pass

        @pytest.mark.sandbox(timeout=1)
        def test_hangs(hangs): pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert outcomes(result) == {"errors": 2}, result.stdout.str()
    text = result.stdout.str()
    assert "ERROR at setup of test_exits" in text and "sandboxed test exited with status 3" in text
    assert "ERROR at setup of test_hangs" in text and "timed out after 1.0s" in text


def test_crashes_are_failures_that_say_what_happened(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import ctypes, os, time, pytest

        @pytest.mark.sandbox
        def test_segfault():
            ctypes.string_at(0)

        @pytest.mark.sandbox
        def test_exit():
            os._exit(3)

        @pytest.mark.sandbox(timeout=1)
        def test_hangs():
            import subprocess
            subprocess.Popen(["sleep", "60"])
            time.sleep(60)

        def test_after():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert outcomes(result) == {"failed": 3, "passed": 1}, result.stdout.str()
    text = result.stdout.str()
    assert "sandboxed test killed by SIGSEGV" in text
    assert "sandboxed test exited with status 3" in text
    assert "timed out after 1.0s; process tree killed" in text


def _summary(result: pytest.RunResult, title: str) -> list[str]:
    """The lines of one ``=== title ===`` section of a pytest run's output."""
    lines = result.stdout.lines
    starts = [i for i, line in enumerate(lines) if line.startswith("=") and f" {title} " in line]
    if not starts:
        return []
    out = []
    for line in lines[starts[0] + 1:]:
        if line.startswith("="):
            break
        out.append(line)
    return out


def test_summaries_and_warnings_match_a_bare_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MIXED + """
    import warnings

    class HomeMadeWarning(UserWarning):
        pass

    def test_warns():
        warnings.warn("old api", DeprecationWarning)
        warnings.warn("home made", HomeMadeWarning)
    """)
    bare = pytester.runpytest("-p", "no:cacheprovider", "-ra")
    sandboxed = pytester.runpytest("-p", "no:cacheprovider", "-ra", "--sandbox-all")
    assert outcomes(sandboxed) == outcomes(bare)
    assert sandboxed.parseoutcomes()["warnings"] == bare.parseoutcomes()["warnings"] == 2
    for title in ("short test summary info", "warnings summary"):
        assert _summary(sandboxed, title) == _summary(bare, title), title
    assert any("HomeMadeWarning: home made" in line for line in _summary(sandboxed, "warnings summary"))


def test_subtests_are_reported_and_survive_a_crash(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import ctypes, unittest, pytest

        class TestCase(unittest.TestCase):
            def test_loop(self):
                for i in range(3):
                    with self.subTest(i=i):
                        self.assertNotEqual(i, 1)

        def test_then_crash(subtests):
            with subtests.test(msg="before the crash"):
                assert True
            with subtests.test(msg="failing part"):
                assert False
            ctypes.string_at(0)
    """)
    if not hasattr(pytest, "Subtests"):
        pytest.skip("this pytest has no built-in subtests")
    bare = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "loop", "-ra")
    sandboxed = pytester.runpytest("-p", "no:cacheprovider", "-k", "loop", "-ra", "--sandbox-all")
    assert outcomes(sandboxed) == outcomes(bare), sandboxed.stdout.str()
    # subtest parameters cross as strings (pytest's own report serialisation, as with xdist): i='1'
    assert [line.replace("'", "") for line in _summary(sandboxed, "short test summary info")] == \
        _summary(bare, "short test summary info")
    crashed = pytester.runpytest("-p", "no:cacheprovider", "-k", "crash", "-ra", "-v", "--sandbox-all")
    text = crashed.stdout.str()
    assert "SUBPASSED" in text and "SUBFAILED" in text, text  # sent before the child died
    assert "sandboxed test killed by SIGSEGV" in text


def test_pytest_exit_inside_stops_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox
        def test_stops():
            pytest.exit("enough", returncode=7)

        def test_never():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 7
    assert "enough" in result.stdout.str() + result.stderr.str()
    assert "test_never" not in result.stdout.str()


def test_capture_logging_and_properties_cross_the_boundary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import logging, sys, pytest

        @pytest.mark.sandbox
        def test_output(capsys, caplog, record_property):
            print("to stdout")
            print("to stderr", file=sys.stderr)
            assert capsys.readouterr().out == "to stdout\\n"
            logging.getLogger("t").warning("logged inside")
            assert "logged inside" in caplog.text
            record_property("answer", 42)
            print("after readouterr")
            assert False
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--junitxml=out.xml")
    assert outcomes(result) == {"failed": 1}
    text = result.stdout.str()
    assert "after readouterr" in text and "logged inside" in text
    xml = (pytester.path / "out.xml").read_text()
    assert 'name="answer" value="42"' in xml
    assert 'name="sandbox" value="namespaces=user,mnt,pid,net' in xml


def test_junitxml_attributes_and_suite_properties_match_a_bare_run(pytester: pytest.Pytester) -> None:
    import xml.etree.ElementTree as ET

    pytester.makepyfile("""
        def test_records(record_xml_attribute, record_testsuite_property):
            record_xml_attribute("owner", "team-a")
            record_testsuite_property("build", "42")

        def test_plain():
            pass
    """)
    seen = []
    for mode in ("--no-sandbox", "--sandbox-all"):
        pytester.runpytest("-p", "no:cacheprovider", mode, "-o", "junit_family=xunit1", f"--junitxml={mode}.xml")
        suite = ET.parse(pytester.path / f"{mode}.xml").find("testsuite")
        assert suite is not None
        seen.append(([p.attrib for p in suite.findall("properties/property")],
                     [{k: v for k, v in case.attrib.items() if k != "time"} for case in suite.iter("testcase")]))
    assert seen[1] == seen[0]
    assert seen[0][0] == [{"name": "build", "value": "42"}] and seen[0][1][0]["owner"] == "team-a"


def test_s_shows_output_live(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox
        def test_print():
            print("LIVE-OUTPUT")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    assert "LIVE-OUTPUT" in result.stdout.str()


def test_x_and_last_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.sandbox

        def test_a(): assert False
        def test_b(): assert False
        def test_c(): pass
    """)
    result = pytester.runpytest("-x")
    assert outcomes(result) == {"failed": 1}
    pytester.runpytest()
    result = pytester.runpytest("--lf", "-k", "test_b")
    assert outcomes(result) == {"failed": 1, "deselected": 2} or outcomes(result).get("failed") == 1


@pytest.mark.parametrize(("marker", "message"), [
    ('sandbox(colour="blue")', "unknown keyword 'colour'"),
    ('sandbox(memory="lots")', "memory='lots': expected a size"),
    ('sandbox(volumes=["/no/such/path:/x"])', "volumes: source /no/such/path does not exist"),
    ('sandbox(network="bridge")', "network='bridge'"),
    ('sandbox("positional")', "positional arguments"),
    ('sandbox(user="nosuchuser")', "user='nosuchuser': no user 'nosuchuser' on this host"),
    ('sandbox(user="0:nosuchgroup")', "no group 'nosuchgroup' on this host"),
    ('sandbox(cap_add=["NOT_A_CAP"])', "cap_add=['NOT_A_CAP']: expected a list of capability names"),
    ('sandbox(cap_drop=["NOT_A_CAP"])', "cap_drop=['NOT_A_CAP']"),
    ('sandbox(seccomp="/nonexistent.json")', "seccomp='/nonexistent.json': expected"),
    ('sandbox(hostname="h" * 65)', "expected a string of at most 64 bytes"),
])
def test_bad_markers_are_collection_errors(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.{marker}
        def test_x():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "test_x" in err and message in err, err


def test_bad_options_are_one_usage_error_and_only_what_runs_is_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox(colour="blue")
        def test_bad_marker(): pass

        @pytest.mark.sandbox
        def test_good(): pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--sandbox-timeout=-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "--sandbox-timeout): -1.0: expected a positive number of seconds" in err and "test_" not in err, err
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "good")  # the bad marker is deselected
    assert outcomes(result) == {"passed": 1, "deselected": 1}, result.stderr.str()
    result = pytester.runpytest("-p", "no:cacheprovider", "--no-sandbox", "--sandbox-network=nosuchnet")
    assert outcomes(result) == {"passed": 2}, result.stderr.str()


def test_mistakes_only_set_up_finds_always_fail(pytester: pytest.Pytester) -> None:
    """A malformed seccomp profile is the test's mistake: it fails, even with sandbox_unavailable = skip."""
    pytester.makeini("[pytest]\nsandbox_unavailable = skip\n")
    pytester.makefile(".json", profile='{"defaultAction": "SCMP_ACT_NOPE"}')
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox(seccomp="profile.json")
        def test_x():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert outcomes(result) == {"failed": 1}, result.stdout.str()
    text = result.stdout.str()
    assert 'invalid sandbox for this test: linux.seccomp.defaultAction: unknown action "SCMP_ACT_NOPE"' in text
    assert "sandbox unavailable" not in text and "During handling" not in text


def test_required_isolation_is_checked_before_the_test_runs(pytester: pytest.Pytester) -> None:
    ran = pytester.mkdir("ran")
    pytester.makepyfile(f"""
        import pytest

        pytestmark = pytest.mark.sandbox(writable=["{ran}"], require=["seccomp"])

        @pytest.fixture
        def fixture(request):
            open("{ran}/" + request.node.name + ".fixture", "w").close()

        @pytest.mark.sandbox(seccomp="unconfined")
        def test_refused(fixture):
            open("{ran}/test_refused.body", "w").close()

        def test_runs(fixture):
            open("{ran}/test_runs.body", "w").close()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert outcomes(result) == {"failed": 1, "passed": 1}, result.stdout.str()
    assert "required isolation missing: seccomp" in result.stdout.str()
    assert sorted(p.name for p in ran.glob("test_*")) == ["test_runs.body", "test_runs.fixture"]


def test_limits_fail_clearly_until_cgroups_exist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox(memory="64M")
        def test_limited():
            pass

        @pytest.mark.sandbox(require=["cgroup"])
        def test_requires_cgroup():
            pass

        @pytest.mark.sandbox(require=["seccomp", "userns", "pid", "network", "no_new_privs"])
        def test_requires_what_we_give():
            pass

        @pytest.mark.sandbox(seccomp="unconfined", require=["seccomp"])
        def test_requires_seccomp_but_turned_it_off():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rf")
    assert outcomes(result) == {"failed": 3, "passed": 1}, result.stdout.str()
    text = result.stdout.str()
    assert "limits unavailable on this host: memory='64M'" in text
    assert "requires cgroup limits" in text
    assert "required isolation missing: seccomp" in text


def test_markers_merge_nearest_first_and_ini_defaults(pytester: pytest.Pytester) -> None:
    pytester.makeini("""
        [pytest]
        sandbox_network = host
    """)
    pytester.makepyfile("""
        import os, socket, pytest

        pytestmark = pytest.mark.sandbox(hostname="from-module", env={"A": "module", "B": "module"})

        class TestClass:
            pytestmark = pytest.mark.sandbox(hostname="from-class")

            @pytest.mark.sandbox(env={"A": "test"})
            def test_nearest(self):
                assert socket.gethostname() == "from-class"
                assert os.environ["A"] == "test" and "B" not in os.environ

        def test_module_level():
            assert socket.gethostname() == "from-module"
            assert os.environ["B"] == "module"

        @pytest.mark.sandbox(network="none")
        def test_network_override():
            assert os.listdir("/sys/class/net") == ["lo"]

        def test_ini_network():
            assert len(os.listdir("/sys/class/net")) >= 1
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert outcomes(result) == {"passed": 4}, result.stdout.str()


def test_sandbox_all_and_no_sandbox(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import os, pytest

        HOST_PID_NS = os.readlink("/proc/self/ns/pid")

        def test_unmarked():
            print("NS", os.readlink("/proc/self/ns/pid") != HOST_PID_NS)

        @pytest.mark.sandbox
        def test_marked():
            print("NS", os.readlink("/proc/self/ns/pid") != HOST_PID_NS)
    """)
    all_out = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandbox-all", "-s").stdout.str()
    assert all_out.count("NS True") == 2
    none_out = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--no-sandbox", "-s").stdout.str()
    assert none_out.count("NS False") == 2


def test_keep_failed_keeps_the_writable_layer(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox
        def test_fails_after_writing():
            open("/etc/evidence", "w").write("post-mortem")
            assert False

        @pytest.mark.sandbox
        def test_passes():
            open("/etc/other", "w").write("x")

        @pytest.mark.sandbox(memory="1G")
        def test_never_started():
            pass
    """)
    from sandboxer.state import remove_tree, state_root

    before = set(os.listdir(state_root()))
    result = pytester.runpytest("-p", "no:cacheprovider", "--sandbox-keep-failed")
    assert outcomes(result) == {"failed": 2, "passed": 1}
    text = result.stdout.str()
    lines = [line for line in text.splitlines() if "writable layer kept at" in line]
    assert len(lines) == 1, text  # none for the sandbox that never started
    upper = lines[0].split("kept at ", 1)[1].strip()
    with open(os.path.join(upper, "etc", "evidence")) as f:
        assert f.read() == "post-mortem"
    assert set(os.listdir(state_root())) - before == {os.path.basename(os.path.dirname(upper))}
    remove_tree(os.path.dirname(upper))


def test_sandbox_unavailable_fail_or_skip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: pytest.TempPathFactory) -> None:
    not_ours = str(tmp_path) + "/state"
    os.mkdir(not_ours, 0o755)  # group/other bits: refused as a state directory
    monkeypatch.setenv("SANDBOXER_STATE_DIR", not_ours)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox
        def test_x():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rf")
    assert outcomes(result) == {"failed": 1}
    assert "sandbox unavailable: state directory" in result.stdout.str()
    assert "During handling" not in result.stdout.str()  # one clean message
    pytester.makeini("[pytest]\nsandbox_unavailable = skip\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    assert outcomes(result) == {"skipped": 1}


def test_help_documents_the_options(pytester: pytest.Pytester) -> None:
    text = pytester.runpytest("--help").stdout.str()
    for option in ("--sandbox-all", "--no-sandbox", "--sandbox-timeout", "--sandbox-network",
                   "--sandbox-keep-failed", "--sandbox-report", "sandbox_unavailable"):
        assert option in text


def test_report_option_shows_isolation(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox
        def test_x():
            pass
    """)
    text = pytester.runpytest("-p", "no:cacheprovider", "--sandbox-report").stdout.str()
    assert "sandbox isolation" in text
    assert "seccomp=filter no_new_privs=True caps=00000000a80425fb" in text


# --- the sandbox fixture -------------------------------------------------------

def test_sandbox_fixture_runs_commands_with_state_between_them(sandbox) -> None:  # type: ignore[no-untyped-def]
    result = sandbox.run(["sh", "-c", "id -u; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, b"0\n", b"err\n")
    sandbox.write_file("/etc/app.conf", "setting=1\n")
    sandbox.write_file("/tmp/scratch", b"\x00\x01")
    assert sandbox.read_file("/etc/app.conf") == b"setting=1\n"
    assert sandbox.run(["cat", "/tmp/scratch"]).stdout == b"\x00\x01"
    assert sandbox.run(["cat"], input="piped", text=True).stdout == "piped"
    assert not os.path.exists("/etc/app.conf")
    with pytest.raises(Exception, match="returned non-zero exit status 1"):
        sandbox.run(["false"], check=True)


def test_sandbox_factory_makes_independent_sandboxes(sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = sandbox_factory(), sandbox_factory(hostname="bee", env={"X": "1"})
    a.write_file("/etc/only-in-a", "a")
    assert b.run(["sh", "-c", "test -e /etc/only-in-a || echo absent"]).stdout == b"absent\n"
    assert b.run(["sh", "-c", "hostname; echo $X"], text=True).stdout == "bee\n1\n"
    import subprocess

    with pytest.raises(subprocess.TimeoutExpired):
        a.run(["sleep", "30"], timeout=0.5)


def test_sandbox_fixture_in_a_sandboxed_test_is_refused_at_setup(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox
        def test_uses(sandbox):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert outcomes(result) == {"errors": 1}, result.stdout.str()
    text = result.stdout.str()
    assert "the sandbox fixture cannot be used inside a sandboxed test" in text
    assert "hint: remove its sandbox marker" in text and "ERROR at setup of test_uses" in text


def test_sandbox_handle_leaves_nothing(pytester: pytest.Pytester) -> None:
    from sandboxer.state import state_root

    before = set(os.listdir(state_root()))
    pytester.makepyfile("""
        def test_uses(sandbox):
            sandbox.run(["sh", "-c", "echo x > /etc/y; chown 1000 /etc/y 2>/dev/null; true"], check=True)
    """)
    assert outcomes(pytester.runpytest("-p", "no:cacheprovider")) == {"passed": 1}
    assert set(os.listdir(state_root())) <= before


def test_xdist_workers(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(textwrap.dedent("""
        import logging, os, pytest

        @pytest.mark.parametrize("n", range(40))
        @pytest.mark.sandbox
        def test_many(n):
            logging.getLogger("x").warning("test %d", n)
            assert open("/proc/self/status").read()
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    assert outcomes(result) == {"passed": 40}, result.stdout.str()


@pytest.fixture
def outside_private_dirs() -> Any:
    """A fresh directory in $HOME: where the sandbox shows the host's files through its overlay
    (writes there vanish unless bound), unlike /tmp, which it replaces with a tmpfs."""
    import pwd
    import shutil
    import tempfile

    home = pwd.getpwuid(os.getuid()).pw_dir  # not $HOME: pytester points that into its own directory
    path = tempfile.mkdtemp(prefix=".sandboxer-test-", dir=home)
    yield Path(path)
    shutil.rmtree(path)


@pytest.mark.parametrize("data_dir", ["project", "home"])
def test_coverage_inside_sandboxed_tests_is_measured(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                    outside_private_dirs: Path, data_dir: str) -> None:
    """Also with the data file outside /tmp: the child sends its data, the parent writes it (the data
    file's directory, often the project, is not bound writable)."""
    pytest.importorskip("pytest_cov")
    if data_dir == "home":
        monkeypatch.setenv("COVERAGE_FILE", str(outside_private_dirs / ".coverage"))
    pytester.makepyfile(
        covered="""
            def branchy(x):
                if x > 0:
                    return "positive"
                return "other"
        """,
        test_cov="""
            import pytest
            from covered import branchy

            @pytest.mark.sandbox
            def test_positive():
                assert branchy(1) == "positive"

            @pytest.mark.sandbox
            def test_other():
                assert branchy(-1) == "other"
        """)
    reports = {}
    for mode in ("--no-sandbox", "--sandbox-all"):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", mode, "--cov=covered",
                                               "--cov-report=term-missing")
        assert outcomes(result) == {"passed": 2}, result.stdout.str()
        reports[mode] = [line for line in result.stdout.lines if line.startswith("covered")]
    assert reports["--sandbox-all"] == reports["--no-sandbox"]
    assert "100%" in reports["--sandbox-all"][0]


def test_x_stops_with_a_wider_scopes_teardown_error_reported_as_bare(pytester: pytest.Pytester) -> None:
    """-x: the session stops after the first failure, and a module fixture's teardown error is that
    test's, as pytest's own protocol has it — it was raised at session end, crashing pytest."""
    pytester.makepyfile("""
        import pytest

        @pytest.fixture(scope="module")
        def m():
            yield
            raise RuntimeError("module teardown boom")

        def test_a(m):
            assert 0

        def test_b(m):
            pass
    """)
    runs = {mode: pytester.runpytest_subprocess("-p", "no:cacheprovider", "-x", mode)
            for mode in ("--no-sandbox", "--sandbox-all")}
    for mode, result in runs.items():
        text = result.stdout.str() + result.stderr.str()
        assert outcomes(result) == {"failed": 1, "errors": 1}, (mode, text)
        assert "ERROR at teardown of test_a" in text and "stopping after 2 failures" in text, (mode, text)
        assert "Traceback (most recent call last)" not in text, (mode, text)


@pytest.mark.parametrize("where", ["home", "inside-rootdir"])
def test_basetemp_anywhere_is_writable_and_shared(outside_private_dirs: Path, where: str) -> None:
    """tmp_path and session temp dirs under a --basetemp outside /tmp, or inside the (read-only bound)
    project, are written through to the host, as in a bare run.  The project is a directory of its
    own under /tmp (pytester's would sit inside our own, writable, pytest-of-USER)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    project = Path(tempfile.mkdtemp(prefix="sandboxer-test-", dir="/tmp"))
    basetemp = outside_private_dirs / "bt" if where == "home" else project / "bt"
    (project / "test_bt.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.fixture(scope="session")
        def shared(tmp_path_factory):
            return tmp_path_factory.mktemp("sess")

        def test_write(shared, tmp_path):
            (shared / "g").write_text("from test_write")
            (tmp_path / "own").write_text("kept")

        def test_read(shared):
            assert (shared / "g").read_text() == "from test_write"
    """))
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--sandbox-all",
                                 f"--basetemp={basetemp}"], cwd=project, capture_output=True, text=True)
        assert "2 passed" in result.stdout, result.stdout + result.stderr
        assert (basetemp / "test_write0" / "own").read_text() == "kept"
    finally:
        shutil.rmtree(project)


def test_wider_scopes_output_is_captured_into_the_tests_sections(pytester: pytest.Pytester,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """What a module fixture, setup_module or teardown_module prints or logs, in pytest's process, was
    raw terminal output and missing from the test's "Captured … setup/teardown" sections.  The test
    fails only sandboxed (another user namespace): it ran in its sandbox."""
    monkeypatch.setenv("OUTER_NS", os.readlink("/proc/self/ns/user"))
    pytester.makepyfile("""
        import logging, os, pytest

        @pytest.fixture(scope="module")
        def modfx():
            print("module setup out")
            logging.getLogger("wide").warning("module setup log")
            yield
            print("module teardown out")

        def setup_module():
            print("setup_module out")

        def test_one(modfx):
            assert os.readlink("/proc/self/ns/user") == os.environ["OUTER_NS"]
    """)
    texts = {}
    for mode in ("--no-sandbox", "--sandbox-all"):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", mode)
        assert outcomes(result) == {"failed" if mode == "--sandbox-all" else "passed": 1}, result.stdout.str()
        texts[mode] = [line for line in result.stdout.lines
                       if "Captured" in line or "module " in line or "setup_module" in line]
    assert texts["--sandbox-all"] == texts["--no-sandbox"]
    assert "module setup log" in "\n".join(texts["--no-sandbox"])


def test_warnings_of_custom_classes_read_as_in_a_bare_run(pytester: pytest.Pytester) -> None:
    """A warning class with its own constructor, or one defined inside the test, was reported as
    ``UserWarning: MyWarning: …``."""
    pytester.makepyfile("""
        import warnings

        class MyWarning(UserWarning):
            def __init__(self, code, text):
                super().__init__(f"{code}: {text}")

        def test_custom():
            warnings.warn(MyWarning(42, "custom"))

        def test_local():
            class LocalWarning(UserWarning):
                pass
            warnings.warn("local one", LocalWarning)
    """)
    lines = {}
    for mode in ("--no-sandbox", "--sandbox-all"):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", mode)
        lines[mode] = [line.strip() for line in result.stdout.lines if "Warning:" in line]
    assert lines["--sandbox-all"] == lines["--no-sandbox"], lines
    assert any("MyWarning: 42: custom" in line for line in lines["--no-sandbox"])
    assert any("LocalWarning: local one" in line for line in lines["--no-sandbox"])


def test_cache_set_in_a_sandboxed_test_reaches_the_next() -> None:
    """cache.set() wrote into the overlay (or the read-only project), so the next test, and the next
    session, never saw it.  The project is a directory of its own under /tmp (pytester's would sit
    inside our own, writable, pytest-of-USER)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    project = Path(tempfile.mkdtemp(prefix="sandboxer-test-", dir="/tmp"))
    (project / "test_cache.py").write_text(textwrap.dedent("""
        def test_set(cache):
            cache.set("sandboxer/key", 42)

        def test_get(cache):
            assert cache.get("sandboxer/key", None) == 42
    """))
    try:
        for args, expected in (([], "2 passed"), (["-k", "test_get"], "1 passed, 1 deselected")):
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "--sandbox-all", *args], cwd=project,
                                    capture_output=True, text=True)
            assert expected in result.stdout, result.stdout + result.stderr
    finally:
        shutil.rmtree(project)


def test_faulthandler_timeout_dumps_the_tests_stack(pytester: pytest.Pytester) -> None:
    """faulthandler_timeout dumped pytest's own stack (waiting for the child), not the test's."""
    pytester.makepyfile("""
        import time

        def test_slow():
            time.sleep(2.5)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandbox-all", "-o", "faulthandler_timeout=1")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    lines = result.stderr.lines
    dumps = [i for i, line in enumerate(lines) if "most recent call first" in line]
    assert len(dumps) == 1 and lines[dumps[0] + 1].strip().endswith("in test_slow"), "\n".join(lines)


def test_values_json_cannot_hold_travel_as_junit_writes_them(pytester: pytest.Pytester) -> None:
    """record_property(object()) passed bare and failed sandboxed ("exited with status 125"); a tuple
    came back as a list."""
    pytester.makepyfile("""
        def test_props(record_property):
            record_property("obj", object())
            record_property("pair", (1, 2))
            record_property("n", 5)
    """)
    xml = {}
    for mode in ("--no-sandbox", "--sandbox-all"):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", mode, f"--junitxml={mode}.xml")
        assert outcomes(result) == {"passed": 1}, result.stdout.str()
        import re

        text = (pytester.path / f"{mode}.xml").read_text()
        xml[mode] = re.findall(r'<property name="(pair|n)" value="([^"]*)"', text)
        assert '<property name="obj" value="&lt;object object at 0x' in text, text
    assert xml["--sandbox-all"] == xml["--no-sandbox"] == [("pair", "(1, 2)"), ("n", "5")]


@pytest.mark.parametrize("keep", [[], ["--sandbox-keep-failed"]], ids=["plain", "keep-failed"])
def test_killed_pytest_leaves_nothing_behind(pytester: pytest.Pytester, keep: list[str]) -> None:
    """Also the disk-backed writable layer of --sandbox-keep-failed: the killed test never failed."""
    import signal
    import subprocess
    import sys
    import time

    from sandboxer.state import collect_garbage, is_alive, state_root

    root = state_root()
    before = set(os.listdir(root))
    ready = pytester.path / "ready"
    pytester.makepyfile(f"""
        import time, pytest

        @pytest.mark.sandbox
        def test_sleeps(tmp_path):
            open("{ready}", "w").close()
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             f"--basetemp={pytester.path / 'bt'}", *keep], cwd=pytester.path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the sandboxed test never started"
        time.sleep(0.05)
    new = [e for e in os.listdir(root) if e not in before]
    assert new, "no sandbox state directory appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(is_alive(os.path.join(root, e)) for e in new):  # every process of the sandbox holds it
        assert time.monotonic() < deadline, "sandbox processes outlived a SIGKILLed pytest"
        time.sleep(0.05)
    collect_garbage()  # what the next run does first
    assert not [e for e in os.listdir(root) if e in new]


def test_xdist_many_tests_with_logging(pytester: pytest.Pytester) -> None:
    """Forking from xdist's threaded workers, many times, with logging active: no hang, no loss."""
    pytest.importorskip("xdist")
    pytester.makepyfile("""
        import logging, threading, pytest

        log = logging.getLogger("busy")

        @pytest.fixture(scope="session", autouse=True)
        def chatter():
            stop = threading.Event()
            def talk():
                while not stop.is_set():
                    log.warning("background thread holding the logging lock")
            t = threading.Thread(target=talk, daemon=True)
            t.start()
            yield
            stop.set()

        @pytest.mark.parametrize("n", range(80))
        @pytest.mark.sandbox
        def test_many(n):
            log.warning("inside %d", n)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--log-level=WARNING",
                                           timeout=300)
    assert outcomes(result) == {"passed": 80}, result.stdout.str()


def test_a_sandboxed_test_gets_none_of_the_descriptors_pytest_inherited(tmp_path: Path) -> None:
    """What pytest's own caller left open (a CI harness's pipe, a shell's ``7<dir``) would be a way to
    the host's files from the test: dropped, as ``sandboxer run`` drops it; pytest's own stay."""
    import subprocess
    import sys

    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "test_fd.py").write_text(
        "import os, pytest\n"
        "@pytest.mark.sandbox\n"
        "def test_inherited_dir_fd():\n"
        "    with pytest.raises(OSError):\n"
        "        os.close(os.open('PWNED', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=57))\n"
        "    print('captured as ever')\n")
    opened = os.open(victim, os.O_RDONLY | os.O_DIRECTORY)
    dir_fd = os.dup2(opened, 57)
    os.close(opened)
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rP", "test_fd.py"],
                           cwd=tmp_path, pass_fds=(dir_fd,), capture_output=True, text=True, timeout=120)
    finally:
        os.close(dir_fd)
    assert p.returncode == 0 and "captured as ever" in p.stdout, p.stdout + p.stderr
    assert not (victim / "PWNED").exists()
