"""Every Sync error a channel owner reads (in Sell's "Sync error" field and the TUI): its
code (``E_*``, kept as ``SyncError.code``: which rule put it there) and its text.

One place, so the words stay consistent and each says what to do. Sell's "Sync error"
is a single-line text field: ``one_line`` keeps every text on one bounded line.
Pure: imports ``vocabulary`` only.
"""

from __future__ import annotations

from ..vocabulary import PLANS, Plan

MAX_LENGTH = 250  # a single line that fits Sell's text field comfortably

# The codes (``SyncError.code``): which rule put the error there.
E_DUPLICATE = "duplicate"
E_TAMPERED = "tampered"
E_UNKNOWN_ID = "unknown_kuloo_id"
E_NO_EMAIL = "no_email"
E_CAP = "plan_cap"
E_VALUE = "bad_value"
E_REFUSED = "sell_refused"
E_ORG_ONLY = "organization_only"
E_CONVERTED = "converted_into_linked"
E_ERASED = "erased"


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 1] + "…"


def record_name(kind: str, record_id: int | None) -> str:
    return f"{kind} {record_id}" if record_id is not None else kind


def duplicate_email(email: str, linked_kind: str, linked_id: int) -> str:
    return one_line(
        f"Not synced: {email} is already synced with {record_name(linked_kind, linked_id)}; "
        "Kuloo never sends twice to one address. Merge or delete one of the two records."
    )


def duplicate_kuloo_id(kuloo_id: str, linked_kind: str, linked_id: int) -> str:
    return one_line(
        f"Not synced: KulooId {kuloo_id} belongs to {record_name(linked_kind, linked_id)}. "
        "Clear the KulooId field of this record to sync it as a user of its own."
    )


def kuloo_id_changed(expected: str, found: str | None) -> str:
    shown = f'"{found}"' if found else "blank"
    return one_line(
        f"Sync stopped: the KulooId field was changed to {shown}. "
        f'Restore it to "{expected}" to resume syncing.'
    )


def unknown_kuloo_id(found: str) -> str:
    return one_line(
        f'Not synced: KulooId "{found}" matches no user of this channel. '
        "Clear the KulooId field to add this record as a new user."
    )


def no_email() -> str:
    return one_line("Not synced: the record has no email address, and Kuloo sends email.")


def email_control_characters() -> str:
    return one_line(
        "Not synced: the email address holds control characters (a line break or another "
        "invisible character), and Kuloo never rewrites an address. Retype it in Sell."
    )


def erased(on: str) -> str:
    """A Sell record of a user erased in Kuloo (``on``: the erasure's date, YYYY-MM-DD)."""
    return one_line(f"erased in Kuloo on {on}: delete it in Sell, or add the user again in Kuloo")


def plan_cap(plan: Plan) -> str:
    cap = PLANS[Plan(plan)].cap
    bigger = [p for p in Plan if _cap_rank(p) > _cap_rank(plan)]
    how = ", ".join(f"{p.value.capitalize()} ({_cap_words(p)})" for p in bigger)
    return one_line(
        f"Not synced: the channel's {Plan(plan).value.capitalize()} plan syncs up to {cap:,} leads and contacts. "
        f"Raise the channel's plan to sync more: {how}."
    )


def _cap_rank(plan: Plan) -> float:
    cap = PLANS[Plan(plan)].cap
    return float("inf") if cap is None else cap


def _cap_words(plan: Plan) -> str:
    cap = PLANS[Plan(plan)].cap
    return "no limit" if cap is None else f"{cap:,}"


def bad_value(field: str, value: object, allowed: tuple[str, ...] | None = None) -> str:
    extra = f"; allowed: {', '.join(allowed)}" if allowed else ""
    return one_line(f"Not synced: {field} value {value!r} is not one Kuloo knows{extra}.")


def sell_refused(summary: str) -> str:
    return one_line(f"Sell refused the update: {summary}")


def organization_only_conversion(lead_id: int, organization_id: int | None) -> str:
    org = f" {organization_id}" if organization_id is not None else ""
    return one_line(
        f"Not synced: lead {lead_id} was converted to organization{org} only, which Kuloo does not sync. "
        "Add this user to the CRM again (a lead or a person contact) to resume."
    )


def converted_into_linked_contact(lead_id: int, contact_id: int, other_email: str) -> str:
    return one_line(
        f"Not synced: lead {lead_id} was converted into contact {contact_id}, which is already synced with "
        f"the user {other_email}; Kuloo never sends twice to one person. "
        "Add them to Sell as a record of their own to sync them again."
    )
