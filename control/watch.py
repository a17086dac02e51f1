"""Watch the config directory: changed YAML/JSON files, batched, delivered to a callback (istiod's file
config source, `pilot/pkg/config/file`).

`watchfiles` (Rust `notify` underneath: inotify on Linux) does the watching and the batching: changes that
arrive within `step_ms` of each other are grouped, for at most `debounce_ms`, so an editor's
write-rename-chmod burst is one event. The control plane debounces again before it pushes
(control.serve), as istiod does with PILOT_DEBOUNCE_AFTER.

The callback is awaited before the next batch is taken (changes meanwhile are kept by the watcher and come
as the next batch), and a callback that raises is logged and the watch goes on: a bad reload must never be
the end of every later one. The watch ends when `stop` is set or the callback returns False (the caller
knows the directory is gone: inotify does not follow a directory that is removed and made again).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Sequence

from watchfiles import Change, DefaultFilter, awatch

from control.istio.load import YAML_SUFFIXES

log = logging.getLogger("pyproxy.control.watch")


class ConfigFilter(DefaultFilter):
    """watchfiles' default ignores (.git, editor swap files, __pycache__) + only YAML/JSON files."""

    def __call__(self, change: Change, path: str) -> bool:
        return super().__call__(change, path) and path.endswith(YAML_SUFFIXES)


async def watch_config(paths: Sequence[str], on_change: Callable[[set[str]], Awaitable[bool | None]],
                       stop: asyncio.Event, *, debounce_ms: int = 200, step_ms: int = 20,
                       force_polling: bool | None = None) -> None:
    """Await `on_change(changed_paths)` for each batch of changes until `stop` is set or it returns False."""
    async for changes in awatch(*paths, watch_filter=ConfigFilter(), debounce=debounce_ms, step=step_ms,
                                stop_event=stop, force_polling=force_polling, poll_delay_ms=100):
        changed = {path for _change, path in changes}
        log.debug("config files changed: %s", ", ".join(sorted(changed)))
        try:
            if await on_change(changed) is False:
                return
        except Exception:  # noqa: BLE001 - see the module docstring
            log.exception("handling config changes failed (%s); still watching", ", ".join(sorted(changed)))
