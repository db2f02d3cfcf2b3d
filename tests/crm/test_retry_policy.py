"""The Sell client's retry policy (``crm.client.should_retry``) as a whole table.

An attempt that may have reached Sell is repeated only when repeating cannot apply it twice
(an idempotent request), or when Sell certainly did not process it (429, 503, or no
connection at all). Planted bug: a non-idempotent request (a POST) retried after a
transport error (the request may have been sent and applied: a second lead).
"""

from __future__ import annotations

import pytest

from kuloo_daemon.crm.client import should_retry

# (status, failure) -> (retried when idempotent, retried when not)
TABLE = [
    ((None, "connect"), (True, True)),  # nothing was sent
    ((None, "timeout"), (True, False)),  # maybe sent
    ((None, "transport"), (True, False)),  # maybe sent: the connection broke mid-request
    ((429, None), (True, True)),  # refused before processing
    ((503, None), (True, True)),
    ((500, None), (True, False)),  # maybe processed
    ((502, None), (True, False)),
    ((504, None), (True, False)),
    ((200, None), (False, False)),
    ((400, None), (False, False)),
    ((404, None), (False, False)),
    ((422, None), (False, False)),
]


@pytest.mark.parametrize("attempt, expected", TABLE, ids=[str(a) for a, _ in TABLE])
def test_should_retry(attempt, expected):
    status, failure = attempt
    got = tuple(should_retry(status, failure, idempotent=i) for i in (True, False))
    assert got == expected


def test_a_post_after_a_transport_error_is_never_repeated():
    assert should_retry(None, "transport", idempotent=False) is False
    assert should_retry(None, "transport", idempotent=True) is True
