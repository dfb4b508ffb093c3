"""Loaded by schemathesis in `test_the_live_server_matches_its_openapi_document`: the long
poll's limit (`?wait=`, up to 60 s) is cut to a few milliseconds in the document it reads, so
that the fuzzer, which follows a submit's id to a run no pool will finish, is not held up to a
minute per request. Every other part of the document is tested as served."""

from __future__ import annotations

from typing import Any

import schemathesis

SHORT_WAIT = 0.01


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    for path in raw_schema["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("name") == "wait":
                    parameter["schema"]["maximum"] = SHORT_WAIT
