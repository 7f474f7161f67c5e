"""The operator's campaign text as the sandbox can run it (YAML text surgery, nothing else)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from orchestrator.errors import SpecError, SpecProblem

__all__ = ["prepare_campaign_text"]


def prepare_campaign_text(text: str, source: str, *, catalog: Path) -> str:
    """The campaign as the sandbox can run it: its roots from the sandbox's stand-in catalog.

    The sandbox cannot serve certificates that chain to the real Amazon roots,
    so a run points the campaign at the stand-ins of the same names and lets
    the sandbox answer the endpoint (`endpoint: auto`). Only those two
    top-level lines change; the rest of the operator's text stays as written.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise SpecError(source, (SpecProblem("", f"not valid YAML: {exc}"),)) from exc
    if not isinstance(root, yaml.MappingNode):
        raise SpecError(source, (SpecProblem("", "a campaign file is a YAML mapping"),))
    if root.flow_style:
        data = yaml.safe_load(text)
        data.update(catalog=str(catalog), endpoint="auto")
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    for key, value in (("catalog", json.dumps(str(catalog))), ("endpoint", "auto")):
        line = f"{key}: {value}"
        pattern = re.compile(rf"^{key}:.*$", re.MULTILINE)
        text, found = pattern.subn(line, text, count=1)
        if not found:
            text = text.rstrip("\n") + "\n" + line + "\n"
    return text
