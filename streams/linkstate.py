"""The link state: what the ``links`` table holds for one link, every key declared.

A link joins one Customcrm record (the flow's source side) and one Business NXT
record (its target side). ``streams.engine`` decides on it and returns the next
state; ``streams.linkcodec`` stores it as compact JSON; ``streams.explain`` and
the console read it. It stays plain JSON data (a ``TypedDict``, not a class), so
the changelog holds exactly what these types declare.
"""

from typing import Any, Literal, NotRequired, TypedDict

#: The two sides of a link: a system name.
Side = Literal["customcrm", "businessnxt"]
#: ``new``: nothing written yet; ``pending-create``: a create is on its way; ``linked``; ``deleted``;
#: ``moved``: a Business NXT record's own link (``create_in_source``) once its Customcrm record
#: exists: the pair lives on at ``<flow>:<Customcrm Id>``.
Status = Literal["new", "pending-create", "linked", "deleted", "moved"]


class InFlight(TypedDict):
    """A write sent and not yet answered (``inflight``, by command id)."""

    side: Side  # the system written to
    op: Literal["create", "update", "delete"]
    props: list[str]  # the properties it carries
    at: float  # when it was sent (epoch seconds): sent again after TALKSTREAM_ACK_TIMEOUT
    src_t: NotRequired[float | None]  # the change time of the newest value it carries (sync latency)
    stamp: NotRequired[bool]  # the update that stamps the origin on a Business NXT record (create_in_source)


class Park(TypedDict):
    """An order waiting for the products it names to be linked."""

    since: float  # when it started waiting
    last: float  # the last attempt
    waited: float  # worker uptime spent waiting (dead-lettered past TALKSTREAM_PARK_TIMEOUT)
    attempts: int
    next: NotRequired[float]  # the next attempt
    missing: NotRequired[list[str]]  # the Customcrm product ids not linked yet
    event: NotRequired[dict[str, Any]]  # the change event that waits (a source change, as JSON)


class LinkState(TypedDict):
    flow: str  # the flow's id
    key: str  # the link key (``streams.linkkeys``)
    status: Status
    ids: dict[Side, str | None]  # each side's record id (a Customcrm Id, a Business NXT number)
    #: per property: [agreed value (canonical), its change time (epoch seconds or None), the side it came from]
    base: dict[str, list[Any]]
    rep: dict[Side, dict[str, str]]  # per side, per property: a hash of what that side last reported
    wrote: dict[Side, dict[str, str]]  # per side, per property: a hash of what was last written there
    seen: dict[Side, str | None]  # per side, the newest record version read
    acked: dict[Side, str | None]  # per side, the version our last write there produced
    co: dict[str, Any]  # create-only source values (sent with a create only)
    inflight: dict[str, InFlight]
    park: Park | None
    fail: dict[Side, int]  # failed attempts of the current write, per side
    seq: int  # commands sent (a command id is ``<link key>#<seq>``)
    deleted: Side | None  # the side that deleted its record
    # set only when needed:
    blocked: NotRequired[bool]  # a write was dead-lettered: nothing is sent until a redrive
    retry_at: NotRequired[float]  # a failed write is tried again then
    held: NotRequired[bool]  # its flow was paused or tripped while it had something to write
    delete_pending: NotRequired[Side]  # the side a delete waits for while its flow is held
    graced: NotRequired[float]  # when a record that may create its Customcrm record was first seen


def new_link(flow_id: str, key: str) -> LinkState:
    """An empty link state."""
    return {
        "flow": flow_id,
        "key": key,
        "status": "new",
        "ids": {"customcrm": None, "businessnxt": None},
        "base": {},
        "rep": {"customcrm": {}, "businessnxt": {}},
        "wrote": {"customcrm": {}, "businessnxt": {}},
        "seen": {"customcrm": None, "businessnxt": None},
        "acked": {"customcrm": None, "businessnxt": None},
        "co": {},
        "inflight": {},
        "park": None,
        "fail": {"customcrm": 0, "businessnxt": 0},
        "seq": 0,
        "deleted": None,
    }
