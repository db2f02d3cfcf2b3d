"""Secret and credential files at their edges (issue 14 item 3 and mutation survivors).

Each test was first run against a planted bug (named in its docstring) and failed.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys

import pytest

from kuloo_daemon.secrets import Secret, mask, read_credential


def test_mask_of_exactly_eight_characters_reveals_nothing():
    """Planted bug: ``len(value) < 8`` shows the last four of an 8-character password."""
    assert mask("hunter22") == "****"
    assert "2" not in repr(Secret("hunter22")) and "hunt" not in str(Secret("hunter22"))


def test_mask_from_nine_characters_shows_the_last_four():
    """Planted bugs: ``<= 9`` (nothing shown), ``value[-3:]`` / ``value[4:]``."""
    assert mask("123456789") == "****6789"
    assert mask("a" * 60 + "wxyz") == "****wxyz"
    assert mask("1") == "****"
    assert mask("") == "" and mask(None) == ""


def test_secret_only_wraps_strings():
    """Planted bug: the type check deleted (bytes or None slip in and print raw later)."""
    for value in (b"bytes-token", None, 1234):
        with pytest.raises(TypeError) as err:
            Secret(value)  # type: ignore[arg-type]
        assert str(err.value) == "Secret wraps a str"


def test_secret_equality_hash_and_truth_follow_the_value():
    """Planted bugs: ``__hash__`` on a constant or the masked form (two secrets with the
    same last four collide as equal keys), ``__bool__`` always True, ``__eq__`` by mask."""
    a, b = Secret("x" * 20 + "tail"), Secret("y" * 20 + "tail")
    assert a.masked == b.masked and a != b
    assert len({a, b, Secret("x" * 20 + "tail")}) == 2
    assert hash(a) == hash(Secret("x" * 20 + "tail")) and hash(a) != hash(b)
    assert a != "x" * 20 + "tail"  # never equal to its raw value
    assert not Secret("") and Secret("v")


def test_secret_cannot_be_pickled_or_copied_out():
    """Planted bug: ``__reduce__`` deleted (a pickle carries the raw token to disk)."""
    s = Secret("p" * 40)
    with pytest.raises(TypeError) as err:
        pickle.dumps(s)
    assert str(err.value) == "Secret cannot be pickled"
    with pytest.raises(TypeError):
        copy.deepcopy(s)


def test_credential_keeps_everything_but_the_trailing_newline(tmp_path):
    """Planted bugs: ``strip()`` (eats meaningful spaces), no strip at all (a CRLF file's
    newline ends up in the key)."""
    (tmp_path / "crlf").write_bytes(b"key-one\r\n")
    (tmp_path / "spaces").write_text("  spaced key  \n", encoding="utf-8")
    (tmp_path / "plain").write_text("no-newline", encoding="utf-8")
    (tmp_path / "lines").write_text("newest\nolder\n", encoding="utf-8")
    (tmp_path / "x-end").write_text("endsWithX\n", encoding="utf-8")
    assert read_credential("crlf", tmp_path).reveal() == "key-one"
    assert read_credential("spaces", tmp_path).reveal() == "  spaced key  "
    assert read_credential("plain", str(tmp_path)).reveal() == "no-newline"
    assert read_credential("lines", tmp_path).reveal() == "newest\nolder"
    assert read_credential("x-end", tmp_path).reveal() == "endsWithX"


def test_credential_directory_defaults_to_systemds(tmp_path, monkeypatch):
    """Planted bugs: the ``$CREDENTIALS_DIRECTORY`` fallback deleted or read from another
    variable; an explicit directory not winning over it."""
    (tmp_path / "k").write_text("from-env\n", encoding="utf-8")
    other = tmp_path / "other"
    other.mkdir()
    (other / "k").write_text("explicit\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_credential("k").reveal() == "from-env"
    assert read_credential("k", other).reveal() == "explicit"


def test_missing_credentials_name_the_file_never_a_value(tmp_path, monkeypatch):
    """Planted bugs: the messages changed or swapped; the no-directory case falling
    through to ``Path(None)`` (a TypeError instead of a clear FileNotFoundError)."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(FileNotFoundError) as no_dir:
        read_credential("link-signing-key")
    assert str(no_dir.value) == (
        "credential 'link-signing-key': no credentials directory (set [credentials] "
        "directory or run under systemd with LoadCredential=)"
    )
    with pytest.raises(FileNotFoundError) as no_file:
        read_credential("smtp-password", tmp_path)
    assert (
        str(no_file.value) == f"credential file {str(tmp_path / 'smtp-password')!r} does not exist"
    )
    assert no_file.value.__cause__ is None and no_file.value.__suppress_context__


