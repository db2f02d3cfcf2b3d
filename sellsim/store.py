"""The simulated Sell data: accounts, tokens, users, records, revisions, conversions, devices.

Owns every piece of state and the rules for changing it (ids, timestamps, revisions and
per-object versions, tombstones for the Sync API, lead conversion and its duplicate rule,
per-device acknowledgements, the deals/tasks/notes that exist only for the Sync queue), plus
loading a seed and saving/loading the whole world as JSON. Records are stored as written;
``view`` gives them as the API reads them back. It validates through ``validate`` and raises
``ApiError``; it knows nothing about HTTP.
"""

from __future__ import annotations

import copy
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import validate as v
from .envelope import ApiError, invalid_param, not_found
from .options import MERGE_RULES, Options

RESOURCES = ("lead", "contact")
# Types the Sync queue carries besides leads and contacts; sellsim keeps them as opaque objects
# (no REST endpoints) so that a client meets types it does not sync.
OTHER_TYPES = ("deal", "task", "note")
SYNC_TYPE_NAMES = {
    "lead": "Lead",
    "contact": "Contact",
    "user": "User",
    "deal": "Deal",
    "task": "Task",
    "note": "Note",
}
SYNC_TYPES_BY_NAME = {name: t for t, name in SYNC_TYPE_NAMES.items()}
DEFAULT_STATUSES = ["New", "Working", "Unqualified"]


def merge_rule(value: Any) -> str | None:
    """An account's own ``conversion_merge`` (None: the option's)."""
    if value is not None and value not in MERGE_RULES:
        raise ValueError(f"conversion_merge must be one of {sorted(MERGE_RULES)}")
    return value


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def parse_iso(value: str) -> int:
    import calendar

    return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))


