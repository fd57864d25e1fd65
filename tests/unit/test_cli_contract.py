"""The output contract, in this process with the library stubbed: every failure is one `error:` line on
stderr, or with -o json one JSON object on stdout; usage errors, bad --timeout values, interruptions,
outcome-unknown writes and unexpected exceptions included. Never a traceback."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
from helpers import invoke

from provision import deadline
from provision.azure import imds
from provision.db import admin, connect
from provision.errors import Interrupted, OutcomeUnknown
from provision.logs import redact

CLIENT_ID = "8d0c3c37-4e1c-4d5e-9a52-6f1f2b0f4a11"


def failure(stdout: str) -> dict[str, Any]:
    data = json.loads(stdout)  # one object, nothing else on stdout
    assert isinstance(data, dict)
    return data


def raising(error: BaseException) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    return fail


@pytest.fixture
def token_fails(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`provision token` raises what the test sets."""

    def set_error(error: BaseException) -> None:
        monkeypatch.setattr(imds, "access_token", raising(error))

    return set_error


# -- usage errors and bad global options -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "json", "--bogus", "token"], "No such option '--bogus'"),
        (["--output=json", "token", "--bogus"], "No such option '--bogus'"),
        (["-ojson", "nonsense"], "No such command 'nonsense'"),
        (["-o", "json", "role", "list"], "Missing option '--host'"),
    ],
)
def test_usage_errors_are_one_json_object(args: list[str], message: str) -> None:
    status, stdout, stderr = invoke(*args)

    assert status == 2, stderr
    data = failure(stdout)
    assert data["changed"] is False and data["exitStatus"] == 2
    assert data["error"]["code"] == "UsageError" and data["error"]["message"].startswith(message)
    assert stderr == ""


def test_usage_error_in_text_is_one_line_on_stderr() -> None:
    status, stdout, stderr = invoke("token", "--bogus")

    assert status == 2 and stdout == ""
    assert stderr == "error: No such option '--bogus'. (see 'cli token --help')\n"


