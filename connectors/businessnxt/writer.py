"""Businessnxt writer: applies ``WriteCommand`` batches, one ``WriteResult`` per
command, in order.

- Creates: many rows per ``<table>_create`` call. A command with ``match``
  links an existing row with that natural key (``matched=True``). A command
  with an origin stamp (``idempotency_key`` written to ``origin_field``) is
  first looked up by that stamp, every round, so a create whose outcome was
  unknown (timeout, 5xx, unparseable answer) is never made twice. Orders are
  created with their ``orderLines`` nested.
- Updates converge: read the stored rows, compute the difference (head fields
  that differ; for orders the line updates / creates / deletes by ``lineNo``
  that make the stored lines equal ``data["orderLines"]``), apply it with
  batched ``_update(filters, values)`` / ``_create`` / ``_delete`` calls, and
  read again until nothing differs. Re-running after an unknown outcome is
  therefore harmless. When only lines are removed, the head is re-written
  with its own name so the order still gets a new ``changedTimestamp``
  (a delete changes no timestamp).
- Deletes: one ``_delete`` with ``_in`` (idempotent).
- A permanent error of a batch never fails the others: the batch is split
  (halves) until the bad row is found and classified.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Sequence

from connectors.businessnxt.client import BusinessnxtClient, outcome_unknown, table_fields
from connectors.businessnxt.records import KEY_FIELD, record_version
from connectors.businessnxt.schema import TABLES
from connectors.businessnxt.timezones import parse_utc
from connectors.common.errors import ApiError
from schemas.command import WriteCommand, WriteResult

log = logging.getLogger(__name__)

READ_ONLY = frozenset({"createdTimestamp", "changedTimestamp", "joindown_OrderLine_via_Order"})
LINE_FIELDS = tuple(f for f, k in TABLES["orderLine"].fields.items() if k != "datetime")


# ---------------------------------------------------------------- pure planning
def same_value(stored: Any, desired: Any) -> bool:
    """Equal after normalisation: decimals by value, null == empty string (dataflow rules)."""
    if stored == desired:
        return True
    if stored in (None, "") and desired in (None, ""):
        return True
    if stored is None or desired is None or isinstance(stored, bool) or isinstance(desired, bool):
        return False
    if isinstance(stored, (int, float)):
        try:
            return float(stored) == float(desired)
        except (TypeError, ValueError):
            return False
    return False


def assign_line_numbers(lines: Sequence[dict]) -> list[dict]:
    """Lines without ``lineNo`` get numbers after the highest given one (stable, deterministic)."""
    top = max((ln["lineNo"] for ln in lines if ln.get("lineNo") is not None), default=0)
    out = []
    for ln in lines:
        ln = {k: v for k, v in ln.items() if k in LINE_FIELDS and k != "orderNo"}
        if ln.get("lineNo") is None:
            top += 1
            ln["lineNo"] = top
        out.append(ln)
    return out


def head_values(entity: str, data: dict) -> dict:
    """Writable head fields of a command's data (no keys, timestamps or lines)."""
    keys = set(TABLES[entity].key)
    return {k: v for k, v in data.items() if k not in READ_ONLY and k != "orderLines" and k not in keys}


def diff(stored: dict, desired: dict) -> dict:
    return {k: v for k, v in desired.items() if not same_value(stored.get(k), v)}


def plan_update(entity: str, stored: dict, data: dict) -> dict[str, Any]:
    """What makes ``stored`` equal ``data``: ``head`` diff and, for orders,
    ``line_updates`` [(lineNo, diff)], ``line_creates`` [line], ``line_deletes`` [lineNo]."""
    plan: dict[str, Any] = {"head": diff(stored, head_values(entity, data)),
                            "line_updates": [], "line_creates": [], "line_deletes": []}
    if entity == "order" and data.get("orderLines") is not None:
        have = {ln["lineNo"]: ln for ln in stored.get("orderLines") or []}
        want = assign_line_numbers(data["orderLines"])
        for ln in want:
            cur = have.get(ln["lineNo"])
            if cur is None:
                plan["line_creates"].append(ln)
            else:
                d = diff(cur, {k: v for k, v in ln.items() if k != "lineNo"})
                if d:
                    plan["line_updates"].append((ln["lineNo"], d))
        wanted = {ln["lineNo"] for ln in want}
        plan["line_deletes"] = sorted(n for n in have if n not in wanted)
        if plan["line_deletes"] and not plan["head"]:
            # deleting a line changes no timestamp: touch the head so the order gets a new version
            plan["head"] = {"name": stored.get("name")}
    return plan


