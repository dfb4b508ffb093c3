"""A minimal app for `swf-pool run --app examples.hello:registry`.

swf-pool submit greet.v1 '{"name": "Ada"}' --dsn sqlite://demo.db
swf-pool run --app examples.hello:registry --dsn sqlite://demo.db --drain
"""

from __future__ import annotations

from swf_pool import Fixed, PermanentError, Registry, Run

registry = Registry()


@registry.handler("greet.v1")
def greet(run: Run) -> dict[str, str]:
    name = run.payload.get("name") if isinstance(run.payload, dict) else None
    if not name:
        raise PermanentError("payload needs a name")
    return {"greeting": f"Hello, {name}!"}


@registry.handler("sometimes.v1", retry=Fixed(1))
def sometimes(run: Run) -> int:
    if run.attempt < 2:
        raise TimeoutError("the first attempt always times out")
    return run.attempt
