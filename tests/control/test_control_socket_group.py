"""The control socket belongs to the admins' group (issue 14 item 9).

The older end-to-end test used the daemon's own group, so it stayed green with the
``chown`` deleted (a new socket gets the process's group anyway). Here the group is
another one whenever this process may hand a file to one (root, or a supplementary
group), and the ``chown`` call itself is recorded as well.

Planted bugs: the ``os.chown`` deleted; ``gid`` left at -1; the mode not 0660.
"""

from __future__ import annotations

import grp
import os
import socket
import stat

import pytest

from kuloo_daemon.control import server as server_mod
from kuloo_daemon.control.server import bind_unix


def other_group() -> grp.struct_group:
    """A group other than ours that we may give a file to; ours only if there is none."""
    own = os.getgid()
    if os.geteuid() == 0:
        gids = [g.gr_gid for g in grp.getgrall()]
    else:
        gids = os.getgroups()
    for gid in gids:
        if gid != own:
            return grp.getgrgid(gid)
    return grp.getgrgid(own)


def test_bind_unix_hands_the_socket_to_the_group(short_tmp, monkeypatch):
    group = other_group()
    calls: list[tuple[str, int, int]] = []
    real_chown = os.chown

    def recording_chown(path, uid, gid, *a, **kw):
        calls.append((os.path.basename(path), uid, gid))
        return real_chown(path, uid, gid, *a, **kw)

    monkeypatch.setattr(server_mod.os, "chown", recording_chown)
    path = os.path.join(short_tmp, "c.sock")
    sock = bind_unix(path, group.gr_name)
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == group.gr_gid
        assert calls == [(f"c.sock.{os.getpid()}.tmp", -1, group.gr_gid)]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)  # listening at its final name
    finally:
        sock.close()


def test_no_group_means_no_chown(short_tmp, monkeypatch):
    calls: list = []
    monkeypatch.setattr(server_mod.os, "chown", lambda *a, **kw: calls.append(a))
    sock = bind_unix(os.path.join(short_tmp, "c.sock"))
    sock.close()
    assert calls == []


def test_unknown_group_is_refused_before_anything_is_bound(short_tmp):
    path = os.path.join(short_tmp, "c.sock")
    with pytest.raises(
        RuntimeError, match="control.group: there is no group named 'no-such-group-kuloo'"
    ):
        bind_unix(path, "no-such-group-kuloo")
    assert os.listdir(short_tmp) == []