@pytest.mark.parametrize("value", ["0", "-5", "abc", "nan", "inf", ""])
@pytest.mark.parametrize("output", ["text", "json"])
def test_bad_timeout_is_refused_before_the_command_runs(
    value: str, output: str, token_fails: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_fails(AssertionError("the command ran despite a bad --timeout"))

    status, stdout, stderr = invoke("-o", output, "--timeout", value, "token")

    message = f"--timeout {value!r}: expected a number of seconds greater than 0"
    assert status == 2
    if output == "json":
        assert failure(stdout)["error"] == {"code": "InvalidInput", "message": message, "hint": None}
    else:
        assert stderr == f"error: {message}\n" and stdout == ""


def test_timeout_comes_from_the_environment(token_fails: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISION_TIMEOUT", "0.5x")
    token_fails(AssertionError("the command ran despite a bad PROVISION_TIMEOUT"))

    status, _, stderr = invoke("token")

    assert status == 2 and stderr == "error: --timeout '0.5x': expected a number of seconds greater than 0\n"


def test_the_budget_is_started_and_the_backstop_armed_while_a_command_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[float | None, float]] = []

    def record(*args: Any) -> Any:
        seen.append((deadline.current().seconds, signal.getitimer(signal.ITIMER_REAL)[0]))
        raise OutcomeUnknown("stop here")

    monkeypatch.setattr(imds, "access_token", record)

    invoke("--timeout", "42", "token")

    ((budget, alarm_in),) = seen
    assert budget == 42 and 42 < alarm_in <= 43
    # Once the command has ended: no alarm, the signals' handlers back, no budget for library code.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert not deadline.current().bounded


def test_the_emulator_is_not_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from provision.emulator import stack

    seen: list[tuple[bool, float]] = []

    def record(*args: Any) -> Any:
        seen.append((deadline.current().bounded, signal.getitimer(signal.ITIMER_REAL)[0]))
        raise OutcomeUnknown("stop here")

    deadline.start(None)
    monkeypatch.setattr(stack, "start", record)

    invoke("--timeout", "1", "emulator", "start")

    assert seen == [(False, 0.0)]


def test_psql_has_no_alarm_that_would_outlive_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    def record(*args: Any) -> Any:
        seen.append(signal.getitimer(signal.ITIMER_REAL)[0])
        raise OutcomeUnknown("stop here")

    monkeypatch.setattr(connect, "exec_psql", record)

    invoke("--timeout", "5", "psql", "--host", "db.example.com", "--user", "myuser")

    assert seen == [0.0]  # an interval timer survives execve(2): psql would get SIGALRM


# -- failures of the command -------------------------------------------------------------------------


def test_outcome_unknown_says_so_in_json(token_fails: Any) -> None:
    token_fails(OutcomeUnknown("updating VM myVM: the answer was lost", hint="A re-run will show it."))

    status, stdout, _ = invoke("-o", "json", "token")

    assert status == 1
    assert failure(stdout) == {
        "changed": False,
        "error": {
            "code": "OutcomeUnknown",
            "message": "updating VM myVM: the answer was lost",
            "hint": "A re-run will show it.",
        },
        "exitStatus": 1,
        "outcome": "unknown",
    }


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_with_a_write_in_flight(signum: int, status: int, token_fails: Any) -> None:
    token_fails(Interrupted(signum, during="updating VM myVM"))

    text_status, stdout, stderr = invoke("token")
    json_status, json_stdout, _ = invoke("-o", "json", "token")

    name = signal.Signals(signum).name
    message = (
        f"interrupted ({name}) while updating VM myVM: Azure or PostgreSQL carries on with what it accepted,"
        " so the change may have been made; a re-run will show it"
    )
    assert (text_status, json_status) == (status, status)
    assert stdout == "" and stderr == f"error: {message}\n"
    data = failure(json_stdout)
    assert data["error"]["message"] == message and data["outcome"] == "unknown" and data["exitStatus"] == status


def test_interrupted_with_nothing_in_flight(token_fails: Any) -> None:
    token_fails(Interrupted(signal.SIGINT))

    status, stdout, _ = invoke("-o", "json", "token")

    assert status == 130
    assert "outcome" not in failure(stdout) and failure(stdout)["error"]["message"] == "interrupted (SIGINT)"


@pytest.mark.parametrize("output", ["text", "json"])
def test_an_unexpected_exception_is_one_line(output: str, token_fails: Any) -> None:
    token_fails(RuntimeError("boom\nsecond line"))

    status, stdout, stderr = invoke("-o", output, "token")

    assert status == 1 and "Traceback" not in stderr + stdout
    expected = "unexpected RuntimeError: boom"
    if output == "json":
        assert failure(stdout)["error"]["code"] == "UnexpectedError"
        assert failure(stdout)["error"]["message"] == expected
    else:
        assert stderr.splitlines()[0] == f"error: {expected}" and len(stderr.splitlines()) == 2


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "PGSSLROOTCERT"])
def test_a_ca_variable_naming_a_missing_file_is_named(
    variable: str, token_fails: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    missing = tmp_path / "nowhere.pem"
    monkeypatch.setenv(variable, str(missing))
    token_fails(OSError(f"Could not find a suitable TLS CA certificate bundle, invalid path: {missing}"))

    status, _, stderr = invoke("token")

    assert status == 1
    assert stderr.splitlines()[0] == f"error: {variable} names {missing}, which is not a file"


def test_failures_are_redacted_in_json(token_fails: Any) -> None:
    jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl"
    token_fails(OutcomeUnknown(f"lost the answer to a request with {jwt}", hint=f"password={jwt}"))

    _, stdout, _ = invoke("-o", "json", "token")

    assert jwt not in stdout and "<token redacted>" in stdout


# -- psql --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["text", "json"])
def test_dry_run_psql_is_refused(output: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect, "exec_psql", raising(AssertionError("psql ran under --dry-run")))
    monkeypatch.setattr(imds, "access_token", raising(AssertionError("a token was fetched under --dry-run")))

    status, stdout, stderr = invoke(
        "-o", output, "--dry-run", "psql", "--host", "db.example.com", "--user", "myuser", "--", "-c", "drop table t"
    )

    message = "--dry-run: provision psql cannot show what psql would do without running it"
    assert status == 2
    assert (failure(stdout)["error"]["message"] if output == "json" else stderr) == (
        message if output == "json" else f"error: {message}\n"
    )


def test_psql_help_documents_its_exit_status() -> None:
    _, stdout, _ = invoke("psql", "--help")

    assert "Exit status: psql's own once it runs" in stdout and "Not with --dry-run" in stdout


# -- redaction of known secrets ----------------------------------------------------------------------


def test_a_short_password_does_not_garble_the_message() -> None:
    message = 'connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed'

    assert redact(message, "a") == message
    assert redact(message, "pass") == message


def test_a_long_password_is_masked() -> None:
    assert redact("it said: hunter2-correct-horse", "hunter2-correct-horse") == "it said: <redacted>"


def test_the_admin_login_error_keeps_its_words_with_a_one_letter_password() -> None:
    from provision.db.target import Target

    error = admin.connection_error(
        "connection failed: Connection refused", Target("db.example.com", "aadadmin", 5432), "e", "PGPASSWORD"
    )

    assert "Connection refused" in str(error)
