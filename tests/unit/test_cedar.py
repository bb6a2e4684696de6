"""Loading, validating and evaluating the Cedar policies; the shipped policy test cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from authsvc.authz import cedar
from authsvc.authz.cedar import CedarRequest, PolicyLoadError, load_policies, uid
from authsvc.authz.entities import user_entities
from authsvc.authz.policytests import run_file, run_folder
from authsvc.cli import main as cli_main
from authsvc.errors import InvalidInput
from authsvc.services.policies import load_verified, validate_attributes

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CASE_FILES = sorted((POLICIES / "tests").glob("*.json"))


@pytest.fixture(scope="module")
def bundle() -> cedar.PolicyBundle:
    return load_verified(POLICIES)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def problems_of(directory: Path) -> list[tuple[str, str | None]]:
    with pytest.raises(PolicyLoadError) as caught:
        load_verified(directory)
    return [(p.file, p.policy_id) for p in caught.value.problems]


# --- the shipped policy tests, one pytest case per JSON case --------------------------------


def _cases() -> list[tuple[Path, int]]:
    return [
        (path, index)
        for path in CASE_FILES
        for index, _ in enumerate(json.loads(path.read_text())["cases"])
    ]


@pytest.mark.parametrize(("path", "index"), _cases(), ids=[f"{p.stem}-{i}" for p, i in _cases()])
def test_shipped_policy_case(bundle: cedar.PolicyBundle, path: Path, index: int) -> None:
    result = run_file(bundle, path)[index]
    assert result.passed, f"{result.file}: {result.name}: {result.message}"


def test_every_shipped_policy_is_exercised_allowing_and_denying(
    bundle: cedar.PolicyBundle,
) -> None:
    deciding: dict[str, set[str]] = {}
    for path in CASE_FILES:
        for case in json.loads(path.read_text())["cases"]:
            for policy_id in case.get("reasons", []):
                deciding.setdefault(policy_id, set()).add(case["decision"])
    assert set(deciding) == set(bundle.ids)
    for policy_id, effect in bundle.effects.items():
        # A permit shows up allowing, a forbid denying; every file also has denying cases.
        assert ("allow" if effect == "permit" else "deny") in deciding[policy_id], policy_id


def test_a_failing_case_is_reported(bundle: cedar.PolicyBundle, tmp_path: Path) -> None:
    case = {
        "users": {"alice": {}},
        "cases": [
            {"name": "wrong", "principal": "alice", "action": "users:delete",
             "resource": "alice", "decision": "allow"},
            {"name": "wrong ids", "principal": "alice", "action": "users:read",
             "resource": "alice", "decision": "allow", "reasons": ["rbac.users-read"]},
            {"name": "no such user", "principal": "zed", "action": "users:read",
             "resource": "alice", "decision": "deny"},
        ],
    }  # fmt: skip
    (tmp_path / "bad.json").write_text(json.dumps(case))
    results = run_folder(bundle, tmp_path)
    assert [r.passed for r in results] == [False, False, False]
    assert "expected allow, got deny" in results[0].message
    assert "expected reasons ['rbac.users-read'], got ['users.own-profile']" in results[1].message
    assert "no user 'zed'" in results[2].message


# --- refusing invalid sets, naming file and policy id --------------------------------------


def test_a_syntax_error_names_file_policy_and_line(folder: Path) -> None:
    with (folder / "users.cedar").open("a") as handle:
        handle.write('\n@id("broken.one")\npermit (principal, action, resource) when { 1 + };\n')
    with pytest.raises(PolicyLoadError) as caught:
        load_verified(folder)
    [problem] = caught.value.problems
    assert (problem.file, problem.policy_id) == ("users.cedar", "broken.one")
    assert problem.message.startswith("line ") and "syntax error" in problem.message
    assert "users.cedar: policy 'broken.one': line" in str(caught.value)


def test_schema_violations_name_file_and_policy(folder: Path) -> None:
    (folder / "extra.cedar").write_text(
        '@id("x.unknown-attribute")\n'
        'permit (principal, action == Action::"users:read", resource)\n'
        "when { principal.shoe_size == 44 };\n"
        '@id("x.unknown-action")\n'
        'permit (principal, action == Action::"users:fly", resource);\n'
        '@id("x.wrong-type")\n'
        'permit (principal, action == Action::"users:read", resource)\n'
        "when { principal.email > 3 };\n"
    )
    assert set(problems_of(folder)) == {
        ("extra.cedar", "x.unknown-attribute"),
        ("extra.cedar", "x.unknown-action"),
        ("extra.cedar", "x.wrong-type"),
    }


def test_ids_are_required_and_unique(folder: Path) -> None:
    (folder / "dup.cedar").write_text(
        '@id("rbac.users-read")\npermit (principal, action == Action::"users:read", resource);\n'
    )
    (folder / "anon.cedar").write_text(
        'permit (principal, action == Action::"users:read", resource);\n'
    )
    with pytest.raises(PolicyLoadError) as caught:
        load_verified(folder)
    assert {(p.file, p.policy_id) for p in caught.value.problems} == {
        ("anon.cedar", None),
        ("rbac.cedar", "rbac.users-read"),  # files load in name order: dup.cedar came first
    }
    assert "already used in dup.cedar" in str(caught.value)


def test_schema_problems_and_missing_pieces(folder: Path, tmp_path: Path) -> None:
    (folder / "broken.cedarschema").write_text("entity Broken {")
    assert problems_of(folder) == [("broken.cedarschema", None)]
    (folder / "broken.cedarschema").unlink()

    # authsvc's routes need their actions: a schema without one is refused.
    schema = (folder / "schema.cedarschema").read_text()
    (folder / "schema.cedarschema").write_text(
        schema.replace('"audit:read" appliesTo', '"audit:view" appliesTo')
    )
    (folder / "rbac.cedar").write_text(
        (folder / "rbac.cedar").read_text().replace('audit:read"', 'audit:view"', 1)
    )
    assert ("*.cedarschema", None) in problems_of(folder)  # fmt: skip
    assert problems_of(tmp_path / "nowhere") == [(str(tmp_path / "nowhere"), None)]


# --- evaluation ----------------------------------------------------------------------------


def _user(name: str, **attributes: object) -> list[dict[str, object]]:
    return user_entities(
        user_id=name, email=f"{name}@example.com", is_active=True, is_superuser=False,
        is_verified=True, roles=["user"], permissions=[], attributes=attributes,
    )  # fmt: skip


def test_unknown_actions_and_bad_context_are_request_errors(bundle: cedar.PolicyBundle) -> None:
    alice = _user("alice")
    context = cedar.request_context("127.0.0.1", [])
    me = uid("User", "alice")
    with pytest.raises(cedar.RequestInvalid, match="users:fly"):
        cedar.decide(bundle, CedarRequest(me, "users:fly", me, context), alice)
    with pytest.raises(cedar.RequestInvalid):
        cedar.decide(bundle, CedarRequest(me, "users:read", me, {}), alice)


def test_an_erroring_policy_denies_instead_of_being_skipped(tmp_path: Path) -> None:
    shutil.copytree(POLICIES, tmp_path / "p")
    # Overflow at run time: the validator cannot see it; the permit alone would allow.
    (tmp_path / "p" / "zz.cedar").write_text(
        '@id("zz.overflow")\nforbid (principal, action == Action::"users:read", resource)\n'
        "when { 9223372036854775807 + 1 > 0 };\n"
    )
    bundle = load_policies(tmp_path / "p")
    decision = cedar.decide(
        bundle,
        CedarRequest(uid("User", "alice"), "users:read", uid("User", "alice"),
                     cedar.request_context("127.0.0.1", [])),
        _user("alice"),
    )  # fmt: skip
    assert not decision.allowed and decision.errors and "zz.overflow" in decision.errors[0]


def test_attributes_are_validated_against_the_schema(bundle: cedar.PolicyBundle) -> None:
    validate_attributes(bundle, {"department": "sales", "title": "x"})
    for bad in ({"department": 1}, {"nope": "x"}, {"email": "x"}, {"BAD": "x"}):
        with pytest.raises(InvalidInput):
            validate_attributes(bundle, bad)


# --- the CLI -------------------------------------------------------------------------------


def test_cli_policies_check_and_test(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["policies", "check", "--dir", str(folder)]) == 0
    assert "12 policies valid" in capsys.readouterr().out
    assert cli_main(["policies", "test", "--dir", str(folder)]) == 0
    assert "0 failed" in capsys.readouterr().out

    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "wrong.json").write_text(json.dumps({"users": {"a": {}}, "cases": [
        {"name": "x", "principal": "a", "action": "users:read", "resource": "a", "decision": "deny"}
    ]}))  # fmt: skip
    assert cli_main(["policies", "test", "--dir", str(folder), "--cases", str(cases)]) == 1
    assert "FAIL wrong.json: x: expected deny, got allow" in capsys.readouterr().out

    (folder / "users.cedar").write_text('@id("u.bad")\npermit (principal, action, resource) when {')
    assert cli_main(["policies", "check", "--dir", str(folder)]) == 2
    assert "users.cedar: policy 'u.bad'" in capsys.readouterr().err
    assert cli_main(["policies", "test", "--dir", str(folder)]) == 2