class Clock:
    """Wall-clock seconds plus an offset that control endpoints can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> int:
        return int(time.time() + self.offset)


@dataclass
class Session:
    id: str
    device: str
    queue: list[tuple[str, int]]
    queued: set[tuple[str, int]]
    pos: int = 0
    empty_left: int = 0


@dataclass
class Account:
    id: int
    name: str
    subdomain: str
    created_at: str
    sync_api: bool = True
    conversion_merge: str | None = None  # this account's duplicate rule; None: the option
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    lead_statuses: list[dict[str, Any]] = field(default_factory=list)
    definitions: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"lead": [], "contact": []}
    )
    records: dict[str, dict[int, dict[str, Any]]] = field(
        default_factory=lambda: {"lead": {}, "contact": {}}
    )
    revision: int = 0
    revs: dict[tuple[str, int], int] = field(default_factory=dict)  # live objects
    tombstones: dict[tuple[str, int], int] = field(default_factory=dict)  # deleted objects
    versions: dict[tuple[str, int], int] = field(default_factory=dict)  # changes per object
    others: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # deals, ...
    conversions: list[dict[str, Any]] = field(default_factory=list)
    converted_leads: dict[int, dict[str, Any]] = field(default_factory=dict)  # as converted
    devices: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "currency": "USD",
            "time_format": "24H",
            "timezone": "UTC+00:00",
            "phone": None,
            "subdomain": self.subdomain,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }

    def bump(self, type_: str, id_: int) -> int:
        self.revision += 1
        self.revs[(type_, id_)] = self.revision
        self.versions[(type_, id_)] = self.versions.get((type_, id_), 0) + 1
        return self.revision


@dataclass
class Token:
    token: str
    account_id: int
    user_id: int
    name: str
    scopes: tuple[str, ...] = ("read", "write", "profile", "sync")


def _blank(resource: str) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for key, kind in v.WRITABLE[resource].items():
        if kind == v.TAGS:
            rec[key] = []
        elif kind == v.CUSTOM:
            rec[key] = {}
        elif kind == v.ADDRESS:
            rec[key] = {k: None for k in sorted(v.ADDRESS_KEYS)}
        else:
            rec[key] = None
    if resource == "lead":
        rec["status"] = "New"
    else:
        rec["is_organization"] = False
        rec["customer_status"] = "none"
        rec["prospect_status"] = "none"
    return rec


class World:
    """All accounts and tokens of one simulator instance."""

    def __init__(self, options: Options | None = None, clock: Clock | None = None) -> None:
        self.options = options or Options()
        self.clock = clock or Clock()
        self.accounts: dict[int, Account] = {}
        self.tokens: dict[str, Token] = {}
        self.next_id = 1000
        self.rng = random.Random(0)  # create lag; reseeded by every seed load

    # --- ids and time -----------------------------------------------------------------------
    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def now_iso(self) -> str:
        return iso(self.clock.now())

    # --- seed -------------------------------------------------------------------------------
    def load_seed(self, seed: dict[str, Any]) -> None:
        """Replace everything with ``seed`` (see README "Seed format"). Raises ValueError."""
        if not isinstance(seed, dict):
            raise ValueError("a seed is a JSON object")
        if not isinstance(seed.get("accounts"), list):
            raise ValueError('a seed needs an "accounts" list')
        saved = self.accounts, self.tokens, self.next_id
        self.accounts, self.tokens = {}, {}
        self.rng = random.Random(0)
        try:
            for acc in seed["accounts"]:
                if not isinstance(acc, dict):
                    raise ValueError("each account is a JSON object")
                self._load_account(acc)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.accounts, self.tokens, self.next_id = saved
            raise ValueError(f"bad seed: {e}") from None

    def _load_account(self, spec: dict[str, Any]) -> None:
        now = self.now_iso()
        aid = spec.get("id") or self.new_id()
        self.next_id = max(self.next_id, aid)
        if aid in self.accounts:
            raise ValueError(f"account id {aid} given twice")
        acc = Account(
            id=aid,
            name=spec.get("name", f"Account {aid}"),
            subdomain=spec.get("subdomain", f"account{aid}"),
            created_at=now,
            sync_api=bool(spec.get("sync_api", True)),
            conversion_merge=merge_rule(spec.get("conversion_merge")),
        )
        self.accounts[aid] = acc
        users = spec.get("users") or [{"name": "Admin", "email": f"admin@{acc.subdomain}.test"}]
        for u in users:
            uid = u.get("id") or self.new_id()
            self.next_id = max(self.next_id, uid)
            acc.users[uid] = {
                "id": uid,
                "name": u.get("name", "User"),
                "email": u.get("email", f"user{uid}@{acc.subdomain}.test"),
                "status": "active",
                "invited": True,
                "confirmed": True,
                "phone_number": None,
                "role": u.get("role", "admin"),
                "roles": [],
                "team_name": None,
                "group": None,
                "reports_to": None,
                "timezone": "UTC+00:00",
                "created_at": now,
                "updated_at": now,
                "deleted_at": None,
                "zendesk_user_id": None,
            }
            acc.bump("user", uid)
        first_user = next(iter(acc.users))
        tokens = spec.get("tokens", [])
        if "token" in spec:
            tokens = [{"token": spec["token"]}, *tokens]
        for t in tokens:
            if isinstance(t, str):
                t = {"token": t}
            tok = t["token"]
            if len(tok) != 64 or any(c.isspace() for c in tok):
                raise ValueError("tokens are 64 characters without whitespace")
            if tok in self.tokens:
                raise ValueError("a token is given twice")
            uid = t.get("user", first_user)
            if uid not in acc.users:
                raise ValueError(f"token user {uid} is not a user of account {aid}")
            self.tokens[tok] = Token(
                tok,
                aid,
                uid,
                t.get("name", tok[:6] + "…"),
                tuple(t.get("scopes", ("read", "write", "profile", "sync"))),
            )
        for name in spec.get("lead_statuses", DEFAULT_STATUSES):
            acc.lead_statuses.append(
                {"id": self.new_id(), "name": name, "created_at": now, "updated_at": now}
            )
        for resource in RESOURCES:
            for d in spec.get("custom_fields", {}).get(resource, []):
                self.add_definition(acc, resource, d)
        for resource, key in (("lead", "leads"), ("contact", "contacts")):
            for attrs in spec.get(key, []):
                attrs = dict(attrs)
                stamps = {k: attrs.pop(k) for k in ("created_at", "updated_at") if k in attrs}
                attrs.pop("id", None)
                # a lead a Sell user already converted (the demo's): converted after loading
                converted = resource == "lead" and bool(attrs.pop("converted", False))
                try:
                    rec = self.create_record(acc, resource, attrs, first_user)
                except ApiError as e:
                    raise ValueError(
                        f"seed {resource} {attrs!r}: {e.code} {e.field} {e.details}"
                    ) from None
                rec.update(stamps)
                if converted:
                    self.convert_lead(acc, rec["id"], first_user, create_deal=False)
        for type_ in OTHER_TYPES:
            for attrs in spec.get(type_ + "s", [{}]):
                self.add_other(acc, type_, attrs, first_user)

    def add_other(
        self, acc: Account, type_: str, attrs: dict[str, Any], user_id: int, **links: Any
    ) -> dict[str, Any]:
        """A deal, task or note: only what the Sync queue shows of it."""
        if not isinstance(attrs, dict):
            raise ValueError(f"each of {type_}s is a JSON object")
        oid = self.new_id()
        now = self.now_iso()
        base: dict[str, Any] = {  # type: ignore[assignment]  # each kind's defaults: a dict
            "deal": {"name": f"Deal {oid}", "value": "0", "currency": "USD", "contact_id": None},
            "task": {
                "content": f"Task {oid}",
                "completed": False,
                "resource_type": None,
                "resource_id": None,
                "due_date": None,
            },
            "note": {"content": f"Note {oid}", "resource_type": None, "resource_id": None},
        }[type_]
        obj = {
            "id": oid,
            "creator_id": user_id,
            "owner_id": user_id,
            **base,
            **attrs,
            **links,
            "created_at": now,
            "updated_at": now,
        }
        obj["id"] = oid
        acc.others[(type_, oid)] = obj
        acc.bump(type_, oid)
        return obj

    def add_definition(self, acc: Account, resource: str, d: dict[str, Any]) -> dict[str, Any]:
        if resource not in RESOURCES:
            raise ValueError(f"custom fields exist for {RESOURCES}, not {resource!r}")
        if d.get("type") not in v.FIELD_TYPES:
            raise ValueError(f"custom field type must be one of {sorted(v.FIELD_TYPES)}")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("a custom field needs a name")
        if any(x["name"] == name for x in acc.definitions[resource]):
            raise ValueError(f"custom field {name!r} already exists for {resource}")
        now = self.now_iso()
        out: dict[str, Any] = {
            "id": d.get("id") or self.new_id(),
            "name": name,
            "type": d["type"],
            "choices": None,
        }
        if d["type"] in {"list", "multi_select_list"}:
            out["choices"] = [self._choice(c) for c in d.get("choices", [])]
        if resource == "contact":
            out["for_contact"] = bool(d.get("for_contact", True))
            out["for_company"] = bool(d.get("for_company", False))
        out["filterable"] = bool(d.get("filterable", True))
        out["created_at"] = now
        out["updated_at"] = now
        acc.definitions[resource].append(out)
        return out

    def _choice(self, c: Any) -> dict[str, Any]:
        if isinstance(c, str):
            return {"id": self.new_id(), "name": c}
        return {"id": c.get("id") or self.new_id(), "name": c["name"]}

    def update_definition(
        self, acc: Account, resource: str, def_id: int, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """A UI edit of a field: rename (records' keys follow), replace choices, flags."""
        d = next((x for x in acc.definitions.get(resource, []) if x["id"] == def_id), None)
        if d is None:
            raise not_found("custom field not found")
        unknown = sorted(
            set(changes) - {"name", "choices", "filterable", "for_contact", "for_company"}
        )
        if unknown:  # Sell's UI cannot change a field's type either: delete it and add it again
            raise ValueError(
                f"a custom field's {', '.join(unknown)} cannot be edited; delete it and add a new one"
            )
        old = d["name"]
        if "name" in changes and changes["name"] != old:
            new = changes["name"]
            if any(x["name"] == new for x in acc.definitions[resource]):
                raise ValueError(f"custom field {new!r} already exists")
            d["name"] = new
            for rid, rec in acc.records[resource].items():
                if old in rec["custom_fields"]:
                    rec["custom_fields"][new] = rec["custom_fields"].pop(old)
                    acc.bump(resource, rid)
        if "choices" in changes:
            d["choices"] = [self._choice(c) for c in changes["choices"]]
        for flag in ("filterable", "for_contact", "for_company"):
            if flag in changes:
                d[flag] = bool(changes[flag])
        d["updated_at"] = self.now_iso()
        return d

    def delete_definition(self, acc: Account, resource: str, def_id: int) -> None:
        d = next((x for x in acc.definitions.get(resource, []) if x["id"] == def_id), None)
        if d is None:
            raise not_found("custom field not found")
        acc.definitions[resource].remove(d)
        for rid, rec in acc.records[resource].items():
            if rec["custom_fields"].pop(d["name"], None) is not None:
                acc.bump(resource, rid)

    # --- records ----------------------------------------------------------------------------
    def _ctx(self, acc: Account, resource: str, existing: dict[str, Any] | None) -> v.WriteContext:
        return v.WriteContext(
            resource=resource,
            definitions=acc.definitions[resource],
            statuses=[s["name"] for s in acc.lead_statuses],
            existing=existing,
            prefix=self.options.field_pointer_prefix,
            reject_readonly=self.options.reject_readonly_attributes,
            users=set(acc.users),
        )

    def _normalize(self, acc: Account, resource: str, attrs: Any) -> Any:
        if self.options.custom_number_format == "string":
            return v.numbers_as_strings(attrs, acc.definitions[resource])
        return attrs

    def _raise(self, errors: list[ApiError]) -> None:
        if errors:
            first, *rest = errors
            first.more = rest
            raise first

    def get_record(self, acc: Account, resource: str, rid: int) -> dict[str, Any]:
        rec = acc.records[resource].get(rid)
        if rec is None:
            raise not_found(f"Requested {resource} was not found.")
        return rec

    def create_record(
        self, acc: Account, resource: str, attrs: Any, user_id: int, *, check: bool = True
    ) -> dict[str, Any]:
        if check:
            self._raise(v.check_write(attrs, self._ctx(acc, resource, None)))
        attrs = self._normalize(acc, resource, attrs)
        rid = self.new_id()
        rec: dict[str, Any] = {"id": rid, "creator_id": user_id, **_blank(resource)}
        v.apply_write(rec, attrs)
        self._derive(resource, rec)
        now = self.clock.now()
        if rec.get("owner_id") is None:
            rec["owner_id"] = user_id
        lag = self.options.create_updated_lag
        if lag == "random":
            lag = self.rng.randint(0, 2)
        # Sell stamps updated_at up to 2 s after created_at; set created_at back rather than
        # updated_at forward, so that no stamp lies in the future of the answer.
        rec["created_at"] = iso(now - int(lag))
        rec["updated_at"] = iso(now)
        acc.records[resource][rid] = rec
        acc.bump(resource, rid)
        return rec

    def update_record(
        self, acc: Account, resource: str, rid: int, attrs: Any, *, check: bool = True
    ) -> dict[str, Any]:
        rec = self.get_record(acc, resource, rid)
        if check:
            self._raise(v.check_write(attrs, self._ctx(acc, resource, rec)))
        attrs = self._normalize(acc, resource, attrs)
        if v.apply_write(rec, attrs) or self.options.noop_write_bumps:
            self._derive(resource, rec)
            rec["updated_at"] = max(rec["updated_at"], self.now_iso())
            acc.bump(resource, rid)
        return rec

    @staticmethod
    def _derive(resource: str, rec: dict[str, Any]) -> None:
        if resource == "contact" and not rec.get("is_organization"):
            parts = [rec.get("first_name"), rec.get("last_name")]
            rec["name"] = " ".join(p for p in parts if p) or None

    def delete_record(self, acc: Account, resource: str, rid: int) -> None:
        self.get_record(acc, resource, rid)
        del acc.records[resource][rid]
        del acc.revs[(resource, rid)]
        acc.revision += 1
        acc.tombstones[(resource, rid)] = acc.revision
        acc.versions[(resource, rid)] = acc.versions.get((resource, rid), 0) + 1

    def list_records(
        self, acc: Account, resource: str, q: v.ListQuery
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of records matching ``q``, and whether a next page exists."""
        defs = acc.definitions[resource]
        dropped = v.check_custom_filters(q.custom, defs, self.options.unknown_filter == "reject")
        if dropped:  # unknown_filter="ignore": as if the parameter had not been sent
            q.custom = {k: x for k, x in q.custom.items() if k not in dropped}
        recs = [r for r in acc.records[resource].values() if self._matches(r, q)]
        field_ = q.sort_field
        custom_type = None
        if q.sort_custom is not None:
            d = next((d for d in defs if d["name"] == q.sort_custom), None)
            if d is None:
                raise invalid_param("sort_by", f"no custom field named {q.sort_custom!r}")
            custom_type = d["type"]

        def key(r: dict[str, Any]) -> tuple:
            if custom_type is not None:
                val = v.sort_value(custom_type, r["custom_fields"].get(q.sort_custom))
            else:
                val = r.get(field_)
                if isinstance(val, str):
                    val = val.lower() if field_ not in {"created_at", "updated_at"} else val
            return (val is None, val if val is not None else 0, r["id"])

        recs.sort(key=key, reverse=q.sort_desc)
        start = (q.page - 1) * q.per_page
        page = recs[start : start + q.per_page]
        return page, len(recs) > start + q.per_page

    def _matches(self, r: dict[str, Any], q: v.ListQuery) -> bool:
        o = self.options
        for name, raw in q.filters.items():
            if name == "ids":
                if r["id"] not in {int(x) for x in raw.split(",")}:
                    return False
            elif name in {"creator_id", "owner_id", "source_id", "contact_id"}:
                if r.get(name) not in {int(x) for x in raw.split(",")}:
                    return False
            elif name == "is_organization":
                if bool(r.get("is_organization")) != (raw == "true"):
                    return False
            elif name.startswith("address["):
                sub = name[len("address[") : -1]
                if (r.get("address") or {}).get(sub) != raw:
                    return False
            else:
                val = r.get(name)
                ci = (name == "email" and o.email_filter == "ci") or (
                    name in {"first_name", "last_name", "name"} and o.name_filter == "ci"
                )
                if val is None:
                    return False
                if ci:
                    if val.lower() != raw.lower():
                        return False
                elif val != raw:
                    return False
        for name, raw in q.custom.items():
            val = r["custom_fields"].get(name)
            if isinstance(val, list):
                if raw not in val:
                    return False
            elif val is None or str(val) != raw:
                return False
        return True

    # --- lead conversion --------------------------------------------------------------------
    def convert_lead(
        self,
        acc: Account,
        lead_id: int,
        user_id: int,
        *,
        create_deal: bool = False,
        owner_id: int | None = None,
    ) -> dict[str, Any]:
        o = self.options
        lead = acc.records["lead"].get(lead_id)
        converted = any(c["lead_id"] == lead_id for c in acc.conversions)
        if converted and o.conversion_repeat == "duplicate" and lead is None:
            lead = acc.converted_leads.get(lead_id)  # converted and removed: converted again
        if lead is None or (converted and o.conversion_repeat == "422"):
            raise ApiError(
                422,
                "incorrect_value",
                "attribute value is incorrect",
                "The lead does not exist or has already been converted.",
                "lead_conversion",
                v.pointer(o.field_pointer_prefix, "lead_id"),
            )
        if owner_id is not None and owner_id not in acc.users:
            raise ApiError(
                422,
                "incorrect_value",
                "attribute value is incorrect",
                f"user {owner_id} does not exist",
                "lead_conversion",
                v.pointer(o.field_pointer_prefix, "owner_id"),
            )
        copied = {
            k: copy.deepcopy(lead[k])
            for k in [
                "owner_id",
                "first_name",
                "last_name",
                "title",
                "description",
                "industry",
                "website",
                "email",
                "phone",
                "mobile",
                "fax",
                "twitter",
                "facebook",
                "linkedin",
                "skype",
                "address",
                "tags",
            ]
        }
        if owner_id is not None:
            copied["owner_id"] = owner_id
        custom = {}
        if o.conversion_copy_custom_fields:
            names = {d["name"] for d in acc.definitions["contact"] if d.get("for_contact")}
            custom = {k: copy.deepcopy(x) for k, x in lead["custom_fields"].items() if k in names}

        org_id = None
        if lead.get("organization_name"):
            org = None
            if o.conversion_merge != "never":
                org = next(
                    (
                        c
                        for c in acc.records["contact"].values()
                        if c["is_organization"] and c["name"] == lead["organization_name"]
                    ),
                    None,
                )
            if org is None:
                org = self.create_record(
                    acc,
                    "contact",
                    {
                        "is_organization": True,
                        "name": lead["organization_name"],
                        "owner_id": copied["owner_id"],
                    },
                    user_id,
                    check=False,
                )
            org_id = org["id"]

        contact = None
        if not copied["last_name"] and o.conversion_org_lead == "person":
            copied["last_name"] = lead.get("organization_name") or "Unknown"
        if copied["last_name"]:  # Sell creates an individual only from a last name
            existing = self._duplicate_of(acc, copied)
            if existing is not None:
                contact = self._merge_into(acc, existing, copied, custom, org_id)
            else:
                attrs = dict(copied, custom_fields=custom)
                if org_id:
                    attrs["contact_id"] = org_id
                contact = self.create_record(acc, "contact", attrs, user_id, check=False)

        individual_id = contact["id"] if contact is not None else None
        deal_id = None
        if create_deal:
            name = lead.get("organization_name") or " ".join(
                p for p in (lead.get("first_name"), lead.get("last_name")) if p
            )
            deal = self.add_other(
                acc,
                "deal",
                {"name": name, "owner_id": copied["owner_id"]},
                user_id,
                contact_id=individual_id or org_id,
            )
            deal_id = deal["id"]
        conversion = {
            "id": self.new_id(),
            "lead_id": lead_id,
            "individual_id": individual_id,
            "organization_id": org_id,
            "deal_id": deal_id,
            "creator_id": user_id,
            "created_at": self.now_iso(),
        }
        acc.conversions.append(conversion)
        acc.converted_leads[lead_id] = copy.deepcopy(lead)
        if o.conversion_lead == "removed" and lead_id in acc.records["lead"]:
            self.delete_record(acc, "lead", lead_id)
        return conversion

    def _duplicate_of(self, acc: Account, person: dict[str, Any]) -> dict[str, Any] | None:
        """The oldest person contact that the account's duplicate rule calls the same person."""
        rule = acc.conversion_merge or self.options.conversion_merge
        if rule == "never":
            return None

        def norm(x: Any) -> str:
            return (x or "").strip().casefold()

        def phones(r: dict[str, Any]) -> set[str]:
            return {re.sub(r"\D", "", r.get(k) or "") for k in ("phone", "mobile")} - {""}

        def same_name(c: dict[str, Any]) -> bool:
            return (norm(c.get("first_name")), norm(c.get("last_name"))) == (
                norm(person.get("first_name")),
                norm(person.get("last_name")),
            )

        def same_email(c: dict[str, Any]) -> bool:
            return bool(norm(person.get("email"))) and norm(c.get("email")) == norm(person["email"])

        def same_phone(c: dict[str, Any]) -> bool:
            return bool(phones(person) & phones(c))

        tests = {
            "name_and_email_or_phone": [
                lambda c: same_name(c) and (same_email(c) or same_phone(c))
            ],
            "email": [same_email],
            "name": [same_name],
            "any": [same_email, same_name],
        }[rule]
        people = sorted(
            (c for c in acc.records["contact"].values() if not c["is_organization"]),
            key=lambda c: c["id"],
        )
        for test in tests:
            hit = next((c for c in people if test(c)), None)
            if hit is not None:
                return hit
        return None

    def _merge_into(
        self,
        acc: Account,
        existing: dict[str, Any],
        copied: dict[str, Any],
        custom: dict[str, Any],
        org_id: int | None,
    ) -> dict[str, Any]:
        """Fill the blank fields of ``existing`` from the lead and unite the tags."""
        fill: dict[str, Any] = {}
        for k, val in copied.items():
            if k == "owner_id":
                continue  # the contact keeps its owner
            if k == "tags":
                union = list(dict.fromkeys([*existing["tags"], *val]))
                if union != existing["tags"]:
                    fill["tags"] = union
            elif k == "address":
                if not any((existing.get("address") or {}).values()) and any(val.values()):
                    fill["address"] = val
            elif existing.get(k) in (None, "") and val not in (None, ""):
                fill[k] = val
        cf = {k: x for k, x in custom.items() if k not in existing["custom_fields"]}
        if cf:
            fill["custom_fields"] = cf
        if org_id and existing.get("contact_id") is None:
            fill["contact_id"] = org_id
        return self.update_record(acc, "contact", existing["id"], fill, check=False)

    # --- Sync API ---------------------------------------------------------------------------
    def _sync_object(self, acc: Account, key: tuple[str, int]) -> dict[str, Any] | None:
        type_, rid = key
        if type_ == "user":
            return acc.users.get(rid)
        if type_ in OTHER_TYPES:
            return acc.others.get(key)
        rec = acc.records[type_].get(rid)
        if rec is None:
            return None
        return v.read_view(rec, acc.definitions[type_], self.read_formats())

    def view(self, acc: Account, resource: str, rec: dict[str, Any]) -> dict[str, Any]:
        """A lead or contact as the API answers it (dates in the read format)."""
        return v.read_view(rec, acc.definitions[resource], self.read_formats())

    def read_formats(self) -> v.ReadFormats:
        o = self.options
        return v.ReadFormats(
            o.custom_date_read_format,
            o.custom_datetime_read_format,
            o.custom_list_read_format,
            o.custom_multiselect_read_format,
        )

    def _pending(self, acc: Account, acked: dict[tuple[str, int], int]) -> list[tuple[str, int]]:
        skip = set()
        if not self.options.sync_include_users:
            skip.add("user")
        if not self.options.sync_other_types:
            skip.update(OTHER_TYPES)
        out = [
            (rev, key)
            for src in (acc.revs, acc.tombstones)
            for key, rev in src.items()
            if rev > acked.get(key, 0) and key[0] not in skip
        ]
        out.sort()
        return [key for _, key in out]

    def sync_start(self, acc: Account, device: str) -> Session | None:
        if device not in acc.devices:
            if len(acc.devices) >= self.options.sync_device_limit:
                raise ApiError(
                    403,
                    "forbidden",
                    "Forbidden",
                    "The limit of active synchronization devices has been reached.",
                )
            acc.devices[device] = {}
        pending = self._pending(acc, acc.devices[device])
        # A new session replaces the device's previous one.
        for sid in [s.id for s in acc.sessions.values() if s.device == device]:
            del acc.sessions[sid]
        if not pending:
            return None
        session = Session(
            id=str(uuid.uuid4()),
            device=device,
            queue=pending,
            queued=set(pending),
            empty_left=self.options.sync_empty_pages,
        )
        acc.sessions[session.id] = session
        return session

    def sync_fetch(
        self, acc: Account, device: str, session_id: str
    ) -> tuple[list[dict[str, Any]], int] | None:
        """Next page of the session as (items, count_left); None once drained (204)."""
        session = acc.sessions.get(session_id)
        if session is None or session.device != device:
            raise not_found("Requested sync session was not found.")
        acked = acc.devices[device]
        for key in self._pending(acc, acked):  # changes made during the session join it
            if key not in session.queued:
                session.queue.append(key)
                session.queued.add(key)
        if session.empty_left > 0 and session.pos < len(session.queue):
            session.empty_left -= 1
            return [], len(session.queue) - session.pos
        items: list[dict[str, Any]] = []
        while session.pos < len(session.queue) and len(items) < self.options.sync_page_size:
            key = session.queue[session.pos]
            session.pos += 1
            type_, rid = key
            if key in acc.tombstones:
                rev = acc.tombstones[key]
                data: dict[str, Any] = {"id": rid}
                event = "deleted"
            else:
                rev = acc.revs.get(key, 0)
                obj = self._sync_object(acc, key)
                if obj is None:
                    continue
                data = obj  # serialized before anything can change it
                event = "updated" if key in acked else "created"
            if rev <= acked.get(key, 0):
                continue
            items.append(
                {
                    "data": data,
                    "meta": {
                        "type": type_,
                        "version": acc.versions.get(key, 1),
                        "sync": {
                            "event_type": event,
                            "ack_key": f"{SYNC_TYPE_NAMES[type_]}-{rid}-{rev}",
                            "revision": rev,
                        },
                    },
                }
            )
        if not items:
            del acc.sessions[session.id]
            return None
        return items, len(session.queue) - session.pos

    def sync_ack(self, acc: Account, device: str, keys: list[str]) -> int:
        acked = acc.devices.setdefault(device, {})
        n = 0
        for k in keys:
            name, _, rest = k.partition("-")
            rid, _, rev = rest.partition("-")
            type_ = SYNC_TYPES_BY_NAME.get(name)
            if type_ is None or not rid.isdigit() or not rev.isdigit():
                continue
            key = (type_, int(rid))
            if int(rev) > acked.get(key, 0):
                acked[key] = int(rev)
                n += 1
        return n

    # --- persistence ------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        def keyed(d: dict[tuple[str, int], int]) -> dict[str, int]:
            return {f"{t}:{i}": r for (t, i), r in d.items()}

        return {
            "format": "sellsim-state-1",
            "next_id": self.next_id,
            "clock_offset": self.clock.offset,
            "options": self.options.as_dict(),
            "tokens": [
                {
                    "token": t.token,
                    "account": t.account_id,
                    "user": t.user_id,
                    "name": t.name,
                    "scopes": list(t.scopes),
                }
                for t in self.tokens.values()
            ],
            "accounts": [
                {
                    "id": a.id,
                    "name": a.name,
                    "subdomain": a.subdomain,
                    "created_at": a.created_at,
                    "sync_api": a.sync_api,
                    "conversion_merge": a.conversion_merge,
                    "users": list(a.users.values()),
                    "lead_statuses": a.lead_statuses,
                    "definitions": a.definitions,
                    "records": {t: list(rs.values()) for t, rs in a.records.items()},
                    "revision": a.revision,
                    "revs": keyed(a.revs),
                    "tombstones": keyed(a.tombstones),
                    "conversions": a.conversions,
                    "devices": {d: keyed(k) for d, k in a.devices.items()},
                    "versions": keyed(a.versions),
                    "others": [{"type": t, **o} for (t, _), o in a.others.items()],
                    "converted_leads": list(a.converted_leads.values()),
                }
                for a in self.accounts.values()
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace everything with a ``dump()``; raises ValueError (keeping the state) if bad."""
        if not isinstance(state, dict) or state.get("format") != "sellsim-state-1":
            raise ValueError("not a sellsim state file")
        try:
            next_id = int(state["next_id"])
            offset = float(state.get("clock_offset", 0.0))
            accounts, tokens = self._restored(state)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"not a valid sellsim state ({type(e).__name__}: {e})") from None
        self.accounts, self.tokens = accounts, tokens
        self.next_id = next_id
        self.clock.offset = offset

    @staticmethod
    def _restored(state: dict[str, Any]) -> tuple[dict[int, Account], dict[str, Token]]:
        """The accounts and tokens of a ``dump()``; raises on anything malformed."""

        def unkeyed(d: dict[str, int]) -> dict[tuple[str, int], int]:
            out = {}
            for k, r in d.items():
                t, _, i = k.partition(":")
                out[(t, int(i))] = r
            return out

        accounts: dict[int, Account] = {}
        tokens: dict[str, Token] = {}
        for a in state["accounts"]:
            acc = Account(
                a["id"],
                a["name"],
                a["subdomain"],
                a["created_at"],
                a["sync_api"],
                merge_rule(a.get("conversion_merge")),
            )
            acc.users = {u["id"]: u for u in a["users"]}
            acc.lead_statuses = a["lead_statuses"]
            acc.definitions = a["definitions"]
            acc.records = {t: {r["id"]: r for r in rs} for t, rs in a["records"].items()}
            acc.revision = a["revision"]
            acc.revs = unkeyed(a["revs"])
            acc.tombstones = unkeyed(a["tombstones"])
            acc.conversions = a["conversions"]
            acc.devices = {d: unkeyed(k) for d, k in a["devices"].items()}
            # state files written before these existed load with them empty
            acc.versions = unkeyed(a.get("versions", {}))
            for o in a.get("others", []):
                o = dict(o)
                acc.others[(o.pop("type"), o["id"])] = o
            acc.converted_leads = {r["id"]: r for r in a.get("converted_leads", [])}
            accounts[acc.id] = acc
        for t in state["tokens"]:
            if t["account"] not in accounts or t["user"] not in accounts[t["account"]].users:
                raise ValueError(f"token {t['name']!r} belongs to no known account user")
            tokens[t["token"]] = Token(
                t["token"], t["account"], t["user"], t["name"], tuple(t["scopes"])
            )
        return accounts, tokens
