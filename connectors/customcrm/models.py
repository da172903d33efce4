"""Pydantic models of the Customcrm records (Product, Order, OrderLine, User).

Two layers per resource, both straight from ``docs/contracts/customcrm-api.md``:

- ``<X>Data``: the writable properties. ``extra="forbid"`` (an unknown
  property is a validation error) and strict types (``"5"`` is not an int).
  The sandbox validates request bodies with these.
- ``<X>``: a stored record = ``<X>Data`` + the read-only properties (``Id``,
  ``CreatedAt``, ``ModifiedAt``, ``Version``, ``Deleted``). Extra properties
  are allowed, so a CRM that adds a field does not break the connector. The
  connector validates every record it reads with these; the sandbox's
  OpenAPI document uses them as response schemas.

Decimals are strings (``"199.00"``), dates ``YYYY-MM-DD`` strings and times
RFC 3339 UTC strings with microseconds and ``Z``, kept exactly as sent.
Integers are bounded to 32 bits (Businessnxt's ``Int``) so they always fit.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

INT32_MAX = 2**31 - 1

READ_ONLY = ("Id", "CreatedAt", "ModifiedAt", "Version", "Deleted")

DECIMAL_PATTERN = r"^-?[0-9]{1,18}(\.[0-9]{1,10})?$"
NONNEG_DECIMAL_PATTERN = r"^[0-9]{1,18}(\.[0-9]{1,10})?$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def _valid_date(value: str) -> str:
    date.fromisoformat(value)  # ValueError -> pydantic validation error
    return value


def _positive(value: str) -> str:
    if Decimal(value) <= 0:
        raise ValueError("must be greater than 0")
    return value


DecimalStr = Annotated[str, Field(pattern=DECIMAL_PATTERN, examples=["12.5"])]
NonNegDecimal = Annotated[str, Field(pattern=NONNEG_DECIMAL_PATTERN, examples=["199.00"])]
PositiveDecimal = Annotated[
    str, Field(pattern=NONNEG_DECIMAL_PATTERN, examples=["1"]), AfterValidator(_positive)
]
DateStr = Annotated[str, Field(pattern=DATE_PATTERN, examples=["2026-11-25"]), AfterValidator(_valid_date)]
Timestamp = Annotated[str, Field(pattern=TIMESTAMP_PATTERN, examples=["2026-11-25T10:01:02.123456Z"])]
Name200 = Annotated[str, Field(min_length=1, max_length=200)]
Int32Positive = Annotated[int, Field(gt=0, le=INT32_MAX)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ProductData(_Data):
    """Writable properties of a product."""

    Sku: Annotated[str, Field(min_length=1, max_length=40)]
    Name: Name200
    Description: Annotated[str, Field(max_length=4000)] | None = None
    Price: NonNegDecimal = "0"
    StockQuantity: DecimalStr = "0"
    Url: Annotated[str, Field(max_length=2000)] | None = None


class OrderLine(_Data):
    """One order line; ``ProductId`` is a Customcrm product ``Id``."""

    LineNo: Int32Positive
    ProductId: Annotated[str, Field(min_length=1, max_length=64)]
    Quantity: PositiveDecimal
    UnitPrice: NonNegDecimal = "0"
    Description: Annotated[str, Field(max_length=4000)] | None = None


class OrderData(_Data):
    """Writable properties of an order."""

    Name: Name200
    CustomerNo: Int32Positive
    OrderDate: DateStr
    DueDate: DateStr | None = None
    Discount: NonNegDecimal = "0"
    YourReference: Annotated[str, Field(max_length=200)] | None = None
    Status: Literal["open", "won", "lost"] = "open"
    Lines: Annotated[list[OrderLine], Field(max_length=1000)] = Field(default_factory=list)

    @field_validator("Lines")
    @classmethod
    def _unique_line_numbers(cls, lines: list[OrderLine]) -> list[OrderLine]:
        seen: set[int] = set()
        for line in lines:
            if line.LineNo in seen:
                raise ValueError(f"LineNo {line.LineNo} is used twice")
            seen.add(line.LineNo)
        return lines


class UserData(_Data):
    """Writable properties of a user."""

    FullName: Name200
    Email: Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN, examples=["ada@example.com"])]
    Phone: Annotated[str, Field(max_length=100)] | None = None
    Title: Annotated[str, Field(max_length=200)] | None = None
    Active: bool = True


class _Stored(BaseModel):
    """Read-only properties every stored record has."""

    Id: Annotated[str, Field(min_length=1)]
    CreatedAt: Timestamp
    ModifiedAt: Timestamp
    Version: Annotated[int, Field(ge=1)]
    Deleted: bool


_RECORD_CONFIG = ConfigDict(extra="allow", strict=True)


class Product(ProductData, _Stored):
    model_config = _RECORD_CONFIG


class Order(OrderData, _Stored):
    model_config = _RECORD_CONFIG


class User(UserData, _Stored):
    model_config = _RECORD_CONFIG


DATA_MODELS: dict[str, type[_Data]] = {"products": ProductData, "orders": OrderData, "users": UserData}
RECORD_MODELS: dict[str, type[BaseModel]] = {"products": Product, "orders": Order, "users": User}


def field_errors(exc: PydanticValidationError) -> dict[str, str]:
    """``{"Lines.0.Quantity": "must be greater than 0", ...}`` from a pydantic error."""
    out: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        if err["type"] == "extra_forbidden":
            msg = "unknown property"
        elif err["type"] == "missing":
            msg = "required"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        out.setdefault(loc, msg)
    return out


def validate_record(resource: str, record: Any) -> dict[str, str] | None:
    """``None`` when ``record`` is a valid stored record of ``resource``, else field -> reason."""
    model = RECORD_MODELS[resource]
    if not isinstance(record, dict):
        return {"(record)": f"expected an object, got {type(record).__name__}"}
    try:
        model.model_validate(record)
    except PydanticValidationError as exc:
        return field_errors(exc)
    return None
