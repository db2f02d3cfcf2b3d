"""users.* parameter checks (pure): every bad input is refused with a message naming it."""

import pytest

from kuloo_daemon.control.protocol import ProtocolError
from kuloo_daemon.control.user_methods import check_changes, check_list, check_new_user
from kuloo_daemon.store.users import Filters
from kuloo_daemon.vocabulary import Actor, Frequency, Source


def refused(check, params) -> list[str]:
    with pytest.raises(ProtocolError) as err:
        check(params)
    assert err.value.code == "invalid_params"
    return err.value.details["problems"]


def test_a_new_user_gets_the_documented_defaults():
    new = check_new_user({"channel": 3, "email": "  Ada@Example.com "})
    assert (new.channel_id, new.actor) == (3, Actor.ADMIN)
    assert new.fields == {
        "email": "Ada@Example.com",
        "source": Source.ADMIN,
    }  # the store's defaults do the rest


def test_a_new_user_with_every_field():
    new = check_new_user(
        {
            "channel": 1,
            "email": "a@example.com",
            "first_name": " Ada ",
            "last_name": "L",
            "frequency": "daily",
            "unsubscribed": True,
            "add_to_crm": True,
            "promo_tags": ["x", "y"],
            "source": "",
            "actor": "app",
        }
    )
    assert new.actor == Actor.APP
    assert new.fields == {
        "email": "a@example.com",
        "first_name": "Ada",
        "last_name": "L",
        "frequency": Frequency.DAILY,
        "unsubscribed": True,
        "add_to_crm": True,
        "promo_tags": ["x", "y"],
        "source": Source.APP,
    }


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"email": "a@example.com"}, "'channel' must be a positive integer channel id"),
        ({"channel": 0, "email": "a@example.com"}, "'channel'"),
        ({"channel": -1, "email": "a@example.com"}, "'channel'"),
        ({"channel": True, "email": "a@example.com"}, "'channel'"),
        ({"channel": "1", "email": "a@example.com"}, "'channel'"),
        ({"channel": 1.0, "email": "a@example.com"}, "'channel'"),
        ({"channel": 2**31, "email": "a@example.com"}, "'channel'"),
        ({"channel": 1}, "'email' is required"),
        ({"channel": 1, "email": None}, "'email' must be a string"),
        ({"channel": 1, "email": 42}, "'email' must be a string"),
        ({"channel": 1, "email": "nobody"}, "not an email address"),
        ({"channel": 1, "email": "   "}, "an email address is required"),
        ({"channel": 1, "email": "a\ud800@example.com"}, "'email' must be a string"),
        (
            {"channel": 1, "email": "a@example.com", "first_name": 7},
            "'first_name' must be a string",
        ),
        ({"channel": 1, "email": "a@example.com", "last_name": "x" * 201}, "at most 200"),
        ({"channel": 1, "email": "a@example.com", "last_name": "a\nb"}, "control characters"),
        (
            {"channel": 1, "email": "a@example.com", "first_name": "\udc00"},
            "'first_name' must be a string",
        ),
        (
            {"channel": 1, "email": "a@example.com", "frequency": "hourly"},
            "'frequency' must be one of",
        ),
        (
            {"channel": 1, "email": "a@example.com", "frequency": "unsubscribed"},
            "'frequency' must be one of",
        ),
        (
            {"channel": 1, "email": "a@example.com", "frequency": ["daily"]},
            "'frequency' must be one of",
        ),
        (
            {"channel": 1, "email": "a@example.com", "unsubscribed": "yes"},
            "'unsubscribed' must be true or false",
        ),
        (
            {"channel": 1, "email": "a@example.com", "add_to_crm": 1},
            "'add_to_crm' must be true or false",
        ),
        (
            {"channel": 1, "email": "a@example.com", "promo_tags": "x"},
            "'promo_tags' must be a list",
        ),
        (
            {"channel": 1, "email": "a@example.com", "promo_tags": [1]},
            "'promo_tags' must be a list",
        ),
        ({"channel": 1, "email": "a@example.com", "promo_tags": ["x", "x"]}, "more than once"),
        ({"channel": 1, "email": "a@example.com", "source": "sync"}, "'source' must be 'admin'"),
        ({"channel": 1, "email": "a@example.com", "source": "signup"}, "'source' must be 'admin'"),
        ({"channel": 1, "email": "a@example.com", "source": None}, "'source' must be 'admin'"),
        (
            {"channel": 1, "email": "a@example.com", "actor": "sync"},
            "'actor' must be one of admin, app",
        ),
        (
            {"channel": 1, "email": "a@example.com", "actor": "link"},
            "'actor' must be one of admin, app",
        ),
    ],
)
def test_bad_new_users_are_refused(params, needle):
    problems = refused(check_new_user, params)
    assert any(needle in p for p in problems), problems


