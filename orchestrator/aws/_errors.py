"""Botocore's errors as the orchestrator's, and a listing's pages, for every AWS IoT adapter.

An adapter names the operation, what it acted on (`where`), and the codes that mean
something of their own to it (`refine`: a code and message to an exception, or None); every
other error becomes an `AwsError` that says what to check, with the credentials hint when
none were found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from orchestrator.errors import AwsError

Refine = Callable[[str, str], Exception | None]

#: Pages any listing may take: millions of things at AWS's page sizes, far beyond any account's
#: fleet, so an endpoint that hands out next tokens forever cannot hold a command for ever.
MAX_PAGES: Final = 100_000


@contextmanager
def translated(
    operation: str, *, where: str = "", refine: Refine | None = None, check: str = ""
) -> Iterator[None]:
    """Errors of the calls in the block, as the orchestrator's; `check` leads the advice."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        special = refine(code, message) if refine is not None else None
        if special is not None:
            raise special from exc
        raise AwsError(
            f"AWS IoT {operation} failed ({code}: {message}){' for ' + where if where else ''}; "
            f"check {check + ', ' if check else ''}the credentials, region and endpoint "
            "(--region, --endpoint-url, --profile)",
            code=code,
        ) from exc
    except BotoCoreError as exc:
        hint = (
            "set AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --profile)"
            if isinstance(exc, NoCredentialsError)
            else "check the network and --endpoint-url"
        )
        raise AwsError(f"AWS IoT {operation} could not be sent: {exc}; {hint}") from exc


def pages(
    call: Callable[..., Mapping[str, Any]],
    translate: Callable[[], AbstractContextManager[None]],
    *,
    counted: Callable[[], None] | None = None,
    **request: Any,
) -> Iterator[Mapping[str, Any]]:
    """Each page of `call(**request)`, following `nextToken`, at most `MAX_PAGES` of them.

    Every call runs inside `translate()`; `counted` is told before each call.
    """
    token: str | None = None
    for _ in range(MAX_PAGES):
        if counted is not None:
            counted()
        with translate():
            page = call(**request, **({"nextToken": token} if token else {}))
        yield page
        token = page.get("nextToken")
        if not token:
            return
