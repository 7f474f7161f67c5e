"""The orchestrator policy grants exactly what the orchestrator's AWS adapter calls.

The adapter (`orchestrator/aws.py` or the `orchestrator/aws/` package) uses boto3 clients as
`self._iot.<method>` and `self._ddb.<method>`, called or handed to the page walker. Scanning its
syntax tree for those uses (and for `get_paginator("<method>")`) gives the operations;
botocore's own service model maps each method name to its API operation, which is the IAM
action name. The policy must hold every one of them (nothing missing: the runner would fail
with AccessDenied) and nothing else (nothing extra: least privilege).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

from .cfn_test_helpers import as_list, statements, template

ROOT = Path(__file__).resolve().parents[2]
CLIENT_HELPERS = {"get_paginator", "get_waiter", "can_paginate", "close", "meta", "exceptions"}
# DynamoDB authorises a transaction per item: TransactWriteItems needs the IAM action of each
# kind of item it carries ({"Put": ...} -> PutItem, ...), TransactGetItems needs GetItem.
TRANSACT_WRITE_KINDS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def adapter_files() -> list[Path]:
    package = ROOT / "orchestrator" / "aws"
    module = ROOT / "orchestrator" / "aws.py"
    files = sorted(package.rglob("*.py")) if package.is_dir() else []
    return files + ([module] if module.is_file() else [])


@cache
def _operations(service: str) -> dict[str, str]:
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


def calls_on(attribute: str, files: list[Path]) -> set[str]:
    """Methods used as `self.<attribute>.<method>`: called, or handed on to be called (a
    listing's pages are walked by `orchestrator.aws._errors.pages`), paginators included."""
    methods: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == attribute
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"
            ):
                continue
            if node.attr not in CLIENT_HELPERS and node.attr != "get_paginator":
                methods.add(node.attr)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get_paginator"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == attribute
            ):
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant), f"{path}: paginator name must be literal"
                methods.add(str(first.value))
    return methods


def dict_keys(files: list[Path]) -> set[str]:
    """Every string literal used as a dict key in the files (transaction item kinds)."""
    keys: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Dict):
                keys |= {k.value for k in node.keys if isinstance(k, ast.Constant)}
    return keys


def to_actions(service: str, prefix: str, methods: set[str], files: list[Path]) -> set[str]:
    operations = _operations(service)
    unknown = sorted(m for m in methods if m not in operations)
    assert not unknown, f"{service} client has no method(s) {unknown}"
    actions: set[str] = set()
    for method in methods:
        operation = operations[method]
        if prefix == "dynamodb" and operation == "TransactWriteItems":
            kinds = dict_keys(files) & TRANSACT_WRITE_KINDS.keys()
            assert kinds, "TransactWriteItems without a Put/Update/Delete/ConditionCheck item"
            actions |= {TRANSACT_WRITE_KINDS[kind] for kind in kinds}
        elif prefix == "dynamodb" and operation == "TransactGetItems":
            actions.add("GetItem")
        else:
            actions.add(operation)
    return {f"{prefix}:{a}" for a in actions}


def policy_actions(prefix: str) -> set[str]:
    tpl = template("orchestrator-iam.yaml")
    document = tpl["Resources"]["OrchestratorPolicy"]["Properties"]["PolicyDocument"]
    return {
        action
        for statement in statements(document)
        for action in as_list(statement["Action"])
        if action.startswith(f"{prefix}:")
    }


def test_scanner_finds_calls_and_paginators(tmp_path: Path):
    source = tmp_path / "aws.py"
    source.write_text(
        "class A:\n"
        "    def f(self):\n"
        "        self._iot.create_job(jobId='x')\n"
        "        self._iot.get_paginator('list_job_executions_for_job').paginate()\n"
        "        self._iot.exceptions.ResourceAlreadyExistsException\n"
        "        self._ddb.transact_write_items(TransactItems=[{'Put': {}}, {'Update': {}}])\n"
        "        self._ddb.get_item(Key={})\n"
        "        other._iot.delete_job(jobId='x')\n"
    )
    files = [source]
    iot = calls_on("_iot", files)
    assert iot == {"create_job", "list_job_executions_for_job"}
    assert to_actions("iot", "iot", iot, files) == {
        "iot:CreateJob",
        "iot:ListJobExecutionsForJob",
    }
    ddb = to_actions("dynamodb", "dynamodb", calls_on("_ddb", files), files)
    assert ddb == {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem"}


def test_scanner_rejects_a_method_the_client_does_not_have(tmp_path: Path):
    source = tmp_path / "aws.py"
    source.write_text("class A:\n    def f(self):\n        self._iot.create_jobs(jobId='x')\n")
    with pytest.raises(AssertionError, match="create_jobs"):
        to_actions("iot", "iot", calls_on("_iot", [source]), [source])


def _require_adapter(attribute: str) -> list[Path]:
    """The adapter's files; a missing adapter or client attribute fails, never skips."""
    files = adapter_files()
    assert files, "the AWS adapter (orchestrator/aws.py or orchestrator/aws/) is missing"
    assert calls_on(attribute, files), (
        f"the AWS adapter makes no self.{attribute}.<method>() calls: if the client attribute was "
        "renamed, rename it here too, or the least-privilege check checks nothing"
    )
    return files


def test_iot_actions_match_the_adapter_exactly():
    files = _require_adapter("_iot")
    used = to_actions("iot", "iot", calls_on("_iot", files), files)
    granted = policy_actions("iot")
    assert not used - granted, f"missing from orchestrator-iam.yaml: {sorted(used - granted)}"
    assert not granted - used, f"granted but never called: {sorted(granted - used)}"


def test_dynamodb_actions_match_the_adapter_exactly():
    files = _require_adapter("_ddb")
    used = to_actions("dynamodb", "dynamodb", calls_on("_ddb", files), files)
    granted = policy_actions("dynamodb")
    assert not used - granted, f"missing from orchestrator-iam.yaml: {sorted(used - granted)}"
    assert not granted - used, f"granted but never called: {sorted(granted - used)}"


def signing_policy_actions() -> set[str]:
    tpl = template("orchestrator-iam.yaml")
    document = tpl["Resources"]["DocumentSigningPolicy"]["Properties"]["PolicyDocument"]
    return {a for statement in statements(document) for a in as_list(statement["Action"])}


def test_kms_actions_match_the_signer_exactly():
    files = _require_adapter("_kms")
    used = to_actions("kms", "kms", calls_on("_kms", files), files)
    granted = signing_policy_actions()
    assert used == {"kms:DescribeKey", "kms:GetPublicKey", "kms:Sign"}
    assert not used - granted, f"missing from DocumentSigningPolicy: {sorted(used - granted)}"
    assert not granted - used, f"granted but never called: {sorted(granted - used)}"
    assert not policy_actions("kms"), "the orchestrator policy (the runner's too) signs nothing"