def plan_is_empty(plan: dict) -> bool:
    return not (plan["head"] or plan["line_updates"] or plan["line_creates"] or plan["line_deletes"])


def create_value(entity: str, cmd: WriteCommand) -> dict:
    v = {k: val for k, val in cmd.data.items() if k not in READ_ONLY}
    if cmd.idempotency_key and cmd.origin_field:
        v[cmd.origin_field] = cmd.idempotency_key
    if entity == "order":
        lines = v.pop("orderLines", None)
        if lines:
            v["orderLines"] = assign_line_numbers(lines)
    return v


def parse_key(entity: str, target_id: str | None) -> Any:
    if target_id is None or target_id == "":
        raise ValueError("target_id is required")
    return int(target_id) if entity == "order" else target_id


# ---------------------------------------------------------------- the writer
class BusinessnxtWriter:
    def __init__(self, client: BusinessnxtClient, *, timezone: str = "Europe/Oslo", chunk_size: int = 100,
                 max_rounds: int = 12) -> None:
        self.client = client
        self.tz = timezone
        self.chunk_size = chunk_size
        self.max_rounds = max_rounds

    def _res(self, cmd: WriteCommand, status: str, *, row: dict | None = None, matched: bool = False,
             error: str | None = None, target_id: str | None = None) -> WriteResult:
        entity = cmd.entity
        if row is not None:
            target_id = str(row[KEY_FIELD[entity]])
        return WriteResult(command_id=cmd.command_id, flow=cmd.flow, link_key=cmd.link_key, system="businessnxt",
                           entity=entity, op=cmd.op, status=status, target_id=target_id or cmd.target_id,
                           version=record_version(row, self.tz) if row is not None else None, record=row,
                           matched=matched, error=error, attempt=cmd.attempt)

    async def apply(self, commands: list[WriteCommand]) -> list[WriteResult]:
        # the same record's create twice in one batch (a re-sent command beside the original,
        # e.g. after a crash): create it once, and answer both with that one result
        same_as: dict[int, int] = {}
        first: dict[tuple, int] = {}
        for i, cmd in enumerate(commands):
            if cmd.op == "create" and (cmd.idempotency_key or cmd.match):
                key = (cmd.entity, cmd.origin_field, cmd.idempotency_key, tuple(sorted((cmd.match or {}).items())))
                if key in first:
                    same_as[i] = first[key]
                else:
                    first[key] = i
        if same_as:
            unique = [i for i in range(len(commands)) if i not in same_as]
            applied = dict(zip(unique, await self.apply([commands[i] for i in unique])))
            return [applied[i] if i in applied else applied[same_as[i]].model_copy(
                        update={"command_id": commands[i].command_id, "link_key": commands[i].link_key,
                                "attempt": commands[i].attempt})
                    for i in range(len(commands))]
        results: dict[int, WriteResult] = {}
        groups: dict[tuple[str, str], list[int]] = {}
        for i, cmd in enumerate(commands):
            if cmd.entity not in KEY_FIELD:
                results[i] = self._res(cmd, "permanent", error=f"unknown Businessnxt entity {cmd.entity!r}")
                continue
            groups.setdefault((cmd.entity, cmd.op), []).append(i)
        for (entity, op), idxs in groups.items():
            handler = {"create": self._creates, "update": self._updates, "delete": self._deletes}[op]
            try:
                await handler(entity, {i: commands[i] for i in idxs}, results)
            except ApiError as exc:  # e.g. look-ups failing after their retries
                log.warning("businessnxt %s %s batch failed: %s", entity, op, exc)
                for i in idxs:
                    results.setdefault(i, self._res(commands[i], exc.status_kind, error=str(exc)))
        return [results[i] for i in range(len(commands))]

    # ---- creates ---------------------------------------------------------------
    async def _lookup(self, entity: str, pending: dict[int, WriteCommand], results: dict[int, WriteResult],
                      attempted: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        """Link matches (natural key) and find our own earlier creates (origin stamp).
        A match found only after our own create attempt is our row (``matched=False``)."""
        by_match: dict[str, dict[Any, list[int]]] = {}
        by_stamp: dict[str, dict[Any, list[int]]] = {}
        for i, cmd in pending.items():
            if cmd.match:
                field, value = next(iter(cmd.match.items()))
                by_match.setdefault(field, {}).setdefault(value, []).append(i)
            if cmd.idempotency_key and cmd.origin_field:
                by_stamp.setdefault(cmd.origin_field, {}).setdefault(cmd.idempotency_key, []).append(i)
        for matched, index in ((False, by_stamp), (True, by_match)):
            for field, wanted in index.items():
                live = {v: [i for i in ids if i in pending] for v, ids in wanted.items()}
                live = {v: ids for v, ids in live.items() if ids}
                if not live:
                    continue
                rows = await self.client.read_by_values(entity, field, list(live), fields=table_fields(entity))
                for row in sorted(rows, key=lambda r: str(r[KEY_FIELD[entity]])):
                    for i in live.pop(row.get(field), []):
                        results[i] = self._res(pending.pop(i), "ok", row=row, matched=matched and i not in attempted)

    async def _creates(self, entity: str, pending: dict[int, WriteCommand], results: dict[int, WriteResult]) -> None:
        size = {i: self.chunk_size for i in pending}
        last_error: dict[int, str] = {}
        attempted: set[int] = set()
        for _round in range(self.max_rounds):
            await self._lookup(entity, pending, results, attempted)
            if not pending:
                return
            chunks: list[list[int]] = []
            for s in sorted(set(size[i] for i in pending), reverse=True):
                ids = [i for i in pending if size[i] == s]
                chunks += [ids[k:k + s] for k in range(0, len(ids), s)]

            async def run(ids: list[int]) -> None:
                attempted.update(ids)
                try:
                    rows = await self.client.create(entity, [create_value(entity, pending[i]) for i in ids])
                except ApiError as exc:
                    for i in ids:
                        last_error[i] = str(exc)
                    if outcome_unknown(exc):
                        for i in ids:
                            cmd = pending[i]
                            if not (cmd.idempotency_key and cmd.origin_field) and not cmd.match:
                                results[i] = self._res(cmd, "retryable",
                                                       error=f"outcome unknown, no origin stamp to verify: {exc}")
                                pending.pop(i)
                    elif exc.retryable:
                        pass  # not run: next round
                    elif len(ids) > 1:
                        for i in ids:  # find the bad row(s) with smaller batches next round
                            size[i] = max(1, len(ids) // 2)
                    else:
                        results[ids[0]] = self._res(pending.pop(ids[0]), exc.status_kind, error=str(exc))
                    return
                if len(rows) != len(ids):
                    log.warning("create returned %d rows for %d values; verifying by look-up", len(rows), len(ids))
                    return
                for i, row in zip(ids, rows):
                    results[i] = self._res(pending.pop(i), "ok", row=row)

            await asyncio.gather(*(run(c) for c in chunks))
            if not pending:
                return
        for i, cmd in list(pending.items()):
            results[i] = self._res(cmd, "retryable", error=last_error.get(i, "create did not converge"))

    # ---- updates ---------------------------------------------------------------
    async def _bisect(self, items: list[tuple[int, Any]], call: Callable[[list[Any]], Awaitable[Any]],
                      failed: dict[int, ApiError]) -> None:
        """Run ``call`` on the payloads; on a permanent error split until each bad owner is found."""
        items = [it for it in items if it[0] not in failed]
        if not items:
            return
        try:
            await call([p for _, p in items])
        except ApiError as exc:
            owners = list(dict.fromkeys(o for o, _ in items))
            if not exc.retryable and len(owners) > 1:
                half = set(owners[: len(owners) // 2])
                await self._bisect([it for it in items if it[0] in half], call, failed)
                await self._bisect([it for it in items if it[0] not in half], call, failed)
            else:
                for o in owners:
                    failed[o] = exc

    async def _updates(self, entity: str, pending: dict[int, WriteCommand], results: dict[int, WriteResult]) -> None:
        keys: dict[int, Any] = {}
        for i, cmd in list(pending.items()):
            try:
                keys[i] = parse_key(entity, cmd.target_id)
            except ValueError as exc:
                results[i] = self._res(pending.pop(i), "permanent", error=f"bad target_id: {exc}")
        key_field = KEY_FIELD[entity]
        last_error: dict[int, ApiError] = {}
        for _round in range(self.max_rounds):
            if not pending:
                return
            stored = await self.client.read_by_keys(entity, [keys[i] for i in pending], fields=table_fields(entity))
            plans: dict[int, dict] = {}
            for i, cmd in list(pending.items()):
                row = stored.get(keys[i])
                if row is None:
                    results[i] = self._res(pending.pop(i), "not_found", error=f"{entity} {keys[i]} does not exist")
                    continue
                if cmd.expected_version and _newer(record_version(row, self.tz), cmd.expected_version):
                    # changed since the write was derived: do not overwrite a newer edit, report it
                    results[i] = self._res(pending.pop(i), "conflict", row=row,
                                           error=f"{entity} {keys[i]} changed since version {cmd.expected_version}")
                    continue
                plan = plan_update(entity, row, cmd.data)
                if plan_is_empty(plan):
                    results[i] = self._res(pending.pop(i), "ok", row=row)
                else:
                    plans[i] = plan
            if not plans:
                return
            failed: dict[int, ApiError] = {}
            head = [(i, ({key_field: {"_eq": keys[i]}}, p["head"])) for i, p in plans.items() if p["head"]]
            for k in range(0, len(head), self.chunk_size):
                await self._bisect(head[k:k + self.chunk_size], lambda ps: self.client.update(
                    entity, [f for f, _ in ps], [v for _, v in ps], fields=key_field), failed)
            if entity == "order":
                upd = [(i, ({"_and": [{"orderNo": {"_eq": keys[i]}}, {"lineNo": {"_eq": n}}]}, d))
                       for i, p in plans.items() for n, d in p["line_updates"]]
                for k in range(0, len(upd), self.chunk_size):
                    await self._bisect(upd[k:k + self.chunk_size], lambda ps: self.client.update(
                        "orderLine", [f for f, _ in ps], [v for _, v in ps], fields="orderNo lineNo"), failed)
                new = [(i, {**ln, "orderNo": keys[i]}) for i, p in plans.items() for ln in p["line_creates"]]
                for k in range(0, len(new), self.chunk_size):
                    await self._bisect(new[k:k + self.chunk_size], lambda ps: self.client.create(
                        "orderLine", ps, fields="orderNo lineNo"), failed)
                dels = [(i, {"_and": [{"orderNo": {"_eq": keys[i]}}, {"lineNo": {"_in": p["line_deletes"]}}]})
                        for i, p in plans.items() if p["line_deletes"]]
                for k in range(0, len(dels), self.chunk_size):
                    await self._bisect(dels[k:k + self.chunk_size],
                                       lambda ps: self.client.delete("orderLine", {"_or": ps}), failed)
            for i, exc in failed.items():
                last_error[i] = exc
                if not exc.retryable and i in pending:
                    results[i] = self._res(pending.pop(i), exc.status_kind, error=str(exc))
        for i, cmd in list(pending.items()):
            exc = last_error.get(i)
            results[i] = self._res(cmd, "retryable", error=str(exc) if exc else "update did not converge")

    # ---- deletes ---------------------------------------------------------------
    async def _deletes(self, entity: str, pending: dict[int, WriteCommand], results: dict[int, WriteResult]) -> None:
        keys: dict[int, Any] = {}
        for i, cmd in pending.items():
            try:
                keys[i] = parse_key(entity, cmd.target_id)
            except ValueError as exc:
                results[i] = self._res(cmd, "permanent", error=f"bad target_id: {exc}")
        ids = list(keys)
        error: ApiError | None = None
        for _round in range(self.max_rounds):
            try:
                for k in range(0, len(ids), 500):
                    part = ids[k:k + 500]
                    await self.client.delete(entity, {KEY_FIELD[entity]: {"_in": [keys[i] for i in part]}})
                error = None
                break
            except ApiError as exc:
                error = exc
                if not exc.retryable:
                    break
        for i in ids:
            cmd = pending[i]
            if error is None:
                results[i] = self._res(cmd, "ok", target_id=str(keys[i]))
            else:
                results[i] = self._res(cmd, error.status_kind, error=str(error), target_id=str(keys[i]))


def _newer(version: str | None, than: str) -> bool:
    """Is the UTC version ``version`` later than ``than``?"""
    return version is not None and parse_utc(version) > parse_utc(than)