def test_every_problem_is_reported_at_once():
    problems = refused(
        check_new_user, {"channel": "x", "email": "no", "frequency": "x", "actor": "x"}
    )
    assert len(problems) == 4


def test_changes_take_only_the_editable_fields():
    changes = check_changes(
        {
            "id": 5,
            "email": " B@example.com",
            "unsubscribed": True,
            "promo_tags": [],
            "something_new": 1,
        }
    )
    assert changes.user_id == 5 and changes.actor == Actor.ADMIN
    assert changes.fields == {"email": "B@example.com", "unsubscribed": True, "promo_tags": []}
    assert check_changes({"id": 5, "actor": "app"}).fields == {}


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"frequency": "daily"}, "'id' must be a positive integer user id"),
        ({"id": "5"}, "'id'"),
        ({"id": 2**31}, "'id'"),
        ({"id": 5, "source": "admin"}, "'source' cannot be changed"),
        ({"id": 5, "kuloo_id": "abc"}, "'kuloo_id' cannot be changed"),
        ({"id": 5, "channel": 2}, "'channel' cannot be changed"),
        ({"id": 5, "crm": None}, "'crm' cannot be changed"),
        ({"id": 5, "sync_error": ""}, "'sync_error' cannot be changed"),
        ({"id": 5, "last_active": "2026-01-01T00:00:00Z"}, "'last_active' cannot be changed"),
        ({"id": 5, "email": "x"}, "not an email address"),
        ({"id": 5, "email": ""}, "an email address is required"),
        ({"id": 5, "frequency": None}, "'frequency'"),
        ({"id": 5, "unsubscribed": None}, "'unsubscribed'"),
        ({"id": 5, "promo_tags": None}, "'promo_tags'"),
        ({"id": 5, "actor": "sync"}, "'actor'"),
    ],
)
def test_bad_changes_are_refused(params, needle):
    problems = refused(check_changes, params)
    assert any(needle in p for p in problems), problems


def test_list_defaults_and_every_filter():
    listing = check_list({"channel": 2})
    assert (listing.channel_id, listing.after, listing.limit, listing.filters) == (
        2,
        None,
        50,
        Filters(),
    )
    listing = check_list(
        {
            "channel": 2,
            "query": "ada",
            "has_sync_error": False,
            "subscription": "unsubscribed",
            "source": "",
            "promo": "webinar",
            "crm_kind": "none",
            "after": 10,
            "limit": 500,
        }
    )
    assert listing.filters == Filters("ada", False, "unsubscribed", Source.APP, "webinar", "none")
    assert (listing.after, listing.limit) == (10, 500)
    assert check_list({"channel": 2, "query": None, "after": None}).filters == Filters()


@pytest.mark.parametrize(
    "params, needle",
    [
        ({}, "'channel'"),
        ({"channel": 1, "query": 5}, "'query' must be a string"),
        ({"channel": 1, "query": "x" * 201}, "at most 200"),
        ({"channel": 1, "query": "\ud800"}, "'query'"),
        ({"channel": 1, "has_sync_error": "yes"}, "'has_sync_error' must be true or false"),
        (
            {"channel": 1, "subscription": "hourly"},
            "'subscription' must be one of daily, weekly, monthly, disabled, unsubscribed",
        ),
        ({"channel": 1, "source": "web"}, "'source' must be one of"),
        ({"channel": 1, "promo": ""}, "'promo' must be a tag"),
        ({"channel": 1, "promo": ["x"]}, "'promo' must be a tag"),
        ({"channel": 1, "promo": "x" * 101}, "'promo' must be a tag"),
        ({"channel": 1, "crm_kind": "deal"}, "'crm_kind' must be one of lead, contact, none"),
        ({"channel": 1, "after": -1}, "'after'"),
        ({"channel": 1, "after": "abc"}, "'after'"),
        ({"channel": 1, "after": 2**31}, "'after'"),
        ({"channel": 1, "limit": 0}, "'limit' must be an integer from 1 to 500"),
        ({"channel": 1, "limit": 501}, "'limit'"),
        ({"channel": 1, "limit": 2.5}, "'limit'"),
        ({"channel": 1, "limit": True}, "'limit'"),
    ],
)
def test_bad_list_parameters_are_refused(params, needle):
    problems = refused(check_list, params)
    assert any(needle in p for p in problems), problems
