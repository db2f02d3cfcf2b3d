"""check_custom_fields: every broken setup lists all of its problems at once, in plain words."""

from __future__ import annotations

from kuloo_daemon.crm.verify import check_custom_fields

from .helpers import TAGS, defs, edited, field_dicts


def check(lead_dicts=None, contact_dicts=None, tags=TAGS):
    return check_custom_fields(defs(lead_dicts), defs(contact_dicts, "contact"), tags)


def test_correct_setup_has_no_problem():
    assert check() == []
    # tag order and duplicates in the channel's list do not matter
    assert check(tags=["upsell", "welcome", "onboarding", "welcome"]) == []


def test_wrong_case_on_contacts_suggests_the_name():
    problems = check(contact_dicts=edited("Promo", name="promo"))
    assert problems == [
        'Contacts: field "promo" not found — did you mean "Promo"? (case and spaces matter)'
    ]


def test_extra_space_is_caught():
    problems = check(lead_dicts=edited("Last active", name="Last  active"))
    assert problems == [
        'Leads: field "Last  active" not found — did you mean "Last active"? (case and spaces matter)'
    ]
    problems = check(lead_dicts=edited("KulooId", name="KulooId "))
    assert problems == [
        'Leads: field "KulooId " not found — did you mean "KulooId"? (case and spaces matter)'
    ]


def test_missing_field_says_how_to_create_it():
    problems = check(lead_dicts=edited("Subscription", remove=True))
    assert problems == [
        'Leads: field "Subscription" not found — create it as a dropdown field with the '
        "choices daily, weekly, monthly, unsubscribed"
    ]


def test_wrong_type():
    problems = check(lead_dicts=edited("Last active", type="string"))
    assert problems == ['Leads: "Last active" is a string field; it must be a date']
    problems = check(lead_dicts=edited("Promo", type="list"))
    assert problems == ['Leads: "Promo" is a dropdown field; it must be a multi select']


def test_missing_choice():
    d = edited("Subscription", choices=[{"id": 1, "name": "daily"}, {"id": 2, "name": "weekly"},
                                        {"id": 4, "name": "unsubscribed"}])  # fmt: skip
    assert check(lead_dicts=d) == ['Leads: "Subscription" lacks the choice "monthly"']


def test_choice_in_wrong_case_is_suggested_not_called_extra():
    d = edited("Source", choices=[{"name": "Admin"}, {"name": "signup"}, {"name": "sync"}])
    assert check(lead_dicts=d) == [
        'Leads: "Source" lacks the choice "admin" — did you mean "Admin"? (case and spaces matter)'
    ]


def test_extra_choice_in_promo():
    d = edited("Promo", choices=[{"name": t} for t in [*TAGS, "spring"]])
    assert check(lead_dicts=d) == [
        'Leads: "Promo" has the extra choice "spring", which is not one of the channel\'s '
        "default sequential tags"
    ]


def test_contact_side_only_lists_every_problem():
    contact = [d for d in field_dicts() if d["name"] not in ("Sync error",)]
    contact = [
        {**d, "name": "subscription"} if d["name"] == "Subscription" else
        {**d, "type": "text"} if d["name"] == "KulooId" else
        {**d, "choices": [{"name": "welcome"}]} if d["name"] == "Promo" else d
        for d in contact
    ]  # fmt: skip
    problems = check(contact_dicts=contact)
    assert problems == [
        'Contacts: "Promo" lacks the choice "onboarding"',
        'Contacts: "Promo" lacks the choice "upsell"',
        'Contacts: field "subscription" not found — did you mean "Subscription"? (case and spaces matter)',
        'Contacts: "KulooId" is a multi-line text field; it must be a string',
        'Contacts: field "Sync error" not found — create it as a string field',
    ]
    assert all(p.startswith("Contacts:") for p in problems)


def test_many_problems_on_both_sides_at_once():
    lead = edited("Promo", name="PROMO", type="list")
    contact = edited("Source", choices=[{"name": "admin"}, {"name": "web"}])
    problems = check(lead_dicts=lead, contact_dicts=contact, tags=["welcome"])
    assert problems == [
        'Leads: field "PROMO" not found — did you mean "Promo"? (case and spaces matter)',
        'Leads: "PROMO" is a dropdown field; it must be a multi select',
        'Leads: "PROMO" has the extra choice "onboarding", which is not one of the channel\'s default sequential tags',
        'Leads: "PROMO" has the extra choice "upsell", which is not one of the channel\'s default sequential tags',
        'Contacts: "Promo" has the extra choice "onboarding", which is not one of the channel\'s default sequential tags',
        'Contacts: "Promo" has the extra choice "upsell", which is not one of the channel\'s default sequential tags',
        'Contacts: "Source" lacks the choice "signup"',
        'Contacts: "Source" lacks the choice "sync"',
        'Contacts: "Source" has the extra choice "web"; its choices must be exactly admin, signup, sync',
    ]


def test_nothing_defined_lists_all_twelve():
    problems = check_custom_fields([], [], TAGS)
    assert len(problems) == 12
    assert problems[0] == (
        'Leads: field "Promo" not found — create it as a multi select field with the choices '
        "welcome, onboarding, upsell"
    )


def test_aliases_options_and_for_organisation_and_person_scope():
    contact = [
        {**d, "options": d.pop("choices")} if d["name"] == "Promo" else d for d in field_dicts()
    ]
    contact = [{**d, "for_organisation": True, "for_contact": False} if d["name"] == "KulooId" else d
               for d in contact]  # fmt: skip
    problems = check(contact_dicts=contact)
    assert problems == [
        'Contacts: "KulooId" applies to companies only; it must also apply to people'
    ]


def test_duplicates_and_no_tags_yet():
    lead = [*field_dicts(), {"id": 9, "name": "Source", "type": "list", "choices": []}]
    assert check(lead_dicts=lead) == ['Leads: 2 fields are named "Source"; keep only one']
    # no sequential tags yet: Promo's choices are not compared
    assert check(tags=[]) == []