@pytest.mark.e2e
def test_credentials_are_utf8_whatever_the_locale(tmp_path):
    """A unit started without a locale (and Python's C-locale coercion off) must still
    read a non-ASCII key. Planted bug: ``read_text()`` without ``encoding="utf-8"``."""
    (tmp_path / "k").write_bytes("clé-secrète\n".encode())
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    code = (
        "import sys; from kuloo_daemon.secrets import read_credential; "
        "sys.stdout.buffer.write(read_credential('k', sys.argv[1]).reveal().encode('utf-8'))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, timeout=60
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout.decode("utf-8") == "clé-secrète" == read_credential("k", tmp_path).reveal()


# scrub_known's registry is process-wide: these values are unique to this file.
def test_a_secret_is_remembered_and_scrubbed_by_value_whatever_its_shape():
    """Planted bugs: ``Secret`` not remembering its value; ``remember`` taking values of
    7 characters (ordinary words would be masked) or refusing 8."""
    from kuloo_daemon.secrets import remember, scrub_known

    Secret("qzv.only.letters.and.dots")
    assert scrub_known("token=qzv.only.letters.and.dots;") == "token=****;"
    remember("qzv1234")  # 7: too short to remember
    assert scrub_known("qzv1234 qzv1234") == "qzv1234 qzv1234"
    remember("qzv8char")  # exactly 8
    assert scrub_known("a qzv8char b") == "a **** b"
    remember(None)  # type: ignore[arg-type]  # ignored, never raises


def test_scrub_known_runs_and_edges():
    """Planted bugs: the last possible start skipped (``i < end``), a truncated echo of
    fewer than 8 characters masked or of 8 not masked, the longest of two secrets that
    share a start not used, text after a match dropped, short texts not returned as is."""
    from kuloo_daemon.secrets import remember, scrub_known

    remember("qzwPrefix-short-one")
    remember("qzwPrefix-short-one-and-longer")
    assert scrub_known("x qzwPrefix-short-one-and-longer y") == "x **** y"
    assert scrub_known("x qzwPrefix-short-one!") == "x ****!"
    assert scrub_known("end:qzwPrefi") == "end:****"  # 8 characters, at the very end
    assert scrub_known("end:qzwPref") == "end:qzwPref"  # 7: left alone
    assert scrub_known("qzwPrefixqzwPrefix") == "********"  # two runs side by side
    assert scrub_known("qzw") == "qzw" and scrub_known("") == ""


def _fresh(prefix: str) -> str:
    """A value no earlier test run in this process has remembered: the registry is
    process-wide, and mutmut forks each mutant's run from a process that already ran the
    whole file once, so a fixed value would be "remembered" whatever the mutant did."""
    import uuid

    return prefix + uuid.uuid4().hex


def test_exactly_eight_characters_are_remembered_and_each_secret_under_its_own_start():
    """Planted bugs: ``remember`` refusing 8 characters (``> MIN_RUN``); every secret
    filed under one key instead of its first 8 characters; ``Secret`` not remembering."""
    from kuloo_daemon.secrets import MIN_RUN, remember, scrub_known

    eight = _fresh("")[:MIN_RUN]
    remember(eight)
    assert scrub_known(f"a {eight} b") == "a **** b"
    wrapped = _fresh("w.")
    Secret(wrapped)
    assert scrub_known(f"token={wrapped};") == "token=****;"
    seven = _fresh("")[: MIN_RUN - 1]
    remember(seven)
    assert scrub_known(f"{seven} {seven}") == f"{seven} {seven}"


def test_a_secret_at_an_odd_offset_is_found():
    """Planted bug: the scan stepping two characters at a time (only even offsets seen)."""
    from kuloo_daemon.secrets import remember, scrub_known

    secret = _fresh("odd-")
    remember(secret)
    for pad in range(1, 4):
        assert scrub_known("x" * pad + secret + "!") == "x" * pad + "****!"
