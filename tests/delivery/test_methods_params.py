"""The delivery methods refuse bad parameters before touching anything (pure checks)."""

import pytest

from kuloo_daemon.control import delivery_methods as m
from kuloo_daemon.control.protocol import ProtocolError


@pytest.mark.parametrize(
    "handler, params, words",
    [
        (m.articles_import, {"path": "x"}, "'channel'"),
        (m.articles_import, {"channel": 0, "path": "x"}, "'channel'"),
        (m.articles_import, {"channel": True, "path": "x"}, "'channel'"),
        (m.articles_import, {"channel": 1}, "'path'"),
        (m.articles_import, {"channel": 1, "path": "a\x00b"}, "'path'"),
        (m.articles_import, {"channel": 1, "path": "x", "dry_run": "yes"}, "'dry_run'"),
        (m.articles_list, {"channel": "1"}, "'channel'"),
        (m.articles_preview, {"id": 1, "user": -2}, "'user'"),
        (m.outbox_list, {"channel": 1, "state": "pending"}, "'state' must be one of queued"),
        (m.outbox_list, {"channel": 1, "limit": 0}, "'limit'"),
        (m.outbox_list, {"channel": 1, "limit": 5000}, "'limit'"),
        (m.outbox_resolve, {"id": 1, "as": "ignore"}, "'as'"),
        (m.outbox_resolve, {"as": "sent"}, "'id'"),
        (m.delivery_run, {"channel": "all"}, "'channel'"),
        (m.users_progress, {}, "'id'"),
        (m.users_reset_sequence, {"id": 1.5}, "'id'"),
    ],
)
async def test_bad_parameters(handler, params, words):
    with pytest.raises(ProtocolError) as err:
        await handler(None, params)
    assert err.value.code == "invalid_params" and words in err.value.message
